//! Flood latency: the prober that joins a herd as the bench (`loadgen flood`), and the
//! forwarding floor it is read against.
//!
//! **The prober** listens at the bench's address *before* the herd starts, so the servers'
//! links to it come up at once instead of after a reconnect backoff; the herd is started by a
//! closure once it listens. `expect` says over how many links each probe must arrive: 1 when
//! the bench is a neighbour of the farthest server only, every server's count when it is a
//! neighbour of all (the time to reach the whole herd).
//!
//! **The floor** is a chain of bare mio line forwarders (the echo server in forward mode) with
//! the hops of the flood-latency path: probe → Hamilton → Parker → Alford (or Bolden) →
//! Powell → bench, four servers and five TCP hops. One forwarder sits at each of those
//! servers' ports, in that order, the last connected to the bench; the first turns the probe's
//! IAMAT into an AT line, forwards it, then answers the probe with it. Each forwarder writes a
//! line to one next hop, where a herd server also stores it, logs it and writes it to its
//! other neighbours: the difference is what a herd hop costs above the floor.

use crate::herd::{self, Herd, Paths};
use crate::procs::Proc;
use crate::scenarios::{Metrics, Settings, parse_result};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The servers the flood-latency probe passes, origin first.
pub const PATH: [&str; 4] = ["Hamilton", "Parker", "Alford", "Powell"];

/// What one flood-latency run probes.
pub struct Probe<'a> {
    pub origin: SocketAddr,
    pub bench: SocketAddr,
    /// Every server, polled until it accepts before probing starts.
    pub wait: &'a [SocketAddr],
    /// Links each probe must arrive over.
    pub expect: usize,
    /// Pipelined IAMAT connections to the origin alongside the probes (0: idle).
    pub load_conns: usize,
}

/// Starts the prober, then the herd (`start`), and returns the prober's figures.
pub fn run(
    p: &Probe,
    s: &Settings,
    paths: &Paths,
    tag: &str,
    start: impl FnOnce() -> Result<Herd, String>,
) -> Result<Metrics, String> {
    let samples = ((s.duration * 1000.0 / 5.0) as usize).clamp(20, 2000);
    let wait: Vec<String> = p.wait.iter().map(|a| a.to_string()).collect();
    let out_path = paths.work.join(format!("{tag}.loadgen.out"));
    let cmd = format!(
        "{} flood --origin {} --listen {} --wait {} --expect {} --samples {samples} --probe-secs {} --gap-ms 5 --load-conns {} --load-window {} --threads {} --max-secs {}",
        paths.bin.join("loadgen").display(),
        p.origin,
        p.bench,
        wait.join(","),
        p.expect,
        s.duration,
        p.load_conns,
        s.window,
        s.threads,
        s.duration + 60.0
    );
    let mut prober = Proc::spawn("loadgen-flood", &cmd, &out_path, &[])?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&p.bench, Duration::from_millis(200)).is_err() {
        if prober.exited().is_some() || Instant::now() >= deadline {
            return Err("the flood prober did not start listening".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut h = start()?;
    let status = prober.wait_for(Duration::from_secs_f64(s.duration + 90.0))?;
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    if !status.success() {
        let tail: Vec<&str> = output.lines().rev().take(3).collect();
        return Err(format!("flood probe failed: {}", tail.join(" / ")));
    }
    h.check_alive()?;
    parse_result(&output).ok_or_else(|| "no RESULT line from the flood probe".into())
}

/// Starts the floor's chain at `addrs` (one per name of `PATH`), the last forwarding to
/// `bench`, which must be listening already. Each forwarder is started once the next one
/// accepts connections.
pub fn start_floor(
    paths: &Paths,
    tag: &str,
    addrs: &[SocketAddr],
    bench: SocketAddr,
) -> Result<Herd, String> {
    let dir = paths.work.join(tag);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut chain = Herd {
        addrs: Vec::new(),
        procs: Vec::new(),
        cmds: Vec::new(),
    };
    for i in (0..PATH.len()).rev() {
        let next = addrs.get(i + 1).copied().unwrap_or(bench);
        let name = if i == 0 {
            format!(" --name {}", PATH[0])
        } else {
            String::new()
        };
        let cmd = format!(
            "{} --listen {} --forward {next}{name}",
            paths.bin.join("echo").display(),
            addrs[i]
        );
        let out = dir.join(format!("floor-{}.out", PATH[i]));
        chain.addrs.push((PATH[i].to_string(), addrs[i]));
        chain.procs.push(Proc::spawn(PATH[i], &cmd, &out, &[])?);
        herd::wait_listening(&mut chain, Duration::from_secs(10))?;
    }
    Ok(chain)
}
