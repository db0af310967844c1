//! The load engine: each thread drives its share of the connections on its own mio `Poll`.
//!
//! Two client styles:
//! - *pipelined*: persistent connections, each keeping `window` requests in flight; a reply
//!   frees a slot and the next request goes out in the same write as the others freed by that
//!   read (so the generator makes one syscall per burst, not per line);
//! - *one-shot*: the grading scripts' style — connect, write one line without a newline,
//!   `shutdown(SHUT_WR)`, read until EOF, close; then start over.
//!
//! Latency is measured from the moment a request is handed to `write` (pipelined) or from the
//! start of the connect (one-shot) to the moment its last reply byte is read. Only replies
//! that arrive inside the measurement window (after the warm-up, before the end) are counted.

use crate::hist::Hist;
use crate::proto::{self, ClientClock, ReplyFramer, ReqKind, Verdict};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Iamat,
    Whatsat,
    /// IAMATs with `whatsat_pct` percent WHATSATs among them.
    Mixed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    Pipelined,
    Oneshot,
}

/// Everything one load run needs to know.
#[derive(Clone, Debug)]
pub struct LoadConfig {
    pub targets: Vec<SocketAddr>,
    pub kind: Kind,
    pub whatsat_pct: u32,
    pub style: Style,
    pub conns: usize,
    pub window: usize,
    pub threads: usize,
    pub echo: bool,
    pub radius: String,
    pub bound: u32,
    /// The clients WHATSAT asks about (reported beforehand by `prepare_queries`).
    pub query_ids: Vec<String>,
    /// Prefix of every generated client id, unique per run so that every IAMAT is new.
    pub id_prefix: String,
    /// Every IAMAT from a new client (`PREFIX-CONN.SEQ`) instead of one client per
    /// connection: N requests make N distinct clients the herd must remember.
    pub distinct: bool,
    /// At most this many requests per second in all (pipelined style): a steady load that
    /// leaves the server room, instead of as much as it can answer.
    pub rate: Option<f64>,
}

/// The request budget of a paced thread: `per_sec` tokens a second, at most 10 ms' worth saved.
struct Pace {
    per_sec: f64,
    tokens: f64,
    last: Instant,
}

impl Pace {
    fn new(per_sec: f64) -> Pace {
        Pace {
            per_sec,
            tokens: 1.0,
            last: Instant::now(),
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let earned = now.saturating_duration_since(self.last).as_secs_f64() * self.per_sec;
        self.tokens = (self.tokens + earned).min((self.per_sec / 100.0).max(1.0));
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// When to count and when to stop.
#[derive(Clone, Copy, Debug)]
pub struct Phases {
    pub measure_from: Instant,
    pub end: Instant,
}

/// What one thread (or, merged, the whole run) saw.
#[derive(Default, Clone)]
pub struct Outcome {
    pub hist: Hist,
    /// Good replies inside the measurement window.
    pub replies: u64,
    /// Good replies at any time, warm-up included (to relate to a count kept elsewhere, such
    /// as the places stub's lookups).
    pub all_replies: u64,
    /// Bad replies inside the window, requests lost with a dead connection, failed connects.
    pub errors: u64,
    pub sent: u64,
    pub first_error: Option<String>,
}

impl Outcome {
    pub fn merge(&mut self, other: &Outcome) {
        self.hist.merge(&other.hist);
        self.replies += other.replies;
        self.all_replies += other.all_replies;
        self.errors += other.errors;
        self.sent += other.sent;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
    }

    fn error(&mut self, what: impl FnOnce() -> String) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(what());
        }
    }

    /// Counts one finished request, if it finished inside the window.
    fn finish(&mut self, phases: &Phases, now: Instant, sent_at: Instant, verdict: Verdict) {
        if verdict == Verdict::Good {
            self.all_replies += 1;
        }
        if now < phases.measure_from || now >= phases.end {
            return;
        }
        match verdict {
            Verdict::Good => {
                self.replies += 1;
                self.hist
                    .record(now.duration_since(sent_at).as_nanos() as u64);
            }
            Verdict::Bad => self.error(|| "a reply failed validation".to_string()),
        }
    }
}

/// Shared between threads: how many requests may still be sent (request-count mode), and a
/// flag that ends the run early.
pub struct Control {
    tickets: Option<AtomicI64>,
    pub stop: AtomicBool,
}

impl Control {
    pub fn new(requests: Option<u64>) -> Arc<Control> {
        Arc::new(Control {
            tickets: requests.map(|n| AtomicI64::new(n as i64)),
            stop: AtomicBool::new(false),
        })
    }

