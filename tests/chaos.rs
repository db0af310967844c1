//! The chaos soak (issue 5): clients stream IAMATs for thousands of client ids to random
//! servers of the default herd while a driver kills (SIGKILL) and restarts random servers.
//! When the churn stops, every server must soon answer WHATSAT for every client with that
//! client's newest location: nothing acknowledged is lost, no stale record wins.
//!
//! `PROXY_HERD_SOAK_SECS` sets how long the churn lasts (default 20 s, the CI form). The long
//! form, in the README: `PROXY_HERD_SOAK_SECS=600 cargo test --release --test chaos --
//! --nocapture`.
//!
//! The driver kills one server at a time, and after a restart waits until the server answers
//! and then `SETTLE` more, so its neighbours have reconnected and caught it up. That is the
//! herd's promise: a location lives in the memory of the servers it reached, so a location
//! acknowledged by a server whose every neighbour is down (Hamilton has only Parker) is lost
//! if that server dies too before a neighbour comes back. Two failures that close together
//! are beyond what a herd without disks can survive, and this test does not ask it to.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use common::*;

const SERVERS: [&str; 5] = ["Alford", "Bolden", "Hamilton", "Parker", "Powell"];
/// Client ids, split between the streams.
const CLIENTS: usize = 2000;
/// After a restarted server answers, how long before the next kill: longer than the longest
/// reconnect backoff (1 s), so its neighbours are linked to it again and have caught it up.
const SETTLE: Duration = Duration::from_millis(1500);
/// How long the herd may take to agree once the churn stops. The issue asks for 2 s; a debug
/// build on two busy cores gets more room, and the report prints what it took (well under
/// a second so far). Checks go on for up to `GIVE_UP`, to tell slow from never.
const CONVERGE: Duration = Duration::from_secs(5);
const GIVE_UP: Duration = Duration::from_secs(15);

