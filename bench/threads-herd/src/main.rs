//! threads-herd: the places proxy herd in the "multithreaded program in a synchronous model"
//! that the first seed report says an event loop matches: blocking `std::net`, a thread per
//! client connection, a thread per neighbour link, the location store behind a lock.
//!
//! # Layout
//! - `main` (this file): the listener, a thread per connection, a thread per link;
//! - `proto`, `setup`, `store`, `places`: tokio-herd's files, included by path, so the two
//!   Rust herds differ only in how they run: parsing and formatting (`proto`), the command
//!   line and the topology file (`setup`), the location store and what a line asks of it
//!   (`store`), what a WHATSAT lookup sends and makes of the answer (`places`).
//!
//! Same command line shape, topology file and behaviour as proxy-herd (SPEC §1–§3).
//! A connection's thread handles its lines one at a time: a WHATSAT blocks that thread (and
//! only that connection) for the lookup, so replies leave in request order by construction.
//! Threads use the standard library's default stack size, as most such servers do.

#[path = "../../tokio-herd/src/places.rs"]
mod places;
#[path = "../../tokio-herd/src/proto.rs"]
mod proto;
#[path = "../../tokio-herd/src/setup.rs"]
mod setup;
#[path = "../../tokio-herd/src/store.rs"]
mod store;

use setup::ServerEntry;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::Duration;
use store::{Action, Input, Locations};
use tracing::{info, warn};

/// What every thread shares.
struct Herd {
    name: String,
    locations: Locations,
    /// One sender per neighbour link; the link's thread writes what it receives.
    links: Vec<Sender<Arc<str>>>,
    places: places::Places,
    max_line: usize,
}

impl Herd {
    /// Queues a newer AT line to every link thread (before the caller writes any reply).
    fn flood(&self, line: &Arc<str>) {
        for link in &self.links {
            let _ = link.send(Arc::clone(line));
        }
    }
}

