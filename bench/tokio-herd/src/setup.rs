//! What a herd reads at start-up: its command line and the topology file (SPEC §1).
//!
//! Shared by tokio-herd and threads-herd (which includes this file by path), so the two Rust
//! herds differ only in how they run, not in what they read.

use std::net::SocketAddr;
use std::time::Duration;

/// The command line (the same shape as proxy-herd's).
pub struct Options {
    pub name: String,
    pub topology: String,
    pub places_url: String,
    pub key_file: Option<String>,
    pub places_timeout: Duration,
    pub log_dir: String,
    pub log_level: String,
    pub max_line: usize,
}

fn usage(program: &str) -> ! {
    eprintln!(
        "usage: {program} NAME --topology FILE [--places-url URL] [--places-key-file FILE] \
         [--places-timeout SECS] [--log-dir DIR] [--log-level off|error|warn|info|debug|trace] \
         [--max-line BYTES]"
    );
    std::process::exit(2)
}

/// The command line, shared by the Rust herds; `program` names the herd in the usage line.
pub fn parse_options(program: &str) -> Options {
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
        let mut value = || args.next().unwrap_or_else(|| usage(program));
        match a.as_str() {
            "--topology" => o.topology = value(),
            "--places-url" => o.places_url = value(),
            "--places-key-file" => o.key_file = Some(value()),
            "--places-timeout" => {
                let secs: f64 = value().parse().unwrap_or_else(|_| usage(program));
                o.places_timeout = Duration::from_secs_f64(secs.clamp(0.1, 600.0));
            }
            "--log-dir" => o.log_dir = value(),
            "--log-level" => o.log_level = value(),
            "--max-line" => o.max_line = value().parse().unwrap_or_else(|_| usage(program)),
            // Accepted for command-line compatibility with proxy-herd; this herd has one way.
            "--places" | "--links" | "--workers" => {
                value();
            }
            s if s.starts_with("--") => usage(program),
            s if o.name.is_empty() => o.name = s.to_string(),
            _ => usage(program),
        }
    }
    if o.name.is_empty() {
        usage(program)
    }
    o
}

impl Options {
    /// The Google key: `GOOGLE_PLACES_API_KEY`, else the key file; never the command line.
    pub fn api_key(&self) -> Option<String> {
        std::env::var("GOOGLE_PLACES_API_KEY").ok().or_else(|| {
            self.key_file
                .as_ref()
                .and_then(|f| std::fs::read_to_string(f).ok())
                .map(|k| k.trim().to_string())
        })
    }
}

/// A neighbour link, by the two servers' names.
pub type Link = (String, String);

/// One server of the herd, as the topology file gives it.
#[derive(Debug, Clone)]
pub struct ServerEntry {
    pub name: String,
    pub addr: SocketAddr,
}

/// Reads a topology file (SPEC §1): `name host:port neighbours...`, `#` comments. Returns
/// every server and the set of links, or a message naming the file and line.
pub fn read_topology(path: &str) -> Result<(Vec<ServerEntry>, Vec<Link>), String> {
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

/// The servers linked to `me`, either way round.
pub fn neighbours(servers: &[ServerEntry], links: &[Link], me: &str) -> Vec<ServerEntry> {
    servers
        .iter()
        .filter(|s| {
            links
                .iter()
                .any(|(a, b)| (a == me && b == &s.name) || (b == me && a == &s.name))
        })
        .cloned()
        .collect()
}

/// Logs to `<log-dir>/<NAME>.log` through a writer thread, or nowhere with `--log-level off`.
pub fn init_logging(
    o: &Options,
    program: &str,
) -> Option<tracing_appender::non_blocking::WorkerGuard> {
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
        eprintln!("{program}: {}: {e}", o.log_dir);
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
