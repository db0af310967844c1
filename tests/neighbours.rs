//! Neighbours that misbehave (issue 5): one that accepts but never reads, one killed in the
//! middle of a flood, one that restarts every second. Through each, the server keeps
//! answering its clients, its memory stays bounded, the link comes back, and the neighbour
//! catches up on every location.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, sleep};
use std::time::{Duration, Instant};

use common::*;
use proxy_herd::peer::{LINK_HIGH, LINK_LOW};

/// How much a server may grow (KiB) while a neighbour misbehaves.
const RSS_BOUND_KIB: u64 = 64 << 10;

#[test]
fn neighbour_that_never_reads_is_dropped_and_memory_stays_bounded() {
    // Deaf is in the topology as Alford's neighbour, but it is this test's own listener: it
    // accepts Alford's link and never reads a byte. (Logging at warn: the flood below is
    // 30 MB, and its log at info would be three times that.)
    let mut herd = Herd::plan(
        "deaf",
        &[("Alford", &["Deaf"]), ("Deaf", &[])],
        &["--log-level", "warn"],
    );
    let deaf = TcpListener::bind(herd.addr("Deaf")).unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let acceptor = never_read(deaf, Arc::clone(&accepted), Arc::clone(&stop));
    herd.start_server("Alford");
    let addr = herd.addr("Alford");
    let pid = herd.pid("Alford");
    eventually("Alford links to Deaf", || {
        accepted.load(Ordering::SeqCst) >= 1
    });
    served(addr, "Alford", "warmup");
    let rss_before = rss_kib(pid);
    let bystander = keep_serving(addr, "Alford", Arc::clone(&stop));

    // Watch the server's memory while the flood goes on.
    let sampler = {
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(Ordering::SeqCst) {
                peak = peak.max(rss_kib(pid));
                sleep(Duration::from_millis(50));
            }
            peak
        })
    };

    // 10,000 updates of 1,000 clients with 1 KB ids, pipelined on one connection: about
    // 10 MB to flood to Deaf, far more than the link's queue bound plus what the kernel
    // buffers. Flow control holds Alford's clients while the queue waits, until the link is
    // dropped for making no progress (about a second each time); then they go on.
    const UPDATES: usize = 10_000;
    let started = Instant::now();
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sender = thread::spawn(move || {
        let pad = "d".repeat(996);
        let base = 1_700_000_000u64;
        let mut batch = String::new();
        for i in 0..UPDATES {
            let time = format!("{}.{:09}", base + (i / 1000) as u64, i % 1000);
            batch.push_str(&format!(
                "IAMAT {:04}{pad} +34.068930-118.445127 {time}\n",
                i % 1000
            ));
            if batch.len() > 64 << 10 {
                writer.write_all(batch.as_bytes()).unwrap();
                batch.clear();
            }
        }
        writer.write_all(batch.as_bytes()).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut answered = 0;
    for line in BufReader::new(stream).lines() {
        let line = line.expect("Alford stopped answering");
        assert!(line.starts_with("AT Alford "), "{line}");
        answered += 1;
    }
    sender.join().unwrap();
    let took = started.elapsed();
    // The link was dropped for making no progress: Alford connects again (with a catch-up
    // for Deaf). The last drop may come as the last IAMATs are answered, so wait for it.
    eventually("Alford drops the link to Deaf and connects again", || {
        accepted.load(Ordering::SeqCst) >= 2
    });
    stop.store(true, Ordering::SeqCst);
    let peak = sampler.join().unwrap();
    let (n, slowest) = bystander.join().unwrap();
    acceptor.join().unwrap();
    let links = accepted.load(Ordering::SeqCst);
    let grown = peak.saturating_sub(rss_before);
    println!(
        "deaf neighbour: {answered} IAMATs (about {} MB to flood) answered in {:.1} s; link \
         accepted {links} times; {n} bystanders served (slowest {slowest:?}); RSS grew {grown} \
         KiB at most",
        (answered * 1060) >> 20,
        took.as_secs_f64(),
    );
    assert_eq!(answered, UPDATES, "every IAMAT is answered");
    assert!(grown < RSS_BOUND_KIB, "grew {grown} KiB");
}

#[test]
fn a_client_that_waits_for_each_answer_is_served_while_flow_control_holds_the_pipeliners() {
    // Deaf, Alford's neighbour, is this test's own listener with a small receive buffer: it
    // accepts Alford's link and never reads, so Alford's queue toward it is soon over the
    // bound and Alford holds its clients (until the stall watch drops the link, a second
    // later, and it all begins again). A pipeliner streams IAMATs meanwhile; a second
    // client sends one IAMAT at a time and waits for each answer. That one is sparse, and
    // is answered while the pipeliner is held: its ten answers come while the pipeliner's
    // count of answers stands still. (Held like the pipeliner, each of its lines would wait
    // for the hold to end, and come back with the pipeliner's next answers.)
    let mut herd = Herd::plan(
        "sparse",
        &[("Alford", &["Deaf"]), ("Deaf", &[])],
        &["--log-level", "warn"],
    );
    let deaf = TcpListener::bind(herd.addr("Deaf")).unwrap();
    set_receive_buffer(&deaf, 4096);
    let stop = Arc::new(AtomicBool::new(false));
    let acceptor = never_read(deaf, Arc::new(AtomicUsize::new(0)), Arc::clone(&stop));
    herd.start_server("Alford");
    let addr = herd.addr("Alford");
    served(addr, "Alford", "warmup");
    // The pipeliner: 50,000 IAMATs written at once, answers counted as they come.
    const N: usize = 50_000;
    let answered = Arc::new(AtomicUsize::new(0));
    let stream = TcpStream::connect(addr).unwrap();
    let pipeline = stream.try_clone().unwrap();
    let pipeliner = {
        let answered = Arc::clone(&answered);
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut writer = stream.try_clone().unwrap();
        let time = now_text();
        let request: String = (0..N)
            .map(|i| format!("IAMAT pipe{i} +1+2 {time}\n"))
            .collect();
        thread::spawn(move || {
            let sender = thread::spawn(move || writer.write_all(request.as_bytes()));
            for line in BufReader::new(stream).lines().take(N) {
                if line.is_err() {
                    break;
                }
                answered.fetch_add(1, Ordering::SeqCst);
            }
            // Cut short when the test is done: the write fails then.
            let _ = sender.join();
        })
    };
    // Held: its count stands still for a while, short of the end.
    let still = || {
        let before = answered.load(Ordering::SeqCst);
        sleep(Duration::from_millis(100));
        let now = answered.load(Ordering::SeqCst);
        now == before && now < N
    };
    // Up to five tries (the stall watch may drop the link and release the pipeliner in the
    // middle of one), while the pipeliner has answers to come.
    let mut sparse = Client::connect(addr);
    let mut result = Vec::new();
    let done = || answered.load(Ordering::SeqCst) >= N;
    for attempt in 0..5 {
        eventually("Alford holds the pipeliner", || done() || still());
        if done() {
            break;
        }
        let before = answered.load(Ordering::SeqCst);
        for k in 0..10 {
            sparse.send(format!("IAMAT sparse{attempt}.{k} +1+2 {}\n", now_text()).as_bytes());
            let reply = sparse.line();
            assert!(reply.starts_with("AT Alford "), "{reply}");
        }
        let after = answered.load(Ordering::SeqCst);
        result.push((before, after));
        if after == before {
            break;
        }
    }
    stop.store(true, Ordering::SeqCst);
    pipeline.shutdown(Shutdown::Both).unwrap();
    pipeliner.join().unwrap();
    acceptor.join().unwrap();
    eprintln!("pipeliner's answers before and after each try of ten sparse requests: {result:?}");
    assert!(
        result.iter().any(|(before, after)| before == after),
        "every try of ten sparse requests waited for the pipeliner's hold to end: {result:?}"
    );
}

/// A neighbour that never reads: accepts every connection on `listener` (counting them in
/// `accepted`) and keeps it open, unread, until `stop`.
fn never_read(
    listener: TcpListener,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<()> {
    listener.set_nonblocking(true).unwrap();
    thread::spawn(move || {
        let mut held = Vec::new();
        while !stop.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((s, _)) => {
                    held.push(s);
                    accepted.fetch_add(1, Ordering::SeqCst);
                }
                Err(_) => sleep(Duration::from_millis(10)),
            }
        }
    })
}

