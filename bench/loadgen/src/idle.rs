//! Many idle clients: open N connections to one server, have each send one IAMAT (so the
//! server has surely accepted it and set it up), then hold them all open and read the
//! server's resident memory.

use crate::procstat;
use crate::proto::{self, ClientClock};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

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
    // Bounded in time as well as in count: a server that stops accepting cannot hang us.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut streams = Vec::with_capacity(conns);
    for _ in 0..conns {
        if Instant::now() >= deadline {
            fail(&mut out, "gave up opening connections after 60 s".into());
            break;
        }
        match TcpStream::connect_timeout(&target, Duration::from_secs(5)) {
            Ok(s) => streams.push(s),
            Err(e) => fail(&mut out, format!("connect: {e}")),
        }
    }
    out.opened = streams.len();

    // One IAMAT on every connection first, then all the replies: the server sees them all
    // without us waiting 10,000 round trips.
    let id = format!("idle{}", std::process::id());
    let mut clock = ClientClock::default();
    let mut line = Vec::new();
    for s in &streams {
        line.clear();
        proto::push_iamat(&mut line, &id, clock.next(), true);
        if let Err(e) = (&*s).write_all(&line) {
            fail(&mut out, format!("write: {e}"));
        }
    }
    for s in &streams {
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let mut reply = String::new();
        match BufReader::new(s).read_line(&mut reply) {
            Ok(_) if reply.starts_with("AT ") => out.answered += 1,
            Ok(_) => fail(&mut out, format!("reply {reply:?}")),
            Err(e) => fail(&mut out, format!("read: {e}")),
        }
    }
    std::thread::sleep(hold);
    out.rss_kb = procstat::sum_kb(pids, "VmRSS");
    out.hwm_kb = procstat::max_kb(pids, "VmHWM");
    drop(streams);
    out
}
