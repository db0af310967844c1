//! Shared test support: start herds of the real binary on free loopback ports, talk to them,
//! and always clean up. Every wait here is bounded; every process started is killed on drop.
#![allow(dead_code)] // each test binary uses a different part of this module

pub mod http_stub;
pub mod netns;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::{self, sleep};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_proxy-herd");

/// How long any single wait in a test may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// The default herd's links (SPEC §1), as `(server, neighbours named on its line)`.
pub const DEFAULT_HERD: &[(&str, &[&str])] = &[
    ("Alford", &["Parker", "Powell"]),
    ("Bolden", &["Parker", "Powell"]),
    ("Hamilton", &["Parker"]),
    ("Parker", &[]),
    ("Powell", &[]),
];

/// The ports [`free_ports`] hands out: below Linux's ephemeral range (32768 and up). A port
/// from that range, found free and released, can be given to an outgoing connect (another
/// test's, or the herd's own links) before the server it was meant for binds it: the server
/// then fails to start, or a link dialled before its server is up connects to itself.
const PORTS: std::ops::Range<u16> = 20_000..32_000;

/// `n` distinct free ports on 127.0.0.1, in ascending order: the servers of a planned herd
/// get ports in the order they are listed, as a grading script's do. Each is checked free by
/// binding it (all held at once, then released for the servers to take). They come from
/// one counter for the whole test binary, starting at a random place in [`PORTS`], so that
/// tests running side by side never pick the same port.
pub fn free_ports(n: usize) -> Vec<u16> {
    use std::hash::{BuildHasher, RandomState};
    static NEXT: AtomicUsize = AtomicUsize::new(usize::MAX);
    let span = usize::from(PORTS.end - PORTS.start);
    let _ = NEXT.compare_exchange(
        usize::MAX,
        RandomState::new().hash_one(std::process::id()) as usize % span,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    let mut listeners = Vec::with_capacity(n);
    for _ in 0..span {
        if listeners.len() == n {
            break;
        }
        let port = PORTS.start + (NEXT.fetch_add(1, Ordering::SeqCst) % span) as u16;
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            listeners.push(listener);
        }
    }
    assert_eq!(listeners.len(), n, "no {n} free ports in {PORTS:?}");
    let mut ports: Vec<u16> = listeners
        .iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect();
    ports.sort_unstable();
    ports
}

