//! The command line: options into an [`Options`] value, and start-up into a running server.
//!
//! Every start-up problem (bad option, bad topology, unknown server, address in use, missing
//! dataset, no key) becomes one line on stderr and a non-zero exit, from `main`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use getopts::Matches;
use log::LevelFilter;

use crate::auth::{Admission, HerdKey};
use crate::peer::LinkMode;
use crate::places::{self, Provider};
use crate::server::{Config, Server};
use crate::topology::Topology;

/// Which places provider answers WHATSAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlacesKind {
    /// The dataset built into the binary (GeoNames towns and OurAirports airports), or the
    /// files given with `--places-data`.
    Offline,
    /// Google's legacy Nearby Search.
    Google,
    /// Google's Places API (New).
    GoogleNew,
}

/// Everything the command line says.
#[derive(Debug, Clone)]
pub struct Options {
    /// The server to run, or `None` with `--herd`.
    pub server: Option<String>,
    /// Start every server of the topology as child processes.
    pub herd: bool,
    /// The topology file; `None`: `./topology.txt` if it exists, else the built-in herd.
    pub topology: Option<PathBuf>,
    /// Where `<SERVER>.log` goes.
    pub log_dir: PathBuf,
    /// How much to log.
    pub log_level: LevelFilter,
    /// The longest line accepted.
    pub max_line: usize,
    /// Persistent or per-update links.
    pub links: LinkMode,
    /// Send what we know to a (re)connected neighbour.
    pub catch_up: bool,
    /// Which provider.
    pub places: PlacesKind,
    /// The offline dataset's files; empty: the dataset built into the binary.
    pub places_data: Vec<PathBuf>,
    /// Base URL of a Google provider.
    pub places_url: Option<String>,
    /// File holding the Google key.
    pub places_key_file: Option<PathBuf>,
    /// Whole-request limit for Google.
    pub places_timeout: Duration,
    /// Places worker threads.
    pub workers: usize,
    /// Lookups that may wait for a worker.
    pub lookup_queue: usize,
    /// Close clients idle this long (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// Log every loop turn and event.
    pub trace: bool,
    /// The file holding the herd's shared secret (`--herd-key`).
    pub herd_key: Option<PathBuf>,
    /// Refuse reports more than this far ahead of our clock (`--max-future`).
    pub max_future: Option<Duration>,
    /// Write the loop as Chrome trace-event JSON to `<log-dir>/<SERVER>.trace.json`.
    pub timeline: bool,
    /// Where a server's timeline file stops growing, in bytes.
    pub timeline_max: u64,
    /// The arguments as given, minus `--herd`, for the children of `--herd`.
    pub passthrough: Vec<String>,
}

/// The usage text for `--help`.
pub fn usage() -> String {
    let brief = "Usage: proxy-herd SERVER [options]\n       proxy-herd --herd [options]\n       \
                 proxy-herd --ask HOST:PORT LINE...\n\n\
                 Runs one server of a places proxy herd (or, with --herd, all of them), or\n\
                 sends lines to a server and prints its replies (--ask; the word `now` in a\n\
                 line becomes the current time).";
    definitions().usage(brief)
}

/// What `--version` prints.
pub fn version() -> String {
    format!("proxy-herd {}", env!("CARGO_PKG_VERSION"))
}

