//! The scenarios, and how one of them runs against one implementation: start a fresh herd
//! (and a places stub where needed), run the load generator, collect its figures, stop all.
//!
//! A fresh herd per run keeps runs independent (no state, memory or log size carried from one
//! scenario to the next) and lets each scenario choose the herd's options.

use crate::flood;
use crate::herd::{self, FARTHEST, HerdOpts, Impl, ImplKind, ORIGIN, Paths};
use crate::procs::Proc;
use crate::{linklines, scale};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// The figures of one run, as the load generator's `RESULT` line gives them.
pub type Metrics = BTreeMap<String, f64>;

#[derive(Clone, Debug)]
pub enum What {
    Load {
        style: &'static str,
        kind: &'static str,
        conns: usize,
        window: usize,
        log_off: bool,
        /// proxy-herd's offline places provider (the others have none).
        offline: bool,
        /// A places stub with this delay serves WHATSAT (Google legacy provider).
        stub_delay_ms: Option<u64>,
    },
    /// Flood latency to the bench at the farthest server, with this much IAMAT load (0: idle).
    Flood { load_conns: usize },
    /// This many idle client connections to the origin, and its memory.
    Idle { conns: usize },
    /// Lines received on neighbour links across the herd per IAMAT (`linklines`).
    LinkLines { requests: usize },
    /// The slow scale scenarios (`scale`): run only when named with `--scenarios`.
    Scale(scale::Kind),
}

/// One line of the results table: a figure from the run, how to show it.
#[derive(Clone, Debug)]
pub struct Row {
    pub key: &'static str,
    pub label: &'static str,
    /// Shown value = raw value × scale.
    pub scale: f64,
    pub decimals: usize,
    /// Whether a ratio to proxy-herd means anything for this figure.
    pub ratio: bool,
}

#[derive(Clone, Debug)]
pub struct Scenario {
    pub id: String,
    pub title: String,
    pub what: What,
    pub rows: Vec<Row>,
}

pub const fn row(key: &'static str, label: &'static str, scale: f64, decimals: usize) -> Row {
    Row {
        key,
        label,
        scale,
        decimals,
        ratio: true,
    }
}

/// How long, how big: the knobs of a whole run.
#[derive(Clone, Debug)]
pub struct Settings {
    pub duration: f64,
    pub warmup: f64,
    pub reps: usize,
    pub idle_conns: usize,
    pub stub_delay_ms: u64,
    /// Pipelined connection counts to sweep.
    pub sweep: Vec<usize>,
    pub window: usize,
    pub oneshot_conns: usize,
    pub threads: usize,
    /// IAMATs of the link-lines scenario.
    pub link_requests: usize,
    /// Distinct clients of the scale scenarios, and the big herd's size.
    pub scale_clients: usize,
    pub big_herd: usize,
}

impl Settings {
    pub fn full() -> Settings {
        Settings {
            duration: 5.0,
            warmup: 1.0,
            reps: 3,
            idle_conns: 10_000,
            stub_delay_ms: 50,
            sweep: vec![1, 16, 64, 1024],
            window: 16,
            oneshot_conns: 64,
            threads: 1,
            link_requests: 20_000,
            scale_clients: 1_000_000,
            big_herd: 50,
        }
    }

    /// Tiny and quick: proves every tool works, measures nothing worth quoting.
    pub fn smoke() -> Settings {
        Settings {
            duration: 0.3,
            warmup: 0.2,
            reps: 1,
            idle_conns: 200,
            stub_delay_ms: 5,
            sweep: vec![1, 64],
            window: 8,
            oneshot_conns: 8,
            threads: 1,
            link_requests: 500,
            scale_clients: 3_000,
            big_herd: 8,
        }
    }
}

fn load(style: &'static str, kind: &'static str, conns: usize, window: usize) -> What {
    What::Load {
        style,
        kind,
        conns,
        window,
        log_off: false,
        offline: false,
        stub_delay_ms: None,
    }
}

