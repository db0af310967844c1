//! The server's log (SPEC §4): `<log-dir>/<SERVER>.log`, through the `log` facade.
//!
//! Every line in and out is logged, so a record must cost about a copy of its bytes, not a
//! `write(2)` and not a trip through a date formatter. Three crates share the work:
//! - `log` is the facade: `log::info!` and friends, and the global logger they reach;
//! - simplelog's `CombinedLogger` is the global logger: it holds the loggers a program
//!   wants (here one) and hands each record to each of them;
//! - [`HerdLog`] (below, a simplelog `SharedLogger`) is the one it holds: it formats a record
//!   straight into an in-memory buffer, behind a fixed-width UTC timestamp whose
//!   date-and-second part is formatted once per second and then copied. simplelog's own
//!   `WriteLogger` reads the clock through the `time` crate and formats a full RFC 3339 date
//!   for every record, and dropped trailing zeros of the fraction, so the logs of five
//!   servers could not be merged by sorting them.
//!
//! The loop thread reads the clock when `poll` returns and after each read that brought
//! bytes ([`tick`]), and its records carry that time, the way nginx stamps its log records
//! with a time cached per loop iteration: a clock read per record cost as much as the rest
//! of the record. So a line's record carries the time its bytes were read: never before
//! the sender's record of sending it (which carries the time of the read that caused it), so
//! a merged log keeps every flood in causal order. Other threads (the places workers) read
//! the clock for each record.
//!
//! A record looks like this (nine fraction digits always, then the server's name):
//!
//! ```text
//! 2026-12-02T03:51:28.395048970Z Alford [INFO] conn 7 < IAMAT kiwi +34.068930-118.445127 1621464827.5
//! ```
//!
//! so `sort -m logs/*.log` gives the whole herd's history in time order.
//!
//! The loop calls [`flush`] once per turn, just before it sleeps, and at exit: one `write(2)`
//! per turn. A full disk, a file size limit or a vanished directory makes writes fail; the
//! failed bytes are dropped and the server keeps serving (the buffer never grows past
//! [`BUFFER`] plus one record).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use log::{LevelFilter, Log, Metadata, Record};
use simplelog::{CombinedLogger, Config, SharedLogger};

/// How much log is kept in memory between flushes; past this a record writes the buffer out
/// at once (a turn that logs more than this pays one extra `write(2)` per [`BUFFER`] bytes).
const BUFFER: usize = 256 << 10;

/// Opens `<dir>/<name>.log` for appending (creating `dir`) and makes it the process's logger.
/// `LevelFilter::Off` opens nothing.
pub fn init(dir: &Path, name: &str, level: LevelFilter) -> Result<(), String> {
    if level == LevelFilter::Off {
        return Ok(());
    }
    fs::create_dir_all(dir)
        .map_err(|e| format!("{}: cannot create log directory: {e}", dir.display()))?;
    let path = dir.join(format!("{name}.log"));
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| format!("{}: cannot open log file: {e}", path.display()))?;
    CombinedLogger::init(vec![Box::new(HerdLog::new(level, name, file))])
        .map_err(|e| format!("cannot start logging: {e}"))
}

thread_local! {
    /// The time of the loop's last poll or read, on the loop thread only (see [`tick`]).
    static TURN_CLOCK: std::cell::Cell<Option<Duration>> = const { std::cell::Cell::new(None) };
}

/// Called by the loop when `poll` returns and after each read: this thread's records until
/// the next call carry this time.
pub fn tick() -> Duration {
    let now = wall_clock();
    TURN_CLOCK.set(Some(now));
    now
}

/// The real-time clock, as time since the Unix epoch.
fn wall_clock() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Writes buffered log records to the file: one syscall per loop turn at most.
pub fn flush() {
    log::logger().flush();
}

/// Parses a `--log-level` value.
pub fn parse_level(text: &str) -> Option<LevelFilter> {
    text.parse().ok()
}

/// Logs one line of the `--trace` record (each loop turn, each event, each byte count) when
/// `$on` is true. Off, it costs one branch: the arguments are not even formatted.
macro_rules! trace {
    ($on:expr, $($arg:tt)+) => {
        if $on {
            log::info!("trace: {}", format_args!($($arg)+));
        }
    };
}
pub(crate) use trace;

/// The server's logger: records formatted into a buffer that [`flush`] writes out.
pub struct HerdLog {
    level: LevelFilter,
    /// Shared by the loop thread and the places workers; held for one record's copy.
    sink: Mutex<Sink>,
}

/// The buffer, the file it goes to, and the cached timestamp.
struct Sink {
    file: File,
    buf: Vec<u8>,
    /// `" NAME ["`: what follows the timestamp in every record.
    name: Vec<u8>,
    /// The time of the last record written.
    last: Duration,
    /// The second `stamp` was formatted for.
    second: u64,
    /// `YYYY-MM-DDTHH:MM:SS.` for `second`.
    stamp: [u8; 20],
}