fn definitions() -> getopts::Options {
    let mut o = getopts::Options::new();
    o.optflag("h", "help", "print this help and exit");
    o.optflag("V", "version", "print the version and exit");
    o.optopt(
        "",
        "ask",
        "send the LINEs to the server at HOST:PORT and print the replies",
        "HOST:PORT",
    );
    o.optflag(
        "",
        "herd",
        "start every server of the topology, each as its own process",
    );
    o.optopt(
        "",
        "topology",
        "the herd's servers and links (default ./topology.txt, else the built-in herd)",
        "FILE",
    );
    o.optopt(
        "",
        "log-dir",
        "where <SERVER>.log is written (default logs)",
        "DIR",
    );
    o.optopt(
        "",
        "log-level",
        "off, error, warn, info, debug or trace (default info)",
        "LEVEL",
    );
    o.optopt(
        "",
        "max-line",
        "longest line accepted, in bytes (default 65536)",
        "BYTES",
    );
    o.optopt("", "links", "persistent (default) or per-update", "MODE");
    o.optopt(
        "",
        "catch-up",
        "on (default): send a (re)connected neighbour what we know; off: only new floods",
        "on|off",
    );
    o.optopt(
        "",
        "places",
        "offline (default), google or google-new",
        "PROVIDER",
    );
    o.optmulti(
        "",
        "places-data",
        "an offline dataset file, instead of the built-in one (may be repeated)",
        "FILE",
    );
    o.optopt("", "places-url", "base URL of the Google provider", "URL");
    o.optopt(
        "",
        "places-key-file",
        "file holding the Google API key (else $GOOGLE_PLACES_API_KEY)",
        "FILE",
    );
    o.optopt(
        "",
        "places-timeout",
        "whole-request limit for Google, in seconds (default 10)",
        "SECS",
    );
    o.optopt("", "workers", "places worker threads (default 4)", "N");
    o.optopt(
        "",
        "lookup-queue",
        "lookups that may wait for a worker (default 256)",
        "N",
    );
    o.optopt(
        "",
        "herd-key",
        "file holding the herd's shared secret: AT lines are signed, unsigned ones refused",
        "FILE",
    );
    o.optopt(
        "",
        "max-future",
        "refuse IAMAT and AT times more than this many seconds ahead (default: no limit)",
        "SECS",
    );
    o.optopt(
        "",
        "idle-timeout",
        "close clients silent this long, in seconds; 0 = never (default 600)",
        "SECS",
    );
    o.optflag(
        "",
        "trace",
        "log every loop turn, event and byte count (to learn how the loop works)",
    );
    o.optflag(
        "",
        "timeline",
        "write the loop as a trace for Perfetto to <log-dir>/<SERVER>.trace.json \
         (--herd: merged into herd.trace.json at the end)",
    );
    o.optopt(
        "",
        "timeline-max",
        "a server's timeline stops recording at this size, in MiB (default 16)",
        "MIB",
    );
    o
}

/// What parsing the command line asks for.
#[derive(Debug)]
pub enum Parsed {
    /// Print the usage and exit 0.
    Help,
    /// Print the version and exit 0.
    Version,
    /// Send lines to a server and print its replies (`--ask`).
    Ask(crate::ask::Ask),
    /// Run with these options.
    Run(Box<Options>),
}

/// Parses the arguments (without the program name). The error is one line.
pub fn parse(args: &[String]) -> Result<Parsed, String> {
    let m = definitions().parse(args).map_err(|e| e.to_string())?;
    if m.opt_present("help") {
        return Ok(Parsed::Help);
    }
    if m.opt_present("version") {
        return Ok(Parsed::Version);
    }
    if let Some(addr) = m.opt_str("ask") {
        if m.opt_present("herd") {
            return Err("--ask talks to a server; it cannot be combined with --herd".into());
        }
        if m.free.is_empty() {
            return Err("--ask HOST:PORT needs at least one LINE to send".into());
        }
        return Ok(Parsed::Ask(crate::ask::Ask {
            addr,
            lines: m.free.clone(),
        }));
    }
    let herd = m.opt_present("herd");
    let server = match (m.free.as_slice(), herd) {
        ([], true) => None,
        ([name], false) => Some(name.clone()),
        ([], false) => return Err("name the server to run (like Alford), or give --herd".into()),
        (_, true) => return Err("--herd starts every server; do not name one".into()),
        (more, false) => return Err(format!("one server name expected, got {}", more.join(" "))),
    };
    let places = match m.opt_str("places").as_deref() {
        None | Some("offline") => PlacesKind::Offline,
        Some("google") => PlacesKind::Google,
        Some("google-new") => PlacesKind::GoogleNew,
        Some(other) => {
            return Err(format!(
                "--places: unknown provider {other} (offline, google, google-new)"
            ));
        }
    };
    let links = match m.opt_str("links").as_deref() {
        None | Some("persistent") => LinkMode::Persistent,
        Some("per-update") => LinkMode::PerUpdate,
        Some(other) => {
            return Err(format!(
                "--links: unknown mode {other} (persistent, per-update)"
            ));
        }
    };
    let catch_up = match m.opt_str("catch-up").as_deref() {
        None | Some("on") => true,
        Some("off") => false,
        Some(other) => return Err(format!("--catch-up: {other}? (on, off)")),
    };
    let log_level = match m.opt_str("log-level") {
        None => LevelFilter::Info,
        Some(text) => crate::logging::parse_level(&text).ok_or_else(|| {
            format!("--log-level: unknown level {text} (off, error, warn, info, debug, trace)")
        })?,
    };
    let idle = number(&m, "idle-timeout", 600, 0)?;
    Ok(Parsed::Run(Box::new(Options {
        server,
        herd,
        topology: m.opt_str("topology").map(PathBuf::from),
        log_dir: m.opt_str("log-dir").unwrap_or_else(|| "logs".into()).into(),
        log_level,
        max_line: number(&m, "max-line", 65536, 1)?,
        links,
        catch_up,
        places,
        places_data: m
            .opt_strs("places-data")
            .into_iter()
            .map(PathBuf::from)
            .collect(),
        places_url: m.opt_str("places-url"),
        places_key_file: m.opt_str("places-key-file").map(PathBuf::from),
        places_timeout: Duration::from_secs(number(&m, "places-timeout", 10, 1)? as u64),
        workers: number(&m, "workers", 4, 1)?,
        lookup_queue: number(&m, "lookup-queue", 256, 1)?,
        idle_timeout: (idle > 0).then(|| Duration::from_secs(idle as u64)),
        trace: m.opt_present("trace"),
        herd_key: m.opt_str("herd-key").map(PathBuf::from),
        max_future: match m.opt_str("max-future") {
            None => None,
            Some(_) => Some(Duration::from_secs(number(&m, "max-future", 0, 0)? as u64)),
        },
        timeline: m.opt_present("timeline"),
        timeline_max: (number(&m, "timeline-max", 16, 1)? as u64).saturating_mul(1 << 20),
        passthrough: args.iter().filter(|a| *a != "--herd").cloned().collect(),
    })))
}

