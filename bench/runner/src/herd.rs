//! Implementations and the herds started from them: free ports, the topology file, the start
//! command of each server, waiting until every server accepts, and stopping them all.

use crate::procs::Proc;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The default herd (SPEC §1).
pub const SERVERS: [&str; 5] = ["Alford", "Bolden", "Hamilton", "Parker", "Powell"];
pub const LINKS: [(&str, &str); 5] = [
    ("Alford", "Parker"),
    ("Alford", "Powell"),
    ("Bolden", "Parker"),
    ("Bolden", "Powell"),
    ("Hamilton", "Parker"),
];
/// The server every load goes to; Powell is three hops from it (Hamilton–Parker–Alford/
/// Bolden–Powell), the farthest any server is from any other in this herd.
pub const ORIGIN: &str = "Hamilton";
pub const FARTHEST: &str = "Powell";
/// The bench's own name when it joins a herd as an extra neighbour of `FARTHEST`.
pub const BENCH: &str = "Bench";

/// The key every herd is given for the Google providers: the stub accepts any key.
pub const FAKE_KEY: &str = "bench-key-not-a-secret";

#[derive(Clone, Debug, PartialEq)]
pub enum ImplKind {
    ProxyHerd,
    Tokio,
    Asyncio,
    /// The bare echo server: the floor, a "herd" of one.
    Echo,
    /// Any other herd, by its start command with `{name}`, `{topology}`, `{places_url}`,
    /// `{log_dir}` placeholders.
    Custom(String),
}

#[derive(Clone, Debug)]
pub struct Impl {
    pub name: String,
    pub kind: ImplKind,
}

/// Where the programs are.
#[derive(Clone, Debug)]
pub struct Paths {
    /// `bench/target/release` (the runner's own directory).
    pub bin: PathBuf,
    /// `bench/`.
    pub bench: PathBuf,
    pub proxy_herd: PathBuf,
    /// The run's scratch directory: topologies, logs, the output of every process.
    pub work: PathBuf,
}

/// How a herd is to be started for one scenario.
#[derive(Clone, Debug, Default)]
pub struct HerdOpts {
    pub places_url: String,
    /// proxy-herd's offline places provider instead of Google (against the stub).
    pub offline: bool,
    pub log_off: bool,
    /// Add the bench as a neighbour of `FARTHEST`, listening at this port.
    pub bench_port: Option<u16>,
    /// Per-server implementation, for mixed herds; `None` means all of `Impl`.
    pub mixed: Option<Vec<Impl>>,
}

/// A started herd: its servers' addresses and processes, stopped when dropped.
pub struct Herd {
    pub addrs: Vec<(String, SocketAddr)>,
    pub procs: Vec<Proc>,
    /// Each server's start command and output file, to restart it (`kill_and_restart`).
    pub cmds: Vec<(String, PathBuf)>,
}

impl Herd {
    pub fn addr(&self, name: &str) -> SocketAddr {
        self.addrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
            .expect("a server of the herd")
    }

    pub fn pids(&self) -> String {
        let pids: Vec<String> = self.procs.iter().map(|p| p.pid().to_string()).collect();
        pids.join(",")
    }

    pub fn pid_of(&self, name: &str) -> u32 {
        self.procs
            .iter()
            .find(|p| p.name == name)
            .map(Proc::pid)
            .expect("a server of the herd")
    }

    /// Kills server `name` with SIGKILL, as a crash would, and starts it again at once with
    /// the same command; returns the moment it was started again.
    pub fn kill_and_restart(&mut self, name: &str) -> Result<Instant, String> {
        let i = self
            .procs
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| format!("no server {name}"))?;
        let (cmd, out) = self.cmds.get(i).cloned().ok_or("no start command")?;
        self.procs[i].kill();
        let started = Instant::now();
        self.procs[i] = Proc::spawn(
            name,
            &cmd,
            &out.with_extension("restarted.out"),
            &[("GOOGLE_PLACES_API_KEY", FAKE_KEY)],
        )?;
        Ok(started)
    }

    /// Fails if a server has died (say, it crashed under load).
    pub fn check_alive(&mut self) -> Result<(), String> {
        for p in &mut self.procs {
            if let Some(status) = p.exited() {
                return Err(format!("{} exited during the run ({status})", p.name));
            }
        }
        Ok(())
    }
}

impl Drop for Herd {
    /// Signals every server first, so they wind down together; each `Proc` then waits for
    /// its own (a Python herd takes about a second to exit).
    fn drop(&mut self) {
        for p in &mut self.procs {
            p.terminate();
        }
    }
}