    fn take_ticket(&self) -> bool {
        match &self.tickets {
            None => true,
            Some(t) => t.fetch_sub(1, Ordering::Relaxed) > 0,
        }
    }

    fn exhausted(&self) -> bool {
        self.tickets
            .as_ref()
            .is_some_and(|t| t.load(Ordering::Relaxed) <= 0)
    }
}

fn would_block(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::WouldBlock
}

fn interrupted(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::Interrupted
}

/// Which kind the `seq`-th request of a client is.
fn pick_kind(cfg: &LoadConfig, seq: u64) -> ReqKind {
    match cfg.kind {
        Kind::Iamat => ReqKind::Iamat,
        Kind::Whatsat => ReqKind::Whatsat,
        Kind::Mixed if (seq % 100) < cfg.whatsat_pct as u64 => ReqKind::Whatsat,
        Kind::Mixed => ReqKind::Iamat,
    }
}

/// Appends one request of `kind` from the client `id` (its `seq`-th) to `out`.
fn push_request(
    cfg: &LoadConfig,
    out: &mut Vec<u8>,
    kind: ReqKind,
    id: &str,
    clock: &mut ClientClock,
    seq: u64,
    newline: bool,
) {
    match kind {
        ReqKind::Iamat if cfg.distinct => {
            proto::push_iamat(out, &format!("{id}.{seq}"), clock.next(), newline)
        }
        ReqKind::Iamat => proto::push_iamat(out, id, clock.next(), newline),
        ReqKind::Whatsat => {
            let q = &cfg.query_ids[(seq as usize) % cfg.query_ids.len()];
            proto::push_whatsat(out, q, &cfg.radius, cfg.bound, newline)
        }
    }
}

/// Runs the load on `cfg.threads` threads and merges what they saw.
pub fn run(cfg: &LoadConfig, phases: Phases, control: &Arc<Control>) -> Outcome {
    let threads = cfg.threads.clamp(1, cfg.conns.max(1));
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let cfg = cfg.clone();
            let control = Arc::clone(control);
            // Connection i belongs to thread i % threads.
            let mine: Vec<usize> = (t..cfg.conns).step_by(threads).collect();
            std::thread::spawn(move || match cfg.style {
                Style::Pipelined => run_pipelined(&cfg, &mine, phases, &control),
                Style::Oneshot => run_oneshot(&cfg, &mine, phases, &control),
            })
        })
        .collect();
    let mut total = Outcome::default();
    for h in handles {
        match h.join() {
            Ok(o) => total.merge(&o),
            Err(_) => total.error(|| "a load thread panicked".to_string()),
        }
    }
    total
}

/// How long to sleep in `poll`: until the end, but wake at least every 100 ms to check the
/// stop flag, and sooner when something waits to be retried.
fn poll_timeout(phases: &Phases, now: Instant, soon: bool) -> Duration {
    let left = phases.end.saturating_duration_since(now);
    let cap = if soon {
        Duration::from_millis(1)
    } else {
        Duration::from_millis(100)
    };
    left.min(cap)
}

/// One persistent, pipelined connection.
struct Pipe {
    stream: TcpStream,
    connected: bool,
    dead: bool,
    /// Send time and kind of each request in flight, oldest first (replies come in order).
    inflight: VecDeque<(Instant, ReqKind)>,
    framer: ReplyFramer,
    out: Vec<u8>,
    out_pos: usize,
    inbuf: Vec<u8>,
    id: String,
    clock: ClientClock,
    seq: u64,
}