/// A fresh, empty scratch directory for one test.
pub fn scratch_dir(tag: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let dir =
        std::env::temp_dir().join(format!("proxy-herd-test-{}-{tag}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Polls `check` until it returns true or `PATIENCE` runs out.
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if check() {
            return;
        }
        sleep(Duration::from_millis(20));
    }
    panic!("timed out waiting for: {what}");
}

/// A herd of real server processes, stopped (killed) when dropped.
pub struct Herd {
    /// Where the topology file and logs live.
    pub dir: PathBuf,
    /// The topology file.
    pub topology: PathBuf,
    /// Every server's address.
    pub addrs: HashMap<String, SocketAddr>,
    /// Extra command-line arguments given to every server.
    pub args: Vec<String>,
    /// The network namespace each server runs in, where it has one (tests/hosts.rs); the
    /// others run in the test's own.
    pub netns: HashMap<String, String>,
    children: HashMap<String, Child>,
}

impl Herd {
    /// Writes a topology for `servers` on free ports, without starting anything.
    pub fn plan(tag: &str, servers: &[(&str, &[&str])], args: &[&str]) -> Herd {
        let addrs: Vec<SocketAddr> = free_ports(servers.len())
            .into_iter()
            .map(|port| SocketAddr::from(([127, 0, 0, 1], port)))
            .collect();
        Herd::plan_at(tag, servers, &addrs, args)
    }

    /// Writes a topology for `servers` at the given addresses (one each, in order), without
    /// starting anything.
    pub fn plan_at(
        tag: &str,
        servers: &[(&str, &[&str])],
        at: &[SocketAddr],
        args: &[&str],
    ) -> Herd {
        let dir = scratch_dir(tag);
        let mut text = String::from("# written by the test\n");
        let mut addrs = HashMap::new();
        for ((name, neighbours), addr) in servers.iter().zip(at) {
            text.push_str(&format!("{name} {addr} {}\n", neighbours.join(" ")));
            addrs.insert(name.to_string(), *addr);
        }
        let topology = dir.join("topology.txt");
        std::fs::write(&topology, text).unwrap();
        Herd {
            dir,
            topology,
            addrs,
            args: args.iter().map(|s| s.to_string()).collect(),
            netns: HashMap::new(),
            children: HashMap::new(),
        }
    }

    /// Plans and starts every server, and waits until each accepts connections.
    pub fn start(tag: &str, servers: &[(&str, &[&str])], args: &[&str]) -> Herd {
        let mut herd = Herd::plan(tag, servers, args);
        for (name, _) in servers {
            herd.start_server(name);
        }
        if !args.contains(&"per-update") {
            herd.wait_linked(servers);
        }
        herd
    }

    /// Waits until every persistent link of `servers` is up. A server started before its
    /// neighbour found it refusing and is backing off; until it reconnects, its floods wait
    /// for the catch-up, and a test that floods at once would race the backoff.
    pub fn wait_linked(&self, servers: &[(&str, &[&str])]) {
        for (name, neighbours) in servers {
            for other in neighbours.iter() {
                for (from, to) in [(name, other), (other, name)] {
                    let needle = format!("link to {to} up");
                    eventually(&format!("{from}: {needle}"), || {
                        self.log(from).contains(&needle)
                    });
                }
            }
        }
    }

    /// The default five-server herd.
    pub fn default_herd(tag: &str, args: &[&str]) -> Herd {
        Herd::start(tag, DEFAULT_HERD, args)
    }

    /// The arguments that run server `name` of this herd (without the program).
    pub fn server_args(&self, name: &str) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = vec![
            name.into(),
            "--topology".into(),
            self.topology.clone().into(),
            "--log-dir".into(),
            self.dir.join("logs").into(),
        ];
        args.extend(self.args.iter().map(Into::into));
        args
    }

    /// The command that runs server `name` of this herd (`ip netns exec NS proxy-herd ...`
    /// for a server in a namespace: `ip` enters it and then execs the server, same pid).
    pub fn command(&self, name: &str) -> Command {
        let mut cmd = match self.netns.get(name) {
            Some(ns) => {
                let mut cmd = Command::new("ip");
                cmd.args(["netns", "exec", ns, BIN]);
                cmd
            }
            None => Command::new(BIN),
        };
        cmd.args(self.server_args(name))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    }

    /// Starts (or restarts) one server and waits until it accepts connections.
    pub fn start_server(&mut self, name: &str) {
        let child = self.command(name).spawn().expect("cannot start proxy-herd");
        self.children.insert(name.to_string(), child);
        let addr = self.addr(name);
        eventually(&format!("{name} accepting on {addr}"), || {
            self.inside(name, || TcpStream::connect(addr).is_ok())
        });
    }

    /// Runs `f` where server `name` can be reached: in its network namespace if it has one
    /// (on a thread that enters it), else right here.
    pub fn inside<T: Send>(&self, name: &str, f: impl FnOnce() -> T + Send) -> T {
        match self.netns.get(name) {
            Some(ns) => netns::inside(ns, f),
            None => f(),
        }
    }

    /// Starts (or restarts) server `name` through `sh -c '<prelude>; exec proxy-herd ...'`, so
    /// a test can set limits for that process alone (`ulimit -n 64`), and waits until it
    /// accepts connections. The shell `exec`s the server: the pid is the server's.
    pub fn start_server_with(&mut self, name: &str, prelude: &str) {
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!("{prelude}; exec \"$0\" \"$@\""))
            .arg(BIN)
            .args(self.server_args(name))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start sh");
        self.children.insert(name.to_string(), child);
        let addr = self.addr(name);
        eventually(&format!("{name} accepting on {addr}"), || {
            TcpStream::connect(addr).is_ok()
        });
    }

    /// True while server `name` was started by us and has not exited.
    pub fn running(&mut self, name: &str) -> bool {
        self.children
            .get_mut(name)
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Kills a server at once (SIGKILL), like a crash.
    pub fn kill(&mut self, name: &str) {
        if let Some(mut child) = self.children.remove(name) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops a server with SIGTERM and waits for it to exit; returns its stderr.
    pub fn terminate(&mut self, name: &str) -> String {
        let mut child = self.children.remove(name).expect("no such server running");
        unsafe_sigterm(child.id());
        let deadline = Instant::now() + PATIENCE;
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let output = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    /// The process id of a running server.
    pub fn pid(&self, name: &str) -> u32 {
        self.children[name].id()
    }

    /// Where server `name` listens.
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.addrs[name]
    }

    /// The log file of server `name` so far (the server flushes it every loop turn).
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join("logs").join(format!("{name}.log")))
            .unwrap_or_default()
    }

    /// One command per connection, the grading scripts' way (see [`one_shot`]).
    pub fn ask(&self, name: &str, request: &str) -> String {
        let reply = self.inside(name, || one_shot(self.addr(name), request.as_bytes()));
        String::from_utf8_lossy(&reply).into_owned()
    }
}

