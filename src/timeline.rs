//! `--timeline`: the loop drawn as a picture, in Chrome's trace-event JSON.
//!
//! Each server writes `<log-dir>/<SERVER>.trace.json`, which Perfetto ("Open trace file" at
//! <https://ui.perfetto.dev>) and `chrome://tracing` open; `--herd --timeline` merges the
//! five into `herd.trace.json` when the herd stops ([`merge`]). What is in it (see the tour):
//!
//! - one *process* per server (named after it) and in it one *thread* per thread: `loop`,
//!   and `places-0`.. for the workers;
//! - on `loop`, a `poll` slice for each sleep in `epoll_wait` and a `turn` slice for the work
//!   that follows it, with `lines` slices (a connection's lines handled) and instants
//!   (accept, read, flood, write, close, connect, link down) inside;
//! - a `lookup` slice on the worker that did it;
//! - flow arrows: from the turn that queues an AT line for a neighbour to the turn of that
//!   neighbour that handles it, and from the WHATSAT's turn to its lookup and back to the
//!   turn that delivers the result.
//!
//! The file is the JSON *array* format: `[`, one event per line, `]`. Timestamps are the
//! real-time clock in microseconds (with nanosecond decimals), so five processes share one
//! time axis.
//!
//! **An arrow across processes** needs an id both ends can compute without talking: the
//! sender and the receiver hash the six fields of the AT line and the receiver's name (and
//! the sender's, when the line carries `via=`: then a line that reaches a server twice, from
//! two neighbours, makes two arrows, not one tangled pair). See [`line_flow_id`].
//!
//! **Cost.** Off, every hook is one branch on a flag ([`on`]), like `--trace`. On, an event
//! is a lock, a clock read and about a hundred bytes formatted into a buffer that is written
//! out every [`FLUSH_AT`] bytes. **Bounded:** a file stops growing at a cap in bytes
//! (`--timeline-max`, [`DEFAULT_CAP`] unless told): the recorder then writes one last
//! instant, `timeline full`, and records nothing more. The
//! closing `]` is written when the server stops ([`finish`], after SIGTERM or SIGINT), so the
//! file is valid JSON then; a server killed outright leaves it without its `]`, which both
//! viewers accept (and [`merge`] mends).

use std::cell::Cell;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A server's file stops growing here unless `--timeline-max` says otherwise (16 MiB, about
/// 150,000 events: a few seconds of a busy herd, hours of a quiet one). Five of them make a
/// herd file that Perfetto opens in a few seconds.
pub const DEFAULT_CAP: u64 = 16 << 20;
/// What the recorder keeps back below the cap for the last turn, the `timeline full` marker
/// and the closing `]`.
const RESERVE: u64 = 4 << 10;
/// The buffer is written to the file when it holds this much (and when the server stops).
const FLUSH_AT: usize = 64 << 10;
/// The loop thread's id on the timeline; workers are `FIRST_WORKER_TID + i`.
const LOOP_TID: u32 = 1;
/// The thread id of worker `places-0`.
const FIRST_WORKER_TID: u32 = 2;

/// Set while recording: the one branch every hook costs when `--timeline` is off.
static ON: AtomicBool = AtomicBool::new(false);
/// The recorder, shared by the loop thread and the workers (held for one event's copy).
static RECORDER: Mutex<Option<Recorder>> = Mutex::new(None);
/// Numbers lookups, for the arrows loop → worker → loop.
static LOOKUPS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's id on the timeline.
    static TID: Cell<u32> = const { Cell::new(LOOP_TID) };
}

/// True while the timeline is recorded.
#[inline]
pub fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// An argument shown with an event (in the viewer's details pane).
#[derive(Debug, Clone, Copy)]
pub enum Arg<'a> {
    /// A count, a size, a connection number.
    N(u64),
    /// A name or a reason.
    S(&'a str),
}

impl From<usize> for Arg<'_> {
    fn from(n: usize) -> Self {
        Arg::N(n as u64)
    }
}

impl From<u64> for Arg<'_> {
    fn from(n: u64) -> Self {
        Arg::N(n)
    }
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(s: &'a str) -> Self {
        Arg::S(s)
    }
}

impl<'a> From<&'a String> for Arg<'a> {
    fn from(s: &'a String) -> Self {
        Arg::S(s)
    }
}

