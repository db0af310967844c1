//! tokio-herd: the places proxy herd written the way a tokio user would write it, to compare
//! proxy-herd's hand-rolled reactor against.
//!
//! # Layout
//! - `main` (this file): the listener, one task per client connection, one task per neighbour
//!   link, a WHATSAT lookup's I/O;
//! - `proto`: parsing commands and formatting replies (pure);
//! - `setup`: the command line, the topology file, the log;
//! - `store`: the location store and what a line asks of it;
//! - `places`: what a lookup asks Google's legacy Nearby Search and makes of the answer.
//!
//! `proto`, `setup`, `store` and `places` hold no tokio code: threads-herd includes them.
//!
//! Same command line shape, topology file and behaviour as proxy-herd (SPEC §1–§3):
//! `tokio-herd NAME --topology FILE [--places-url URL] [--places-key-file FILE]
//! [--places-timeout SECS] [--log-dir DIR] [--log-level LEVEL] [--max-line BYTES]`.
//! The multi-threaded runtime is used with its defaults (a worker per core), as most tokio
//! servers are.

mod places;
mod proto;
mod setup;
mod store;

use setup::{ServerEntry, read_topology};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use store::{Action, Input, Locations};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

/// What every task shares.
struct Herd {
    name: String,
    locations: Locations,
    /// One sender per neighbour link; the link's task writes what it receives.
    links: Vec<mpsc::UnboundedSender<Arc<str>>>,
    places: places::Places,
    max_line: usize,
}

impl Herd {
    /// Queues a newer AT line to every link task (before the caller writes any reply).
    fn flood(&self, line: &Arc<str>) {
        for link in &self.links {
            let _ = link.send(Arc::clone(line));
        }
    }
}

#[tokio::main]
async fn main() {
    let o = setup::parse_options("tokio-herd");
    let (servers, links) = read_topology(&o.topology).unwrap_or_else(|e| {
        eprintln!("tokio-herd: {e}");
        std::process::exit(1)
    });
    let Some(me) = servers.iter().find(|s| s.name == o.name).cloned() else {
        eprintln!("tokio-herd: {}: no server named {}", o.topology, o.name);
        std::process::exit(1)
    };
    let _guard = setup::init_logging(&o, "tokio-herd");
    let neighbours = setup::neighbours(&servers, &links, &me.name);
    let key = o.api_key();
    let mut receivers = Vec::new();
    let mut senders = Vec::new();
    for _ in &neighbours {
        let (tx, rx) = mpsc::unbounded_channel();
        senders.push(tx);
        receivers.push(rx);
    }
    let herd = Arc::new(Herd {
        name: me.name.clone(),
        locations: Locations::default(),
        links: senders,
        places: places::Places::new(&o.places_url, key, o.places_timeout),
        max_line: o.max_line,
    });

    let listener = TcpListener::bind(me.addr).await.unwrap_or_else(|e| {
        eprintln!("tokio-herd: bind {}: {e}", me.addr);
        std::process::exit(1)
    });
    info!("{} started on {}", me.name, me.addr);
    for (n, rx) in neighbours.into_iter().zip(receivers) {
        tokio::spawn(neighbour_link(Arc::clone(&herd), n, rx));
    }

    let accept = async {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    tokio::spawn(client(Arc::clone(&herd), stream, peer));
                }
                Err(e) => {
                    warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    };
    tokio::select! {
        _ = accept => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate() => {}
    }
    info!("{} stopping", herd.name);
}

/// Resolves on SIGTERM, so the log says we stopped and the log writer flushes.
async fn terminate() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