/// Streams IAMATs about `ids` to Alford until `during` returns, then checks that every one
/// was answered and that Bolden ends up holding each client's newest location.
fn stream_through(herd: &mut Herd, ids: &[String], during: impl FnOnce(&mut Herd)) -> Acks {
    let stop = Arc::new(AtomicBool::new(false));
    let stream = stream_iamats(
        vec![herd.addr("Alford")],
        ids.to_vec(),
        20,
        7,
        Arc::clone(&stop),
    );
    during(herd);
    stop.store(true, Ordering::SeqCst);
    let acks = stream.join().unwrap();
    assert_eq!(acks.broken, 0, "Alford answered every IAMAT");
    assert!(acks.slowest < PROMPT, "a batch waited {:?}", acks.slowest);
    let want: Vec<Option<String>> = ids
        .iter()
        .map(|id| acks.newest.get(id).map(|(_, line)| line.clone()))
        .collect();
    let started = Instant::now();
    eventually("Bolden holds every client's newest location", || {
        stored_lines(herd.addr("Bolden"), ids).is_ok_and(|got| got == want)
    });
    println!(
        "  {} IAMATs to Alford, all answered (slowest batch {:?}); Bolden caught up {:?} after \
         the stream stopped",
        acks.acked,
        acks.slowest,
        started.elapsed()
    );
    acks
}

const PAIR: &[(&str, &[&str])] = &[("Alford", &["Bolden"]), ("Bolden", &[])];