fn main() {
    let o = setup::parse_options("threads-herd");
    let (servers, links) = setup::read_topology(&o.topology).unwrap_or_else(|e| {
        eprintln!("threads-herd: {e}");
        std::process::exit(1)
    });
    let Some(me) = servers.iter().find(|s| s.name == o.name).cloned() else {
        eprintln!("threads-herd: {}: no server named {}", o.topology, o.name);
        std::process::exit(1)
    };
    let listener = TcpListener::bind(me.addr).unwrap_or_else(|e| {
        eprintln!("threads-herd: bind {}: {e}", me.addr);
        std::process::exit(1)
    });
    let _guard = setup::init_logging(&o, "threads-herd");
    let neighbours = setup::neighbours(&servers, &links, &me.name);
    let mut receivers = Vec::new();
    let mut senders = Vec::new();
    for _ in &neighbours {
        let (tx, rx) = channel();
        senders.push(tx);
        receivers.push(rx);
    }
    let herd = Arc::new(Herd {
        name: me.name.clone(),
        locations: Locations::default(),
        links: senders,
        places: places::Places::new(&o.places_url, o.api_key(), o.places_timeout),
        max_line: o.max_line,
    });
    info!("{} started on {}", me.name, me.addr);
    for (n, rx) in neighbours.into_iter().zip(receivers) {
        let herd = Arc::clone(&herd);
        std::thread::spawn(move || neighbour_link(&herd, &n, &rx));
    }
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                let herd = Arc::clone(&herd);
                std::thread::spawn(move || client(&herd, stream, peer));
            }
            Err(e) => {
                // Out of file descriptors, say: wait a little instead of spinning.
                warn!("accept: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Keeps one persistent link to a neighbour: connect (with backoff), send everything we
/// know, then write every flooded AT line as it comes; on error, start over.
fn neighbour_link(herd: &Herd, peer: &ServerEntry, rx: &Receiver<Arc<str>>) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let stream = match TcpStream::connect(peer.addr) {
            Ok(s) => s,
            Err(e) => {
                info!("connect to {} failed: {e}", peer.name);
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        let _ = stream.set_nodelay(true);
        info!("link to {} up", peer.name);
        // What piled up while the link was down is in the snapshot.
        while rx.try_recv().is_ok() {}
        let mut w = BufWriter::new(stream);
        let mut result = herd
            .locations
            .snapshot()
            .iter()
            .try_for_each(|line| writeln!(w, "{line}"))
            .and_then(|()| w.flush());
        while result.is_ok() {
            let Ok(line) = rx.recv() else { return };
            info!("to {}: {line}", peer.name);
            result = writeln!(w, "{line}");
            // Batch whatever else is queued into the same write.
            while result.is_ok()
                && let Ok(more) = rx.try_recv()
            {
                info!("to {}: {more}", peer.name);
                result = writeln!(w, "{more}");
            }
            if result.is_ok() {
                result = w.flush();
            }
        }
        if let Err(e) = result {
            info!("link to {} dropped: {e}", peer.name);
        }
    }
}

/// Serves one connection (a client, or a neighbour sending AT lines) on its own thread:
/// read a line, act on it, write its reply; flush when no more input is buffered, so a
/// pipelined burst gets one write.
fn client(herd: &Herd, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    info!("new connection {peer}");
    // Both halves borrow the one socket (no `try_clone`: a second descriptor per connection
    // would halve how many connections fit under the descriptor limit).
    let mut w = BufWriter::new(&stream);
    let mut reader = BufReader::new(&stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let limit = herd.max_line as u64 + 1;
        let n = match (&mut reader).take(limit).read_until(b'\n', &mut buf) {
            Ok(n) => n,
            Err(_) => break,
        };
        if n == 0 {
            break;
        }
        let text = String::from_utf8_lossy(&buf);
        let line = match store::input(&buf, &text, herd.max_line) {
            Input::TooLong(reply) => {
                let _ = w.write_all(reply.as_bytes());
                info!("{peer}: line over {} bytes, closing", herd.max_line);
                break;
            }
            Input::Blank => continue,
            Input::Line(line) => line,
        };
        info!("from {peer}: {line}");
        if let Some(reply) = handle_line(herd, line) {
            info!("to {peer}: {}", reply.trim_end());
            if w.write_all(reply.as_bytes()).is_err() {
                break;
            }
        }
        if reader.buffer().is_empty() && w.flush().is_err() {
            break;
        }
    }
    let _ = w.flush();
    info!("closed connection {peer}");
}

/// Acts on one line and returns its reply, if any; a WHATSAT blocks for its lookup.
fn handle_line(herd: &Herd, line: &str) -> Option<String> {
    match store::act(&herd.name, &herd.locations, line, |at| herd.flood(at)) {
        Action::Reply(text) => Some(text),
        Action::Silent => None,
        Action::Whatsat {
            at,
            radius_km,
            bound,
        } => {
            let location = at.split(' ').nth(4).unwrap_or("");
            let json = nearby(&herd.places, location, radius_km, bound);
            Some(format!("{at}\n{json}\n\n"))
        }
    }
}

/// A WHATSAT lookup over a blocking `TcpStream`, each step bounded by the places timeout.
fn nearby(places: &places::Places, location: &str, radius_km: f64, bound: usize) -> String {
    let fetch = || -> Result<Vec<u8>, String> {
        let request = places.request(location, radius_km)?;
        let timed_out = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                "the place lookup timed out".to_string()
            }
            _ => format!("the place lookup failed: {e}"),
        };
        let addr = std::net::ToSocketAddrs::to_socket_addrs(places.host())
            .map_err(|e| format!("the place provider's address: {e}"))?
            .next()
            .ok_or("the place provider has no address")?;
        let mut stream = TcpStream::connect_timeout(&addr, places.timeout()).map_err(timed_out)?;
        stream
            .set_read_timeout(Some(places.timeout()))
            .and_then(|()| stream.set_write_timeout(Some(places.timeout())))
            .map_err(timed_out)?;
        stream.write_all(request.as_bytes()).map_err(timed_out)?;
        let mut response = Vec::new();
        (&mut stream)
            .take(places::MAX_BODY as u64)
            .read_to_end(&mut response)
            .map_err(timed_out)?;
        Ok(response)
    };
    places::shape(fetch(), bound)
}
