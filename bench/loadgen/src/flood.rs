//! Flood latency, measured at the socket.
//!
//! The bench joins the herd as one more server: the runner writes a topology with a line for
//! it (say `Bench 127.0.0.1:PORT Powell`), so the farthest server from the origin opens a
//! neighbour link to us at start-up, like to any neighbour. We listen on that address, and a
//! reader thread per link timestamps every read the moment it returns. A probe IAMAT with a
//! unique client id goes to the origin; the time from just before its `write` to the read
//! that brought its AT line here is the propagation through the herd (three hops to the
//! farthest server, plus its hop to us). Probes go one at a time; optionally, pipelined IAMAT
//! load runs at the same time on other threads.

use crate::engine::{self, Control, Kind, LoadConfig, Outcome, Phases, Style};
use crate::hist::Hist;
use crate::proto::{self, ClientClock};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

/// A probe that has not arrived after this long is lost.
const LOST_AFTER: Duration = Duration::from_secs(5);

pub struct FloodConfig {
    pub origin: SocketAddr,
    /// Addresses to poll-connect before starting (every server of the herd).
    pub wait_for: Vec<SocketAddr>,
    /// At most this many probes, and for at most `probe_time`.
    pub samples: usize,
    pub probe_time: Duration,
    pub gap: Duration,
    /// IAMAT load to run alongside, if any (pipelined, to the origin).
    pub load: Option<LoadConfig>,
    pub max_time: Duration,
    /// How many distinct links must bring a probe before it counts as arrived: 1 for the
    /// farthest server; every server's count when the bench is a neighbour of all of them
    /// (the time to reach the whole herd).
    pub expect: usize,
}

pub struct FloodOutcome {
    pub hist: Hist,
    /// From sending each probe to reading the origin's answer.
    pub answered: Hist,
    pub lost: u64,
    pub load: Option<(Outcome, Duration)>,
}

/// Binds the bench's own address now, so that a herd started after this call finds its
/// extra neighbour listening.
pub fn bind(listen: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(listen)
}

pub fn run(cfg: FloodConfig, listener: TcpListener) -> Result<FloodOutcome, String> {
    let deadline = Instant::now() + cfg.max_time;
    let prefix = format!("fl{}x", std::process::id());
    let (tx, rx) = mpsc::channel::<Arrival>();
    spawn_acceptor(listener, prefix.clone(), tx);

    for addr in &cfg.wait_for {
        wait_until_listening(*addr, deadline)?;
    }
    let mut probe = Probe::connect(cfg.origin, &prefix)?;

    // Links come up at the herd's own pace (with reconnect backoff): probe until one AT makes
    // it all the way, and only then start measuring.
    let mut linked = false;
    while Instant::now() < deadline {
        let seq = probe.send()?;
        if wait_for_seq(&rx, seq, cfg.expect, Duration::from_millis(500)).is_some() {
            linked = true;
            break;
        }
    }
    if !linked {
        return Err("no AT line ever reached the bench: is it a neighbour in the topology?".into());
    }

    let load = cfg.load.clone().map(|load_cfg| {
        // The load runs until the probes are done (the stop flag), bounded by the deadline;
        // it gets half a second to ramp up before the probes start.
        let start = Instant::now();
        let phases = Phases {
            measure_from: start + Duration::from_millis(500),
            end: deadline,
        };
        let control = Control::new(None);
        let c2 = Arc::clone(&control);
        let handle = std::thread::spawn(move || engine::run(&load_cfg, phases, &c2));
        std::thread::sleep(Duration::from_millis(500));
        (handle, control, phases)
    });

    // Probes go one at a time, so that each measures the herd, not the probes before it;
    // under load they all run while the load does.
    let mut hist = Hist::default();
    // When each probe was answered by the origin (it floods before it answers): the part of
    // the flood latency spent getting in at the edge.
    let mut answered = Hist::default();
    let mut lost = 0;
    let probes_end = (Instant::now() + cfg.probe_time).min(deadline);
    for _ in 0..cfg.samples {
        if Instant::now() >= probes_end {
            break;
        }
        let sent_at = Instant::now();
        let seq = probe.send()?;
        answered.record(sent_at.elapsed().as_nanos() as u64);
        match wait_for_seq(&rx, seq, cfg.expect, LOST_AFTER) {
            Some(arrived) => {
                hist.record(arrived.saturating_duration_since(sent_at).as_nanos() as u64)
            }
            None => {
                // A probe that never arrives counts as the longest wait, so p99 cannot
                // look better by losing the slow ones.
                lost += 1;
                hist.record(LOST_AFTER.as_nanos() as u64);
            }
        }
        std::thread::sleep(cfg.gap);
    }

    let load = load.map(|(handle, control, phases)| {
        let stopped = Instant::now();
        control
            .stop
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let measured = stopped.saturating_duration_since(phases.measure_from);
        (handle.join().unwrap_or_default(), measured)
    });
    Ok(FloodOutcome {
        hist,
        answered,
        lost,
        load,
    })
}

