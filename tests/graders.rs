//! The course's two public sample grading scripts, replayed against the real binary
//! (issue 9). Written from their description, the way they drive a herd:
//! - every server is its own process, started by the script;
//! - every command is one connection: write the line (no final newline), half-close, read;
//! - a server is stopped the `lsof -ti:PORT | xargs kill` way: SIGTERM to *every* process
//!   holding a socket on its port (of those this test started; found through `/proc`, so
//!   nothing needs installing), which with persistent links would include its neighbours;
//! - the servers run as the README's "Grading scripts" section says:
//!   `--links per-update --catch-up off`.
//!
//! Each script also runs with a CPU hog beside it (a busy thread per core), since a loaded
//! machine is where a flood used to lose its race with the client.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;

use common::*;

/// How the course's graders run the herd (README, "Grading scripts").
const GRADER_ARGS: &[&str] = &["--links", "per-update", "--catch-up", "off"];

/// Winter 2022: Clark talks with Jaquez and Juzang; Bernard with everyone but Clark; Juzang
/// with Johnson. Listed in port order (9991–9995 in the script).
const WINTER_2022: &[(&str, &[&str])] = &[
    ("Juzang", &["Clark", "Johnson"]),
    ("Bernard", &["Jaquez", "Juzang", "Johnson"]),
    ("Jaquez", &["Clark"]),
    ("Johnson", &[]),
    ("Clark", &[]),
];

/// 2020: Hill talks with Jaquez and Smith; Singleton with everyone but Hill; Smith with
/// Campbell. Listed in port order (8000–8004 in the script), which is also name order there.
const SPRING_2020: &[(&str, &[&str])] = &[
    ("Hill", &["Jaquez", "Smith"]),
    ("Jaquez", &["Singleton"]),
    ("Smith", &["Campbell", "Singleton"]),
    ("Campbell", &["Singleton"]),
    ("Singleton", &[]),
];

/// How often the race of Winter 2022's test 2 is run: an IAMAT at Clark, then at once a
/// WHATSAT at Jaquez, which must already hold the new location.
const RACES: usize = 200;

// ---- what the scripts do to processes ----

/// The inodes of the TCP sockets (listening or connected) with `port` at either end, from
/// `/proc/net/tcp` and `/proc/net/tcp6`: what `lsof -i:PORT` matches.
fn socket_inodes(port: u16) -> HashSet<u64> {
    let mut inodes = HashSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for row in text.lines().skip(1) {
            let cols: Vec<&str> = row.split_whitespace().collect();
            if cols.len() < 10 {
                continue;
            }
            let port_of = |end: &str| {
                end.rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
            };
            let inode: u64 = cols[9].parse().unwrap_or(0);
            // Inode 0: a socket no process holds any more (TIME_WAIT).
            if inode != 0 && (port_of(cols[1]) == Some(port) || port_of(cols[2]) == Some(port)) {
                inodes.insert(inode);
            }
        }
    }
    inodes
}

/// True when process `pid` holds one of `inodes` open (`/proc/<pid>/fd/* -> socket:[inode]`).
fn holds(pid: u32, inodes: &HashSet<u64>) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path()).is_ok_and(|target| {
            let target = target.to_string_lossy();
            target
                .strip_prefix("socket:[")
                .and_then(|rest| rest.strip_suffix(']'))
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|n| inodes.contains(&n))
        })
    })
}

/// `lsof -ti:PORT | xargs kill` for server `name`'s port: SIGTERM to every server of this
/// herd that holds a socket on that port, waiting for each to exit. (Only the processes this
/// test started are looked at and signalled: the machine is shared.) Returns who was
/// stopped: with per-update links, only `name`; with persistent links it would be `name`
/// and its neighbours.
fn lsof_kill(herd: &mut Herd, name: &str) -> Vec<String> {
    let inodes = socket_inodes(herd.addr(name).port());
    let mut names: Vec<String> = herd.addrs.keys().cloned().collect();
    names.sort();
    let mut stopped = Vec::new();
    for server in names {
        if herd.running(&server) && holds(herd.pid(&server), &inodes) {
            herd.terminate(&server);
            stopped.push(server);
        }
    }
    stopped
}

/// Stops `name` the grading scripts' way and checks that nothing else went with it.
fn stop(herd: &mut Herd, name: &str) {
    assert_eq!(lsof_kill(herd, name), [name], "lsof-style stop of {name}");
}

/// A busy thread per core until dropped: the load under which a flood used to lose its race.
/// One hog at a time (tests run in parallel): a busy thread per core, not several.
struct CpuHog {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<u64>>,
    _one_at_a_time: MutexGuard<'static, ()>,
}