/// Keeps one persistent link to a neighbour: connect (with backoff), send everything we
/// know, then write every flooded AT line as it comes; on error, start over.
async fn neighbour_link(
    herd: Arc<Herd>,
    peer: ServerEntry,
    mut rx: mpsc::UnboundedReceiver<Arc<str>>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let stream = match TcpStream::connect(peer.addr).await {
            Ok(s) => s,
            Err(e) => {
                info!("connect to {} failed: {e}", peer.name);
                tokio::time::sleep(backoff).await;
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
        let mut result = Ok(());
        for line in herd.locations.snapshot() {
            result = write_line(&mut w, &line).await;
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() {
            result = w.flush().await;
        }
        while result.is_ok() {
            let Some(line) = rx.recv().await else { return };
            info!("to {}: {line}", peer.name);
            result = write_line(&mut w, &line).await;
            // Batch whatever else is queued into the same write.
            while result.is_ok()
                && let Ok(more) = rx.try_recv()
            {
                info!("to {}: {more}", peer.name);
                result = write_line(&mut w, &more).await;
            }
            if result.is_ok() {
                result = w.flush().await;
            }
        }
        if let Err(e) = result {
            info!("link to {} dropped: {e}", peer.name);
        }
    }
}

async fn write_line<W: AsyncWriteExt + Unpin>(w: &mut W, line: &str) -> std::io::Result<()> {
    w.write_all(line.as_bytes()).await?;
    w.write_all(b"\n").await
}

/// A reply in the making: ready now (IAMAT, errors) or when a lookup finishes (WHATSAT).
enum Reply {
    Now(String),
    Later(oneshot::Receiver<String>),
}

/// Serves one connection (a client, or a neighbour sending AT lines). Lines are handled in
/// order; their replies go through a queue to a writer task, which awaits each in turn, so
/// replies leave in request order even when a later one is ready first.
async fn client(herd: Arc<Herd>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    info!("new connection {peer}");
    let (read_half, write_half) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Reply>();
    let writer = tokio::spawn(async move {
        let mut w = BufWriter::new(write_half);
        while let Some(reply) = rx.recv().await {
            let text = match reply {
                Reply::Now(t) => t,
                Reply::Later(r) => r.await.unwrap_or_default(),
            };
            info!("to {peer}: {}", text.trim_end());
            if w.write_all(text.as_bytes()).await.is_err() {
                return;
            }
            // Flush only when nothing else is queued: one write per burst.
            if rx.is_empty() && w.flush().await.is_err() {
                return;
            }
        }
        let _ = w.flush().await;
        let _ = w.shutdown().await;
    });

    let mut reader = BufReader::new(read_half);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let limit = herd.max_line as u64 + 1;
        let n = match (&mut reader).take(limit).read_until(b'\n', &mut buf).await {
            Ok(n) => n,
            Err(_) => break,
        };
        if n == 0 {
            break;
        }
        let text = String::from_utf8_lossy(&buf);
        let line = match store::input(&buf, &text, herd.max_line) {
            Input::TooLong(reply) => {
                let _ = tx.send(Reply::Now(reply));
                info!("{peer}: line over {} bytes, closing", herd.max_line);
                break;
            }
            Input::Blank => continue,
            Input::Line(line) => line,
        };
        info!("from {peer}: {line}");
        if let Some(reply) = handle_line(&herd, line)
            && tx.send(reply).is_err()
        {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
    info!("closed connection {peer}");
}

/// Acts on one line and says what to reply, if anything.
fn handle_line(herd: &Arc<Herd>, line: &str) -> Option<Reply> {
    match store::act(&herd.name, &herd.locations, line, |at| herd.flood(at)) {
        Action::Reply(text) => Some(Reply::Now(text)),
        Action::Silent => None,
        Action::Whatsat {
            at,
            radius_km,
            bound,
        } => {
            let location = at.split(' ').nth(4).unwrap_or("").to_string();
            let (done, wait) = oneshot::channel();
            let herd = Arc::clone(herd);
            tokio::spawn(async move {
                let json = nearby(&herd.places, &location, radius_km, bound).await;
                let _ = done.send(format!("{at}\n{json}\n\n"));
            });
            Some(Reply::Later(wait))
        }
    }
}

/// A WHATSAT lookup over a tokio `TcpStream`, bounded by the places timeout.
async fn nearby(places: &places::Places, location: &str, radius_km: f64, bound: usize) -> String {
    let fetch = async {
        let request = places.request(location, radius_km)?;
        let mut stream = TcpStream::connect(places.host())
            .await
            .map_err(|e| format!("connect to the place provider: {e}"))?;
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("write to the place provider: {e}"))?;
        let mut response = Vec::new();
        (&mut stream)
            .take(places::MAX_BODY as u64)
            .read_to_end(&mut response)
            .await
            .map_err(|e| format!("read from the place provider: {e}"))?;
        Ok(response)
    };
    let response = tokio::time::timeout(places.timeout(), fetch)
        .await
        .unwrap_or_else(|_| Err("the place lookup timed out".to_string()));
    places::shape(response, bound)
}