fn soak_secs() -> u64 {
    std::env::var("PROXY_HERD_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20)
}

/// One server's record of one client, checked against what the clients were told.
#[derive(Debug, PartialEq)]
enum Verdict {
    /// The newest acknowledged report, exactly as acknowledged.
    Newest,
    /// A report newer than any acknowledged one (its server died before replying, after
    /// flooding it): it was really sent, so it is right that it wins.
    NewerUnacknowledged,
    /// Missing, older than the newest acknowledged, or not a report that was ever sent.
    Wrong(String),
}

fn judge(id: &str, stored: Option<&String>, acks: &Acks) -> Verdict {
    let newest = acks.newest.get(id);
    let Some(line) = stored else {
        return match newest {
            None => Verdict::Newest,
            Some((_, want)) => Verdict::Wrong(format!("{id}: unknown, want {want}")),
        };
    };
    let fields: Vec<&str> = line.split(' ').collect();
    let time = fields.get(5).and_then(|t| {
        let (secs, nanos) = t.split_once('.')?;
        Some(secs.parse::<u128>().ok()? * 1_000_000_000 + nanos.parse::<u128>().ok()?)
    });
    let (Some(time), Some(location)) = (time, fields.get(4)) else {
        return Verdict::Wrong(format!("{id}: bad record {line}"));
    };
    match newest {
        Some((t, want)) if time == *t && line == want => Verdict::Newest,
        Some((t, want)) if time <= *t => Verdict::Wrong(format!("{id}: {line}, want {want}")),
        // Newer than anything acknowledged: right only if that report was really sent.
        _ if *location == location_for(id, time) => Verdict::NewerUnacknowledged,
        _ => Verdict::Wrong(format!("{id}: {line} was never sent")),
    }
}

#[test]
fn chaos_soak_loses_nothing() {
    // 4 streams of 25 pipelined IAMATs: the herd is busy but keeps up.
    soak("chaos", Duration::from_secs(soak_secs()), 4, 25);
}

#[test]
fn chaos_soak_under_full_load_loses_nothing() {
    // 16 streams of 200 pipelined IAMATs: more than the herd can spread, so flow control
    // holds clients back all along (issue 10), while servers die and come back.
    soak("chaosload", Duration::from_secs(soak_secs() / 2), 16, 200);
}

/// The soak: `streams` client threads, each pipelining `batch` IAMATs per connection to
/// random servers for `soak`, while the driver kills and restarts servers; then every
/// server must hold every client's newest location.
fn soak(tag: &str, soak: Duration, streams: usize, batch: usize) {
    // One soak at a time: two herds under full load on two cores would starve each other's
    // restarted servers, and the soaks measure the herd, not the scheduler.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // Logging at warn: at info the soak writes hundreds of MB of logs. (So no waiting for
    // "link up" in the logs: the servers are started one by one, and readiness is a reply.)
    let mut herd = Herd::plan(tag, DEFAULT_HERD, &["--log-level", "warn"]);
    for name in SERVERS {
        herd.start_server(name);
    }
    let addrs: Vec<_> = SERVERS.iter().map(|s| herd.addr(s)).collect();
    let ids: Vec<String> = (0..CLIENTS).map(|i| format!("chaos{i}")).collect();
    // Every server's loop is running (a server accepts before its loop starts).
    for (i, name) in SERVERS.iter().enumerate() {
        served(addrs[i], name, "ready");
    }

    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = ids
        .chunks(CLIENTS / streams)
        .enumerate()
        .map(|(i, chunk)| {
            stream_iamats(
                addrs.clone(),
                chunk.to_vec(),
                batch,
                1000 + i as u64,
                Arc::clone(&stop),
            )
        })
        .collect();

    // The driver: kill one server, keep it down a while, restart it, let the herd settle.
    let mut rng = Rng::new(42);
    let mut kills = 0;
    let started = Instant::now();
    while started.elapsed() < soak {
        let victim = *rng.pick(&SERVERS);
        herd.kill(victim);
        kills += 1;
        sleep(Duration::from_millis(100 + rng.below(900)));
        herd.start_server(victim);
        let i = SERVERS.iter().position(|s| *s == victim).unwrap();
        served(addrs[i], victim, "restarted");
        if started.elapsed() < soak {
            sleep(SETTLE);
        }
    }
    // The churn stops with the last restart: the clients stop too, and the clock starts.
    stop.store(true, Ordering::SeqCst);
    let stopped = Instant::now();
    let mut acks = Acks::default();
    for s in clients {
        acks.merge(s.join().expect("a client stream panicked"));
    }
    let churn = started.elapsed();

    // Ask every server about every client until they all hold the right record. The time to
    // converge is when the first check that finds everything right began.
    let mut rounds = 0;
    let mut first_round_wrong = None;
    let (wrong, newer, converged, round_took) = loop {
        rounds += 1;
        let round_began = stopped.elapsed();
        let mut wrong = Vec::new();
        let mut newer = 0;
        let mut first: HashMap<&str, Option<String>> = HashMap::new();
        for (i, name) in SERVERS.iter().enumerate() {
            let Ok(stored) = stored_lines(addrs[i], &ids) else {
                wrong.push(format!("{name} did not answer"));
                continue;
            };
            for (id, line) in ids.iter().zip(stored) {
                // One entry per wrong record: judged wrong, or right but not the record another
                // server holds (two different reports newer than the acknowledged one).
                let verdict = judge(id, line.as_ref(), &acks);
                if let Verdict::Wrong(why) = verdict {
                    wrong.push(format!("{name}: {why}"));
                    continue;
                }
                let agreed = first.entry(id).or_insert_with(|| line.clone());
                if *agreed != line {
                    wrong.push(format!("{name}: {id}: {line:?}, another has {agreed:?}"));
                } else if verdict == Verdict::NewerUnacknowledged {
                    newer += 1;
                }
            }
        }
        first_round_wrong.get_or_insert(wrong.len());
        if wrong.is_empty() || stopped.elapsed() > GIVE_UP {
            let took = stopped.elapsed() - round_began;
            break (wrong, newer / SERVERS.len(), round_began, took);
        }
        sleep(Duration::from_millis(100));
    };
    let checked = CLIENTS * SERVERS.len();
    println!(
        "chaos soak ({streams} streams x {batch} pipelined): {:.0} s of churn, {kills} kills (SIGKILL) and restarts; {} IAMATs sent, \
         {} acknowledged, {} batches cut short by a kill; converged within {:.2} s after the \
         churn stopped (check round {rounds}, each round {:.2} s; {} records not yet right \
         in the first); {checked} records checked \
         ({CLIENTS} clients x {} servers), {} wrong; {newer} clients hold a newer \
         unacknowledged report",
        churn.as_secs_f64(),
        acks.sent,
        acks.acked,
        acks.broken,
        converged.as_secs_f64(),
        round_took.as_secs_f64(),
        first_round_wrong.unwrap_or(0),
        SERVERS.len(),
        wrong.len(),
    );
    // A kill cycle (down, restart, settle) takes about 2–3 s.
    assert!(
        kills as u64 >= (soak.as_secs() / 4).max(1),
        "only {kills} kills"
    );
    assert!(
        acks.acked > CLIENTS,
        "only {} IAMATs acknowledged",
        acks.acked
    );
    assert!(
        wrong.is_empty(),
        "{} wrong records, e.g. {:#?}",
        wrong.len(),
        &wrong[..wrong.len().min(20)]
    );
    assert!(converged < CONVERGE, "took {converged:?} to converge");
}
