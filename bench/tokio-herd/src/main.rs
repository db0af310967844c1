//! tokio-herd: the places proxy herd written the way a tokio user would write it, to compare
//! proxy-herd's hand-rolled reactor against.
//!
//! # Layout
//! - `main` (this file): command line, topology, the listener, one task per client connection,
//!   one task per neighbour link;
//! - `proto`: parsing commands and formatting replies (pure);
//! - `places`: WHATSAT lookups through Google's legacy Nearby Search (a tiny HTTP/1.1 client).
//!
//! Same command line shape, topology file and behaviour as proxy-herd (SPEC §1–§3):
//! `tokio-herd NAME --topology FILE [--places-url URL] [--places-key-file FILE]
//! [--places-timeout SECS] [--log-dir DIR] [--log-level LEVEL] [--max-line BYTES]`.
//! The multi-threaded runtime is used with its defaults (a worker per core), as most tokio
//! servers are.

mod places;
mod proto;

use proto::{Command, Nanos};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

/// A neighbour link, by the two servers' names.
type Link = (String, String);

/// One server of the herd, as the topology file gives it.
#[derive(Debug, Clone)]
struct ServerEntry {
    name: String,
    addr: SocketAddr,
}

/// The newest AT line known for each client.
#[derive(Default)]
struct Locations {
    records: HashMap<String, (Nanos, Arc<str>)>,
}

/// What every task shares.
struct Herd {
    name: String,
    locations: Mutex<Locations>,
    /// One sender per neighbour link; the link's task writes what it receives.
    links: Vec<mpsc::UnboundedSender<Arc<str>>>,
    places: places::Places,
    max_line: usize,
}

impl Herd {
    /// Stores `line` if it is newer than what we know for `id`; if so, floods it to every
    /// neighbour (queued to the link tasks before the caller writes any reply).
    fn learn(&self, id: &str, time_ns: Nanos, line: Arc<str>) -> bool {
        {
            let mut locs = self.locations.lock().expect("locations lock");
            if let Some((known, _)) = locs.records.get(id)
                && *known >= time_ns
            {
                return false;
            }
            locs.records
                .insert(id.to_string(), (time_ns, Arc::clone(&line)));
        }
        for link in &self.links {
            let _ = link.send(Arc::clone(&line));
        }
        true
    }

    fn lookup(&self, id: &str) -> Option<Arc<str>> {
        let locs = self.locations.lock().expect("locations lock");
        locs.records.get(id).map(|(_, l)| Arc::clone(l))
    }

    fn snapshot(&self) -> Vec<Arc<str>> {
        let locs = self.locations.lock().expect("locations lock");
        locs.records.values().map(|(_, l)| Arc::clone(l)).collect()
    }
}

fn now_ns() -> Nanos {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as Nanos)
        .unwrap_or(0)
}

struct Options {
    name: String,
    topology: String,
    places_url: String,
    key_file: Option<String>,
    places_timeout: Duration,
    log_dir: String,
    log_level: String,
    max_line: usize,
}

fn usage() -> ! {
    eprintln!(
        "usage: tokio-herd NAME --topology FILE [--places-url URL] [--places-key-file FILE] \
         [--places-timeout SECS] [--log-dir DIR] [--log-level off|error|warn|info|debug|trace] \
         [--max-line BYTES]"
    );
    std::process::exit(2)
}

fn parse_options() -> Options {
    let mut args = std::env::args().skip(1);
    let mut o = Options {
        name: String::new(),
        topology: "topology.txt".into(),
        places_url: "https://maps.googleapis.com".into(),
        key_file: None,
        places_timeout: Duration::from_secs(10),
        log_dir: "logs".into(),
        log_level: "info".into(),
        max_line: 64 * 1024,
    };
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--topology" => o.topology = value(),
            "--places-url" => o.places_url = value(),
            "--places-key-file" => o.key_file = Some(value()),
            "--places-timeout" => {
                let secs: f64 = value().parse().unwrap_or_else(|_| usage());
                o.places_timeout = Duration::from_secs_f64(secs.clamp(0.1, 600.0));
            }
            "--log-dir" => o.log_dir = value(),
            "--log-level" => o.log_level = value(),
            "--max-line" => o.max_line = value().parse().unwrap_or_else(|_| usage()),
            // Accepted for command-line compatibility with proxy-herd; this herd has one way.
            "--places" | "--links" | "--workers" => {
                value();
            }
            s if s.starts_with("--") => usage(),
            s if o.name.is_empty() => o.name = s.to_string(),
            _ => usage(),
        }
    }
    if o.name.is_empty() {
        usage()
    }
    o
}