fn run_pipelined(cfg: &LoadConfig, mine: &[usize], phases: Phases, control: &Control) -> Outcome {
    let mut out = Outcome::default();
    let mut poll = match Poll::new() {
        Ok(p) => p,
        Err(e) => {
            out.error(|| format!("poll: {e}"));
            return out;
        }
    };
    let mut pipes: Vec<Pipe> = Vec::with_capacity(mine.len());
    for &i in mine {
        let addr = cfg.targets[i % cfg.targets.len()];
        match TcpStream::connect(addr) {
            Ok(mut stream) => {
                let token = Token(pipes.len());
                if let Err(e) = poll.registry().register(
                    &mut stream,
                    token,
                    Interest::READABLE | Interest::WRITABLE,
                ) {
                    out.error(|| format!("register: {e}"));
                    continue;
                }
                let _ = stream.set_nodelay(true);
                pipes.push(Pipe {
                    stream,
                    connected: false,
                    dead: false,
                    inflight: VecDeque::with_capacity(cfg.window),
                    framer: ReplyFramer::default(),
                    out: Vec::with_capacity(4096),
                    out_pos: 0,
                    inbuf: Vec::with_capacity(4096),
                    id: format!("{}-{i}", cfg.id_prefix),
                    clock: ClientClock::default(),
                    seq: 0,
                });
            }
            Err(e) => out.error(|| format!("connect {addr}: {e}")),
        }
    }

    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    // This thread's share of the rate.
    let mut pace = cfg
        .rate
        .map(|r| Pace::new(r * mine.len() as f64 / cfg.conns.max(1) as f64));
    loop {
        let now = Instant::now();
        if now >= phases.end || control.stop.load(Ordering::Relaxed) {
            break;
        }
        if control.exhausted() && pipes.iter().all(|p| p.dead || p.inflight.is_empty()) {
            break;
        }
        if pipes.iter().all(|p| p.dead) {
            break;
        }
        let soon = pace.is_some();
        if let Err(e) = poll.poll(&mut events, Some(poll_timeout(&phases, now, soon))) {
            if interrupted(&e) {
                continue;
            }
            out.error(|| format!("poll: {e}"));
            break;
        }
        let mut ready: Vec<usize> = events.iter().map(|e| e.token().0).collect();
        // Paced: connections with room in their window send when the budget allows, events
        // or not.
        if pace.is_some() {
            ready.extend(
                (0..pipes.len())
                    .filter(|&i| pipes[i].connected && pipes[i].inflight.len() < cfg.window),
            );
        }
        for i in ready {
            let Some(pipe) = pipes.get_mut(i) else {
                continue;
            };
            if pipe.dead {
                continue;
            }
            let r = pipe_ready(cfg, pipe, &phases, control, &mut pace, &mut out, &mut buf);
            if let Err(e) = r {
                pipe.dead = true;
                // Requests that will never be answered are errors too.
                out.errors += pipe.inflight.len() as u64;
                pipe.inflight.clear();
                let _ = poll.registry().deregister(&mut pipe.stream);
                out.error(|| format!("connection: {e}"));
            }
        }
    }
    out
}

/// Handles readiness of one pipelined connection: finish the connect, read and frame every
/// reply, refill the window, write. An `Err` kills the connection.
fn pipe_ready(
    cfg: &LoadConfig,
    pipe: &mut Pipe,
    phases: &Phases,
    control: &Control,
    pace: &mut Option<Pace>,
    out: &mut Outcome,
    buf: &mut [u8],
) -> io::Result<()> {
    if !pipe.connected {
        // A refused connect shows up as an error on the socket; take it exactly once.
        if let Some(e) = pipe.stream.take_error()? {
            return Err(e);
        }
        match pipe.stream.peer_addr() {
            Ok(_) => pipe.connected = true,
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
            Err(e) => return Err(e),
        }
    }

    let mut eof = false;
    loop {
        match pipe.stream.read(buf) {
            Ok(0) => {
                eof = true;
                break;
            }
            Ok(n) => pipe.inbuf.extend_from_slice(&buf[..n]),
            Err(e) if would_block(&e) => break,
            Err(e) if interrupted(&e) => continue,
            Err(e) => return Err(e),
        }
    }
    let now = Instant::now();
    if !pipe.inbuf.is_empty() {
        let mut start = 0;
        while let Some(pos) = pipe.inbuf[start..].iter().position(|&b| b == b'\n') {
            let mut line = &pipe.inbuf[start..start + pos];
            if let Some(l) = line.strip_suffix(b"\r") {
                line = l;
            }
            start += pos + 1;
            let Some(&(sent_at, kind)) = pipe.inflight.front() else {
                out.error(|| "a reply nobody asked for".to_string());
                continue;
            };
            if let Some(verdict) = pipe.framer.line(kind, line, cfg.echo) {
                pipe.inflight.pop_front();
                out.finish(phases, now, sent_at, verdict);
            }
        }
        pipe.inbuf.drain(..start);
    }
    if eof {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed the connection",
        ));
    }

    // Refill the window: every request freed by this read goes out in one write.
    if now < phases.end && !control.stop.load(Ordering::Relaxed) {
        while pipe.inflight.len() < cfg.window
            && pace.as_mut().is_none_or(|p| p.take(now))
            && control.take_ticket()
        {
            let kind = pick_kind(cfg, pipe.seq);
            push_request(
                cfg,
                &mut pipe.out,
                kind,
                &pipe.id,
                &mut pipe.clock,
                pipe.seq,
                true,
            );
            pipe.seq += 1;
            pipe.inflight.push_back((now, kind));
            out.sent += 1;
        }
    }
    while pipe.out_pos < pipe.out.len() {
        match pipe.stream.write(&pipe.out[pipe.out_pos..]) {
            Ok(n) => pipe.out_pos += n,
            Err(e) if would_block(&e) => break,
            Err(e) if interrupted(&e) => continue,
            Err(e) => return Err(e),
        }
    }
    if pipe.out_pos == pipe.out.len() {
        pipe.out.clear();
        pipe.out_pos = 0;
    }
    Ok(())
}