impl Drop for Herd {
    fn drop(&mut self) {
        for (_, mut child) in self.children.drain() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends SIGTERM through the `kill` command.
pub fn unsafe_sigterm(pid: u32) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(pid.to_string())
        .status();
}

/// Connect, write the request (often with no final newline), half-close, read until the
/// server closes: how the course's grading scripts talk to a server.
pub fn one_shot(addr: SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(request).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let mut reply = Vec::new();
    stream
        .read_to_end(&mut reply)
        .expect("server did not close the connection in time");
    reply
}

/// A long-lived client connection, reading replies line by line.
pub struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Client {
    /// Connects to `addr` with a read timeout of `PATIENCE`.
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        Client {
            writer: stream.try_clone().unwrap(),
            reader: BufReader::new(stream),
        }
    }

    /// Writes raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).unwrap();
    }

    /// Reads one line, with its `\n`.
    pub fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader
            .read_line(&mut line)
            .expect("no reply line in time");
        line
    }

    /// Reads one WHATSAT reply: everything up to and including the blank line.
    pub fn whatsat_reply(&mut self) -> String {
        let mut reply = String::new();
        loop {
            let line = self.line();
            assert!(
                !line.is_empty(),
                "connection closed inside a WHATSAT reply: {reply}"
            );
            reply.push_str(&line);
            if line == "\n" {
                return reply;
            }
        }
    }

    /// Half-closes and reads whatever is left until the server closes.
    pub fn finish(mut self) -> String {
        self.writer.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        self.reader.read_to_end(&mut rest).unwrap();
        String::from_utf8_lossy(&rest).into_owned()
    }
}

/// A client's POSIX time right now, as IAMAT wants it (`secs.nanos`).
pub fn now_text() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

/// The first line of a reply.
pub fn first_line(reply: &str) -> &str {
    reply.split('\n').next().unwrap_or("")
}

/// ESTABLISHED TCP sockets on this machine whose remote port is `port` (from /proc/net/tcp).
pub fn established_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table
        .lines()
        .skip(1)
        .filter(|row| {
            let cols: Vec<&str> = row.split_whitespace().collect();
            cols.len() > 3
                && cols[3] == "01"
                && cols[2]
                    .rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
                    == Some(port)
        })
        .count()
}

/// Runs the binary with `args` and returns (exit code, stderr), bounded by `PATIENCE`.
pub fn run_to_exit(args: &[&str], cwd: &Path) -> (Option<i32>, String) {
    let output = run_exe(Path::new(BIN), args, cwd);
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Spawns `command`. A binary copied a moment ago may be refused for a while ("text file
/// busy"): another test thread that forked just then holds the copy's write descriptor until
/// its child execs. That passes; so retry, boundedly.
pub fn spawn(command: &mut Command) -> std::process::Child {
    for _ in 0..100 {
        match command.spawn() {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                sleep(Duration::from_millis(20))
            }
            result => return result.unwrap(),
        }
    }
    panic!("{command:?}: text file busy for two seconds")
}

/// Runs `exe` with `args` in `cwd` to the end, bounded by `PATIENCE` (then killed), with
/// its stdout and stderr captured.
pub fn run_exe(exe: &Path, args: &[&str], cwd: &Path) -> std::process::Output {
    let mut child = spawn(
        Command::new(exe)
            .args(args)
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped()),
    );
    let deadline = Instant::now() + PATIENCE;
    while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
        sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    child.wait_with_output().unwrap()
}

