//! bench-runner: one command that runs every scenario against every herd and prints one
//! markdown table.
//!
//! # Layout
//! - `procs`: every child process, stopped on success, error and Ctrl-C alike;
//! - `herd`: implementations, free ports, topology files, starting and stopping herds;
//! - `scenarios`: what is measured, and one run of one scenario against one implementation;
//! - `impls`: the built-in implementations, how each starts, whether it can run here;
//! - `table`: medians over repetitions, ratios to proxy-herd, the markdown;
//! - `charts`: SVG charts of the same medians, written next to the table;
//! - `flood`: flood latency (the prober joining a herd as the bench) and the forwarding floor;
//! - `linklines`: lines on neighbour links per IAMAT, counted by proxies on every link;
//! - `scale`: a million clients, a restart while they are known, a herd of fifty;
//! - `mixed`: herds mixing every implementation, checking that locations flood through.
//!
//! Modes: `all` (the full benchmark), `smoke` (every tool once, tiny durations, exit status
//! says whether all worked), `mixed`, `list`.

mod charts;
mod flood;
mod herd;
mod impls;
mod linklines;
mod mixed;
mod procs;
mod scale;
mod scenarios;
mod table;

use herd::{Impl, ImplKind, Paths};
use scenarios::{Metrics, Settings};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

const USAGE: &str = "\
usage: bench-runner MODE [options]
modes:
  all     every scenario x every implementation, interleaved, median of --reps; prints a table
  smoke   every tool once with tiny durations, plus the mixed herd; non-zero exit on any failure
  mixed   herds mixing every implementation: do locations flood through all?
  list    the scenarios
options:
  --duration SECS       measured time of each run (default 5; smoke 0.3)
  --warmup SECS         unmeasured time before it (default 1)
  --reps N              repetitions; the table shows medians (default 3)
  --impls LIST          of proxy-herd,tokio,asyncio,twisted-per-update,twisted-persistent,
                        node,threads,echo (default: all; one that cannot run here is left out
                        with a note: no `node`, no Twisted in bench/.venv)
  --slow-reps N         repetitions for the Python herds (asyncio, twisted-*), at most --reps
                        (default 1 in `all`: they are 10-100x slower and their figures vary
                        less than their distance to the others)
  --slow-duration SECS  measured time of their runs, at most --duration (default 3)
  --impl NAME=CMD       add a herd by its start command, with {name} {topology} {places_url}
                        {log_dir} placeholders, e.g. --impl 'mine=python3 my.py {name} --topology {topology}'
  --scenarios LIST      only these scenario ids (see `list`); the scale-* scenarios run only
                        when named here (smoke runs them with tiny sizes)
  --clients N           distinct clients of the scale-1m and scale-restart scenarios (default 1000000)
  --herd-size N         servers of the scale-herd scenario (default 50)
  --link-requests N     IAMATs of the link-lines scenario (default 20000)
  --idle-conns N        connections of the idle scenario (default 10000)
  --threads N           load generator threads (default 1)
  --proxy-herd PATH     the proxy-herd binary (default: ../target/release/proxy-herd)
  --out FILE            also write the table to FILE, and SVG charts next to it
                        (FILE's name without .md, then -replies.svg, -flood.svg, ...)
  --keep                keep the scratch directory (logs, topologies, outputs)
  --work-dir DIR        where the scratch directory goes (default: $TMPDIR or /tmp); the
                        herds' logs are written there, so its disk is part of `logging on`
";

struct Cli {
    mode: String,
    settings: Settings,
    impls: Vec<Impl>,
    only: Option<Vec<String>>,
    proxy_herd: PathBuf,
    /// Repetitions for the slow (Python) herds, at most `reps`.
    slow_reps: usize,
    /// Measured seconds per run for the slow (Python) herds, at most `duration`.
    slow_duration: f64,
    out: Option<PathBuf>,
    keep: bool,
    /// Where the scratch directory goes (logs of every herd are written there).
    work_root: PathBuf,
}

fn parse_cli() -> Result<Cli, String> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mode = argv.first().cloned().ok_or_else(|| USAGE.to_string())?;
    let mut settings = if mode == "smoke" {
        Settings::smoke()
    } else {
        Settings::full()
    };
    let bench = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("bench/")
        .to_path_buf();
    let mut cli = Cli {
        mode,
        settings: Settings::full(),
        impls: Vec::new(),
        only: None,
        proxy_herd: bench.join("../target/release/proxy-herd"),
        slow_reps: 1,
        slow_duration: 3.0,
        out: None,
        keep: false,
        work_root: std::env::temp_dir(),
    };
    let mut builtin = impls::ALL.map(String::from).to_vec();
    let mut custom = Vec::new();
    let mut it = argv.iter().skip(1);
    while let Some(a) = it.next() {
        if a == "--keep" {
            cli.keep = true;
            continue;
        }
        let v = it.next().ok_or_else(|| format!("{a} needs a value"))?;
        let num = |v: &str| {
            v.parse::<f64>()
                .map_err(|_| format!("{a}: bad number {v:?}"))
        };
        match a.as_str() {
            "--duration" => settings.duration = num(v)?.clamp(0.05, 3600.0),
            "--warmup" => settings.warmup = num(v)?.clamp(0.0, 600.0),
            "--reps" => settings.reps = (num(v)? as usize).clamp(1, 100),
            "--slow-reps" => cli.slow_reps = (num(v)? as usize).clamp(1, 100),
            "--slow-duration" => cli.slow_duration = num(v)?.clamp(0.05, 3600.0),
            "--idle-conns" => settings.idle_conns = (num(v)? as usize).clamp(1, 60_000),
            "--threads" => settings.threads = (num(v)? as usize).clamp(1, 64),
            "--clients" => settings.scale_clients = (num(v)? as usize).clamp(1, 100_000_000),
            "--herd-size" => settings.big_herd = (num(v)? as usize).clamp(3, 200),
            "--link-requests" => settings.link_requests = (num(v)? as usize).clamp(1, 10_000_000),
            "--impls" => builtin = v.split(',').map(String::from).collect(),
            "--impl" => {
                let (name, cmd) = v.split_once('=').ok_or("--impl wants NAME=COMMAND")?;
                custom.push(Impl {
                    name: name.to_string(),
                    kind: ImplKind::Custom(cmd.to_string()),
                });
            }
            "--scenarios" => cli.only = Some(v.split(',').map(String::from).collect()),
            "--proxy-herd" => cli.proxy_herd = PathBuf::from(v),
            "--out" => cli.out = Some(PathBuf::from(v)),
            "--work-dir" => cli.work_root = PathBuf::from(v),
            _ => return Err(format!("unknown option {a}\n{USAGE}")),
        }
    }
    let exe = std::env::current_exe().map_err(|e| format!("own path: {e}"))?;
    let bin = exe.parent().ok_or("the runner's directory")?;
    for name in builtin {
        if let Some(imp) = impls::builtin(&name, &bench, bin)? {
            cli.impls.push(imp);
        }
    }
    // Custom herds go before the echo floor, which stays the last column.
    let echo_at = cli
        .impls
        .iter()
        .position(|i| i.kind == ImplKind::Echo)
        .unwrap_or(cli.impls.len());
    cli.impls.splice(echo_at..echo_at, custom);
    cli.settings = settings;
    Ok(cli)
}