/// Starts Alford and Bolden, and waits until Alford's link to Bolden is up. (A server accepts
/// connections as soon as it has bound its port, before its event loop runs.)
fn linked_pair(tag: &str) -> Herd {
    let herd = Herd::start(tag, PAIR, &[]);
    eventually("Alford's link to Bolden is up", || {
        herd.log("Alford").contains("link to Bolden up")
    });
    herd
}

#[test]
fn neighbour_killed_mid_stream_catches_up() {
    let mut herd = linked_pair("midstream");
    let ids: Vec<String> = (0..300).map(|i| format!("mid{i}")).collect();
    println!("neighbour killed mid-stream:");
    stream_through(&mut herd, &ids, |herd| {
        sleep(Duration::from_millis(800));
        herd.kill("Bolden");
        sleep(Duration::from_millis(1200));
        herd.start_server("Bolden");
        sleep(Duration::from_millis(800));
    });
    let log = herd.log("Alford");
    assert!(
        log.contains("link to Bolden down"),
        "Alford saw the link drop"
    );
}

#[test]
fn neighbour_restarting_every_second_catches_up() {
    let mut herd = linked_pair("restarts");
    let ids: Vec<String> = (0..300).map(|i| format!("re{i}")).collect();
    const RESTARTS: usize = 5;
    println!("neighbour restarting every second, {RESTARTS} times:");
    stream_through(&mut herd, &ids, |herd| {
        for _ in 0..RESTARTS {
            let started = Instant::now();
            herd.kill("Bolden");
            herd.start_server("Bolden");
            sleep(Duration::from_secs(1).saturating_sub(started.elapsed()));
        }
    });
    // The link came back after every restart (the first "up" was at start-up).
    let log = herd.log("Alford");
    let ups = log.matches("link to Bolden up").count();
    assert!(ups > RESTARTS, "the link came up {ups} times");
}

#[test]
fn idle_timeout_spares_neighbour_links() {
    let herd = Herd::start("idlelinks", PAIR, &["--idle-timeout", "1"]);
    eventually("Alford's link to Bolden is up", || {
        herd.log("Alford").contains("link to Bolden up")
    });
    // One location, flooded both ways (each server floods to every neighbour, the sender
    // included), so each server's link into the other carries an AT line.
    let reply = herd.ask("Alford", &format!("IAMAT linked +1+2 {}\n", now_text()));
    eventually("Bolden knows it", || {
        herd.ask("Bolden", "WHATSAT linked 1 1")
            .starts_with(first_line(&reply))
    });
    // A link opened before that may have been cut as idle already; once it carried an AT,
    // never again, however long the herd stays quiet.
    sleep(Duration::from_millis(1500));
    let before: Vec<usize> = ["Alford", "Bolden"]
        .iter()
        .map(|s| herd.log(s).len())
        .collect();
    sleep(Duration::from_millis(3500));
    for (name, from) in ["Alford", "Bolden"].iter().zip(before) {
        let log = herd.log(name);
        let later = &log[from..];
        assert!(!later.contains("down"), "{name}'s link dropped:\n{later}");
        assert!(
            !later.contains("idle"),
            "{name} closed a link as idle:\n{later}"
        );
    }
    // Clients are still closed when idle.
    let mut idle = TcpStream::connect(herd.addr("Alford")).unwrap();
    idle.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut buf = [0u8; 1];
    assert_eq!(idle.read(&mut buf).unwrap(), 0);
}

