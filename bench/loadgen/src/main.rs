//! loadgen: a load generator for any herd that speaks the proxy-herd protocol.
//!
//! # Layout
//! - `engine`: the mio client engine (pipelined and one-shot styles);
//! - `proto`: request formatting and reply framing/validation (pure, unit-tested);
//! - `hist`: the latency histogram;
//! - `procstat`: CPU seconds and RSS of the server processes from `/proc`;
//! - `flood`: flood latency measured by joining the herd as an extra neighbour;
//! - `idle`: thousands of idle connections and the server's memory.
//!
//! Every mode prints a human summary and one `RESULT key=value ...` line, which the bench
//! runner parses.

mod engine;
mod flood;
mod hist;
mod idle;
mod procstat;
mod proto;

use engine::{Control, Kind, LoadConfig, Phases, Style};
use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const USAGE: &str = "\
usage:
  loadgen run   --target HOST:PORT[,HOST:PORT...] [--kind iamat|whatsat|mixed] [--whatsat-pct N]
                [--style pipelined|oneshot] [--conns N] [--window N] [--threads N]
                [--duration SECS] [--warmup SECS] [--requests N] [--pids PID,...] [--echo]
                [--radius KM] [--bound N] [--ids N] [--distinct] [--id-prefix P] [--stop-file PATH]
                [--rate PER_SEC]
  loadgen flood --origin HOST:PORT --listen HOST:PORT [--wait HOST:PORT,...] [--samples N]
                [--probe-secs SECS] [--gap-ms MS] [--load-conns N] [--load-window N] [--threads N] [--pids PID,...]
                [--max-secs SECS] [--expect N]
  loadgen idle  --target HOST:PORT --conns N [--pids PID,...] [--hold-secs SECS]
";

/// `--key value` options and bare `--flag`s, parsed once; asking for an option that was not
/// given yields the default.
struct Args {
    values: HashMap<String, String>,
    flags: Vec<String>,
}

