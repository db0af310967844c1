//! Link lines per IAMAT: how many lines the herd's neighbour links carry for one IAMAT.
//!
//! Counted on the wire, the same way for every implementation: each server gets its own
//! topology file in which each of its neighbours' addresses is a counting proxy in front of
//! that neighbour (its own line keeps its real address, so it listens where the others'
//! proxies forward to). Every byte a server sends to a neighbour passes one proxy, which
//! counts the newlines. The load is `requests` pipelined IAMATs to Hamilton, each from a
//! client whose time is newer, so each is flooded through the whole herd; once the count has
//! not moved for a second, lines / IAMATs answered is the figure. Ten IAMATs one at a time go
//! first, uncounted: the figure is the herd's steady state, after whatever it learns about
//! its links from the first lines (a proxy-herd link learns from its first line whether the
//! neighbour reads `via=`; until then lines go back where they came from). Flooding to every neighbour
//! including the sender gives 2E = 10 in the default herd (E = 5 links); sending nothing back
//! where a line came from gives 2E − (N − 1) = 6.

use crate::herd::{self, Herd, HerdOpts, Impl, LINKS, ORIGIN, Paths, SERVERS};
use crate::scenarios::{self, Metrics, Row, Scenario, Settings, What};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// IAMATs sent one at a time before the count starts.
const WARMUP_IAMATS: usize = 10;

pub fn scenario(s: &Settings) -> Scenario {
    Scenario {
        id: "link-lines".into(),
        title: format!(
            "lines on neighbour links per IAMAT ({} IAMATs to {ORIGIN}, counted by proxies on every link)",
            s.link_requests
        ),
        what: What::LinkLines {
            requests: s.link_requests,
        },
        rows: vec![
            Row {
                key: "lines_per_iamat",
                label: "link lines per IAMAT",
                scale: 1.0,
                decimals: 2,
                ratio: true,
            },
            Row {
                key: "notices_per_iamat",
                label: "of which BUSY notices (proxy-herd's flow control)",
                scale: 1.0,
                decimals: 3,
                ratio: false,
            },
        ],
    }
}

/// The counting proxies of one herd; they stop accepting when dropped (their connections end
/// when the servers on either side close them).
struct Proxies {
    counts: Arc<Counts>,
    /// Per proxy, how many of its connections reached the neighbour.
    connected: Vec<Arc<AtomicUsize>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Proxies {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Proxies {
    /// A new proxy in front of `to`; returns its port.
    fn add(&mut self, to: SocketAddr) -> Result<u16, String> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("proxy: {e}"))?;
        let port = listener.local_addr().map_err(|e| e.to_string())?.port();
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let connected = Arc::new(AtomicUsize::new(0));
        self.connected.push(Arc::clone(&connected));
        let (counts, stop) = (Arc::clone(&self.counts), Arc::clone(&self.stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Ok((from, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(2));
                    continue;
                };
                let (counts, connected, stop) = (
                    Arc::clone(&counts),
                    Arc::clone(&connected),
                    Arc::clone(&stop),
                );
                std::thread::spawn(move || relay(from, to, &counts, &connected, &stop));
            }
        });
        Ok(port)
    }

    /// Waits until no line has passed for a second (bounded: a minute); returns the counts
    /// (lines, of which `BUSY` notices).
    fn quiet(&self) -> (u64, u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = self.counts.lines.load(Ordering::Relaxed);
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let now = self.counts.lines.load(Ordering::Relaxed);
            if now == last || Instant::now() >= deadline {
                return (now, self.counts.notices.load(Ordering::Relaxed));
            }
            last = now;
        }
    }

    fn all_connected(&self) -> bool {
        self.connected.iter().all(|c| c.load(Ordering::Relaxed) > 0)
    }
}

/// Connects to `to` (retrying while it starts) and copies both ways; newlines from the
/// connecting server to its neighbour are counted.
fn relay(
    from: TcpStream,
    to: SocketAddr,
    counts: &Counts,
    connected: &AtomicUsize,
    stop: &AtomicBool,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let upstream = loop {
        match TcpStream::connect(to) {
            Ok(s) => break s,
            Err(_) if Instant::now() < deadline && !stop.load(Ordering::Relaxed) => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(_) => return,
        }
    };
    let _ = upstream.set_nodelay(true);
    connected.fetch_add(1, Ordering::Relaxed);
    let (Ok(from2), Ok(upstream2)) = (from.try_clone(), upstream.try_clone()) else {
        return;
    };
    // The neighbour's side: neighbours answer nothing on a link, but copy whatever comes.
    std::thread::spawn(move || copy(upstream2, from2, None));
    copy(from, upstream, Some(counts));
}

