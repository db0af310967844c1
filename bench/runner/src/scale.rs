//! Scale scenarios (issue 10): a million distinct clients known, a neighbour restarted while
//! they are, and a herd of fifty servers. They are slow, so `all` runs them only when named
//! with `--scenarios` (smoke runs them with tiny sizes). Every herd here logs nothing
//! (`--log-level off`): a million locations make gigabytes of log records, and the figures
//! are about memory and spreading, not the disk.
//!
//! How "holds all of them" is known: the runner joins the herd as one more neighbour of
//! Powell (the `Bench` line of the topology, as in the flood-latency scenarios) and counts
//! the distinct clients Powell floods to it. A server floods a location exactly when it stores
//! a newer one (SPEC §2), so when the count reaches N, Powell holds all N (the count trails the
//! store by the time the line takes to reach the bench, so times are upper bounds).

use crate::flood;
use crate::herd::{self, FARTHEST, Herd, HerdOpts, Impl, ORIGIN, Paths, SERVERS};
use crate::procs::Proc;
use crate::scenarios::{self, Metrics, Row, Scenario, Settings, What, parse_result, row};
use std::collections::HashSet;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub enum Kind {
    /// `clients` distinct clients IAMAT'd into the default herd; RSS per stored location.
    /// With `restart`, then Powell is killed and restarted: time until it holds them all
    /// again, and the latency of other clients meanwhile.
    Million { clients: usize, restart: bool },
    /// A generated herd of `servers` (a ring with chords); flood latency to all of them.
    BigHerd { servers: usize },
}

/// The scale scenarios, in table order.
pub fn scenarios(s: &Settings) -> Vec<Scenario> {
    let n = s.scale_clients;
    let memory = vec![
        row(
            "bytes_per_location",
            "Powell: RSS per stored location (bytes)",
            1.0,
            0,
        ),
        row(
            "bytes_per_location_max",
            "largest of the five (bytes)",
            1.0,
            0,
        ),
        row("rss_kb", "Powell RSS holding them (MB)", 1.0 / 1024.0, 1),
        row("load_rate", "loading: IAMATs/s", 1.0, 0),
        row(
            "known_s",
            "loading: start to Powell holding all (s)",
            1.0,
            2,
        ),
    ];
    let mut restart = memory.clone();
    restart.extend([
        row(
            "catchup_s",
            "Powell restarted: to holding all again (s)",
            1.0,
            2,
        ),
        row("first_s", "Powell restarted: to its first line (s)", 1.0, 2),
        row(
            "client_p50_us",
            "meanwhile, other servers' IAMAT p50 (ms)",
            0.001,
            2,
        ),
        row(
            "client_p99_us",
            "meanwhile, other servers' IAMAT p99 (ms)",
            0.001,
            2,
        ),
        row("client_rate", "meanwhile, their IAMAT replies/s", 1.0, 0),
    ]);
    let hops = Row {
        ratio: false,
        ..row("hops", "hops from the origin to the farthest", 1.0, 0)
    };
    vec![
        Scenario {
            id: "scale-1m".into(),
            title: format!(
                "{n} distinct clients IAMAT'd to {ORIGIN} (64 conn pipelined), logging off"
            ),
            what: What::Scale(Kind::Million {
                clients: n,
                restart: false,
            }),
            rows: memory,
        },
        Scenario {
            id: "scale-restart".into(),
            title: format!(
                "{FARTHEST} killed and restarted while {n} clients are known; {CLIENT_RATE} IAMATs/s from 16 clients at the other four"
            ),
            what: What::Scale(Kind::Million {
                clients: n,
                restart: true,
            }),
            rows: restart,
        },
        Scenario {
            id: "scale-herd".into(),
            title: format!(
                "a herd of {} (ring with chords), flood to every server, logging off",
                s.big_herd
            ),
            what: What::Scale(Kind::BigHerd {
                servers: s.big_herd,
            }),
            rows: vec![
                row("idle_p50_us", "idle: p50 (ms)", 0.001, 2),
                row("idle_p99_us", "idle: p99 (ms)", 0.001, 2),
                row(
                    "load_p50_us",
                    "under 64-conn IAMAT load: p50 (ms)",
                    0.001,
                    2,
                ),
                row("load_p99_us", "under load: p99 (ms)", 0.001, 2),
                row("load_lost", "under load: probes lost", 1.0, 0),
                row("load_rate", "load replies/s", 1.0, 0),
                hops,
            ],
        },
    ]
}