/// A whole-number option with a default and a minimum.
fn number(m: &Matches, name: &str, default: usize, min: usize) -> Result<usize, String> {
    match m.opt_str(name) {
        None => Ok(default),
        Some(text) => match text.parse::<usize>() {
            Ok(n) if n >= min => Ok(n),
            _ => Err(format!(
                "--{name}: {text} is not a whole number of at least {min}"
            )),
        },
    }
}

/// Starts the server named in `options` and runs it until a signal stops it.
pub fn run_server(options: &Options, name: &str) -> Result<(), String> {
    let (topology, source) = Topology::load_or_default(options.topology.as_deref())?;
    let me = topology.find(name, &source)?;
    let entry = &topology.servers[me];
    crate::signals::install().map_err(|e| format!("cannot install signal handlers: {e}"))?;
    // Bind first: clients may connect from here on, even while the dataset loads.
    let listener = mio::net::TcpListener::bind(entry.addr)
        .map_err(|e| format!("{name}: cannot listen on {}: {e}", entry.addr))?;
    let provider = provider(options)?;
    let admission = Admission {
        key: match &options.herd_key {
            Some(path) => Some(Arc::new(HerdKey::from_file(path)?)),
            None => None,
        },
        max_future: options.max_future,
    };
    crate::logging::init(&options.log_dir, name, options.log_level)?;
    if let Some(path) = &options.herd_key {
        // The file's name, never its contents.
        log::info!(
            "{name}: AT lines signed and checked with the herd key in {}",
            path.display()
        );
    }
    if options.timeline {
        crate::timeline::start(&options.log_dir, name, me, options.timeline_max)?;
    }
    if source == crate::topology::DEFAULT_HERD_NAME {
        log::info!("{name}: no --topology given and no ./topology.txt here: using the {source}");
    }
    if options.places == PlacesKind::Offline {
        let files: Vec<String> = if options.places_data.is_empty() {
            let built_in = places::offline::BUILT_IN.iter();
            built_in
                .map(|(file, _)| format!("built-in {file}"))
                .collect()
        } else {
            let given = options.places_data.iter();
            given.map(|path| path.display().to_string()).collect()
        };
        log::info!("{name}: offline places from {}", files.join(", "));
    }
    let config = Config {
        name: name.to_string(),
        neighbours: entry
            .neighbours
            .iter()
            .map(|&i| (topology.servers[i].name.clone(), topology.servers[i].addr))
            .collect(),
        max_line: options.max_line,
        links: options.links,
        catch_up: options.catch_up,
        workers: options.workers,
        lookup_queue: options.lookup_queue,
        idle_timeout: options.idle_timeout,
        trace: options.trace,
        admission,
    };
    let neighbours: Vec<&str> = config.neighbours.iter().map(|(n, _)| n.as_str()).collect();
    log::info!(
        "{name}: neighbours [{}], {:?} links, places {}, {} workers, max line {} bytes",
        neighbours.join(", "),
        options.links,
        provider.name(),
        options.workers,
        options.max_line
    );
    let mut server = Server::new(config, listener, provider)
        .map_err(|e| format!("{name}: cannot start: {e}"))?;
    let result = server.run();
    // The closing `]`: the timeline is valid JSON from here on.
    crate::timeline::finish();
    result.map_err(|e| format!("{name}: event loop failed: {e}"))
}