/// A small deterministic random number generator (SplitMix64), so that a seeded test sends
/// the same bytes on every run and a failure can be replayed.
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// An index into a slice of `len` items.
    pub fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// One of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.index(items.len())]
    }
}

/// The resident memory of a process in KiB (`VmRSS` in `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS for process {pid}"))
}

/// The CPU time (user + system) a process has used, in clock ticks (`/proc/<pid>/stat`).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name is in parentheses and may hold spaces: count fields after it.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    tick(11) + tick(12)
}

/// Open descriptors of a process (entries of `/proc/<pid>/fd`).
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// How long a well-behaved client may wait for an answer while others misbehave or servers
/// churn. Generous: this is "still served", not a latency benchmark (debug build, two cores,
/// other test binaries running alongside).
pub const PROMPT: Duration = Duration::from_secs(5);

/// A well-behaved client: one IAMAT on its own connection (grading-script style), answered
/// by `server` within [`PROMPT`]. Returns how long it took.
pub fn served(addr: SocketAddr, server: &str, id: &str) -> Duration {
    let started = Instant::now();
    let request = format!("IAMAT {id} +34.068930-118.445127 {}", now_text());
    let reply = one_shot(addr, request.as_bytes());
    let took = started.elapsed();
    let reply = String::from_utf8_lossy(&reply);
    assert!(
        reply.starts_with(&format!("AT {server} ")) && reply.contains(id),
        "{id}: {reply:?}"
    );
    assert!(took < PROMPT, "{id} waited {took:?}");
    took
}

/// Runs [`served`] every 50 ms on another thread until `stop`; returns (count, slowest).
pub fn keep_serving(
    addr: SocketAddr,
    server: &'static str,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<(usize, Duration)> {
    thread::spawn(move || {
        let mut n = 0;
        let mut slowest = Duration::ZERO;
        while !stop.load(Ordering::SeqCst) {
            slowest = slowest.max(served(addr, server, &format!("bystander{n}")));
            n += 1;
            sleep(Duration::from_millis(50));
        }
        (n, slowest)
    })
}

/// What a stream of IAMATs got acknowledged (answered with an AT line).
#[derive(Debug, Default)]
pub struct Acks {
    /// For each client id, the newest acknowledged report: (client time in nanoseconds,
    /// the AT reply line without its newline).
    pub newest: HashMap<String, (u128, String)>,
    /// IAMATs sent.
    pub sent: usize,
    /// IAMATs answered.
    pub acked: usize,
    /// Batches cut short: connection refused, reset or closed before every reply came.
    pub broken: usize,
    /// The longest a batch waited for its replies.
    pub slowest: Duration,
}

impl Acks {
    /// Adds another stream's acknowledgements (the streams use disjoint client ids).
    pub fn merge(&mut self, other: Acks) {
        self.newest.extend(other.newest);
        self.sent += other.sent;
        self.acked += other.acked;
        self.broken += other.broken;
        self.slowest = self.slowest.max(other.slowest);
    }
}

/// The location that [`stream_iamats`] reports for client `id` at client time `nanos`: a
/// function of the two, so a checker can tell a report that was really sent from one that
/// was not without keeping every report (a long soak sends tens of millions).
pub fn location_for(id: &str, nanos: u128) -> String {
    // FNV-1a over the id, mixed with the time, seeds the generator.
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    random_location(&mut Rng::new(hash ^ nanos as u64))
}