/// Lines counted on the links: all of them, and proxy-herd's `BUSY` notices (flow control,
/// not floods) among them.
#[derive(Default)]
struct Counts {
    lines: AtomicU64,
    notices: AtomicU64,
}

/// What a notice line starts with.
const NOTICE: &[u8] = b"BUSY ";

/// Copies until either side ends, counting lines (and notices) into `counts`; then closes
/// both.
fn copy(mut src: TcpStream, mut dst: TcpStream, counts: Option<&Counts>) {
    let mut buf = vec![0u8; 64 * 1024];
    // The first bytes of the line under way (a line may be split across reads).
    let mut head: Vec<u8> = Vec::with_capacity(NOTICE.len());
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(c) = counts {
            let (mut lines, mut notices) = (0, 0);
            for &b in &buf[..n] {
                if b == b'\n' {
                    lines += 1;
                    head.clear();
                } else if head.len() < NOTICE.len() {
                    head.push(b);
                    notices += u64::from(head == NOTICE);
                }
            }
            c.lines.fetch_add(lines, Ordering::Relaxed);
            c.notices.fetch_add(notices, Ordering::Relaxed);
        }
        if dst.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = src.shutdown(Shutdown::Both);
    let _ = dst.shutdown(Shutdown::Both);
}

/// Starts the default herd with a counting proxy on every link, sends `requests` IAMATs to
/// the origin, and returns the link lines per IAMAT answered.
pub fn run(
    imp: &Impl,
    requests: usize,
    paths: &Paths,
    opts: &HerdOpts,
    tag: &str,
) -> Result<Metrics, String> {
    let ports = herd::free_ports(SERVERS.len())?;
    let addr = |i: usize| SocketAddr::from(([127, 0, 0, 1], ports[i]));
    let mut proxies = Proxies {
        counts: Arc::new(Counts::default()),
        connected: Vec::new(),
        stop: Arc::new(AtomicBool::new(false)),
    };
    let mut topologies = Vec::new();
    for name in SERVERS {
        // What this server sees: its neighbours behind proxies, everyone else as they are.
        let mut seen = ports.clone();
        for (j, other) in SERVERS.iter().enumerate() {
            let linked = LINKS
                .iter()
                .any(|&(a, b)| (a, b) == (name, *other) || (b, a) == (name, *other));
            if linked {
                seen[j] = proxies.add(addr(j))?;
            }
        }
        topologies.push(herd::topology_text(&seen, None));
    }
    let h = Herd {
        addrs: SERVERS
            .iter()
            .enumerate()
            .map(|(i, n)| (n.to_string(), addr(i)))
            .collect(),
        procs: Vec::new(),
        cmds: Vec::new(),
    };
    let dir = paths.work.join(tag);
    let mut h = herd::start_servers(imp, paths, opts, h, &dir, &topologies)?;
    // Generous: the Python and Node herds start slowly on a loaded 2-core machine, and their
    // reconnect backoff grows to 2 s (15 s was missed once each by asyncio and Node).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !proxies.all_connected() {
        if Instant::now() >= deadline {
            return Err("not every neighbour link came up through its proxy within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Warm-up, not counted: a few IAMATs one at a time, so that whatever the herd learns
    // about its links from the first lines (proxy-herd: which neighbours read `via=`) is
    // learned before the count starts. The count is the herd's steady state.
    let warmup = [
        "run".to_string(),
        format!("--target {}", h.addr(ORIGIN)),
        format!("--requests {WARMUP_IAMATS} --conns 1 --window 1 --duration 60"),
    ];
    let start = proxies.counts.lines.load(Ordering::Relaxed);
    scenarios::loadgen(
        paths,
        &warmup,
        &format!("{tag}-warmup"),
        Duration::from_secs(90),
    )?;
    let (before, notices_before) = proxies.quiet();
    let args = [
        "run".to_string(),
        format!("--target {}", h.addr(ORIGIN)),
        format!("--requests {requests}"),
        "--conns 16 --window 16 --duration 600".into(),
    ];
    let load = scenarios::loadgen(paths, &args, tag, Duration::from_secs(660))?;
    let (last, notices_last) = proxies.quiet();
    h.check_alive()?;
    let answered = load.get("all_replies").copied().unwrap_or(0.0);
    if answered <= 0.0 {
        return Err("no IAMAT was answered".into());
    }
    let lines = (last - before) as f64;
    let mut m = Metrics::new();
    m.insert("lines_per_iamat".into(), lines / answered);
    let notices = (notices_last - notices_before) as f64;
    m.insert("notices_per_iamat".into(), notices / answered);
    m.insert("link_lines".into(), lines);
    m.insert("iamats".into(), answered);
    m.insert("warmup_lines".into(), (before - start) as f64);
    Ok(m)
}