pub fn run(
    kind: &Kind,
    imp: &Impl,
    s: &Settings,
    paths: &Paths,
    stub_url: &str,
    tag: &str,
) -> Result<Metrics, String> {
    match kind {
        Kind::Million { clients, restart } => {
            million(imp, *clients, *restart, paths, stub_url, tag)
        }
        Kind::BigHerd { servers } => big_herd(imp, *servers, s, paths, stub_url, tag),
    }
}

/// Resident memory of a process in kB (`/proc/PID/statm`: resident pages), 0 if gone.
fn rss_kb(pid: u32) -> u64 {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u64;
    std::fs::read_to_string(format!("/proc/{pid}/statm"))
        .ok()
        .and_then(|t| t.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * page / 1024)
}

fn million(
    imp: &Impl,
    n: usize,
    restart: bool,
    paths: &Paths,
    stub_url: &str,
    tag: &str,
) -> Result<Metrics, String> {
    let ports = herd::free_ports(SERVERS.len() + 1)?;
    let bench = SocketAddr::from(([127, 0, 0, 1], ports[SERVERS.len()]));
    // Client ids of the load are PREFIX-CONN.SEQ (loadgen --distinct).
    let prefix = format!("m{}", std::process::id());
    let counter = Counter::listen(bench, &format!("{prefix}-"))?;
    let opts = HerdOpts {
        places_url: stub_url.to_string(),
        log_off: true,
        bench_port: Some(bench.port()),
        ..HerdOpts::default()
    };
    let mut h = herd::start(imp, paths, &opts, tag, &ports[..SERVERS.len()])?;
    let before: Vec<u64> = h.procs.iter().map(|p| rss_kb(p.pid())).collect();
    counter.arm(n, false);
    let t_load = Instant::now();
    let args = [
        "run".to_string(),
        format!("--target {}", h.addr(ORIGIN)),
        "--distinct".into(),
        format!("--id-prefix {prefix}"),
        format!("--requests {n}"),
        "--conns 64 --window 16 --duration 3600".into(),
    ];
    let load = scenarios::loadgen(
        paths,
        &args,
        &format!("{tag}-load"),
        Duration::from_secs(900),
    )?;
    let answered = load.get("all_replies").copied().unwrap_or(0.0);
    if answered < n as f64 {
        return Err(format!("only {answered} of {n} IAMATs were answered"));
    }
    let known = counter.wait(Duration::from_secs(300)).map_err(|have| {
        format!("{FARTHEST} learned only {have} of {n} clients within 300 s of the load")
    })?;
    // Let the echoes of the last lines settle everywhere before reading memory.
    std::thread::sleep(Duration::from_secs(1));
    h.check_alive()?;
    let mut m = Metrics::new();
    let mut per_location = Vec::new();
    for (p, b) in h.procs.iter().zip(&before) {
        let after = rss_kb(p.pid());
        per_location.push((
            p.name.clone(),
            after.saturating_sub(*b) as f64 * 1024.0 / n as f64,
        ));
        if p.name == FARTHEST {
            m.insert("rss_kb".into(), after as f64);
        }
    }
    let of = |name: &str| per_location.iter().find(|(s, _)| s == name).map(|x| x.1);
    m.insert("bytes_per_location".into(), of(FARTHEST).unwrap_or(0.0));
    let max = per_location.iter().map(|x| x.1).fold(0.0, f64::max);
    m.insert("bytes_per_location_max".into(), max);
    m.insert("load_rate".into(), load.get("rate").copied().unwrap_or(0.0));
    m.insert("known_s".into(), (known - t_load).as_secs_f64());
    eprintln!(
        "  {n} clients, RSS per location (bytes): {}",
        per_location
            .iter()
            .map(|(s, b)| format!("{s} {b:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if restart {
        restart_farthest(&mut h, n, &counter, paths, tag, &mut m)?;
    }
    Ok(m)
}

/// IAMATs per second of the clients at the other servers while Powell catches up: a steady
/// load that leaves the herd room, so the catch-up is measured with clients around, not
/// against as much load as the herd can take.
const CLIENT_RATE: u32 = 2000;

/// Kills and restarts Powell while clients send `CLIENT_RATE` IAMATs a second (16
/// connections, one request in flight each, every IAMAT newer and flooded) to the other four
/// servers; measures the time until Powell holds all `n` clients again and the clients'
/// latency meanwhile (from just before the kill until then).
fn restart_farthest(
    h: &mut Herd,
    n: usize,
    counter: &Counter,
    paths: &Paths,
    tag: &str,
    m: &mut Metrics,
) -> Result<(), String> {
    let others: Vec<String> = h
        .addrs
        .iter()
        .filter(|(name, _)| name != FARTHEST)
        .map(|(_, a)| a.to_string())
        .collect();
    let stop_file = paths.work.join(format!("{tag}.stop"));
    let out_path = paths.work.join(format!("{tag}-clients.loadgen.out"));
    let warmup = 0.5;
    let cmd = format!(
        "{} run --target {} --conns 16 --window 1 --rate {CLIENT_RATE} --warmup {warmup} --duration 3600 --stop-file {} --id-prefix r{}",
        paths.bin.join("loadgen").display(),
        others.join(","),
        stop_file.display(),
        std::process::id()
    );
    let mut clients = Proc::spawn("loadgen-clients", &cmd, &out_path, &[])?;
    // The measured window opens at the end of the warm-up, just before the kill.
    std::thread::sleep(Duration::from_secs_f64(warmup + 0.05));
    counter.arm(n, true);
    let restarted = h.kill_and_restart(FARTHEST)?;
    let caught_up = counter.wait(Duration::from_secs(300));
    let _ = std::fs::write(&stop_file, b"");
    let status = clients.wait_for(Duration::from_secs(30));
    let caught_up = caught_up.map_err(|have| {
        format!("restarted {FARTHEST} learned only {have} of {n} clients within 300 s")
    })?;
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    if !status.is_ok_and(|s| s.success()) {
        return Err(format!(
            "the clients' load failed (see {})",
            out_path.display()
        ));
    }
    let load = parse_result(&output).ok_or("no RESULT line from the clients' load")?;
    h.check_alive()?;
    m.insert("catchup_s".into(), (caught_up - restarted).as_secs_f64());
    if let Some(first) = counter.first() {
        m.insert("first_s".into(), (first - restarted).as_secs_f64());
    }
    for (from, to) in [
        ("p50_us", "client_p50_us"),
        ("p99_us", "client_p99_us"),
        ("rate", "client_rate"),
        ("errors", "client_errors"),
    ] {
        m.insert(to.into(), load.get(from).copied().unwrap_or(0.0));
    }
    Ok(())
}

/// The bench as a neighbour: counts the distinct clients (of one id prefix) in the AT lines
/// it is sent, on connections accepted since it was last armed.
struct Counter {
    state: Arc<Mutex<Count>>,
    stop: Arc<AtomicBool>,
}

#[derive(Default)]
struct Count {
    seen: HashSet<u64>,
    target: usize,
    /// Connections are numbered as accepted; only those from this number on count.
    from_conn: usize,
    next_conn: usize,
    first: Option<Instant>,
    reached: Option<Instant>,
}

impl Counter {
    fn listen(addr: SocketAddr, prefix: &str) -> Result<Counter, String> {
        let listener = TcpListener::bind(addr).map_err(|e| format!("bench {addr}: {e}"))?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let state = Arc::new(Mutex::new(Count::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, sp, prefix) = (Arc::clone(&state), Arc::clone(&stop), prefix.to_string());
        std::thread::spawn(move || {
            while !sp.load(Ordering::Relaxed) {
                let Ok((stream, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                };
                let conn = {
                    let mut c = st.lock().unwrap_or_else(|e| e.into_inner());
                    c.next_conn += 1;
                    c.next_conn - 1
                };
                let (st, sp, prefix) = (Arc::clone(&st), Arc::clone(&sp), prefix.clone());
                std::thread::spawn(move || count_link(stream, conn, &prefix, &st, &sp));
            }
        });
        Ok(Counter { state, stop })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Count> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts counting afresh towards `target`; with `new_links`, only on connections
    /// accepted from now on (those of a restarted server).
    fn arm(&self, target: usize, new_links: bool) {
        let mut c = self.lock();
        c.seen.clear();
        c.target = target;
        if new_links {
            c.from_conn = c.next_conn;
        }
        c.first = None;
        c.reached = None;
    }

    /// When the target was reached, or (as the error) how many were seen by `limit`.
    fn wait(&self, limit: Duration) -> Result<Instant, usize> {
        let deadline = Instant::now() + limit;
        loop {
            {
                let c = self.lock();
                if let Some(t) = c.reached {
                    return Ok(t);
                }
                if Instant::now() >= deadline {
                    return Err(c.seen.len());
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn first(&self) -> Option<Instant> {
        self.lock().first
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Reads one link to the bench; each read is timestamped as it returns, and the clients of
/// its complete lines are counted under one lock.
fn count_link(
    mut stream: TcpStream,
    conn: usize,
    prefix: &str,
    state: &Mutex<Count>,
    stop: &AtomicBool,
) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = vec![0u8; 256 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    let mut keys = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let n = match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(_) => return,
        };
        let at = Instant::now();
        pending.extend_from_slice(&buf[..n]);
        let end = pending
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1);
        keys.clear();
        keys.extend(
            pending[..end]
                .split(|&b| b == b'\n')
                .filter_map(|line| client_key(line, prefix)),
        );
        pending.drain(..end);
        let mut c = state.lock().unwrap_or_else(|e| e.into_inner());
        if conn < c.from_conn || c.reached.is_some() {
            continue;
        }
        c.first.get_or_insert(at);
        c.seen.extend(keys.iter().copied());
        if c.seen.len() >= c.target {
            c.reached = Some(at);
        }
    }
}

/// The client of an AT line `AT server skew PREFIXCONN.SEQ loc time ...` as one number, if
/// it is one of the load's.
fn client_key(line: &[u8], prefix: &str) -> Option<u64> {
    let line = std::str::from_utf8(line).ok()?;
    let mut fields = line.split_ascii_whitespace();
    if fields.next()? != "AT" {
        return None;
    }
    let (conn, seq) = fields.nth(2)?.strip_prefix(prefix)?.split_once('.')?;
    let (conn, seq): (u64, u64) = (conn.parse().ok()?, seq.parse().ok()?);
    Some((conn << 40) | seq)
}

/// A ring of `n` servers with chords: server i is linked to i+1 and to i+7 (mod n), so
/// every server has four neighbours (for n > 14) and the herd has 2n links.
pub fn ring_with_chords(n: usize) -> Vec<(usize, usize)> {
    let mut links = Vec::new();
    for i in 0..n {
        for step in [1, 7] {
            let j = (i + step) % n;
            let link = (i.min(j), i.max(j));
            if i != j && !links.contains(&link) {
                links.push(link);
            }
        }
    }
    links
}

/// The most hops a flood from server 0 takes to reach any server.
fn farthest_hops(n: usize, links: &[(usize, usize)]) -> usize {
    let mut dist = vec![usize::MAX; n];
    dist[0] = 0;
    let mut queue = std::collections::VecDeque::from([0]);
    while let Some(a) = queue.pop_front() {
        for &(x, y) in links {
            let b = if x == a {
                y
            } else if y == a {
                x
            } else {
                continue;
            };
            if dist[b] == usize::MAX {
                dist[b] = dist[a] + 1;
                queue.push_back(b);
            }
        }
    }
    dist.into_iter()
        .filter(|&d| d != usize::MAX)
        .max()
        .unwrap_or(0)
}

/// The topology of the big herd, with the bench a neighbour of every server.
fn big_topology(names: &[String], ports: &[u16], links: &[(usize, usize)], bench: u16) -> String {
    let mut text = String::from("# written by bench-runner: a ring with chords\n");
    for (i, (name, port)) in names.iter().zip(ports).enumerate() {
        let neighbours: Vec<&str> = links
            .iter()
            .filter(|(a, _)| *a == i)
            .map(|(_, b)| names[*b].as_str())
            .collect();
        text.push_str(&format!(
            "{name} 127.0.0.1:{port} {}\n",
            neighbours.join(" ")
        ));
    }
    text.push_str(&format!(
        "{} 127.0.0.1:{bench} {}\n",
        herd::BENCH,
        names.join(" ")
    ));
    text
}

/// Flood latency from server 0 to every server of a big herd, idle and under the
/// 64-connection pipelined IAMAT load, each on a fresh herd. The bench is a neighbour of
/// every server and a probe has arrived when all of them have flooded it there.
fn big_herd(
    imp: &Impl,
    n: usize,
    s: &Settings,
    paths: &Paths,
    stub_url: &str,
    tag: &str,
) -> Result<Metrics, String> {
    let names: Vec<String> = (0..n).map(|i| format!("S{i:02}")).collect();
    let links = ring_with_chords(n);
    let mut m = Metrics::new();
    m.insert("hops".into(), farthest_hops(n, &links) as f64);
    let opts = HerdOpts {
        places_url: stub_url.to_string(),
        log_off: true,
        ..HerdOpts::default()
    };
    for (phase, load_conns) in [("idle", 0), ("load", 64)] {
        let ports = herd::free_ports(n + 1)?;
        let bench = SocketAddr::from(([127, 0, 0, 1], ports[n]));
        let addrs: Vec<SocketAddr> = ports[..n]
            .iter()
            .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
            .collect();
        let text = big_topology(&names, &ports[..n], &links, ports[n]);
        let probe = flood::Probe {
            origin: addrs[0],
            bench,
            wait: &addrs,
            expect: n,
            load_conns,
        };
        let run_tag = format!("{tag}-{phase}");
        let r = flood::run(&probe, s, paths, &run_tag, || {
            let herd = Herd {
                addrs: names.iter().cloned().zip(addrs.iter().copied()).collect(),
                procs: Vec::new(),
                cmds: Vec::new(),
            };
            let dir = paths.work.join(&run_tag);
            herd::start_servers(imp, paths, &opts, herd, &dir, &vec![text.clone(); n])
        })?;
        for key in ["p50_us", "p99_us", "lost"] {
            m.insert(format!("{phase}_{key}"), r.get(key).copied().unwrap_or(0.0));
        }
        if load_conns > 0 {
            m.insert(
                "load_rate".into(),
                r.get("load_rate").copied().unwrap_or(0.0),
            );
        }
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_with_chords_links_every_server_four_ways() {
        let links = ring_with_chords(50);
        assert_eq!(links.len(), 100);
        for i in 0..50 {
            let degree = links.iter().filter(|(a, b)| *a == i || *b == i).count();
            assert_eq!(degree, 4, "server {i}");
        }
        let hops = farthest_hops(50, &links);
        assert!((3..=10).contains(&hops), "{hops}");
        // A plain ring of 8 (the chord is the ring link the other way round): 4 hops across.
        assert_eq!(farthest_hops(8, &ring_with_chords(8)), 4);
    }

    #[test]
    fn client_keys() {
        assert_eq!(
            client_key(b"AT Hamilton +0.1 m7-3.42 +1+2 3.5", "m7-"),
            Some((3 << 40) | 42)
        );
        assert_eq!(client_key(b"AT Hamilton +0.1 r7-3 +1+2 3.5", "m7-"), None);
        assert_eq!(client_key(b"IAMAT m7-3.42 +1+2 3.5", "m7-"), None);
    }
}