/// A random valid ISO 6709 location.
pub fn random_location(rng: &mut Rng) -> String {
    let sign = |rng: &mut Rng| if rng.chance(50) { '+' } else { '-' };
    format!(
        "{}{}.{:06}{}{}.{:06}",
        sign(rng),
        rng.below(90),
        rng.below(1_000_000),
        sign(rng),
        rng.below(180),
        rng.below(1_000_000)
    )
}

/// Streams IAMATs about `ids` until `stop`: each batch of `batch` lines goes pipelined, on a
/// fresh connection (half-closed after the last line), to a server picked at random from
/// `addrs`. Every report gets a new, later client time and a random location. What was
/// answered is recorded; a server that is down or dies mid-batch just cuts the batch short.
/// The location of each report is [`location_for`] its client and time.
pub fn stream_iamats(
    addrs: Vec<SocketAddr>,
    ids: Vec<String>,
    batch: usize,
    seed: u64,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<Acks> {
    thread::spawn(move || {
        let mut rng = Rng::new(seed);
        let mut acks = Acks::default();
        // Client times: now, then 1 µs later for each report, so they only go up.
        let mut clock = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        while !stop.load(Ordering::SeqCst) {
            let addr = *rng.pick(&addrs);
            let mut reports = Vec::with_capacity(batch);
            let mut request = Vec::new();
            for _ in 0..batch {
                clock += 1000;
                let id = rng.pick(&ids).clone();
                let location = location_for(&id, clock);
                let time = format!("{}.{:09}", clock / 1_000_000_000, clock % 1_000_000_000);
                request.extend_from_slice(format!("IAMAT {id} {location} {time}\n").as_bytes());
                let tail = format!(" {id} {location} {time}");
                reports.push((id, clock, tail));
            }
            acks.sent += batch;
            let started = Instant::now();
            let Ok(mut stream) = TcpStream::connect(addr) else {
                acks.broken += 1;
                sleep(Duration::from_millis(20));
                continue;
            };
            stream.set_read_timeout(Some(PATIENCE)).unwrap();
            let mut reply = Vec::new();
            let complete = stream.write_all(&request).is_ok()
                && stream.shutdown(Shutdown::Write).is_ok()
                && stream.read_to_end(&mut reply).is_ok();
            let reply = String::from_utf8(reply).expect("AT replies are UTF-8 here");
            let lines: Vec<&str> = reply.lines().collect();
            // Replies come in request order: the first ones that came are acknowledgements.
            for (line, (id, time, tail)) in lines.iter().zip(&reports) {
                assert!(
                    line.starts_with("AT ") && line.ends_with(tail.as_str()),
                    "reply {line:?} to IAMAT{tail}"
                );
                acks.acked += 1;
                let newest = acks.newest.entry(id.clone()).or_insert((0, String::new()));
                if *time > newest.0 {
                    *newest = (*time, line.to_string());
                }
            }
            if !complete || lines.len() < batch {
                acks.broken += 1;
            }
            acks.slowest = acks.slowest.max(started.elapsed());
        }
        acks
    })
}

/// The AT line that `addr` holds for each of `ids` (`None` where it answers `? `), asked
/// with pipelined `WHATSAT id 0 0` on one connection.
pub fn stored_lines(addr: SocketAddr, ids: &[String]) -> std::io::Result<Vec<Option<String>>> {
    let stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(PATIENCE))?;
    let mut writer = stream.try_clone()?;
    let request: String = ids.iter().map(|id| format!("WHATSAT {id} 0 0\n")).collect();
    // Written on another thread: the replies may fill the socket before the requests end.
    let sender = thread::spawn(move || {
        writer.write_all(request.as_bytes())?;
        writer.shutdown(Shutdown::Write)
    });
    let mut reader = BufReader::new(stream);
    let mut out = Vec::with_capacity(ids.len());
    for _ in ids {
        let mut first = String::new();
        if reader.read_line(&mut first)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        if first.starts_with("? ") {
            out.push(None);
            continue;
        }
        // The places JSON runs to a blank line.
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            if line == "\n" {
                break;
            }
        }
        out.push(Some(first.trim_end().to_string()));
    }
    sender.join().expect("sender panicked")?;
    Ok(out)
}