/// The ports [`free_ports`] picks from: below Linux's ephemeral range (32768 and up). A port
/// from that range, found free and released, can be given to one of the herd's own outgoing
/// connects before the server it was meant for binds it: that server then fails to start.
const PORTS: std::ops::Range<u16> = 20_000..32_000;

/// `n` distinct free ports on 127.0.0.1 (all held at once, so they differ, then released for
/// the servers to take), picked at random from [`PORTS`].
pub fn free_ports(n: usize) -> Result<Vec<u16>, String> {
    use std::hash::{BuildHasher, RandomState};
    let random = RandomState::new();
    let span = u64::from(PORTS.end - PORTS.start);
    let mut listeners = Vec::with_capacity(n);
    for attempt in 0..100_000u64 {
        if listeners.len() == n {
            break;
        }
        let port = PORTS.start + (random.hash_one(attempt) % span) as u16;
        if let Ok(listener) = TcpListener::bind(("127.0.0.1", port)) {
            listeners.push(listener);
        }
    }
    if listeners.len() < n {
        return Err(format!("no {n} free ports in {PORTS:?}"));
    }
    listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()).map_err(|e| e.to_string()))
        .collect()
}

/// The topology file: the default herd, plus the bench's line when it joins.
pub fn topology_text(ports: &[u16], bench_port: Option<u16>) -> String {
    let mut text = String::from("# written by bench-runner: the default herd on free ports\n");
    for (name, port) in SERVERS.iter().zip(ports) {
        let neighbours: Vec<&str> = LINKS
            .iter()
            .filter(|(a, _)| a == name)
            .map(|(_, b)| *b)
            .collect();
        text.push_str(&format!(
            "{name} 127.0.0.1:{port} {}\n",
            neighbours.join(" ")
        ));
    }
    if let Some(p) = bench_port {
        text.push_str(&format!("{BENCH} 127.0.0.1:{p} {FARTHEST}\n"));
    }
    text
}

/// Replaces `{key}` placeholders in a start command.
fn fill(template: &str, vars: &[(&str, String)]) -> String {
    let mut s = template.to_string();
    for (k, v) in vars {
        s = s.replace(&format!("{{{k}}}"), v);
    }
    s
}

/// The start command of one server of an implementation.
fn start_command(imp: &Impl, paths: &Paths, vars: &[(&str, String)], opts: &HerdOpts) -> String {
    let common = "{name} --topology {topology} --log-dir {log_dir}";
    let mut cmd = match &imp.kind {
        ImplKind::ProxyHerd => {
            let places = if opts.offline {
                " --places offline".to_string()
            } else {
                " --places google --places-url {places_url}".to_string()
            };
            format!("{} {common}{places}", paths.proxy_herd.display())
        }
        ImplKind::Tokio => format!(
            "{} {common} --places-url {{places_url}}",
            paths.bin.join("tokio-herd").display()
        ),
        ImplKind::Asyncio => format!(
            "python3 {} {common} --places-url {{places_url}}",
            paths.bench.join("asyncio-herd/herd.py").display()
        ),
        ImplKind::Custom(template) => template.clone(),
        ImplKind::Echo => unreachable!("the echo floor is started on its own"),
    };
    if opts.log_off {
        cmd.push_str(" --log-level off");
    }
    fill(&cmd, vars)
}

/// Starts a herd (or, for the echo floor, one echo server standing in for the origin) on
/// `ports` (one per server of `SERVERS`) and waits until every server accepts connections.
pub fn start(
    imp: &Impl,
    paths: &Paths,
    opts: &HerdOpts,
    tag: &str,
    ports: &[u16],
) -> Result<Herd, String> {
    let dir = paths.work.join(tag);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut herd = Herd {
        addrs: SERVERS
            .iter()
            .zip(ports)
            .map(|(n, p)| (n.to_string(), SocketAddr::from(([127, 0, 0, 1], *p))))
            .collect(),
        procs: Vec::new(),
        cmds: Vec::new(),
    };
    if imp.kind == ImplKind::Echo {
        let addr = herd.addr(ORIGIN);
        let cmd = format!("{} --listen {addr}", paths.bin.join("echo").display());
        herd.procs
            .push(Proc::spawn(ORIGIN, &cmd, &dir.join("echo.out"), &[])?);
        herd.addrs.retain(|(n, _)| n == ORIGIN);
        wait_listening(&mut herd, Duration::from_secs(10))?;
        return Ok(herd);
    }
    let text = topology_text(ports, opts.bench_port);
    start_servers(imp, paths, opts, herd, &dir, &vec![text; SERVERS.len()])
}