/// Records an instant on this thread's track: `mark!("read", conn = 7, bytes = 65)`. Off,
/// it costs one branch: the arguments are not even evaluated.
macro_rules! mark {
    ($name:expr $(, $key:ident = $value:expr)* $(,)?) => {
        if $crate::timeline::on() {
            $crate::timeline::instant(
                $name,
                &[$((stringify!($key), $crate::timeline::Arg::from($value))),*],
            );
        }
    };
}
pub(crate) use mark;

/// Starts recording to `<dir>/<name>.trace.json` (replacing an older one): names the
/// process and the loop thread. `index` orders the servers' tracks as in the topology; the
/// file stops growing at `cap` bytes.
pub fn start(dir: &Path, name: &str, index: usize, cap: u64) -> Result<(), String> {
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("{}: cannot create log directory: {e}", dir.display()))?;
    let path = dir.join(format!("{name}.trace.json"));
    let file = File::create(&path)
        .map_err(|e| format!("{}: cannot create timeline: {e}", path.display()))?;
    let mut recorder = Recorder::new(file, std::process::id(), cap);
    recorder.metadata("process_name", 0, "name", Arg::S(name));
    recorder.metadata("process_sort_index", 0, "sort_index", Arg::N(index as u64));
    recorder.metadata("thread_name", LOOP_TID, "name", Arg::S("loop"));
    *lock() = Some(recorder);
    ON.store(true, Ordering::Relaxed);
    Ok(())
}

/// Stops recording: ends the turn in progress, writes the closing `]` and the buffer.
pub fn finish() {
    ON.store(false, Ordering::Relaxed);
    if let Some(mut recorder) = lock().take() {
        recorder.finish(now_ns());
    }
}

/// Called by a worker thread as it starts: its events go on its own track, `places-<i>`.
pub fn worker_thread(i: usize) {
    let tid = FIRST_WORKER_TID + i as u32;
    TID.set(tid);
    if on() {
        with(|r| r.metadata("thread_name", tid, "name", Arg::S(&format!("places-{i}"))));
    }
}

/// The loop is about to sleep in `poll`: the turn before ends here.
#[inline]
pub fn asleep(timeout: Option<Duration>) {
    if on() {
        with(|r| r.asleep(now_ns(), timeout));
    }
}

/// `poll` returned with `events`: the sleep becomes a `poll` slice, and turn `turn` begins.
#[inline]
pub fn awake(turn: u64, events: &mio::Events) {
    if on() {
        let n = events.iter().count();
        with(|r| r.awake(now_ns(), turn, n));
    }
}

/// The time a span of work begins (`None` when off): give it back to [`lines_handled`].
#[inline]
pub fn begin() -> Option<u64> {
    on().then(now_ns)
}

/// A connection's lines were handled since `begun`: a `lines` slice, when there were any.
#[inline]
pub fn lines_handled(begun: Option<u64>, conn: usize, lines: usize) {
    if let Some(begun) = begun
        && lines > 0
    {
        let args = [("conn", Arg::from(conn)), ("lines", Arg::from(lines))];
        with(|r| r.slice("lines", "loop", begun, now_ns(), &args));
    }
}