/// One one-shot client slot: a connection at a time, replaced when it finishes.
struct Shot {
    stream: Option<TcpStream>,
    /// Bumped for every new connection, so a late event for the previous one is ignored.
    generation: usize,
    started: Instant,
    connected: bool,
    written: usize,
    request: Vec<u8>,
    kind: ReqKind,
    reply: Vec<u8>,
    id: String,
    clock: ClientClock,
    seq: u64,
}

const SLOT_BITS: usize = 24;

fn shot_token(slot: usize, generation: usize) -> Token {
    Token((generation << SLOT_BITS) | slot)
}

fn run_oneshot(cfg: &LoadConfig, mine: &[usize], phases: Phases, control: &Control) -> Outcome {
    let mut out = Outcome::default();
    let mut poll = match Poll::new() {
        Ok(p) => p,
        Err(e) => {
            out.error(|| format!("poll: {e}"));
            return out;
        }
    };
    let mut shots: Vec<Shot> = mine
        .iter()
        .map(|&i| Shot {
            stream: None,
            generation: 0,
            started: Instant::now(),
            connected: false,
            written: 0,
            request: Vec::with_capacity(128),
            kind: ReqKind::Iamat,
            reply: Vec::with_capacity(512),
            id: format!("{}-{i}", cfg.id_prefix),
            clock: ClientClock::default(),
            seq: 0,
        })
        .collect();
    // Slots whose connect failed at once (e.g. no ephemeral port free): retried next turn.
    let mut retry: Vec<usize> = (0..shots.len()).collect();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let now = Instant::now();
        if now >= phases.end || control.stop.load(Ordering::Relaxed) {
            break;
        }
        for slot in std::mem::take(&mut retry) {
            if !start_shot(cfg, &poll, &mut shots[slot], slot, control, &mut out) {
                if control.exhausted() {
                    continue;
                }
                retry.push(slot);
            }
        }
        if control.exhausted() && shots.iter().all(|s| s.stream.is_none()) {
            break;
        }
        if let Err(e) = poll.poll(
            &mut events,
            Some(poll_timeout(&phases, now, !retry.is_empty())),
        ) {
            if interrupted(&e) {
                continue;
            }
            out.error(|| format!("poll: {e}"));
            break;
        }
        for event in events.iter() {
            let slot = event.token().0 & ((1 << SLOT_BITS) - 1);
            let Some(shot) = shots.get_mut(slot) else {
                continue;
            };
            if shot_token(slot, shot.generation) != event.token() || shot.stream.is_none() {
                continue;
            }
            let finished = match shot_ready(shot, &mut buf) {
                Ok(true) => {
                    let verdict =
                        proto::check_oneshot(shot.kind, &shot.request, &shot.reply, cfg.echo);
                    out.finish(&phases, Instant::now(), shot.started, verdict);
                    true
                }
                Ok(false) => false,
                Err(e) => {
                    let now = Instant::now();
                    if now >= phases.measure_from && now < phases.end {
                        out.error(|| format!("one-shot connection: {e}"));
                    }
                    true
                }
            };
            if finished {
                if let Some(mut s) = shot.stream.take() {
                    let _ = poll.registry().deregister(&mut s);
                }
                if !start_shot(cfg, &poll, shot, slot, control, &mut out) && !control.exhausted() {
                    retry.push(slot);
                }
            }
        }
    }
    out
}