/// Every scenario, in table order.
pub fn all(s: &Settings) -> Vec<Scenario> {
    let rate = row("rate", "replies/s", 1.0, 0);
    let p50 = row("p50_us", "p50 latency (ms)", 0.001, 2);
    let p99 = row("p99_us", "p99 latency (ms)", 0.001, 2);
    let cpu = row("cpu_per_100k", "server CPU s per 100k replies", 1.0, 2);
    // The generator's own load: near 100% means it, not the server, may be the limit.
    let gen_cpu = Row {
        ratio: false,
        ..row("gen_cpu_pct", "load generator CPU (% of a core)", 1.0, 0)
    };
    let mut list = Vec::new();
    for &conns in &s.sweep {
        list.push(Scenario {
            id: format!("iamat-pipe-{conns}"),
            title: format!(
                "IAMAT pipelined, {conns} conn, window {}, flooded, logging on",
                s.window
            ),
            what: load("pipelined", "iamat", conns, s.window),
            rows: vec![
                rate.clone(),
                p50.clone(),
                p99.clone(),
                cpu.clone(),
                gen_cpu.clone(),
            ],
        });
    }
    list.push(Scenario {
        id: "iamat-oneshot".into(),
        title: format!(
            "IAMAT one-shot (connect, line, half-close, read), {} at a time",
            s.oneshot_conns
        ),
        what: load("oneshot", "iamat", s.oneshot_conns, 1),
        rows: vec![rate.clone(), p99.clone(), cpu.clone(), gen_cpu],
    });
    list.push(Scenario {
        id: "flood-idle".into(),
        title: format!("flood latency {ORIGIN} to {FARTHEST} (3 hops) + 1 hop to the bench, idle"),
        what: What::Flood { load_conns: 0 },
        rows: vec![
            row("p50_us", "p50 (µs)", 1.0, 0),
            row("p99_us", "p99 (µs)", 1.0, 0),
            row("lost", "probes lost", 1.0, 0),
        ],
    });
    list.push(Scenario {
        id: "flood-load".into(),
        title: format!("flood latency under IAMAT load (64 conn pipelined to {ORIGIN})"),
        what: What::Flood { load_conns: 64 },
        rows: vec![
            row("p50_us", "p50 (ms)", 0.001, 2),
            row("p99_us", "p99 (ms)", 0.001, 2),
            row("lost", "probes lost", 1.0, 0),
            row(
                "answer_p50_us",
                "the probe answered by the origin, p50 (ms)",
                0.001,
                2,
            ),
            row(
                "answer_p99_us",
                "the probe answered by the origin, p99 (ms)",
                0.001,
                2,
            ),
            row("load_rate", "load replies/s", 1.0, 0),
        ],
    });
    let mut offline = load("pipelined", "whatsat", 64, s.window);
    if let What::Load { offline: o, .. } = &mut offline {
        *o = true;
    }
    list.push(Scenario {
        id: "whatsat-offline".into(),
        title: "WHATSAT, offline provider, 64 conn pipelined".into(),
        what: offline,
        rows: vec![rate.clone(), p99.clone()],
    });
    let mut google = load("pipelined", "whatsat", 64, 4);
    if let What::Load { stub_delay_ms, .. } = &mut google {
        *stub_delay_ms = Some(s.stub_delay_ms);
    }
    list.push(Scenario {
        id: "whatsat-google".into(),
        title: format!(
            "WHATSAT, Google legacy provider vs the stub ({} ms delay), 64 conn, window 4, 16 clients",
            s.stub_delay_ms
        ),
        what: google,
        rows: vec![
            rate.clone(),
            p99.clone(),
            row("lookups_per_100", "stub lookups per 100 replies", 1.0, 1),
        ],
    });
    list.push(Scenario {
        id: "idle".into(),
        title: format!("{} idle client connections to {ORIGIN}", s.idle_conns),
        what: What::Idle {
            conns: s.idle_conns,
        },
        rows: vec![
            row("rss_kb", "server RSS (MB)", 1.0 / 1024.0, 1),
            row("bytes_per_conn", "bytes per connection", 1.0, 0),
        ],
    });
    let mut log_off = load("pipelined", "iamat", 64, s.window);
    if let What::Load { log_off: l, .. } = &mut log_off {
        *l = true;
    }
    list.push(Scenario {
        id: "iamat-pipe-64-logoff".into(),
        title: "IAMAT pipelined, 64 conn, logging off (`--log-level off`)".into(),
        what: log_off,
        rows: vec![rate, p99, cpu],
    });
    list.push(linklines::scenario(s));
    list.extend(scale::scenarios(s));
    list
}