/// Flow control across the herd (the `BUSY` notices of `pressure`): Alford – Parker – Powell
/// in a line, clients only at Alford. Powell is stopped, so Parker's queue to it fills up;
/// Parker says it is behind, and Alford, which has no link to Powell, holds its clients.
/// Once Powell runs again every IAMAT is answered, and Powell holds every client's newest
/// location.
#[test]
fn a_server_behind_two_hops_away_holds_the_edge() {
    const LINE: &[(&str, &[&str])] = &[
        ("Alford", &["Parker"]),
        ("Parker", &["Powell"]),
        ("Powell", &[]),
    ];
    let herd = Herd::start("pressure", LINE, &[]);
    eventually("the links are up", || {
        herd.log("Alford").contains("link to Parker up")
            && herd.log("Parker").contains("link to Powell up")
    });
    // One flood first: on it, every link learns that its neighbour reads extra fields,
    // which is what notices need.
    served(herd.addr("Alford"), "Alford", "warmup");
    eventually("the warm-up reached Powell", || {
        herd.ask("Powell", "WHATSAT warmup 1 1").starts_with("AT ")
    });
    let signal = |sig: &str| {
        let status = std::process::Command::new("kill")
            .args([sig, &herd.pid("Powell").to_string()])
            .status();
        assert!(status.is_ok_and(|s| s.success()), "kill {sig} Powell");
    };
    signal("-STOP");

    // 2,000 updates of 200 clients with 1 KB ids, pipelined: about 2 MB, far more than
    // Parker's queue bound and the kernel's buffers toward Powell.
    const UPDATES: usize = 2_000;
    const CLIENTS: usize = 200;
    let pad = "p".repeat(1000);
    let ids: Vec<String> = (0..CLIENTS).map(|i| format!("{i:03}{pad}")).collect();
    let stream = TcpStream::connect(herd.addr("Alford")).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let lines: Vec<String> = (0..UPDATES)
        .map(|i| {
            let time = format!("1700000000.{:09}", i);
            format!("IAMAT {} +34.068930-118.445127 {time}\n", ids[i % CLIENTS])
        })
        .collect();
    let sender = thread::spawn(move || {
        for chunk in lines.chunks(50) {
            writer.write_all(chunk.concat().as_bytes()).unwrap();
        }
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let reader = thread::spawn(move || {
        let mut newest = std::collections::HashMap::new();
        for line in BufReader::new(stream).lines() {
            let line = line.expect("Alford stopped answering");
            let id = line.split(' ').nth(3).unwrap_or_default().to_string();
            newest.insert(id, line);
        }
        newest
    });

    eventually("Alford holds its clients: Parker is behind", || {
        herd.log("Alford")
            .contains("clients held: Parker is behind")
    });
    let parker = herd.log("Parker");
    assert!(
        parker
            .lines()
            .any(|l| l.contains("] BUSY Parker ") && l.ends_with(" 1")),
        "Parker said it is behind"
    );
    signal("-CONT");

    sender.join().unwrap();
    let newest = reader.join().unwrap();
    assert_eq!(newest.len(), CLIENTS, "every client's IAMATs were answered");
    let want: Vec<Option<String>> = ids.iter().map(|id| newest.get(id).cloned()).collect();
    eventually("Powell holds every client's newest location", || {
        stored_lines(herd.addr("Powell"), &ids).is_ok_and(|got| got == want)
    });
    eventually("Alford reads its clients again", || {
        herd.log("Alford").contains("clients read again")
    });
}

/// Floods that reach a server late (the `Lateness` of `pressure`) slow the edge: Alford –
/// Parker, clients at Alford. The test plays a far server, Zed, whose AT lines reach Parker
/// 200 ms after Zed received them (their time and skew say so), after a first one that
/// came at once. Parker says its floods come late (`BUSY Parker … 2`); Alford paces its
/// clients but does not hold them (a pipelining client gets every answer meanwhile, at
/// the pace); once the late floods stop, Parker gives the all-clear and the pace ends.
#[test]
fn floods_that_reach_a_server_late_pace_the_edge() {
    const PAIR: &[(&str, &[&str])] = &[("Alford", &["Parker"]), ("Parker", &[])];
    // With the trace, Alford logs each time the pace holds a client back.
    let herd = Herd::start("late", PAIR, &["--trace"]);
    eventually("the link is up", || {
        herd.log("Alford").contains("link to Parker up")
    });
    // A flood first: on it, Parker's link learns that Alford reads extra fields, which is
    // what notices need.
    served(herd.addr("Alford"), "Alford", "warmup");
    eventually("the warm-up reached Parker", || {
        herd.ask("Parker", "WHATSAT warmup 1 1").starts_with("AT ")
    });

    let zed = TcpStream::connect(herd.addr("Parker")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = Arc::clone(&stop);
    let sender = thread::spawn(move || {
        let mut zed = zed;
        let line = |id: usize, ago: Duration| {
            let when = std::time::SystemTime::now() - ago;
            let d = when.duration_since(std::time::UNIX_EPOCH).unwrap();
            let time = format!("{}.{:09}", d.as_secs(), d.subsec_nanos());
            format!("AT Zed +0.000000000 z{id} +34.068930-118.445127 {time}\n")
        };
        zed.write_all(line(0, Duration::ZERO).as_bytes()).unwrap();
        // 20 late lines every 5 ms: more than the 16 an interval that lateness needs, far
        // fewer than would make a queue. At most 30 s of them (the test waits 10 s at most
        // for each step).
        for batch in 1..6_000 {
            if stopped.load(Ordering::SeqCst) {
                break;
            }
            let lines: String = (0..20)
                .map(|i| line(batch * 20 + i, Duration::from_millis(200)))
                .collect();
            zed.write_all(lines.as_bytes()).unwrap();
            sleep(Duration::from_millis(5));
        }
    });
    eventually("Alford paces its clients: floods reach Parker late", || {
        herd.log("Alford")
            .contains("clients paced: floods reach Parker late")
    });
    assert!(
        herd.log("Parker")
            .lines()
            .any(|l| l.contains("] BUSY Parker ") && l.ends_with(" 2")),
        "Parker said its floods come late"
    );

    // Paced, not held: 100 pipelined IAMATs are all answered, in order.
    let mut client = Client::connect(herd.addr("Alford"));
    let base = now_text();
    let ids: Vec<String> = (0..100).map(|i| format!("paced{i}")).collect();
    let lines: String = ids
        .iter()
        .map(|id| format!("IAMAT {id} +34.068930-118.445127 {base}\n"))
        .collect();
    client.send(lines.as_bytes());
    for id in &ids {
        let reply = client.line();
        assert!(
            reply.starts_with("AT Alford ") && reply.contains(&format!(" {id} ")),
            "{id}: {reply:?}"
        );
    }
    let alford = herd.log("Alford");
    assert!(
        alford.contains(": held by the pace"),
        "the pipeliner waited for the pace"
    );
    assert!(
        !alford.contains("clients held: Parker"),
        "late floods slow the clients; they do not hold them"
    );

    stop.store(true, Ordering::SeqCst);
    sender.join().unwrap();
    eventually("the pace ends once the floods are on time", || {
        herd.log("Alford")
            .contains("clients no longer paced: floods are on time")
    });
}

#[test]
fn a_restarted_neighbour_gets_a_catch_up_bigger_than_a_chunk_announced_by_its_size() {
    let mut herd = linked_pair("bigcatchup");
    // A first location through Bolden: its first line to Alford carries `via=`, so from
    // then on Alford's lines to Bolden carry `via=` (and a catch-up's, `sync=`).
    herd.ask("Bolden", &format!("IAMAT first +1+2 {}\n", now_text()));
    eventually("Alford knows first", || {
        !herd.ask("Alford", "WHATSAT first 1 1").starts_with("? ")
    });
    // More clients than a catch-up reads from the store at a time (16,384).
    let ids: Vec<String> = (0..20_000).map(|i| format!("big{i}")).collect();
    let request: String = ids
        .iter()
        .map(|id| format!("IAMAT {id} +1+2 {}\n", now_text()))
        .collect();
    let stream = TcpStream::connect(herd.addr("Alford")).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    // Written on another thread: the replies may fill the socket before the requests end.
    let sender = thread::spawn(move || writer.write_all(request.as_bytes()));
    let mut reader = BufReader::new(stream);
    let replies: Vec<Option<String>> = (ids.iter())
        .map(|_| {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            Some(line.trim_end().to_string())
        })
        .collect();
    sender.join().unwrap().unwrap();
    herd.kill("Bolden");
    herd.start_server("Bolden");
    eventually("Bolden holds all 20,000 again", || {
        stored_lines(herd.addr("Bolden"), &ids).is_ok_and(|got| got == replies)
    });
    // The catch-up's first line said how many clients Alford knew (and so how much room
    // Bolden's store needs); the others say 1.
    let log = herd.log("Bolden");
    let sizes: Vec<&str> = log
        .split(" sync=")
        .skip(1)
        .map(|rest| rest.split([' ', ':', '\n']).next().unwrap_or(""))
        .collect();
    assert_eq!(sizes.first(), Some(&"20001"), "the first catch-up line");
    assert!(sizes.len() >= 20_001, "{} catch-up lines", sizes.len());
    assert_eq!(sizes.iter().filter(|s| **s != "1").count(), 1);
}

#[test]
fn what_the_kernel_holds_for_a_neighbour_counts_as_its_queue() {
    // Slow is Alford's neighbour, this test's own listener: it accepts Alford's link and
    // reads nothing, with a small receive buffer, so that nearly all Alford writes stays in
    // Alford's kernel, in the socket's send buffer (Linux gives twice the 128 KiB asked).
    let mut herd = Herd::plan("kernelshare", &[("Alford", &["Slow"]), ("Slow", &[])], &[]);
    let slow = TcpListener::bind(herd.addr("Slow")).unwrap();
    set_receive_buffer(&slow, 4 << 10);
    let acceptor = thread::spawn(move || slow.accept().map(|(s, _)| s));
    herd.start_server("Alford");
    let link = acceptor.join().unwrap().unwrap();
    // 600 IAMATs with 1 KB ids, pipelined: about 640 KB to flood to Slow.
    let pad = "k".repeat(1000);
    let request: String = (0..600)
        .map(|i| format!("IAMAT {i:03}{pad} +1+2 {}\n", now_text()))
        .collect();
    let stream = TcpStream::connect(herd.addr("Alford")).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sender = thread::spawn(move || writer.write_all(request.as_bytes()));
    // The replies are read (and dropped), so that only the link can hold the client.
    let reader = stream.try_clone().unwrap();
    let drain = thread::spawn(move || std::io::copy(&mut &reader, &mut std::io::sink()));
    // Alford holds its client once the link's queue passes LINK_HIGH (32 KiB). Counted with
    // what the kernel holds, that is after about 30 of these lines; counted in Alford's own
    // buffer only, the kernel's 256 KiB had to fill first (about 280).
    let busy = "BUSY Alford ";
    eventually("Alford says it is behind", || {
        herd.log("Alford")
            .lines()
            .any(|l| l.contains(busy) && l.ends_with(" 1"))
    });
    let log = herd.log("Alford");
    let before: Vec<&str> = log
        .lines()
        .take_while(|l| !(l.contains(busy) && l.ends_with(" 1")))
        .filter(|l| l.contains("< IAMAT "))
        .collect();
    println!(
        "slow neighbour: {} IAMATs handled before Alford held its client",
        before.len()
    );
    assert!(
        before.len() < 150,
        "{} IAMATs (about {} KiB of flood) before the hold",
        before.len(),
        (before.len() * 1060) >> 10
    );
    drop(link);
    let _ = stream.shutdown(Shutdown::Both);
    let _ = sender.join();
    let _ = drain.join();
}

#[test]
fn a_neighbour_that_reads_what_the_kernel_held_after_the_clients_stop_keeps_its_link() {
    // Slow, this test's listener, reads nothing while Alford floods it halfway between
    // LINK_LOW, at which Alford starts watching the link's progress, and LINK_HIGH, at which
    // it would hold its client (about 29 KB), nearly all of it in Alford's kernel. Then the
    // client stops and Slow reads it all. No event tells Alford that its kernel sent the
    // bytes; its stall watch, a second later, must ask the kernel before it calls Slow deaf.
    let mut herd = Herd::plan("readlate", &[("Alford", &["Slow"]), ("Slow", &[])], &[]);
    let slow = TcpListener::bind(herd.addr("Slow")).unwrap();
    set_receive_buffer(&slow, 4 << 10);
    let acceptor = thread::spawn(move || slow.accept().map(|(s, _)| (s, slow)));
    herd.start_server("Alford");
    let (mut link, slow) = acceptor.join().unwrap().unwrap();
    let pad = "r".repeat(1000);
    // An AT line for one of these clients: its id, and about 50 bytes more.
    let flood_line = 1060;
    let count = (LINK_LOW + LINK_HIGH) / 2 / flood_line;
    let request: String = (0..count)
        .map(|i| format!("IAMAT {i:03}{pad} +1+2 {}\n", now_text()))
        .collect();
    let mut stream = TcpStream::connect(herd.addr("Alford")).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut replies = BufReader::new(stream.try_clone().unwrap());
    for _ in 0..count {
        let mut reply = String::new();
        replies.read_line(&mut reply).unwrap();
        assert!(reply.starts_with("AT Alford "), "{reply}");
    }
    // Slow reads everything Alford sent, until nothing more comes for 200 ms.
    link.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buf = vec![0u8; 64 << 10];
    let mut got = 0;
    while let Ok(n @ 1..) = link.read(&mut buf) {
        got += n;
    }
    assert!(got > LINK_LOW, "Slow got only {got} bytes");
    // Past the stall watch's second: the link is still open and no second one came.
    sleep(STALL_AND_MORE);
    link.set_nonblocking(true).unwrap();
    let alive = matches!(link.read(&mut buf), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock);
    slow.set_nonblocking(true).unwrap();
    let again = slow.accept().is_ok();
    let why = herd
        .log("Alford")
        .lines()
        .filter(|l| l.contains("link to Slow down"))
        .map(str::to_string)
        .collect::<Vec<_>>();
    assert!(
        alive && !again,
        "Alford dropped a link that was read: {why:?}"
    );
    drop(stream);
}

#[test]
fn a_server_caught_up_by_two_neighbours_sends_each_only_what_it_did_not_show() {
    // Powell's neighbours Ann and Bea are this test's own: listeners for the links Powell
    // opens (what Powell sends them is collected), and connections to Powell that send
    // it their catch-ups, as a restarted server is sent them. Ann knows c0..c2999; Bea
    // knows d0..d49 and c0..c2899, not the last hundred of Ann's. Passing on all that is
    // news, Powell would send Bea the 3,000 clients Ann sent first; holding back from Bea
    // while Bea catches it up, it sends Bea just the hundred it did not show, and Ann the
    // fifty only Bea had.
    let mut herd = Herd::plan(
        "heldback",
        &[("Powell", &["Ann", "Bea"]), ("Ann", &[]), ("Bea", &[])],
        &[],
    );
    let sent_to = |name: &str| {
        let listener = TcpListener::bind(herd.addr(name)).unwrap();
        let got = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let lines = got.clone();
        thread::spawn(move || {
            let (link, _) = listener.accept()?;
            link.set_read_timeout(Some(PATIENCE))?;
            for line in BufReader::new(link).lines() {
                lines.lock().unwrap().push(line?);
            }
            std::io::Result::Ok(())
        });
        got
    };
    let (to_ann, to_bea) = (sent_to("Ann"), sent_to("Bea"));
    herd.start_server("Powell");
    let time = now_text();
    let at = |from: &str, client: &str, size: usize| {
        format!("AT {from} +0.1 {client} +1+2 {time} via={from} sync={size}\n")
    };
    let ann: Vec<String> = (0..3000).map(|i| format!("c{i}")).collect();
    let bea: Vec<String> = (0..50)
        .map(|i| format!("d{i}"))
        .chain((0..2900).map(|i| format!("c{i}")))
        .collect();
    let catch_up = |from: &str, clients: &[String]| -> Vec<String> {
        let first = at(from, &clients[0], clients.len());
        let rest = clients[1..].iter().map(|c| at(from, c, 1));
        std::iter::once(first).chain(rest).collect()
    };
    let (ann_lines, bea_lines) = (catch_up("Ann", &ann), catch_up("Bea", &bea));
    let handled = |n: usize, from: &str| {
        let via = format!(" via={from} sync=");
        eventually(&format!("Powell handled {n} lines from {from}"), || {
            herd.log("Powell").matches(&via).count() >= n
        });
    };
    // Bea's catch-up begins, then all of Ann's comes (all of it news: held back from Bea),
    // then the rest of Bea's (which shows Bea has most of it).
    let mut from_bea = TcpStream::connect(herd.addr("Powell")).unwrap();
    let mut from_ann = TcpStream::connect(herd.addr("Powell")).unwrap();
    from_bea.write_all(bea_lines[0].as_bytes()).unwrap();
    handled(1, "Bea");
    from_ann.write_all(ann_lines.concat().as_bytes()).unwrap();
    handled(3000, "Ann");
    from_bea
        .write_all(bea_lines[1..].concat().as_bytes())
        .unwrap();
    handled(2950, "Bea");
    let clients = |lines: &[String]| -> std::collections::BTreeSet<String> {
        let field = |l: &String| l.split(' ').nth(3).unwrap_or("").to_string();
        lines
            .iter()
            .filter(|l| l.starts_with("AT "))
            .map(field)
            .collect()
    };
    let only_ann: std::collections::BTreeSet<String> = ann[2900..].iter().cloned().collect();
    let only_bea: std::collections::BTreeSet<String> = bea[..50].iter().cloned().collect();
    eventually("Bea gets the hundred only Ann had", || {
        clients(&to_bea.lock().unwrap()).is_superset(&only_ann)
    });
    eventually("Ann gets the fifty only Bea had", || {
        clients(&to_ann.lock().unwrap()).is_superset(&only_bea)
    });
    // Time for anything more to arrive, then exactly those.
    sleep(Duration::from_millis(300));
    let (ann_got, bea_got) = (to_ann.lock().unwrap(), to_bea.lock().unwrap());
    for (name, got, lacked) in [("Bea", &bea_got, &only_ann), ("Ann", &ann_got, &only_bea)] {
        let sent = clients(got);
        assert!(
            sent == *lacked,
            "Powell sent {name} {} clients; it lacked {}, of which {} were sent",
            sent.len(),
            lacked.len(),
            sent.intersection(lacked).count()
        );
    }
    // The hundred went as a catch-up of their own, announced by its size.
    assert!(
        bea_got
            .iter()
            .any(|l| l.contains(" via=Powell sync=100 seed=")),
        "{:?}",
        &bea_got[..bea_got.len().min(3)]
    );
    let log = herd.log("Powell");
    assert!(log.contains("Bea's catch-up is over: 100 lines held back go to it"));
    // And Powell holds every client.
    let all: Vec<String> = ann.iter().chain(&bea[..50]).cloned().collect();
    let stored = stored_lines(herd.addr("Powell"), &all).unwrap();
    assert!(stored.iter().all(Option::is_some));
}

#[test]
fn a_restarted_server_hashes_with_the_key_of_its_first_catch_up() {
    // Powell starts empty. Ann (this test's own) catches it up, and her first line gives the
    // key of her store's hash: Powell takes it, to store her lines in the order they come.
    // Then Bea catches it up with another key, which Powell, holding Ann's clients, keeps
    // out of. What shows which key Powell hashes with is its own catch-up: when Bea's link
    // drops and comes back, Powell owes her one, and its first line gives Powell's key.
    let mut herd = Herd::plan(
        "seed",
        &[("Powell", &["Ann", "Bea"]), ("Ann", &[]), ("Bea", &[])],
        &[],
    );
    let ann_listener = TcpListener::bind(herd.addr("Ann")).unwrap();
    thread::spawn(move || {
        let (mut link, _) = ann_listener.accept()?;
        link.set_read_timeout(Some(PATIENCE))?;
        std::io::copy(&mut link, &mut std::io::sink())
    });
    // Bea takes Powell's first link and drops it when told; the second link's lines are
    // passed on.
    let bea_listener = TcpListener::bind(herd.addr("Bea")).unwrap();
    let (drop_first, dropped) = std::sync::mpsc::channel::<()>();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    thread::spawn(move || {
        let (first, _) = bea_listener.accept()?;
        let _ = dropped.recv();
        drop(first);
        let (second, _) = bea_listener.accept()?;
        second.set_read_timeout(Some(PATIENCE))?;
        for line in BufReader::new(second).lines() {
            if lines_tx.send(line?).is_err() {
                break;
            }
        }
        std::io::Result::Ok(())
    });
    herd.start_server("Powell");
    let time = now_text();
    let catch_up = |from: &str, n: usize, seed: &str| -> String {
        (0..n)
            .map(|i| {
                let first = if i == 0 {
                    format!("sync={n} seed={seed}")
                } else {
                    "sync=1".to_string()
                };
                format!("AT {from} +0.1 {from}{i} +1+2 {time} via={from} {first}\n")
            })
            .collect()
    };
    let handled = |n: usize, from: &str| {
        let via = format!(" via={from} sync=");
        eventually(&format!("Powell handled {n} lines from {from}"), || {
            herd.log("Powell").matches(&via).count() >= n
        });
    };
    let (ann_key, bea_key) = (
        "0123456789abcdef0011223344556677",
        "fedcba98765432108899aabbccddeeff",
    );
    let mut from_ann = TcpStream::connect(herd.addr("Powell")).unwrap();
    from_ann
        .write_all(catch_up("Ann", 100, ann_key).as_bytes())
        .unwrap();
    handled(100, "Ann");
    let mut from_bea = TcpStream::connect(herd.addr("Powell")).unwrap();
    from_bea
        .write_all(catch_up("Bea", 5, bea_key).as_bytes())
        .unwrap();
    handled(5, "Bea");
    assert!(herd.log("Powell").contains("store: hashing with Ann's key"));
    assert!(!herd.log("Powell").contains("store: hashing with Bea's key"));
    drop_first.send(()).unwrap();
    // Powell's catch-up to Bea: everything it holds, its first line with Powell's key.
    let first = loop {
        let line = lines_rx
            .recv_timeout(PATIENCE)
            .expect("Powell sent Bea no catch-up");
        if line.contains(" sync=") {
            break line;
        }
    };
    assert!(
        first.contains(" via=Powell sync=105 seed="),
        "first catch-up line: {first}"
    );
    assert!(
        first.contains(&format!(" seed={ann_key}")),
        "Powell hashes with Ann's key: {first}"
    );
}

#[test]
fn a_server_caught_up_by_two_neighbours_at_once_reads_one_catch_up_then_the_other() {
    // Ann and Bea, this test's own, each catch Powell up on 20,000 clients of their own, at
    // the same time. The catch-up that began first is read at full speed and the other a
    // trickle, so that Powell holds all the first one knows after reading little more than
    // its lines (read side by side, it would hold them only after nearly all of both).
    // Powell's log says in what order it handled them.
    const N: usize = 20_000;
    let mut herd = Herd::plan(
        "oneatatime",
        &[("Powell", &["Ann", "Bea"]), ("Ann", &[]), ("Bea", &[])],
        &[],
    );
    // Powell's own links to them are taken and read (a link that fails forgets that its
    // neighbour is catching us up); what comes over them does not matter here.
    for name in ["Ann", "Bea"] {
        let listener = TcpListener::bind(herd.addr(name)).unwrap();
        thread::spawn(move || {
            let (mut link, _) = listener.accept()?;
            link.set_read_timeout(Some(PATIENCE))?;
            std::io::copy(&mut link, &mut std::io::sink())
        });
    }
    herd.start_server("Powell");
    let time = now_text();
    let lines = |from: &str| -> String {
        (0..N)
            .map(|i| {
                let size = if i == 0 { N } else { 1 };
                format!("AT {from} +0.1 {from}{i} +1+2 {time} via={from} sync={size}\n")
            })
            .collect()
    };
    // Both at once, each from a thread of its own (the writes block while Powell has not
    // read). A catch-up that pauses for a second counts as over, so no waiting in between.
    let writers: Vec<_> = ["Ann", "Bea"]
        .into_iter()
        .map(|from| {
            let mut stream = TcpStream::connect(herd.addr("Powell")).unwrap();
            let lines = lines(from);
            thread::spawn(move || stream.write_all(lines.as_bytes()))
        })
        .collect();
    for writer in writers {
        writer.join().unwrap().unwrap();
    }
    for from in ["Ann", "Bea"] {
        let via = format!(" via={from} sync=");
        eventually(&format!("Powell handled all {from} sent"), || {
            herd.log("Powell").matches(&via).count() >= N
        });
    }
    // In the order handled: whose catch-up came first, and how much of the other's was
    // handled before its last line.
    let log = herd.log("Powell");
    let order: Vec<bool> = log
        .lines()
        .filter(|l| l.contains(" sync="))
        .map(|l| l.contains(" via=Ann sync="))
        .collect();
    let first = order[0];
    let first_done = order.iter().rposition(|&from| from == first).unwrap();
    let second_before = order[..first_done].iter().filter(|&&f| f != first).count();
    eprintln!("{second_before} of the second catch-up's {N} lines handled before the first's last");
    assert!(
        second_before < N / 4,
        "Powell handled {second_before} of the second catch-up's {N} lines before the \
         last of the first's"
    );
}

/// Longer than the stall watch's second, with room for a slow machine's timer.
const STALL_AND_MORE: Duration = Duration::from_millis(1800);

/// Asks for a small kernel receive buffer on `listener`, inherited by what it accepts.
fn set_receive_buffer(listener: &TcpListener, bytes: libc::c_int) {
    use std::os::fd::AsRawFd;
    // SAFETY: the listener's socket is open for the call; the option is one c_int that
    // lives across it, passed with its size.
    let rc = unsafe {
        libc::setsockopt(
            listener.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "setsockopt SO_RCVBUF");
}