/// A probe seen on a link: its number, when the read that brought it returned, which link.
type Arrival = (u64, Instant, usize);

/// Waits until probe `seq` has arrived over `expect` distinct links and returns the time of
/// the last of them, dropping stale arrivals of earlier probes.
fn wait_for_seq(
    rx: &Receiver<Arrival>,
    seq: u64,
    expect: usize,
    timeout: Duration,
) -> Option<Instant> {
    let deadline = Instant::now() + timeout;
    let mut links: Vec<usize> = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((s, at, link)) if s == seq => {
                if !links.contains(&link) {
                    links.push(link);
                }
                if links.len() >= expect.max(1) {
                    return Some(at);
                }
            }
            Ok(_) => continue,
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => return None,
        }
    }
}

fn wait_until_listening(addr: SocketAddr, deadline: Instant) -> Result<(), String> {
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("{addr} never accepted a connection"))
}

/// Accepts the herd's links to us; each gets a reader thread.
fn spawn_acceptor(listener: TcpListener, prefix: String, tx: Sender<Arrival>) {
    let prefix = Arc::new(prefix);
    // Links that connect more than once (reconnects) each get their own reader.
    std::thread::spawn(move || {
        for (link, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { continue };
            let tx = tx.clone();
            let prefix = Arc::clone(&prefix);
            std::thread::spawn(move || read_link(stream, link, &prefix, &tx));
        }
    });
}

/// Reads one neighbour link, timestamping each read as soon as it returns, and reports the
/// probes found in it. Every other AT line (the load's) is skipped.
fn read_link(mut stream: TcpStream, link: usize, prefix: &str, tx: &Sender<Arrival>) {
    let mut buf = vec![0u8; 256 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let at = Instant::now();
        pending.extend_from_slice(&buf[..n]);
        let mut start = 0;
        while let Some(pos) = pending[start..].iter().position(|&b| b == b'\n') {
            if let Some(seq) = probe_seq(&pending[start..start + pos], prefix)
                && tx.send((seq, at, link)).is_err()
            {
                return;
            }
            start += pos + 1;
        }
        pending.drain(..start);
    }
}

/// The probe number in an AT line `AT server diff <prefix><seq> location time`, if it is ours.
fn probe_seq(line: &[u8], prefix: &str) -> Option<u64> {
    let line = std::str::from_utf8(line).ok()?;
    let mut fields = line.split_ascii_whitespace();
    if fields.next()? != "AT" {
        return None;
    }
    let id = fields.nth(2)?;
    id.strip_prefix(prefix)?.parse().ok()
}

/// The connection that sends probe IAMATs to the origin and reads their replies.
struct Probe {
    stream: BufReader<TcpStream>,
    prefix: String,
    seq: u64,
    clock: ClientClock,
    line: String,
    out: Vec<u8>,
}

impl Probe {
    fn connect(addr: SocketAddr, prefix: &str) -> Result<Probe, String> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        Ok(Probe {
            stream: BufReader::new(stream),
            prefix: prefix.to_string(),
            seq: 0,
            clock: ClientClock::default(),
            line: String::new(),
            out: Vec::new(),
        })
    }

    /// Sends the next probe and reads its reply; returns its number.
    fn send(&mut self) -> Result<u64, String> {
        self.seq += 1;
        self.out.clear();
        let id = format!("{}{}", self.prefix, self.seq);
        proto::push_iamat(&mut self.out, &id, self.clock.next(), true);
        self.stream
            .get_mut()
            .write_all(&self.out)
            .map_err(|e| format!("probe write: {e}"))?;
        self.line.clear();
        self.stream
            .read_line(&mut self.line)
            .map_err(|e| format!("probe read: {e}"))?;
        if !self.line.starts_with("AT ") {
            return Err(format!("the origin answered {:?} to a probe", self.line));
        }
        Ok(self.seq)
    }
}

/// The pipelined IAMAT load that runs alongside the probes.
pub fn load_config(origin: SocketAddr, conns: usize, window: usize, threads: usize) -> LoadConfig {
    LoadConfig {
        targets: vec![origin],
        kind: Kind::Iamat,
        whatsat_pct: 0,
        style: Style::Pipelined,
        conns,
        window,
        threads,
        echo: false,
        radius: "10".into(),
        bound: 5,
        query_ids: Vec::new(),
        id_prefix: format!("lg{}f", std::process::id()),
        distinct: false,
        rate: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_probe_numbers() {
        let p = "fl7x";
        assert_eq!(
            probe_seq(b"AT Hamilton +0.000012 fl7x42 +34-118 1.5", p),
            Some(42)
        );
        assert_eq!(
            probe_seq(b"AT Hamilton +0.000012 lg7f-1 +34-118 1.5", p),
            None
        );
        assert_eq!(probe_seq(b"IAMAT fl7x42 +34-118 1.5", p), None);
        assert_eq!(
            probe_seq(b"AT H +0.1 fl7x42 +1+2 3 Parker Powell", p),
            Some(42)
        );
    }
}
