//! The server's log (SPEC §4): `<log-dir>/<SERVER>.log`, through `log` and simplelog.
//!
//! Every line in and out is logged, so a record must not cost a `write(2)`: records go into
//! a large in-memory buffer, and the loop calls [`flush`] once per turn, just before it
//! sleeps, and at exit. A full disk or a vanished directory makes writes fail; the errors
//! are dropped and the server keeps serving (the buffer does not grow past its capacity).

use std::fs::{self, OpenOptions};
use std::io::BufWriter;
use std::path::Path;

use log::LevelFilter;
use simplelog::{ConfigBuilder, WriteLogger};

/// How much log is kept in memory between flushes.
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
    let config = ConfigBuilder::new()
        .set_time_format_rfc3339()
        // mio traces every poll through `log`; that is its business, not the server's log's.
        .add_filter_ignore_str("mio")
        .set_thread_level(LevelFilter::Off)
        .set_target_level(LevelFilter::Off)
        .set_location_level(LevelFilter::Off)
        .build();
    WriteLogger::init(level, config, BufWriter::with_capacity(BUFFER, file))
        .map_err(|e| format!("cannot start logging: {e}"))
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
