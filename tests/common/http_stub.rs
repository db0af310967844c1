//! A tiny HTTP/1.1 server standing in for Google in the integration tests.
//!
//! It listens on 127.0.0.1 on a free port, records every request it reads (method, target,
//! headers, body) and answers each with whatever the test's handler says: a canned response,
//! the same after a delay, or nothing at all ([`Reply::Hang`]) to play a provider that never
//! answers. One thread accepts; each connection gets its own thread, so a hanging answer does
//! not stop the next request from being recorded. Every response says `Connection: close`,
//! so one connection carries exactly one request and the count of requests is the count of
//! calls the herd made.
//!
//! Dropping the stub stops it: the threads poll a stop flag, so no test leaves a thread
//! blocked in `accept` or in a read.
#![allow(dead_code)] // each test binary uses its own part of this module

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How often the stub's threads look at the stop flag.
const TICK: Duration = Duration::from_millis(10);

/// The longest a stub waits for the head and body of one request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// One request as the stub read it.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// `GET`, `POST`, …
    pub method: String,
    /// The request target: path and query, exactly as sent (`/maps/api/...?location=...`).
    pub target: String,
    /// The header fields in the order sent, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body (`Content-Length` bytes of it), as text.
    pub body: String,
    /// The whole request as received, head and body, for "the key is nowhere" checks.
    pub raw: String,
}

impl Request {
    /// The value of header `name` (compared without case), if it was sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the stub does with a request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Waits `delay`, then writes an HTTP response and closes.
    Send {
        /// The status line after `HTTP/1.1 ` (`200 OK`).
        status: String,
        /// The `Content-Type` header.
        content_type: String,
        /// The body bytes.
        body: Vec<u8>,
        /// How long to wait before answering.
        delay: Duration,
    },
    /// Answers nothing: keeps the connection open until the client gives up or the stub is
    /// dropped.
    Hang,
}

impl Reply {
    /// A JSON response with status line `status` (`200 OK`, `403 Forbidden`).
    pub fn json(status: &str, body: &str) -> Reply {
        Reply::bytes(
            status,
            "application/json; charset=UTF-8",
            body.as_bytes().to_vec(),
        )
    }

    /// An HTML response, as a proxy or a load balancer would send on an error.
    pub fn html(status: &str, body: &str) -> Reply {
        Reply::bytes(status, "text/html; charset=UTF-8", body.as_bytes().to_vec())
    }

    /// A response with any content type and body.
    pub fn bytes(status: &str, content_type: &str, body: Vec<u8>) -> Reply {
        Reply::Send {
            status: status.to_string(),
            content_type: content_type.to_string(),
            body,
            delay: Duration::ZERO,
        }
    }

    /// The same response, sent only after `delay` (a slow provider).
    pub fn after(self, delay: Duration) -> Reply {
        match self {
            Reply::Send {
                status,
                content_type,
                body,
                ..
            } => Reply::Send {
                status,
                content_type,
                body,
                delay,
            },
            Reply::Hang => Reply::Hang,
        }
    }
}

/// The handler type: decides the reply to each request.
type Handler = dyn Fn(&Request) -> Reply + Send + Sync;

/// A running stub; stops when dropped.
pub struct HttpStub {
    port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl HttpStub {
    /// Starts a stub that answers every request with `reply`.
    pub fn always(reply: Reply) -> HttpStub {
        HttpStub::start(move |_| reply.clone())
    }

    /// Starts a stub whose `handler` picks the reply to each request.
    pub fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> HttpStub {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the stub");
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        let acceptor = {
            let (requests, stop) = (requests.clone(), stop.clone());
            thread::spawn(move || accept_loop(listener, handler, requests, stop))
        };
        HttpStub {
            port,
            requests,
            stop,
            acceptor: Some(acceptor),
        }
    }

    /// The base URL to give `--places-url`: `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every request read so far, in order of arrival.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// How many requests have been read so far.
    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    /// Waits until at least `n` requests have been read, at most `limit`; says whether they were.
    pub fn wait_for(&self, n: usize, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while self.count() < n {
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(TICK);
        }
        true
    }
}

impl Drop for HttpStub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// A base URL where nothing listens (a port bound, then freed): connections are refused.
pub fn refused_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port())
}

/// Accepts connections until told to stop, one thread each; joins them before returning.
fn accept_loop(
    listener: TcpListener,
    handler: Arc<Handler>,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
) {
    let mut workers = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((conn, _)) => {
                let (handler, requests, stop) = (handler.clone(), requests.clone(), stop.clone());
                workers.push(thread::spawn(move || {
                    serve(conn, &*handler, &requests, &stop)
                }));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => thread::sleep(TICK),
            Err(_) => thread::sleep(TICK),
        }
    }
    for worker in workers {
        let _ = worker.join();
    }
}

/// Serves one connection: read one request, record it, answer as the handler says.
fn serve(
    mut conn: TcpStream,
    handler: &Handler,
    requests: &Mutex<Vec<Request>>,
    stop: &AtomicBool,
) {
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(TICK)).unwrap();
    let Some(request) = read_request(&mut conn, stop) else {
        return;
    };
    let reply = handler(&request);
    requests.lock().unwrap().push(request);
    match reply {
        Reply::Send {
            status,
            content_type,
            body,
            delay,
        } => {
            if !sleep_unless_stopped(delay, stop) {
                return;
            }
            let mut out = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .into_bytes();
            out.extend_from_slice(&body);
            // The client may hang up first (a body over its limit, its timeout): fine.
            let _ = conn.write_all(&out);
            let _ = conn.flush();
        }
        Reply::Hang => {
            let mut sink = [0u8; 1024];
            while !stop.load(Ordering::SeqCst) {
                match conn.read(&mut sink) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(_) => break,
                }
            }
        }
    }
}

/// Sleeps `delay` in ticks; false if the stub was stopped meanwhile.
fn sleep_unless_stopped(delay: Duration, stop: &AtomicBool) -> bool {
    let deadline = Instant::now() + delay;
    while Instant::now() < deadline {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        thread::sleep(TICK.min(deadline - Instant::now()));
    }
    true
}

/// Reads one request: the head up to the blank line, then `Content-Length` bytes of body.
/// `None` if the client closed first, the stub was stopped, or it took over 5 s.
fn read_request(conn: &mut TcpStream, stop: &AtomicBool) -> Option<Request> {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    let mut head_end = None;
    let mut wanted = usize::MAX;
    while data.len() < wanted {
        if stop.load(Ordering::SeqCst) || Instant::now() >= deadline {
            return None;
        }
        match conn.read(&mut buf) {
            Ok(0) => return None,
            Ok(n) => data.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return None,
        }
        if head_end.is_none()
            && let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n")
        {
            head_end = Some(i + 4);
            wanted = i + 4 + content_length(&data[..i]);
        }
    }
    let head_end = head_end?;
    let head = String::from_utf8_lossy(&data[..head_end - 4]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let target = first.next()?.to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.to_string(), v.trim().to_string()))
        .collect();
    Some(Request {
        method,
        target,
        headers,
        body: String::from_utf8_lossy(&data[head_end..]).into_owned(),
        raw: String::from_utf8_lossy(&data).into_owned(),
    })
}

/// The `Content-Length` of a request head, 0 when absent.
fn content_length(head: &[u8]) -> usize {
    String::from_utf8_lossy(head)
        .split("\r\n")
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}