/// Reads a topology file (SPEC §1): `name host:port neighbours...`, `#` comments. Returns
/// every server and the set of links, or a message naming the file and line.
fn read_topology(path: &str) -> Result<(Vec<ServerEntry>, Vec<Link>), String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let mut servers: Vec<ServerEntry> = Vec::new();
    let mut named: Vec<(usize, String, String)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("");
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.is_empty() {
            continue;
        }
        let at = |msg: String| format!("{path}:{}: {msg}", i + 1);
        if f.len() < 2 {
            return Err(at(format!("{} has no address", f[0])));
        }
        if servers.iter().any(|s| s.name == f[0]) {
            return Err(at(format!("duplicate server {}", f[0])));
        }
        let addr = f[1]
            .parse()
            .map_err(|_| at(format!("bad address {}", f[1])))?;
        servers.push(ServerEntry {
            name: f[0].to_string(),
            addr,
        });
        for n in &f[2..] {
            if *n == f[0] {
                return Err(at(format!("{n} is linked to itself")));
            }
            named.push((i + 1, f[0].to_string(), n.to_string()));
        }
    }
    let mut links = Vec::new();
    for (line, a, b) in named {
        if !servers.iter().any(|s| s.name == b) {
            return Err(format!("{path}:{line}: unknown neighbour {b}"));
        }
        links.push((a, b));
    }
    Ok((servers, links))
}

fn init_logging(o: &Options) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    use tracing_subscriber::filter::LevelFilter;
    let level = match o.log_level.to_ascii_lowercase().as_str() {
        "off" => return None,
        "error" => LevelFilter::ERROR,
        "warn" => LevelFilter::WARN,
        "debug" => LevelFilter::DEBUG,
        "trace" => LevelFilter::TRACE,
        _ => LevelFilter::INFO,
    };
    if let Err(e) = std::fs::create_dir_all(&o.log_dir) {
        eprintln!("tokio-herd: {}: {e}", o.log_dir);
        std::process::exit(1);
    }
    let file = tracing_appender::rolling::never(&o.log_dir, format!("{}.log", o.name));
    // The idiomatic way: a writer thread, so a task never waits on the disk. Not lossy: a
    // herd that drops log lines under load would look faster than one that keeps them all.
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(file);
    tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(false)
        .with_max_level(level)
        .with_target(false)
        .init();
    Some(guard)
}

#[tokio::main]
async fn main() {
    let o = parse_options();
    let (servers, links) = read_topology(&o.topology).unwrap_or_else(|e| {
        eprintln!("tokio-herd: {e}");
        std::process::exit(1)
    });
    let Some(me) = servers.iter().find(|s| s.name == o.name).cloned() else {
        eprintln!("tokio-herd: {}: no server named {}", o.topology, o.name);
        std::process::exit(1)
    };
    let _guard = init_logging(&o);
    let neighbours: Vec<ServerEntry> = servers
        .iter()
        .filter(|s| {
            links
                .iter()
                .any(|(a, b)| (a == &me.name && b == &s.name) || (b == &me.name && a == &s.name))
        })
        .cloned()
        .collect();

    let key = std::env::var("GOOGLE_PLACES_API_KEY").ok().or_else(|| {
        o.key_file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .map(|k| k.trim().to_string())
    });
    let mut receivers = Vec::new();
    let mut senders = Vec::new();
    for _ in &neighbours {
        let (tx, rx) = mpsc::unbounded_channel();
        senders.push(tx);
        receivers.push(rx);
    }
    let herd = Arc::new(Herd {
        name: me.name.clone(),
        locations: Mutex::new(Locations::default()),
        links: senders,
        places: places::Places::new(&o.places_url, key, o.places_timeout),
        max_line: o.max_line,
    });

    let listener = TcpListener::bind(me.addr).await.unwrap_or_else(|e| {
        eprintln!("tokio-herd: bind {}: {e}", me.addr);
        std::process::exit(1)
    });
    info!("{} started on {}", me.name, me.addr);
    for (n, rx) in neighbours.into_iter().zip(receivers) {
        tokio::spawn(neighbour_link(Arc::clone(&herd), n, rx));
    }

    let accept = async {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    tokio::spawn(client(Arc::clone(&herd), stream, peer));
                }
                Err(e) => {
                    warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    };
    tokio::select! {
        _ = accept => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate() => {}
    }
    info!("{} stopping", herd.name);
}

/// Resolves on SIGTERM, so the log says we stopped and the log writer flushes.
async fn terminate() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