impl Scenario {
    /// Slow scenarios that `all` runs only when named with `--scenarios`.
    pub fn opt_in(&self) -> bool {
        matches!(self.what, What::Scale(_))
    }
}

/// Whether a scenario means anything for an implementation.
pub fn applies(sc: &Scenario, imp: &Impl) -> bool {
    match (&sc.what, &imp.kind) {
        (What::Load { offline: true, .. }, k) => *k == ImplKind::ProxyHerd,
        (
            What::Load {
                kind,
                log_off,
                stub_delay_ms,
                ..
            },
            ImplKind::Echo,
        ) => *kind == "iamat" && !log_off && stub_delay_ms.is_none(),
        // Idle flood latency on the echo floor: the chain of bare forwarders.
        (What::Flood { load_conns: 0 }, ImplKind::Echo) => true,
        // A million IAMATs or fifty servers would take asyncio many minutes.
        (What::Scale(_), k) => *k != ImplKind::Echo && *k != ImplKind::Asyncio,
        (_, ImplKind::Echo) => false,
        _ => true,
    }
}

/// Parses the `RESULT k=v ...` line of a load generator's output.
pub fn parse_result(output: &str) -> Option<Metrics> {
    let line = output.lines().rev().find(|l| l.starts_with("RESULT "))?;
    Some(
        line.split_whitespace()
            .skip(1)
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                Some((k.to_string(), v.parse().ok()?))
            })
            .collect(),
    )
}

/// Runs the load generator with `args` to completion (bounded by `limit`) and returns its
/// figures, or its error output.
pub fn loadgen(
    paths: &Paths,
    args: &[String],
    tag: &str,
    limit: Duration,
) -> Result<Metrics, String> {
    let out_path = paths.work.join(format!("{tag}.loadgen.out"));
    let cmd = format!("{} {}", paths.bin.join("loadgen").display(), args.join(" "));
    let mut p = Proc::spawn("loadgen", &cmd, &out_path, &[])?;
    let status = p.wait_for(limit)?;
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    if !status.success() {
        let tail: Vec<&str> = output.lines().rev().take(3).collect();
        return Err(format!("loadgen failed: {}", tail.join(" / ")));
    }
    parse_result(&output).ok_or_else(|| "no RESULT line from loadgen".to_string())
}