/// Records an instant with its arguments (through [`mark!`], which checks [`on`] first).
pub fn instant(name: &str, args: &[(&str, Arg<'_>)]) {
    with(|r| r.instant(name, now_ns(), args));
}

/// An AT line was queued for neighbour `to`: an instant, and the start of an arrow to the
/// turn of `to` that will handle it (`via`: the line carries ` via=<me>`). Lines that wait
/// for a link to come up go with its catch-up, and get no arrow.
#[inline]
pub fn flood_out(me: &str, to: &str, line: &[u8], sent: &crate::peer::Sent, via: bool) {
    use crate::peer::Sent;
    if on() && matches!(sent, Sent::Queued | Sent::Held) {
        let id = line_flow_id(line, via.then_some(me.as_bytes()), to.as_bytes());
        with(|r| {
            let ts = now_ns();
            r.instant("flood", ts, &[("to", Arg::S(to))]);
            r.flow('s', "AT", ts, id);
        });
    }
}

/// This server (`me`) handles an AT line that neighbour `via` (if it said) sent: the end of
/// the arrow [`flood_out`] started there.
#[inline]
pub fn flood_in(me: &str, line: &[u8], via: Option<&[u8]>) {
    if on() {
        let id = line_flow_id(line, via, me.as_bytes());
        with(|r| r.flow('f', "AT", now_ns(), id));
    }
}

/// The loop hands a lookup to the workers: the start of its arrow; returns the lookup's
/// number, for the worker (0 when off).
#[inline]
pub fn lookup_queued() -> u64 {
    if !on() {
        return 0;
    }
    let n = LOOKUPS.fetch_add(1, Ordering::Relaxed) + 1;
    with(|r| r.flow('s', "lookup", now_ns(), lookup_flow_id(n, false)));
    n
}

/// A worker did lookup `n` from `begun` until now: a `lookup` slice on its track, with the
/// arrow from the loop ending in it and the arrow back to the loop starting in it.
pub fn lookup_done(n: u64, begun: Option<u64>, status: &str) {
    let Some(begun) = begun else { return };
    let end = now_ns();
    let middle = begun + end.saturating_sub(begun) / 2;
    with(|r| {
        r.slice(
            "lookup",
            "places",
            begun,
            end,
            &[("status", Arg::S(status))],
        );
        r.flow('f', "lookup", middle, lookup_flow_id(n, false));
        r.flow('s', "result", middle, lookup_flow_id(n, true));
    });
}

/// The loop takes lookup `n`'s result: the end of the arrow from the worker.
#[inline]
pub fn lookup_delivered(n: u64) {
    if on() && n > 0 {
        with(|r| r.flow('f', "result", now_ns(), lookup_flow_id(n, true)));
    }
}

/// The id of the arrow that carries AT `line` from `from` (when the line names it with
/// `via=`) to `to`: FNV-1a over the three, with the top bit set so it never meets a
/// lookup's id. Sender and receiver compute it alone, each from what it has.
pub fn line_flow_id(line: &[u8], from: Option<&[u8]>, to: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    for part in [line, b"\n", from.unwrap_or(b""), b"\n", to] {
        for &b in part {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    hash | 1 << 63
}

/// The id of lookup `n`'s arrow to the worker, or back (`result`): unique in the herd file,
/// since it holds this process's id.
fn lookup_flow_id(n: u64, result: bool) -> u64 {
    (u64::from(std::process::id()) << 32) | (n << 1) | u64::from(result)
}

/// Merges the servers' files in `dir` into `<dir>/herd.trace.json`, in `names`' order. A
/// file a killed server left without its `]` is mended; a missing one is skipped.
pub fn merge(dir: &Path, names: &[&str]) -> Result<PathBuf, String> {
    let mut parts = Vec::new();
    for name in names {
        let Ok(text) = std::fs::read_to_string(dir.join(format!("{name}.trace.json"))) else {
            continue;
        };
        let body = text.trim().trim_start_matches('[');
        let body = body.strip_suffix(']').unwrap_or(body).trim_end();
        let body = body.strip_suffix(',').unwrap_or(body).trim();
        if !body.is_empty() {
            parts.push(body.to_string());
        }
    }
    let path = dir.join("herd.trace.json");
    let text = format!("[\n{}\n]\n", parts.join(",\n"));
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

/// The real-time clock in nanoseconds since the Unix epoch.
fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// The recorder, locked (a poisoned lock means a thread panicked mid-event: go on).
fn lock() -> std::sync::MutexGuard<'static, Option<Recorder>> {
    RECORDER.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `f` on the recorder, if recording.
fn with(f: impl FnOnce(&mut Recorder)) {
    if let Some(recorder) = lock().as_mut() {
        f(recorder);
    }
}

/// One server's timeline file being written.
pub struct Recorder {
    file: File,
    buf: Vec<u8>,
    pid: u32,
    /// Bytes written to the file so far.
    written: u64,
    /// The file's bound (see [`DEFAULT_CAP`]).
    cap: u64,
    /// The cap was reached: nothing more is recorded.
    full: bool,
    /// No event written yet (no comma before the next one).
    first: bool,
    /// The loop went to sleep then, with that timeout.
    asleep: Option<(u64, Option<Duration>)>,
    /// The turn in progress: when it began, its number, its events.
    turn: Option<(u64, u64, usize)>,
}

impl Recorder {
    /// A recorder writing process `pid`'s events to `file`, at most `cap` bytes.
    pub fn new(mut file: File, pid: u32, cap: u64) -> Recorder {
        let _ = file.write_all(b"[\n");
        Recorder {
            file,
            buf: Vec::with_capacity(FLUSH_AT + 4096),
            pid,
            written: 2,
            cap,
            full: false,
            first: true,
            asleep: None,
            turn: None,
        }
    }

    /// Ends the turn in progress at `ts`, closes the array and writes everything out.
    pub fn finish(&mut self, ts: u64) {
        self.end_turn(ts);
        self.buf.extend_from_slice(b"\n]\n");
        self.write_out();
    }

    /// The loop sleeps from `ts`: the turn before ends.
    fn asleep(&mut self, ts: u64, timeout: Option<Duration>) {
        self.end_turn(ts);
        self.asleep = Some((ts, timeout));
    }

    /// The loop wakes at `ts` for turn `turn` with `events` events.
    fn awake(&mut self, ts: u64, turn: u64, events: usize) {
        if let Some((began, timeout)) = self.asleep.take() {
            let timeout = timeout.map_or(Arg::S("none"), |t| Arg::N(t.as_millis() as u64));
            let args = [("timeout_ms", timeout), ("events", Arg::N(events as u64))];
            self.slice("poll", "loop", began, ts, &args);
        }
        self.turn = Some((ts, turn, events));
    }

    /// Writes the `turn` slice of the turn in progress, ending at `ts`.
    fn end_turn(&mut self, ts: u64) {
        if let Some((began, turn, events)) = self.turn.take() {
            let args = [("turn", Arg::N(turn)), ("events", Arg::N(events as u64))];
            self.slice("turn", "loop", began, ts, &args);
        }
    }

    /// A complete event (`X`): a slice on this thread's track.
    pub fn slice(&mut self, name: &str, cat: &str, begun: u64, end: u64, args: &[(&str, Arg)]) {
        if self.open(name, 'X', TID.get()) {
            let _ = write!(self.buf, ",\"cat\":\"{cat}\"");
            self.ts("ts", begun);
            self.ts("dur", end.saturating_sub(begun));
            self.close(args);
        }
    }

    /// An instant event (`i`), scoped to this thread.
    pub fn instant(&mut self, name: &str, ts: u64, args: &[(&str, Arg)]) {
        if self.open(name, 'i', TID.get()) {
            self.buf.extend_from_slice(b",\"s\":\"t\"");
            self.ts("ts", ts);
            self.close(args);
        }
    }

    /// A flow event: `s` starts an arrow in the slice enclosing `ts`, `f` ends one there
    /// (`bp: "e"`: in the enclosing slice, not the next one to begin).
    pub fn flow(&mut self, phase: char, name: &str, ts: u64, id: u64) {
        if self.open(name, phase, TID.get()) {
            let _ = write!(self.buf, ",\"cat\":\"flow\",\"id\":\"0x{id:x}\"");
            if phase == 'f' {
                self.buf.extend_from_slice(b",\"bp\":\"e\"");
            }
            self.ts("ts", ts);
            self.close(&[]);
        }
    }

    /// A metadata event (`M`): a process's or thread's name or order.
    fn metadata(&mut self, name: &str, tid: u32, key: &str, value: Arg) {
        if self.open(name, 'M', tid) {
            self.close(&[(key, value)]);
        }
    }

    /// Begins an event: `{"ph":..,"name":..,"pid":..,"tid":..`. False (and nothing written)
    /// once the file is full; the event that finds it full writes the `timeline full` mark.
    fn open(&mut self, name: &str, phase: char, tid: u32) -> bool {
        if self.full {
            return false;
        }
        let limit = self.cap.saturating_sub(RESERVE);
        if self.written + self.buf.len() as u64 > limit && phase != 'M' {
            self.full = true;
            self.start_event("timeline full", 'i', tid);
            let _ = write!(self.buf, ",\"s\":\"g\"");
            self.ts("ts", now_ns());
            let cap = self.cap;
            self.close(&[("cap_bytes", Arg::N(cap))]);
            return false;
        }
        self.start_event(name, phase, tid);
        true
    }

    fn start_event(&mut self, name: &str, phase: char, tid: u32) {
        if !self.first {
            self.buf.extend_from_slice(b",\n");
        }
        self.first = false;
        let _ = write!(self.buf, "{{\"ph\":\"{phase}\",\"name\":");
        json_string(&mut self.buf, name);
        let _ = write!(self.buf, ",\"pid\":{},\"tid\":{tid}", self.pid);
    }

    /// Ends an event with its arguments, and writes the buffer out when it is full enough.
    fn close(&mut self, args: &[(&str, Arg)]) {
        if !args.is_empty() {
            self.buf.extend_from_slice(b",\"args\":{");
            for (i, (key, value)) in args.iter().enumerate() {
                if i > 0 {
                    self.buf.push(b',');
                }
                json_string(&mut self.buf, key);
                self.buf.push(b':');
                match value {
                    Arg::N(n) => {
                        let _ = write!(self.buf, "{n}");
                    }
                    Arg::S(s) => json_string(&mut self.buf, s),
                }
            }
            self.buf.push(b'}');
        }
        self.buf.push(b'}');
        if self.buf.len() >= FLUSH_AT {
            self.write_out();
        }
    }

    /// `,"key":<microseconds>.<nanoseconds>`.
    fn ts(&mut self, key: &str, ns: u64) {
        let _ = write!(self.buf, ",\"{key}\":{}.{:03}", ns / 1000, ns % 1000);
    }

    /// Writes the buffer to the file; a failed write is dropped, like the log's.
    fn write_out(&mut self) {
        if !self.buf.is_empty() {
            let _ = self.file.write_all(&self.buf);
            self.written += self.buf.len() as u64;
            self.buf.clear();
        }
    }
}

/// Appends `s` as a JSON string, escaped.
fn json_string(buf: &mut Vec<u8>, s: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *buf, s);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("timeline-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn parse(path: &Path) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(path).unwrap();
        serde_json::from_str::<Vec<serde_json::Value>>(&text).unwrap()
    }

    #[test]
    fn the_file_stops_at_its_cap_and_stays_valid_json() {
        let dir = scratch("cap");
        let path = dir.join("cap.trace.json");
        let cap = 64 << 10;
        let mut r = Recorder::new(File::create(&path).unwrap(), 42, cap);
        let mut turns = 0;
        for turn in 0..10_000u64 {
            let ts = 1_000_000_000 + turn * 1000;
            r.asleep(ts, Some(Duration::from_millis(5)));
            r.awake(ts + 400, turn, 1);
            r.instant("read \"quoted\"", ts + 500, &[("conn", Arg::N(turn))]);
            turns += 1;
        }
        r.finish(2_000_000_000);
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size <= cap, "{size} bytes, cap {cap}");
        let events = parse(&path);
        assert!(
            events.len() > 100 && events.len() < turns,
            "{}",
            events.len()
        );
        let last = events.last().unwrap();
        assert_eq!(last["name"], "timeline full", "{last}");
        assert_eq!(
            events
                .iter()
                .filter(|e| e["name"] == "timeline full")
                .count(),
            1
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn merge_mends_a_file_without_its_closing_bracket() {
        let dir = scratch("merge");
        let whole = "[\n{\"ph\":\"i\",\"name\":\"a\",\"pid\":1,\"tid\":1,\"ts\":1.000}\n]\n";
        let cut = "[\n{\"ph\":\"i\",\"name\":\"b\",\"pid\":2,\"tid\":1,\"ts\":2.000},\n";
        std::fs::write(dir.join("A.trace.json"), whole).unwrap();
        std::fs::write(dir.join("B.trace.json"), cut).unwrap();
        let path = merge(&dir, &["A", "B", "Missing"]).unwrap();
        let names: Vec<_> = parse(&path).iter().map(|e| e["name"].clone()).collect();
        assert_eq!(names, ["a", "b"]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn both_ends_of_an_arrow_compute_the_same_id() {
        let line = b"AT Alford +0.1 kiwi +34.068930-118.445127 1621464827.5";
        let sent = line_flow_id(line, Some(b"Parker"), b"Powell");
        assert_eq!(sent, line_flow_id(line, Some(b"Parker"), b"Powell"));
        assert_ne!(sent, line_flow_id(line, Some(b"Bolden"), b"Powell"));
        assert_ne!(sent, line_flow_id(line, None, b"Powell"));
        assert_ne!(sent, line_flow_id(line, Some(b"Parker"), b"Alford"));
        assert!(sent >> 63 == 1 && lookup_flow_id(7, true) >> 63 == 0);
    }
}
