//! The built-in implementations: their names, how each is started, and whether it can run on
//! this machine. proxy-herd, tokio, asyncio and the echo floor have kinds of their own (the
//! runner treats them specially: proxy-herd's places options, the echo floor's one server);
//! the herds added for the seeds' claims are start commands, like `--impl` herds.

use crate::herd::{Impl, ImplKind};
use crate::scenarios::{Scenario, What};
use std::path::Path;
use std::process::{Command, Stdio};

/// Every built-in implementation, in table order (the echo floor stays last).
pub const ALL: [&str; 8] = [
    "proxy-herd",
    "tokio",
    "asyncio",
    "twisted-per-update",
    "twisted-persistent",
    "node",
    "threads",
    "echo",
];

/// The Python implementations: an order of magnitude slower than the rest, so the default
/// full run measures them once instead of `--reps` times (see `--slow-reps`).
pub fn is_slow(imp: &Impl) -> bool {
    imp.kind == ImplKind::Asyncio || imp.name.starts_with("twisted-")
}

/// Scenarios an implementation sits out (its cell says `n/a`), beyond those that do not apply
/// to it at all (`scenarios::applies`): twisted-per-update in `idle`, where each of the 10,000
/// clients' one IAMAT sets off about eight flood connections through the herd: 80,000 Python
/// connects and accepts that take it past the scenario's two minutes on 2 cores. Its memory
/// per client connection is twisted-persistent's (the same protocol class serves both). And
/// the Twisted herds in the `scale-*` scenarios, for the reason asyncio does not take part: a
/// million IAMATs or fifty servers would take them many minutes. And twisted-per-update in
/// `link-lines`, which waits for every standing link to come up through its proxy: it has none.
pub fn sits_out(scenario: &Scenario, imp: &Impl) -> bool {
    match scenario.what {
        What::Idle { .. } | What::LinkLines { .. } => imp.name == "twisted-per-update",
        What::Scale(_) => imp.name.starts_with("twisted-"),
        _ => false,
    }
}

/// The virtual environment `run.sh` and `smoke.sh` create, with Twisted from
/// `requirements.txt`.
fn venv_python(bench: &Path) -> std::path::PathBuf {
    bench.join(".venv/bin/python")
}

/// Whether `program args` runs and exits 0 (quietly).
fn works(program: &Path, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The implementation called `name`, with `bench` the bench/ directory and `bin` where the
/// bench's binaries are. `Ok(None)`: it cannot run here (a note says why), so its column is
/// left out instead of failing the run.
pub fn builtin(name: &str, bench: &Path, bin: &Path) -> Result<Option<Impl>, String> {
    let args = "{name} --topology {topology} --log-dir {log_dir} --places-url {places_url}";
    let kind = match name {
        "proxy-herd" => ImplKind::ProxyHerd,
        "tokio" => ImplKind::Tokio,
        "asyncio" => ImplKind::Asyncio,
        "echo" => ImplKind::Echo,
        "twisted-per-update" | "twisted-persistent" => {
            let python = venv_python(bench);
            if !works(&python, &["-c", "import twisted"]) {
                eprintln!(
                    "note: no Twisted in {} (bench/run.sh and bench/smoke.sh install it); {name} is left out",
                    python.display()
                );
                return Ok(None);
            }
            let links = name.trim_start_matches("twisted-");
            ImplKind::Custom(format!(
                "{} {} {args} --links {links}",
                python.display(),
                bench.join("twisted-herd/twisted_herd.py").display()
            ))
        }
        "node" => {
            if !works(Path::new("node"), &["--version"]) {
                eprintln!("note: there is no `node` on this machine; the node column is left out");
                return Ok(None);
            }
            ImplKind::Custom(format!(
                "node {} {args}",
                bench.join("node-herd/herd.js").display()
            ))
        }
        "threads" => ImplKind::Custom(format!("{} {args}", bin.join("threads-herd").display())),
        other => return Err(format!("unknown implementation {other:?}")),
    };
    Ok(Some(Impl {
        name: name.to_string(),
        kind,
    }))
}