impl Args {
    fn parse(args: &[String], flag_names: &[&str]) -> Result<Args, String> {
        let mut values = HashMap::new();
        let mut flags = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let Some(key) = a.strip_prefix("--") else {
                return Err(format!("unexpected argument {a:?}"));
            };
            if flag_names.contains(&key) {
                flags.push(key.to_string());
            } else {
                let v = it.next().ok_or_else(|| format!("--{key} needs a value"))?;
                values.insert(key.to_string(), v.clone());
            }
        }
        Ok(Args { values, flags })
    }

    fn flag(&self, key: &str) -> bool {
        self.flags.iter().any(|f| f == key)
    }

    fn str(&self, key: &str, default: &str) -> String {
        self.values
            .get(key)
            .cloned()
            .unwrap_or_else(|| default.to_string())
    }

    fn num<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T, String> {
        match self.values.get(key) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("--{key}: bad number {v:?}")),
        }
    }

    fn addrs(&self, key: &str) -> Result<Vec<SocketAddr>, String> {
        let Some(v) = self.values.get(key) else {
            return Ok(Vec::new());
        };
        v.split(',')
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.to_socket_addrs()
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or_else(|| format!("--{key}: bad address {s:?}"))
            })
            .collect()
    }

    fn addr(&self, key: &str) -> Result<SocketAddr, String> {
        self.addrs(key)?
            .into_iter()
            .next()
            .ok_or_else(|| format!("--{key} is required"))
    }

    fn pids(&self) -> Result<Vec<u32>, String> {
        let v = self.str("pids", "");
        v.split(',')
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().map_err(|_| format!("--pids: bad pid {s:?}")))
            .collect()
    }
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some(mode) = argv.first() else {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    };
    let rest = &argv[1..];
    let result = match mode.as_str() {
        "run" => Args::parse(rest, &["echo", "distinct"]).and_then(|a| cmd_run(&a)),
        "flood" => Args::parse(rest, &[]).and_then(|a| cmd_flood(&a)),
        "idle" => Args::parse(rest, &[]).and_then(|a| cmd_idle(&a)),
        "-h" | "--help" | "help" => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        other => Err(format!("unknown mode {other:?}\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}

fn us(nanos: u64) -> f64 {
    nanos as f64 / 1000.0
}

fn secs(key: &str, a: &Args, default: f64) -> Result<Duration, String> {
    let s: f64 = a.num(key, default)?;
    if !(0.0..=86_400.0).contains(&s) {
        return Err(format!("--{key}: out of range"));
    }
    Ok(Duration::from_secs_f64(s))
}

/// `loadgen run`: drive load at one or more servers and report what came back.
fn cmd_run(a: &Args) -> Result<(), String> {
    let targets = a.addrs("target")?;
    if targets.is_empty() {
        return Err("--target is required".into());
    }
    let kind = match a.str("kind", "iamat").as_str() {
        "iamat" => Kind::Iamat,
        "whatsat" => Kind::Whatsat,
        "mixed" => Kind::Mixed,
        k => return Err(format!("--kind: unknown kind {k:?}")),
    };
    let style = match a.str("style", "pipelined").as_str() {
        "pipelined" => Style::Pipelined,
        "oneshot" => Style::Oneshot,
        s => return Err(format!("--style: unknown style {s:?}")),
    };
    let conns: usize = a.num("conns", 64)?;
    let ids: usize = a.num("ids", 16)?;
    let pid = std::process::id();
    let cfg = LoadConfig {
        targets,
        kind,
        whatsat_pct: a.num("whatsat-pct", 10)?,
        style,
        conns: conns.max(1),
        window: a.num::<usize>("window", 16)?.max(1),
        threads: a.num::<usize>("threads", 1)?.max(1),
        echo: a.flag("echo"),
        radius: a.str("radius", "10"),
        bound: a.num("bound", 5)?,
        query_ids: (0..ids.max(1)).map(|i| format!("lg{pid}q{i}")).collect(),
        id_prefix: a.str("id-prefix", &format!("lg{pid}c")),
        distinct: a.flag("distinct"),
        rate: match a.values.get("rate") {
            Some(_) => Some(a.num::<f64>("rate", 0.0)?.max(1.0)),
            None => None,
        },
    };
    let requests: Option<u64> = match a.values.get("requests") {
        Some(_) => Some(a.num("requests", 0)?),
        None => None,
    };
    let duration = secs("duration", a, 5.0)?;
    // Counting a fixed number of requests counts all of them: no warm-up then.
    let warmup = if requests.is_some() {
        Duration::ZERO
    } else {
        secs("warmup", a, 0.5)?
    };
    let pids = a.pids()?;
    procstat::raise_fd_limit();
    engine::prepare_queries(&cfg)?;

    let start = Instant::now();
    let phases = Phases {
        measure_from: start + warmup,
        // In request-count mode the duration is only a limit.
        end: start + warmup + duration,
    };
    let control = Control::new(requests);
    // Ended from outside (the runner's scale scenarios): the run stops once this file exists.
    if let Some(path) = a.values.get("stop-file") {
        let (path, control) = (
            std::path::PathBuf::from(path),
            std::sync::Arc::clone(&control),
        );
        std::thread::spawn(move || {
            while !path.exists() {
                std::thread::sleep(Duration::from_millis(10));
            }
            control
                .stop
                .store(true, std::sync::atomic::Ordering::Relaxed);
        });
    }
    // CPU is read at the start of the window, after the warm-up, by a helper thread.
    let pids2 = pids.clone();
    let cpu_at_start = std::thread::spawn(move || {
        std::thread::sleep(warmup);
        (
            procstat::total_cpu(&pids2),
            procstat::cpu_seconds(std::process::id()).unwrap_or(0.0),
            Instant::now(),
        )
    });
    let outcome = engine::run(&cfg, phases, &control);
    let finished = Instant::now().min(phases.end);
    let (cpu0, gen0, t0) = cpu_at_start.join().map_err(|_| "cpu thread panicked")?;
    let cpu_s = procstat::total_cpu(&pids) - cpu0;
    let gen_cpu_s = procstat::cpu_seconds(std::process::id()).unwrap_or(0.0) - gen0;
    let window = finished
        .saturating_duration_since(t0)
        .as_secs_f64()
        .max(1e-9);
    let rate = outcome.replies as f64 / window;
    let h = &outcome.hist;
    let peak_rss_kb = procstat::max_kb(&pids, "VmHWM");
    let rss_kb = procstat::sum_kb(&pids, "VmRSS");

    println!(
        "{:?} {:?} conns={} window={} over {:.2}s: {} replies, {:.0}/s, errors {}",
        cfg.kind, cfg.style, cfg.conns, cfg.window, window, outcome.replies, rate, outcome.errors
    );
    println!(
        "latency us: p50 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
        us(h.quantile(0.5)),
        us(h.quantile(0.99)),
        us(h.quantile(0.999)),
        us(h.max())
    );
    if !pids.is_empty() {
        println!(
            "servers {pids:?}: cpu {cpu_s:.2}s ({:.0}% of one core), peak rss {peak_rss_kb} kB (largest), rss {rss_kb} kB (sum)",
            100.0 * cpu_s / window
        );
    }
    println!(
        "generator: cpu {gen_cpu_s:.2}s ({:.0}% of one core)",
        100.0 * gen_cpu_s / window
    );
    if let Some(e) = &outcome.first_error {
        println!("first error: {e}");
    }
    println!(
        "RESULT replies={} all_replies={} rate={:.1} errors={} p50_us={:.1} p99_us={:.1} p999_us={:.1} max_us={:.1} cpu_s={:.3} gen_cpu_s={:.3} peak_rss_kb={} rss_kb={} window_s={:.3}",
        outcome.replies,
        outcome.all_replies,
        rate,
        outcome.errors,
        us(h.quantile(0.5)),
        us(h.quantile(0.99)),
        us(h.quantile(0.999)),
        us(h.max()),
        cpu_s,
        gen_cpu_s,
        peak_rss_kb,
        rss_kb,
        window
    );
    if outcome.replies == 0 {
        return Err(format!(
            "no good reply at all ({})",
            outcome.first_error.as_deref().unwrap_or("no error seen")
        ));
    }
    Ok(())
}

/// `loadgen flood`: propagation time of an IAMAT to the bench's place in the herd.
fn cmd_flood(a: &Args) -> Result<(), String> {
    let origin = a.addr("origin")?;
    let listen = a.addr("listen")?;
    let listener = flood::bind(listen).map_err(|e| format!("listen {listen}: {e}"))?;
    // The runner starts the herd once it sees this line: we are listening by then.
    println!("listening {listen}");
    let load_conns: usize = a.num("load-conns", 0)?;
    let load = (load_conns > 0).then(|| {
        flood::load_config(
            origin,
            load_conns,
            a.num("load-window", 16).unwrap_or(16),
            a.num("threads", 1).unwrap_or(1),
        )
    });
    if load.is_some() {
        procstat::raise_fd_limit();
    }
    let cfg = flood::FloodConfig {
        origin,
        wait_for: a.addrs("wait")?,
        samples: a.num("samples", 200)?,
        probe_time: secs("probe-secs", a, 5.0)?,
        gap: Duration::from_millis(a.num("gap-ms", 5)?),
        load,
        max_time: secs("max-secs", a, 60.0)?,
        expect: a.num("expect", 1)?,
    };
    let pids = a.pids()?;
    let out = flood::run(cfg, listener)?;
    let h = &out.hist;
    println!(
        "flood: {} samples, {} lost; us p50 {:.1}  p99 {:.1}  max {:.1}",
        h.count(),
        out.lost,
        us(h.quantile(0.5)),
        us(h.quantile(0.99)),
        us(h.max())
    );
    let (load_rate, load_errors) = match &out.load {
        Some((o, measured)) => {
            let rate = o.replies as f64 / measured.as_secs_f64().max(1e-9);
            println!("load alongside: {rate:.0} replies/s, errors {}", o.errors);
            (rate, o.errors)
        }
        None => (0.0, 0),
    };
    println!(
        "RESULT samples={} lost={} p50_us={:.1} p99_us={:.1} max_us={:.1} answer_p50_us={:.1} answer_p99_us={:.1} load_rate={:.1} load_errors={} peak_rss_kb={}",
        h.count(),
        out.lost,
        us(h.quantile(0.5)),
        us(h.quantile(0.99)),
        us(h.max()),
        us(out.answered.quantile(0.5)),
        us(out.answered.quantile(0.99)),
        load_rate,
        load_errors,
        procstat::max_kb(&pids, "VmHWM")
    );
    if h.count() == 0 {
        return Err("no probe arrived".into());
    }
    Ok(())
}

/// `loadgen idle`: memory of a server holding many idle connections.
fn cmd_idle(a: &Args) -> Result<(), String> {
    let target = a.addr("target")?;
    let conns: usize = a.num("conns", 10_000)?;
    let pids = a.pids()?;
    let out = idle::run(target, conns, &pids, secs("hold-secs", a, 1.0)?);
    let per_conn =
        (out.rss_kb.saturating_sub(out.rss_before_kb) as f64 * 1024.0) / out.opened.max(1) as f64;
    println!(
        "idle: {} opened, {} answered, {} errors; rss {} kB before, {} kB with them ({:.0} bytes per connection), peak {} kB",
        out.opened, out.answered, out.errors, out.rss_before_kb, out.rss_kb, per_conn, out.hwm_kb
    );
    if let Some(e) = &out.first_error {
        println!("first error: {e}");
    }
    println!(
        "RESULT opened={} answered={} errors={} rss_before_kb={} rss_kb={} peak_rss_kb={} bytes_per_conn={:.0}",
        out.opened, out.answered, out.errors, out.rss_before_kb, out.rss_kb, out.hwm_kb, per_conn
    );
    if out.answered == 0 {
        return Err("no connection was answered".into());
    }
    Ok(())
}