/// Starts every server of `herd.addrs` (whose `procs` is empty), server `i` reading the
/// topology `topologies[i]` (usually all the same; the link-lines scenario gives each server
/// its own, with its neighbours behind counting proxies), and waits until all accept.
pub fn start_servers(
    imp: &Impl,
    paths: &Paths,
    opts: &HerdOpts,
    mut herd: Herd,
    dir: &std::path::Path,
    topologies: &[String],
) -> Result<Herd, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let log_dir = dir.join("logs");
    let names: Vec<String> = herd.addrs.iter().map(|(n, _)| n.clone()).collect();
    // Every file is written before any server starts (one may read it while we write).
    let shared = topologies.iter().all(|t| *t == topologies[0]);
    let mut files = Vec::new();
    for (name, text) in names.iter().zip(topologies) {
        let file = if shared {
            dir.join("topology.txt")
        } else {
            dir.join(format!("topology-{name}.txt"))
        };
        if files.last() != Some(&file) {
            std::fs::write(&file, text).map_err(|e| format!("{}: {e}", file.display()))?;
        }
        files.push(file);
    }
    for (i, (name, topology)) in names.iter().zip(&files).enumerate() {
        let this = opts.mixed.as_ref().map_or(imp, |m| &m[i % m.len()]);
        let vars = [
            ("name", name.to_string()),
            ("topology", topology.display().to_string()),
            ("places_url", opts.places_url.clone()),
            ("log_dir", log_dir.display().to_string()),
        ];
        let cmd = start_command(this, paths, &vars, opts);
        let out = dir.join(format!("{name}.out"));
        herd.procs.push(Proc::spawn(
            name,
            &cmd,
            &out,
            &[("GOOGLE_PLACES_API_KEY", FAKE_KEY)],
        )?);
        herd.cmds.push((cmd, out));
    }
    wait_listening(&mut herd, Duration::from_secs(15))
        .map_err(|e| format!("{e} (see the server output in {})", dir.display()))?;
    // Neighbour links come up right after start-up; give them a moment before any load.
    std::thread::sleep(Duration::from_millis(300));
    Ok(herd)
}

/// Poll-connects every server until it accepts, or fails when one has died or the time is up.
pub fn wait_listening(herd: &mut Herd, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    for i in 0..herd.addrs.len() {
        let (name, addr) = herd.addrs[i].clone();
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            herd.check_alive()?;
            if Instant::now() >= deadline {
                return Err(format!("{name} never accepted a connection on {addr}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}

/// Starts a places stub and returns it with its base URL.
pub fn start_stub(paths: &Paths, delay_ms: u64, tag: &str) -> Result<(Proc, String), String> {
    let port = free_ports(1)?[0];
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let cmd = format!(
        "{} --listen {addr} --delay-ms {delay_ms}",
        paths.bin.join("places-stub").display()
    );
    let mut stub = Proc::spawn(
        "places-stub",
        &cmd,
        &paths.work.join(format!("{tag}.out")),
        &[],
    )?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if stub.exited().is_some() || Instant::now() >= deadline {
            return Err("the places stub did not start".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((stub, format!("http://{addr}")))
}

/// How many lookups a stub has served (`GET /stats`).
pub fn stub_requests(base_url: &str) -> Result<u64, String> {
    use std::io::{Read, Write};
    let addr: SocketAddr = base_url
        .trim_start_matches("http://")
        .parse()
        .map_err(|_| format!("bad stub url {base_url}"))?;
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    s.write_all(b"GET /stats HTTP/1.1\r\nHost: stub\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    let after = text
        .split("\"requests\":")
        .nth(1)
        .ok_or("no count in the stub's /stats")?;
    after
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| "bad count in the stub's /stats".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topology_has_every_server_and_the_bench() {
        let t = topology_text(&[1, 2, 3, 4, 5], Some(6));
        assert!(t.contains("Alford 127.0.0.1:1 Parker Powell\n"));
        assert!(t.contains("Powell 127.0.0.1:5 \n"));
        assert!(t.contains("Bench 127.0.0.1:6 Powell\n"));
    }

    #[test]
    fn fills_placeholders() {
        assert_eq!(
            fill(
                "x {name} --t {topology}",
                &[("name", "A".into()), ("topology", "t.txt".into())]
            ),
            "x A --t t.txt"
        );
    }
}