impl CpuHog {
    fn start() -> CpuHog {
        static HOGS: Mutex<()> = Mutex::new(());
        let one_at_a_time = HOGS.lock().unwrap_or_else(|e| e.into_inner());
        let stop = Arc::new(AtomicBool::new(false));
        let cores = thread::available_parallelism().map_or(2, |n| n.get());
        let threads = (0..cores)
            .map(|_| {
                let stop = Arc::clone(&stop);
                thread::spawn(move || {
                    let mut spins = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        spins = std::hint::black_box(spins.wrapping_add(1));
                    }
                    spins
                })
            })
            .collect();
        CpuHog {
            stop,
            threads,
            _one_at_a_time: one_at_a_time,
        }
    }
}

impl Drop for CpuHog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

// ---- Winter 2022 ----

/// IAMAT with the script's numbers: no final newline, the client's clock now.
fn iamat(herd: &Herd, server: &str, client: &str, location: &str) -> String {
    let reply = herd.ask(server, &format!("IAMAT {client} {location} {}", now_text()));
    assert!(reply.starts_with(&format!("AT {server} ")), "{reply}");
    reply.trim_end().to_string()
}

fn winter_2022() {
    let mut herd = Herd::plan("winter2022", WINTER_2022, GRADER_ARGS);
    for (name, _) in WINTER_2022 {
        herd.start_server(name);
    }
    // Test 1 in short: a location reported anywhere is known everywhere.
    let first = iamat(
        &herd,
        "Johnson",
        "kiwi.cs.ucla.edu",
        "+34.068930-118.445127",
    );
    for (name, _) in WINTER_2022 {
        let reply = herd.ask(name, "WHATSAT kiwi.cs.ucla.edu 10 5");
        assert_eq!(first_line(&reply), first, "{name}");
        assert!(reply.ends_with("}\n\n"), "{name}: {reply}");
    }

    // Test 2: stop Juzang and Bernard, a new location at Clark, at once a WHATSAT at Jaquez
    // (Clark's neighbour), which must give the new location, never Johnson's old one.
    stop(&mut herd, "Juzang");
    stop(&mut herd, "Bernard");
    let mut lost = Vec::new();
    for i in 0..RACES {
        let location = format!("+34.068940-119.{:06}", 445127 + i);
        let reply = iamat(&herd, "Clark", "kiwi.cs.ucla.edu", &location);
        let answer = herd.ask("Jaquez", "WHATSAT kiwi.cs.ucla.edu 10 5");
        if first_line(&answer) != reply {
            lost.push(format!("{i}: {}", first_line(&answer)));
        }
    }
    assert!(
        lost.is_empty(),
        "Jaquez answered stale:\n{}",
        lost.join("\n")
    );
    // Johnson is cut off: it still has the first location.
    let johnson = herd.ask("Johnson", "WHATSAT kiwi.cs.ucla.edu 10 5");
    assert_eq!(first_line(&johnson), first);
    println!("Winter 2022: {RACES} immediate WHATSATs at Jaquez, all saw Clark's new location");
}

#[test]
fn winter_2022_script() {
    winter_2022();
}

#[test]
fn winter_2022_script_with_cpu_hog() {
    let _hog = CpuHog::start();
    winter_2022();
}

// ---- 2020 ----

/// The 2020 script's comparison of two answers: the same number of fields and the same first
/// six characters (so `AT Hill …` matches any other `AT Hill …` line, even an older one).
fn same(a: &str, b: &str) -> bool {
    a.split_whitespace().count() == b.split_whitespace().count()
        && a.chars().take(6).eq(b.chars().take(6))
}

/// The 2020 script's loop: for each server `i` in order, stop it; for each later server `j`,
/// stop it, report `client_new_<i>` to the remaining server with the lowest port, ask that
/// server and then the other two at once, restart `j`; after the inner loop, restart `i`.
/// Returns, per round, whether the other two answered the same as the first.
fn spring_2020() -> Vec<bool> {
    let mut herd = Herd::plan("spring2020", SPRING_2020, GRADER_ARGS);
    let names: Vec<&str> = SPRING_2020.iter().map(|(n, _)| *n).collect();
    for name in &names {
        herd.start_server(name);
    }
    let basic = iamat(&herd, "Hill", "client", "+34.068930-118.445127");
    assert_eq!(
        first_line(&herd.ask("Hill", "WHATSAT client 10 5")),
        basic,
        "basic WHATSAT"
    );
    let mut rounds = Vec::new();
    for (i, dropped_i) in names.iter().enumerate() {
        if i + 1 == names.len() {
            break;
        }
        stop(&mut herd, dropped_i);
        for dropped_j in &names[i + 1..] {
            stop(&mut herd, dropped_j);
            let mut remaining: Vec<&str> = names
                .iter()
                .copied()
                .filter(|n| n != dropped_i && n != dropped_j)
                .collect();
            remaining.sort_by_key(|n| herd.addr(n).port());
            let client = format!("client_new_{i}");
            iamat(&herd, remaining[0], &client, "+37.551379+126.993287");
            let whatsat = format!("WHATSAT {client} 20 10");
            let local = herd.ask(remaining[0], &whatsat);
            let flooded: Vec<String> = remaining[1..]
                .iter()
                .map(|n| herd.ask(n, &whatsat))
                .collect();
            let agree = flooded
                .iter()
                .all(|f| same(first_line(f), first_line(&local)));
            println!(
                "  {dropped_i}+{dropped_j} down: {} at {}; {}",
                client,
                remaining[0],
                if agree { "flooded" } else { "not flooded" }
            );
            rounds.push(agree);
            herd.start_server(dropped_j);
        }
        herd.start_server(dropped_i);
    }
    rounds
}