/// Opens the next connection of a slot. Returns false if the connect failed at once (or no
/// ticket is left), leaving the slot idle.
fn start_shot(
    cfg: &LoadConfig,
    poll: &Poll,
    shot: &mut Shot,
    slot: usize,
    control: &Control,
    out: &mut Outcome,
) -> bool {
    if !control.take_ticket() {
        return false;
    }
    let addr = cfg.targets[slot % cfg.targets.len()];
    shot.kind = pick_kind(cfg, shot.seq);
    shot.request.clear();
    push_request(
        cfg,
        &mut shot.request,
        shot.kind,
        &shot.id,
        &mut shot.clock,
        shot.seq,
        false,
    );
    shot.seq += 1;
    shot.reply.clear();
    shot.connected = false;
    shot.written = 0;
    shot.started = Instant::now();
    shot.generation = (shot.generation + 1) & 0xff_ffff;
    match TcpStream::connect(addr) {
        Ok(mut stream) => {
            let token = shot_token(slot, shot.generation);
            if let Err(e) = poll.registry().register(
                &mut stream,
                token,
                Interest::READABLE | Interest::WRITABLE,
            ) {
                out.error(|| format!("register: {e}"));
                return false;
            }
            shot.stream = Some(stream);
            out.sent += 1;
            true
        }
        Err(e) => {
            out.error(|| format!("connect {addr}: {e}"));
            false
        }
    }
}

/// Drives one one-shot connection. Returns Ok(true) when the server has closed (the reply is
/// complete), Ok(false) while it is still going.
fn shot_ready(shot: &mut Shot, buf: &mut [u8]) -> io::Result<bool> {
    let stream = shot.stream.as_mut().expect("an active slot has a stream");
    if !shot.connected {
        if let Some(e) = stream.take_error()? {
            return Err(e);
        }
        match stream.peer_addr() {
            Ok(_) => shot.connected = true,
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(false),
            Err(e) => return Err(e),
        }
    }
    if shot.written < shot.request.len() {
        loop {
            match stream.write(&shot.request[shot.written..]) {
                Ok(n) => {
                    shot.written += n;
                    if shot.written == shot.request.len() {
                        // The line has no newline: the half-close is what ends it.
                        stream.shutdown(Shutdown::Write)?;
                        break;
                    }
                }
                Err(e) if would_block(&e) => return Ok(false),
                Err(e) if interrupted(&e) => continue,
                Err(e) => return Err(e),
            }
        }
    }
    loop {
        match stream.read(buf) {
            Ok(0) => return Ok(true),
            Ok(n) => shot.reply.extend_from_slice(&buf[..n]),
            Err(e) if would_block(&e) => return Ok(false),
            Err(e) if interrupted(&e) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Makes the herd know every client WHATSAT will ask about: one IAMAT per query id to each
/// target, on a plain blocking connection, before the load starts.
pub fn prepare_queries(cfg: &LoadConfig) -> Result<(), String> {
    use std::io::{BufRead, BufReader};
    if cfg.kind == Kind::Iamat || cfg.echo {
        return Ok(());
    }
    for addr in &cfg.targets {
        let stream = std::net::TcpStream::connect_timeout(addr, Duration::from_secs(5))
            .map_err(|e| format!("prepare: connect {addr}: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let mut req = Vec::new();
        let mut clock = ClientClock::default();
        for id in &cfg.query_ids {
            proto::push_iamat(&mut req, id, clock.next(), true);
        }
        (&stream)
            .write_all(&req)
            .map_err(|e| format!("prepare: write {addr}: {e}"))?;
        let mut reader = BufReader::new(&stream);
        for _ in &cfg.query_ids {
            let mut line = String::new();
            reader
                .read_line(&mut line)
                .map_err(|e| format!("prepare: read {addr}: {e}"))?;
            if !line.starts_with("AT ") {
                return Err(format!("prepare: {addr} answered {line:?} to an IAMAT"));
            }
        }
    }
    Ok(())
}