/// Builds the places provider the options name.
fn provider(options: &Options) -> Result<Arc<dyn Provider>, String> {
    use places::google::{Api, Google};
    let api = match options.places {
        PlacesKind::Offline if options.places_data.is_empty() => {
            return Ok(Arc::new(places::offline::built_in()?));
        }
        PlacesKind::Offline => return Ok(Arc::new(places::offline::load(&options.places_data)?)),
        PlacesKind::Google => Api::Legacy,
        PlacesKind::GoogleNew => Api::New,
    };
    let key = places::google::read_key(options.places_key_file.as_deref())?;
    let base = options
        .places_url
        .clone()
        .unwrap_or_else(|| api.default_base_url().to_string());
    Ok(Arc::new(Google::new(
        api,
        &base,
        key,
        options.places_timeout,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(String::from).collect()
    }

    fn options(line: &str) -> Options {
        match parse(&args(line)) {
            Ok(Parsed::Run(o)) => *o,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let o = options("Alford");
        assert_eq!(o.server.as_deref(), Some("Alford"));
        assert_eq!(o.topology, None);
        assert!(o.places_data.is_empty());
        assert_eq!(
            (o.max_line, o.workers, o.links),
            (65536, 4, LinkMode::Persistent)
        );
        assert_eq!(o.places, PlacesKind::Offline);
        assert_eq!(o.log_level, LevelFilter::Info);
        assert!(!o.timeline);
        assert_eq!(o.timeline_max, 16 << 20);
        let o = options("Alford --timeline --timeline-max 2");
        assert!(o.timeline);
        assert_eq!(o.timeline_max, 2 << 20);
    }

    #[test]
    fn herd_passes_everything_else_on() {
        let o = options("--herd --links per-update --max-line 100");
        assert!(o.herd && o.server.is_none());
        assert_eq!(o.passthrough, args("--links per-update --max-line 100"));
        assert_eq!(o.links, LinkMode::PerUpdate);
    }

    #[test]
    fn ask_version_and_dataset_files() {
        match parse(&args("--ask 127.0.0.1:12000 hello there")) {
            Ok(Parsed::Ask(ask)) => {
                assert_eq!(ask.addr, "127.0.0.1:12000");
                assert_eq!(ask.lines, ["hello", "there"]);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse(&args("--version")), Ok(Parsed::Version)));
        let o = options("Alford --places-data a.tsv --places-data b.tsv --topology t");
        assert_eq!(
            o.places_data,
            [PathBuf::from("a.tsv"), PathBuf::from("b.tsv")]
        );
        assert_eq!(o.topology, Some(PathBuf::from("t")));
    }

    #[test]
    fn errors_are_one_line() {
        for bad in [
            "",
            "Alford Bolden",
            "--herd Alford",
            "Alford --links sometimes",
            "Alford --places bing",
            "Alford --max-line 0",
            "Alford --workers x",
            "Alford --timeline-max 0",
            "Alford --log-level loud",
            "Alford --frobnicate",
            "Alford --topology",
            "--ask 127.0.0.1:1",
            "--herd --ask 127.0.0.1:1 hello",
        ] {
            let err = parse(&args(bad)).unwrap_err();
            assert!(!err.is_empty() && !err.contains('\n'), "{bad}: {err}");
        }
        assert!(matches!(parse(&args("--help")), Ok(Parsed::Help)));
    }
}