impl HerdLog {
    /// A logger for server `name` at `level`, appending to `file`.
    pub fn new(level: LevelFilter, name: &str, file: File) -> HerdLog {
        HerdLog {
            level,
            sink: Mutex::new(Sink {
                file,
                buf: Vec::with_capacity(BUFFER + 4096),
                name: format!(" {name} [").into_bytes(),
                last: Duration::ZERO,
                second: u64::MAX,
                stamp: [0; 20],
            }),
        }
    }
}

impl Log for HerdLog {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        // mio traces every poll through `log`; that is its business, not the server's log's.
        metadata.level() <= self.level && !metadata.target().starts_with("mio")
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let now = TURN_CLOCK.get().unwrap_or_else(wall_clock);
        // A poisoned lock means another thread panicked mid-record: its half record is
        // harmless, and the log must go on.
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        // Never earlier than the record before it (a worker's record, stamped with its own
        // clock read, may come between a turn's records): the file stays in time order, so
        // `sort -m` can merge the herd's files.
        let now = now.max(sink.last);
        sink.last = now;
        sink.record(now.as_secs(), now.subsec_nanos(), record);
    }

    fn flush(&self) {
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        sink.write_out();
    }
}

impl SharedLogger for HerdLog {
    fn level(&self) -> LevelFilter {
        self.level
    }

    fn config(&self) -> Option<&Config> {
        None
    }

    fn as_log(self: Box<Self>) -> Box<dyn Log> {
        self
    }
}

impl Sink {
    /// Appends one record: timestamp, name, level, message, newline.
    fn record(&mut self, secs: u64, nanos: u32, record: &Record<'_>) {
        if secs != self.second {
            self.second = secs;
            self.stamp = format_second(secs);
        }
        let buf = &mut self.buf;
        buf.extend_from_slice(&self.stamp);
        buf.extend_from_slice(&nine_digits(nanos));
        buf.push(b'Z');
        buf.extend_from_slice(&self.name);
        buf.extend_from_slice(record.level().as_str().as_bytes());
        buf.extend_from_slice(b"] ");
        match record.args().as_str() {
            Some(text) => buf.extend_from_slice(text.as_bytes()),
            // Writing into a Vec cannot fail.
            None => {
                let _ = buf.write_fmt(*record.args());
            }
        }
        buf.push(b'\n');
        if self.buf.len() >= BUFFER {
            self.write_out();
        }
    }

    /// Writes the buffer to the file and empties it, whatever the write says: a full disk or
    /// a file size limit must not stop the server or make the buffer grow.
    fn write_out(&mut self) {
        if !self.buf.is_empty() {
            let _ = self.file.write_all(&self.buf);
            self.buf.clear();
        }
    }
}

/// `nanos` as exactly nine digits (`000000050` for 50 ns): a fixed-width fraction.
fn nine_digits(mut nanos: u32) -> [u8; 9] {
    let mut out = [b'0'; 9];
    for digit in out.iter_mut().rev() {
        *digit = b'0' + (nanos % 10) as u8;
        nanos /= 10;
    }
    out
}

/// `YYYY-MM-DDTHH:MM:SS.` (UTC) for a count of seconds since the Unix epoch.
fn format_second(secs: u64) -> [u8; 20] {
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let of_day = secs % 86_400;
    let text = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    );
    let mut out = [b'0'; 20];
    // Years past 9999 would not fit; they are not this server's problem.
    let bytes = text.as_bytes();
    out.copy_from_slice(&bytes[bytes.len() - 20..]);
    out
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, which the C++ `<chrono>` library uses).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_format_as_utc_dates() {
        let text = |s| String::from_utf8(format_second(s).to_vec()).unwrap();
        assert_eq!(text(0), "1970-01-01T00:00:00.");
        assert_eq!(text(951_782_400), "2000-02-29T00:00:00.");
        assert_eq!(text(1_621_464_827), "2021-05-19T22:53:47.");
        assert_eq!(text(4_102_444_799), "2099-12-31T23:59:59.");
        // Every day boundary for 150 years, against a plain day-by-day count.
        let (mut y, mut m, mut d) = (1970i64, 1u32, 1u32);
        for day in 0..(150 * 366) {
            assert_eq!(civil_from_days(day), (y, m, d), "day {day}");
            let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
            let len = [
                31,
                if leap { 29 } else { 28 },
                31,
                30,
                31,
                30,
                31,
                31,
                30,
                31,
                30,
                31,
            ];
            d += 1;
            if d > len[m as usize - 1] {
                (d, m) = (1, m + 1);
                if m > 12 {
                    (m, y) = (1, y + 1);
                }
            }
        }
    }

    #[test]
    fn fraction_is_always_nine_digits() {
        assert_eq!(&nine_digits(0), b"000000000");
        assert_eq!(&nine_digits(50), b"000000050");
        assert_eq!(&nine_digits(489_433_820), b"489433820");
        assert_eq!(&nine_digits(999_999_999), b"999999999");
    }
}
