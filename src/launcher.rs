//! `proxy-herd --herd`: every server of the topology as its own child process of this binary.
//!
//! Each server still runs alone in its process (the logger is global to a process, and a
//! herd is meant to survive any one of its servers dying). This parent only starts them,
//! watches them, and on SIGTERM or Ctrl-C stops them all.

use std::process::{Child, Command};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::cli::Options;
use crate::signals;
use crate::topology::Topology;

/// How long stopped servers get to flush their logs before they are killed.
const GRACE: Duration = Duration::from_secs(5);

/// Starts the herd and waits. Returns when a signal stopped it (`Ok`) or a server died (`Err`).
pub fn run_herd(options: &Options) -> Result<(), String> {
    let (topology, source) = Topology::load_or_default(options.topology.as_deref())?;
    if source == crate::topology::DEFAULT_HERD_NAME {
        println!("no --topology given and no ./topology.txt here: running the {source}");
    }
    signals::install().map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find this program's path: {e}"))?;
    let mut children: Vec<(String, Child)> = Vec::new();
    for server in &topology.servers {
        match Command::new(&exe)
            .arg(&server.name)
            .args(&options.passthrough)
            .spawn()
        {
            Ok(child) => {
                println!(
                    "started {} on {} (pid {})",
                    server.name,
                    server.addr,
                    child.id()
                );
                children.push((server.name.clone(), child));
            }
            Err(e) => {
                stop_all(&mut children);
                return Err(format!("cannot start {}: {e}", server.name));
            }
        }
    }
    println!(
        "herd running; logs in {}; Ctrl-C stops it",
        options.log_dir.display()
    );
    let result = watch(&mut children);
    if options.timeline {
        let names: Vec<&str> = topology.servers.iter().map(|s| s.name.as_str()).collect();
        match crate::timeline::merge(&options.log_dir, &names) {
            Ok(path) => println!("timeline of the herd: {}", path.display()),
            Err(e) => eprintln!("proxy-herd: cannot merge the timelines: {e}"),
        }
    }
    result
}

/// Waits until a signal (`Ok`) or a server's death (`Err`), then stops every server.
fn watch(children: &mut [(String, Child)]) -> Result<(), String> {
    loop {
        if signals::stop_requested() {
            stop_all(children);
            println!("herd stopped");
            return Ok(());
        }
        for (name, child) in children.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                let why = format!("{name} exited ({status}); stopping the herd");
                stop_all(children);
                return Err(why);
            }
        }
        sleep(Duration::from_millis(50));
    }
}

/// Sends SIGTERM to every child still running, waits up to [`GRACE`], then kills the rest.
fn stop_all(children: &mut [(String, Child)]) {
    for (_, child) in children.iter_mut() {
        if let Ok(None) = child.try_wait() {
            // SAFETY: kill(2) on our own child's pid, which is not reaped yet.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        }
    }
    let deadline = Instant::now() + GRACE;
    for (_, child) in children.iter_mut() {
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}