/// Runs one scenario against one implementation once.
pub fn run_one(
    sc: &Scenario,
    imp: &Impl,
    s: &Settings,
    paths: &Paths,
    shared_stub_url: &str,
    tag: &str,
) -> Result<Metrics, String> {
    let ports = herd::free_ports(herd::SERVERS.len() + 1)?;
    let (herd_ports, bench_port) = (&ports[..herd::SERVERS.len()], ports[herd::SERVERS.len()]);
    let addr_of = |name: &str| {
        let i = herd::SERVERS
            .iter()
            .position(|n| *n == name)
            .expect("a server");
        SocketAddr::from(([127, 0, 0, 1], herd_ports[i]))
    };
    let origin = addr_of(ORIGIN);
    let mut opts = HerdOpts {
        places_url: shared_stub_url.to_string(),
        ..HerdOpts::default()
    };
    match &sc.what {
        What::Load {
            style,
            kind,
            conns,
            window,
            log_off,
            offline,
            stub_delay_ms,
        } => {
            opts.log_off = *log_off;
            opts.offline = *offline;
            // A stub of its own, so its count of lookups is this run's alone.
            let stub = match stub_delay_ms {
                Some(d) => Some(herd::start_stub(paths, *d, &format!("{tag}.stub"))?),
                None => None,
            };
            if let Some((_, url)) = &stub {
                opts.places_url = url.clone();
            }
            let mut h = herd::start(imp, paths, &opts, tag, herd_ports)?;
            // Thousands of connections take a while to be accepted: a longer warm-up.
            let warmup = if *conns >= 512 {
                s.warmup.max(2.0)
            } else {
                s.warmup
            };
            let mut args = vec![
                "run".to_string(),
                format!("--target {origin}"),
                format!("--style {style}"),
                format!("--kind {kind}"),
                format!("--conns {conns}"),
                format!("--window {window}"),
                format!("--threads {}", s.threads),
                format!("--duration {}", s.duration),
                format!("--warmup {warmup}"),
                format!("--pids {}", h.pids()),
            ];
            if imp.kind == ImplKind::Echo {
                args.push("--echo".into());
            }
            let limit = Duration::from_secs_f64(s.duration + warmup + 60.0);
            let mut m = loadgen(paths, &args, tag, limit)?;
            h.check_alive()?;
            let replies = m.get("replies").copied().unwrap_or(0.0);
            let cpu = m.get("cpu_s").copied().unwrap_or(0.0);
            if replies > 0.0 {
                m.insert("cpu_per_100k".into(), cpu / replies * 100_000.0);
            }
            let window = m.get("window_s").copied().unwrap_or(0.0);
            if window > 0.0 {
                let gen_cpu = m.get("gen_cpu_s").copied().unwrap_or(0.0);
                m.insert("gen_cpu_pct".into(), 100.0 * gen_cpu / window);
            }
            if let Some((_stub, url)) = &stub {
                let lookups = herd::stub_requests(url)? as f64;
                let all = m.get("all_replies").copied().unwrap_or(0.0).max(1.0);
                m.insert("lookups_per_100".into(), 100.0 * lookups / all);
            }
            Ok(m)
        }
        What::Flood { load_conns } => {
            opts.bench_port = Some(bench_port);
            let bench = SocketAddr::from(([127, 0, 0, 1], bench_port));
            // The echo floor runs the path as a chain of bare forwarders (`flood`).
            let floor = imp.kind == ImplKind::Echo;
            let names: &[&str] = if floor { &flood::PATH } else { &herd::SERVERS };
            let wait: Vec<SocketAddr> = names.iter().map(|n| addr_of(n)).collect();
            let probe = flood::Probe {
                origin,
                bench,
                wait: &wait,
                expect: 1,
                load_conns: *load_conns,
            };
            flood::run(&probe, s, paths, tag, || {
                if floor {
                    flood::start_floor(paths, tag, &wait, bench)
                } else {
                    herd::start(imp, paths, &opts, tag, herd_ports)
                }
            })
        }
        What::LinkLines { requests } => linklines::run(imp, *requests, paths, &opts, tag),
        What::Scale(kind) => scale::run(kind, imp, s, paths, shared_stub_url, tag),
        What::Idle { conns } => {
            let h = herd::start(imp, paths, &opts, tag, herd_ports)?;
            let args = vec![
                "idle".to_string(),
                format!("--target {origin}"),
                format!("--conns {conns}"),
                format!("--pids {}", h.pid_of(ORIGIN)),
                "--hold-secs 1".to_string(),
            ];
            let m = loadgen(paths, &args, tag, Duration::from_secs(120))?;
            if m.get("answered").copied().unwrap_or(0.0) < *conns as f64 {
                return Err(format!(
                    "only {} of {conns} idle connections were answered",
                    m.get("answered").copied().unwrap_or(0.0)
                ));
            }
            Ok(m)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_result_lines() {
        let m = parse_result("hello\nRESULT replies=10 rate=5.5 bad=x\n").unwrap();
        assert_eq!(m["replies"], 10.0);
        assert_eq!(m["rate"], 5.5);
        assert!(!m.contains_key("bad"));
        assert!(parse_result("nothing").is_none());
    }

    #[test]
    fn echo_runs_only_plain_iamat() {
        let s = Settings::smoke();
        let echo = Impl {
            name: "echo".into(),
            kind: ImplKind::Echo,
        };
        let ids: Vec<String> = all(&s)
            .into_iter()
            .filter(|sc| applies(sc, &echo))
            .map(|sc| sc.id)
            .collect();
        assert_eq!(
            ids,
            [
                "iamat-pipe-1",
                "iamat-pipe-64",
                "iamat-oneshot",
                "flood-idle"
            ]
        );
    }
}