fn main() -> ExitCode {
    let cli = match parse_cli() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    procs::install_signal_handlers();
    let exe = std::env::current_exe().expect("own path");
    let work = cli
        .work_root
        .join(format!("proxy-herd-bench-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&work) {
        eprintln!("{}: {e}", work.display());
        return ExitCode::FAILURE;
    }
    let paths = Paths {
        bin: exe.parent().expect("bin dir").to_path_buf(),
        bench: PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("bench/")
            .to_path_buf(),
        proxy_herd: cli.proxy_herd.clone(),
        work: work.clone(),
    };
    let code = match cli.mode.as_str() {
        "list" => {
            for sc in scenarios::all(&cli.settings) {
                println!("{:24} {}", sc.id, sc.title);
            }
            ExitCode::SUCCESS
        }
        "mixed" => report(mixed::run(&paths, &cli.impls)),
        "all" | "smoke" => bench(&cli, &paths),
        other => {
            eprintln!("unknown mode {other:?}\n{USAGE}");
            ExitCode::from(2)
        }
    };
    if cli.keep {
        eprintln!("kept {}", work.display());
    } else {
        let _ = std::fs::remove_dir_all(&work);
    }
    code
}

fn report(r: Result<(), String>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The settings of one run of `imp`. The Python herds (10–100× slower than the rest, and
/// steady within a second) are measured for at most `--slow-duration` in `all`, to keep the
/// whole run near 20 minutes; in `smoke` they get a second of warm-up and of measuring, as
/// their first WHATSAT replies (256 lookups at once) and twisted-per-update's replies under
/// its storm of flood connections come in bursts further apart than the smoke's usual 0.3 s.
fn settings_for(cli: &Cli, imp: &Impl) -> Settings {
    let mut s = cli.settings.clone();
    if impls::is_slow(imp) {
        if cli.mode == "smoke" {
            s.warmup = s.warmup.max(1.0);
            s.duration = s.duration.max(1.0);
        } else {
            s.duration = s.duration.min(cli.slow_duration);
        }
    }
    s
}

/// Runs every scenario against every implementation, `reps` times, interleaved: within a
/// repetition each scenario runs on every implementation in turn, starting with a different
/// one each repetition, so slow drift of the machine hits all alike.
fn bench(cli: &Cli, paths: &Paths) -> ExitCode {
    let smoke = cli.mode == "smoke";
    let s = &cli.settings;
    let mut impls = cli.impls.clone();
    if impls.iter().any(|i| i.kind == ImplKind::ProxyHerd) && !paths.proxy_herd.is_file() {
        eprintln!(
            "note: {} is not built (cargo build --release at the repo root); proxy-herd is left out",
            paths.proxy_herd.display()
        );
        impls.retain(|i| i.kind != ImplKind::ProxyHerd);
    }
    let scenarios: Vec<_> = scenarios::all(s)
        .into_iter()
        .filter(|sc| match &cli.only {
            Some(only) => only.contains(&sc.id),
            None => smoke || !sc.opt_in(),
        })
        .collect();
    let started = Instant::now();
    let mut results: HashMap<(String, String), Vec<Result<Metrics, String>>> = HashMap::new();
    let mut failures = 0;
    // One stub for every herd's place URL; WHATSAT scenarios start their own.
    let shared_stub = match herd::start_stub(paths, 0, "shared-stub") {
        Ok(s) => s,
        Err(e) => {
            eprintln!("FAILED: {e}");
            return ExitCode::FAILURE;
        }
    };
    for rep in 0..s.reps {
        for sc in &scenarios {
            let runnable: Vec<&Impl> = impls
                .iter()
                .filter(|i| scenarios::applies(sc, i) && !impls::sits_out(sc, i))
                .filter(|i| smoke || rep < cli.slow_reps || !impls::is_slow(i))
                .collect();
            for k in 0..runnable.len() {
                let imp = runnable[(k + rep) % runnable.len()];
                let tag = format!("r{rep}-{}-{}", sc.id, imp.name);
                let t0 = Instant::now();
                let settings = settings_for(cli, imp);
                let mut r = scenarios::run_one(sc, imp, &settings, paths, &shared_stub.1, &tag);
                // Every herd logs every line: a full run writes tens of GB of logs. Each
                // run's directory goes as soon as its figures are in (unless `--keep`).
                if !cli.keep {
                    let _ = std::fs::remove_dir_all(paths.work.join(&tag));
                }
                // In a smoke run, a wrong reply is a failure even if most replies were right.
                if smoke
                    && let Ok(m) = &r
                    && m.get("errors").copied().unwrap_or(0.0) > 0.0
                {
                    r = Err(format!("{} errors ({})", m["errors"], table::summary(m)));
                }
                match &r {
                    Ok(m) => eprintln!(
                        "[rep {}/{}] {:22} {:12} {} ({:.1}s)",
                        rep + 1,
                        s.reps,
                        sc.id,
                        imp.name,
                        table::summary(m),
                        t0.elapsed().as_secs_f64()
                    ),
                    Err(e) => {
                        failures += 1;
                        eprintln!(
                            "[rep {}/{}] {:22} {:12} FAILED: {e}",
                            rep + 1,
                            s.reps,
                            sc.id,
                            imp.name
                        );
                    }
                }
                results
                    .entry((sc.id.clone(), imp.name.clone()))
                    .or_default()
                    .push(r);
            }
        }
    }
    drop(shared_stub);
    let mut md = table::markdown(&scenarios, &impls, &results, s, started.elapsed());
    let slow: Vec<&str> = impls
        .iter()
        .filter(|i| impls::is_slow(i))
        .map(|i| i.name.as_str())
        .collect();
    let sat_out: Vec<String> = scenarios
        .iter()
        .flat_map(|sc| {
            impls
                .iter()
                .filter(|i| impls::sits_out(sc, i))
                .map(|i| format!("{} in `{}`", i.name, sc.id))
        })
        .collect();
    if !sat_out.is_empty() {
        md.push_str(&format!(
            "\nAlso `n/a`: {} (see bench/README.md, Notes).\n",
            sat_out.join(", ")
        ));
    }
    if !smoke && !slow.is_empty() {
        md.push_str(&format!(
            "\nThe Python herds ({}) ran {} of the {} repetitions, {} s measured each (`--slow-reps`, `--slow-duration`), to keep the run short.\n",
            slow.join(", "),
            cli.slow_reps.min(s.reps),
            s.reps,
            cli.slow_duration.min(s.duration)
        ));
    }
    println!("{md}");
    if let Some(out) = &cli.out {
        if let Err(e) = std::fs::write(out, &md) {
            eprintln!("{}: {e}", out.display());
        }
        match charts::write(out, &scenarios, &impls, &results) {
            Ok(files) => {
                for f in files {
                    eprintln!("chart: {}", f.display());
                }
            }
            Err(e) => eprintln!("charts: {e}"),
        }
    }
    let mut ok = failures == 0;
    if smoke {
        match mixed::run(paths, &impls) {
            Ok(()) => eprintln!("mixed herd: every location reached every server"),
            Err(e) => {
                eprintln!("mixed herd FAILED: {e}");
                ok = false;
            }
        }
        eprintln!(
            "smoke: {} ({failures} failed runs, {:.0}s)",
            if ok { "ok" } else { "FAILED" },
            started.elapsed().as_secs_f64()
        );
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