/// Keeps one persistent link to a neighbour: connect (with backoff), send everything we
/// know, then write every flooded AT line as it comes; on error, start over.
async fn neighbour_link(
    herd: Arc<Herd>,
    peer: ServerEntry,
    mut rx: mpsc::UnboundedReceiver<Arc<str>>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let stream = match TcpStream::connect(peer.addr).await {
            Ok(s) => s,
            Err(e) => {
                info!("connect to {} failed: {e}", peer.name);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        let _ = stream.set_nodelay(true);
        info!("link to {} up", peer.name);
        // What piled up while the link was down is in the snapshot.
        while rx.try_recv().is_ok() {}
        let mut w = BufWriter::new(stream);
        let mut result = Ok(());
        for line in herd.snapshot() {
            result = write_line(&mut w, &line).await;
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() {
            result = w.flush().await;
        }
        while result.is_ok() {
            let Some(line) = rx.recv().await else { return };
            info!("to {}: {line}", peer.name);
            result = write_line(&mut w, &line).await;
            // Batch whatever else is queued into the same write.
            while result.is_ok()
                && let Ok(more) = rx.try_recv()
            {
                info!("to {}: {more}", peer.name);
                result = write_line(&mut w, &more).await;
            }
            if result.is_ok() {
                result = w.flush().await;
            }
        }
        if let Err(e) = result {
            info!("link to {} dropped: {e}", peer.name);
        }
    }
}

async fn write_line<W: AsyncWriteExt + Unpin>(w: &mut W, line: &str) -> std::io::Result<()> {
    w.write_all(line.as_bytes()).await?;
    w.write_all(b"\n").await
}

/// A reply in the making: ready now (IAMAT, errors) or when a lookup finishes (WHATSAT).
enum Reply {
    Now(String),
    Later(oneshot::Receiver<String>),
}

/// Serves one connection (a client, or a neighbour sending AT lines). Lines are handled in
/// order; their replies go through a queue to a writer task, which awaits each in turn, so
/// replies leave in request order even when a later one is ready first.
async fn client(herd: Arc<Herd>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    info!("new connection {peer}");
    let (read_half, write_half) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Reply>();
    let writer = tokio::spawn(async move {
        let mut w = BufWriter::new(write_half);
        while let Some(reply) = rx.recv().await {
            let text = match reply {
                Reply::Now(t) => t,
                Reply::Later(r) => r.await.unwrap_or_default(),
            };
            info!("to {peer}: {}", text.trim_end());
            if w.write_all(text.as_bytes()).await.is_err() {
                return;
            }
            // Flush only when nothing else is queued: one write per burst.
            if rx.is_empty() && w.flush().await.is_err() {
                return;
            }
        }
        let _ = w.flush().await;
        let _ = w.shutdown().await;
    });

    let mut reader = BufReader::new(read_half);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let limit = herd.max_line as u64 + 1;
        let n = match (&mut reader).take(limit).read_until(b'\n', &mut buf).await {
            Ok(n) => n,
            Err(_) => break,
        };
        if n == 0 {
            break;
        }
        if buf.last() != Some(&b'\n') && buf.len() as u64 >= limit {
            // Too long: answer with its start and close.
            let head = String::from_utf8_lossy(&buf[..herd.max_line.min(buf.len())]);
            let _ = tx.send(Reply::Now(format!("? {head}\n")));
            info!("{peer}: line over {} bytes, closing", herd.max_line);
            break;
        }
        let text = String::from_utf8_lossy(&buf);
        let line = text.strip_suffix('\n').unwrap_or(&text);
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() && !line.is_empty() {
            continue;
        }
        info!("from {peer}: {line}");
        if let Some(reply) = handle_line(&herd, line)
            && tx.send(reply).is_err()
        {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
    info!("closed connection {peer}");
}

/// Acts on one line and says what to reply, if anything.
fn handle_line(herd: &Arc<Herd>, line: &str) -> Option<Reply> {
    let received = now_ns();
    match proto::parse(line) {
        Some(Command::Iamat {
            id,
            location,
            time,
            time_ns,
        }) => {
            let at = format!(
                "AT {} {} {id} {location} {time}",
                herd.name,
                proto::format_diff(received - time_ns)
            );
            // Flood first, then reply: the flood must beat the client to the next server.
            herd.learn(id, time_ns, Arc::from(at.as_str()));
            Some(Reply::Now(at + "\n"))
        }
        Some(Command::At { id, time_ns, line }) => {
            if herd.learn(id, time_ns, Arc::from(line.as_str())) {
                info!("learned {id}");
            }
            None
        }
        Some(Command::Whatsat {
            id,
            radius_km,
            bound,
        }) => {
            let Some(at) = herd.lookup(id) else {
                return Some(Reply::Now(format!("? {line}\n")));
            };
            let location = at.split(' ').nth(4).unwrap_or("").to_string();
            let (done, wait) = oneshot::channel();
            let herd = Arc::clone(herd);
            tokio::spawn(async move {
                let json = herd.places.nearby(&location, radius_km, bound).await;
                let _ = done.send(format!("{at}\n{json}\n\n"));
            });
            Some(Reply::Later(wait))
        }
        None => Some(Reply::Now(format!("? {line}\n"))),
    }
}