/// The rounds the 2020 script expects to agree: exactly those whose two stopped servers
/// leave the other three connected. Worked out from the topology, not written down.
fn connected_rounds() -> Vec<bool> {
    let names: Vec<&str> = SPRING_2020.iter().map(|(n, _)| *n).collect();
    let linked = |a: &str, b: &str| {
        SPRING_2020
            .iter()
            .any(|(n, ns)| (*n == a && ns.contains(&b)) || (*n == b && ns.contains(&a)))
    };
    let mut out = Vec::new();
    for i in 0..names.len() {
        for j in i + 1..names.len() {
            let rest: Vec<&str> = (0..names.len())
                .filter(|&k| k != i && k != j)
                .map(|k| names[k])
                .collect();
            // Three servers are connected when at least two of their three links exist.
            let links = [(0, 1), (0, 2), (1, 2)]
                .iter()
                .filter(|&&(a, b)| linked(rest[a], rest[b]))
                .count();
            out.push(links >= 2);
        }
    }
    out
}

fn spring_2020_checked() {
    let expected = connected_rounds();
    assert_eq!(
        expected.iter().filter(|&&c| c).count(),
        7,
        "the script's 7/3"
    );
    let rounds = spring_2020();
    assert_eq!(
        rounds, expected,
        "rounds that agreed (the script expects 7 of 10)"
    );
}

#[test]
fn spring_2020_script() {
    spring_2020_checked();
}

#[test]
fn spring_2020_script_with_cpu_hog() {
    let _hog = CpuHog::start();
    spring_2020_checked();
}

// ---- --catch-up off, directly ----

/// With `--catch-up off`, a restarted server learns only what is reported after it is back
/// (and with the default, `on`, it learns what it missed: tests/herd.rs).
fn catch_up_off(links: &str) {
    let mut herd = Herd::plan(
        &format!("nocatchup-{links}"),
        &[("Alford", &["Bolden"]), ("Bolden", &[])],
        &["--links", links, "--catch-up", "off"],
    );
    herd.start_server("Alford");
    herd.start_server("Bolden");
    let links_up = |herd: &Herd| herd.log("Alford").matches("link to Bolden up").count();
    if links == "persistent" {
        eventually("Alford's link to Bolden is up", || links_up(&herd) == 1);
    }
    herd.kill("Bolden");
    let missed = iamat(&herd, "Alford", "missed", "+1+2");
    herd.start_server("Bolden");
    if links == "persistent" {
        // Floods while the link is down are not kept for it: wait until it is back.
        eventually("Alford's link to Bolden is back", || links_up(&herd) == 2);
    }
    let fresh = iamat(&herd, "Alford", "fresh", "+3+4");
    eventually("Bolden learns what was reported after its restart", || {
        first_line(&herd.ask("Bolden", "WHATSAT fresh 1 1")) == fresh
    });
    // Long enough for a reconnect and any catch-up to have come.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let answer = herd.ask("Bolden", "WHATSAT missed 1 1");
    assert!(answer.starts_with("? "), "Bolden was caught up: {answer}");
    assert!(
        herd.ask("Alford", "WHATSAT missed 1 1")
            .starts_with(&missed)
    );
}

#[test]
fn catch_up_off_per_update() {
    catch_up_off("per-update");
}

#[test]
fn catch_up_off_persistent() {
    catch_up_off("persistent");
}

// ---- the race, further away ----

/// The 2020 script asks the two other servers right after the IAMAT's reply, and one of them
/// may be two hops away holding an older location from another server (its round 2). So in
/// per-update mode the reply waits until the whole flood is handled: on a chain of four,
/// the far end already has every new location when the client reads its reply.
#[test]
fn per_update_flood_is_everywhere_before_the_reply() {
    let chain: &[(&str, &[&str])] = &[("A", &["B"]), ("B", &["C"]), ("C", &["D"]), ("D", &[])];
    let mut herd = Herd::plan("chain", chain, GRADER_ARGS);
    for (name, _) in chain {
        herd.start_server(name);
    }
    let _hog = CpuHog::start();
    let mut stale = Vec::new();
    for i in 0..RACES {
        let (origin, far) = if i % 2 == 0 { ("A", "D") } else { ("D", "A") };
        let reply = iamat(&herd, origin, "x", &format!("+1.{i:04}+2"));
        let answer = herd.ask(far, "WHATSAT x 10 1");
        if first_line(&answer) != reply {
            stale.push(format!("{i}: {}", first_line(&answer)));
        }
    }
    assert!(
        stale.is_empty(),
        "three hops away, stale:\n{}",
        stale.join("\n")
    );
}
