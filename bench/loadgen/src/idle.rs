//! Many idle clients: open N connections to one server, have each send one IAMAT (so the
//! server has surely accepted it and set it up), then hold them all open and read the
//! server's resident memory.

use crate::procstat;
use crate::proto::{self, ClientClock};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Connections opened (and answered) before the next ones connect.
const BATCH: usize = 64;

pub struct IdleOutcome {
    pub opened: usize,
    pub answered: usize,
    pub errors: u64,
    pub first_error: Option<String>,
    pub rss_before_kb: u64,
    pub rss_kb: u64,
    pub hwm_kb: u64,
}

pub fn run(target: SocketAddr, conns: usize, pids: &[u32], hold: Duration) -> IdleOutcome {
    procstat::raise_fd_limit();
    let rss_before_kb = procstat::sum_kb(pids, "VmRSS");
    let mut out = IdleOutcome {
        opened: 0,
        answered: 0,
        errors: 0,
        first_error: None,
        rss_before_kb,
        rss_kb: 0,
        hwm_kb: 0,
    };
    let fail = |out: &mut IdleOutcome, e: String| {
        out.errors += 1;
        out.first_error.get_or_insert(e);
    };
    // Connections are opened in batches, and each batch's IAMATs are answered before the
    // next batch connects: a burst of 10,000 connects would overflow the server's listen
    // backlog (asyncio's default is 100) and stall in SYN retries, measuring the backlog
    // instead of memory. Bounded in time as well as in count.
    let deadline = Instant::now() + Duration::from_secs(120);
    let id = format!("idle{}", std::process::id());
    let mut clock = ClientClock::default();
    let mut line = Vec::new();
    let mut streams: Vec<TcpStream> = Vec::with_capacity(conns);
    for first in (0..conns).step_by(BATCH) {
        if Instant::now() >= deadline {
            fail(&mut out, "gave up opening connections after 120 s".into());
            break;
        }
        let batch_start = streams.len();
        for _ in first..(first + BATCH).min(conns) {
            match TcpStream::connect_timeout(&target, Duration::from_secs(5)) {
                Ok(s) => streams.push(s),
                Err(e) => fail(&mut out, format!("connect: {e}")),
            }
        }
        for s in &streams[batch_start..] {
            line.clear();
            proto::push_iamat(&mut line, &id, clock.next(), true);
            if let Err(e) = (&*s).write_all(&line) {
                fail(&mut out, format!("write: {e}"));
            }
        }
        for s in &streams[batch_start..] {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let mut reply = String::new();
            match BufReader::new(s).read_line(&mut reply) {
                Ok(_) if reply.starts_with("AT ") => out.answered += 1,
                Ok(_) => fail(&mut out, format!("reply {reply:?}")),
                Err(e) => fail(&mut out, format!("read: {e}")),
            }
        }
    }
    out.opened = streams.len();
    std::thread::sleep(hold);
    out.rss_kb = procstat::sum_kb(pids, "VmRSS");
    out.hwm_kb = procstat::max_kb(pids, "VmHWM");
    drop(streams);
    out
}
