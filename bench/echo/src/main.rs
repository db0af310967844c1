//! The floor: a bare single-threaded mio line-echo server.
//!
//! It does the least a line server can do — read bytes, split them into lines, write each line
//! back — with the same reactor shape as proxy-herd (one `Poll`, edge-triggered, drain to
//! `WouldBlock`, write at once, register WRITABLE only while bytes remain). Running the load
//! generator against it measures what one line costs on this machine (kernel plus generator),
//! so every herd's figure can be read as a fraction of it.
//!
//! One-shot clients work too: end of input ends the last, unterminated line, which is echoed
//! with a newline, and the connection closes once everything is written.
//!
//! **Forward mode** (`--forward ADDR`) makes it the forwarding floor for flood latency: a
//! bare line forwarder, one link of a chain. Complete lines go to one persistent connection to
//! `ADDR` instead of back to their sender; with `--name NAME` (the first hop), an
//! `IAMAT id loc time` line goes on as `AT NAME +0.000000000 id loc time` and that line is
//! also the reply to its sender, written after the forward as a herd server does. A chain of
//! these with the herd's hop count measures what a hop costs on this machine when nothing but
//! read-split-write is done.
//!
//! Usage: `echo [--listen 127.0.0.1:PORT] [--forward HOST:PORT [--name NAME]]` (default
//! listen `127.0.0.1:0`); prints `listening ADDR`.

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;

const LISTENER: Token = Token(0);
/// The forward connection, in forward mode.
const UPSTREAM: Token = Token(1);
const FIRST_CONN: usize = 2;

/// Forward mode: the connection every line goes on to, and what is not written to it yet.
struct Forward {
    stream: TcpStream,
    out: Vec<u8>,
    /// The first hop's server name: IAMAT lines become AT lines and are answered.
    name: Option<String>,
    writable_registered: bool,
    /// The next hop went away: lines are dropped.
    closed: bool,
}

/// One client connection: its socket, the bytes of a line not yet ended, and the replies not
/// yet written.
struct Conn {
    stream: TcpStream,
    partial: Vec<u8>,
    out: Vec<u8>,
    /// The peer half-closed: once `out` is empty the connection is done.
    eof: bool,
    writable_registered: bool,
}

fn would_block(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::WouldBlock
}

fn interrupted(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::Interrupted
}

fn main() -> io::Result<()> {
    let mut addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut forward_to: Option<SocketAddr> = None;
    let mut name = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |what: &str| -> String {
            args.next().unwrap_or_else(|| {
                eprintln!("echo: {what} needs a value");
                std::process::exit(2)
            })
        };
        match arg.as_str() {
            "--listen" => addr = value("--listen").parse().expect("--listen: bad address"),
            "--forward" => {
                forward_to = Some(value("--forward").parse().expect("--forward: bad address"))
            }
            "--name" => name = Some(value("--name")),
            other => {
                eprintln!(
                    "echo: unknown argument {other}\nusage: echo [--listen ADDR] [--forward ADDR [--name NAME]]"
                );
                std::process::exit(2);
            }
        }
    }

    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind(addr)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut forward = match forward_to {
        Some(to) => Some(connect_forward(&poll, to, name)?),
        None => None,
    };
    println!("listening {}", listener.local_addr()?);

    let mut conns: HashMap<Token, Conn> = HashMap::new();
    let mut next_token = FIRST_CONN;
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];

    loop {
        if let Err(err) = poll.poll(&mut events, None) {
            if interrupted(&err) {
                continue;
            }
            return Err(err);
        }
        for event in events.iter() {
            match event.token() {
                LISTENER => accept_ready(&poll, &listener, &mut conns, &mut next_token),
                UPSTREAM => {
                    // The next hop sends nothing; a read only notices that it went away. Its
                    // lines are dropped from then on (a herd server does not die either).
                    if let Some(f) = &mut forward
                        && !f.closed
                        && upstream_closed(&mut f.stream, &mut buf)
                    {
                        eprintln!("echo: the next hop closed the connection");
                        f.closed = true;
                        let _ = poll.registry().deregister(&mut f.stream);
                    }
                }
                token => {
                    // Sporadic events for connections already gone are ignored: tokens are
                    // never reused, so they simply miss the map.
                    let Some(conn) = conns.get_mut(&token) else {
                        continue;
                    };
                    let done = conn_ready(&poll, token, conn, &mut buf, forward.as_mut());
                    if done && let Some(mut conn) = conns.remove(&token) {
                        let _ = poll.registry().deregister(&mut conn.stream);
                    }
                }
            }
        }
        if let Some(f) = &mut forward
            && let Err(e) = flush_forward(&poll, f)
        {
            eprintln!("echo: writing to the next hop: {e}");
            f.closed = true;
            let _ = poll.registry().deregister(&mut f.stream);
        }
    }
}

/// Connects to the next hop (retrying for up to ten seconds while it starts) and registers it.
fn connect_forward(poll: &Poll, to: SocketAddr, name: Option<String>) -> io::Result<Forward> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let std_stream = loop {
        match std::net::TcpStream::connect(to) {
            Ok(s) => break s,
            Err(e) if std::time::Instant::now() >= deadline => return Err(e),
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(20)),
        }
    };
    std_stream.set_nonblocking(true)?;
    std_stream.set_nodelay(true)?;
    let mut stream = TcpStream::from_std(std_stream);
    poll.registry()
        .register(&mut stream, UPSTREAM, Interest::READABLE)?;
    Ok(Forward {
        stream,
        out: Vec::new(),
        name,
        writable_registered: false,
        closed: false,
    })
}

/// Drains the next hop's connection; true when it has closed or failed.
fn upstream_closed(stream: &mut TcpStream, buf: &mut [u8]) -> bool {
    loop {
        match stream.read(buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(err) if would_block(&err) => return false,
            Err(err) if interrupted(&err) => continue,
            Err(_) => return true,
        }
    }
}

/// Writes what waits for the next hop.
fn flush_forward(poll: &Poll, f: &mut Forward) -> io::Result<()> {
    if f.closed {
        f.out.clear();
        return Ok(());
    }
    write_pending(
        poll,
        &mut f.stream,
        UPSTREAM,
        &mut f.out,
        &mut f.writable_registered,
    )
}

/// Writes as much of `out` as the socket takes at once; only a connection with bytes left
/// over waits for WRITABLE (`registered` says whether it does now).
fn write_pending(
    poll: &Poll,
    stream: &mut TcpStream,
    token: Token,
    out: &mut Vec<u8>,
    registered: &mut bool,
) -> io::Result<()> {
    while !out.is_empty() {
        match stream.write(out) {
            Ok(n) => {
                out.drain(..n);
            }
            Err(err) if would_block(&err) => break,
            Err(err) if interrupted(&err) => continue,
            Err(err) => return Err(err),
        }
    }
    let want_writable = !out.is_empty();
    if want_writable != *registered {
        let interest = if want_writable {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        poll.registry().reregister(stream, token, interest)?;
        *registered = want_writable;
    }
    Ok(())
}

/// Accepts every pending connection (edge-triggered: drain to `WouldBlock`).
fn accept_ready(
    poll: &Poll,
    listener: &TcpListener,
    conns: &mut HashMap<Token, Conn>,
    next_token: &mut usize,
) {
    loop {
        match listener.accept() {
            Ok((mut stream, _)) => {
                let token = Token(*next_token);
                *next_token += 1;
                let _ = stream.set_nodelay(true);
                if poll
                    .registry()
                    .register(&mut stream, token, Interest::READABLE)
                    .is_ok()
                {
                    conns.insert(
                        token,
                        Conn {
                            stream,
                            partial: Vec::new(),
                            out: Vec::new(),
                            eof: false,
                            writable_registered: false,
                        },
                    );
                }
            }
            Err(err) if would_block(&err) => return,
            Err(err) if interrupted(&err) => continue,
            // Out of descriptors or a connection reset before accept: keep serving the rest.
            Err(_) => return,
        }
    }
}

/// Reads everything available, echoes every complete line, writes what it can.
/// Returns true if the connection is done.
fn conn_ready(
    poll: &Poll,
    token: Token,
    conn: &mut Conn,
    buf: &mut [u8],
    mut forward: Option<&mut Forward>,
) -> bool {
    if !conn.eof {
        loop {
            match conn.stream.read(buf) {
                Ok(0) => {
                    conn.eof = true;
                    // End of input ends the last line, even without its newline.
                    let trimmed = conn.partial.iter().all(u8::is_ascii_whitespace);
                    if !trimmed && forward.is_none() {
                        conn.out.extend_from_slice(&conn.partial);
                        conn.out.push(b'\n');
                    }
                    conn.partial.clear();
                    break;
                }
                Ok(n) => match forward.as_deref_mut() {
                    Some(f) => forward_lines(conn, &buf[..n], f),
                    None => echo_lines(conn, &buf[..n]),
                },
                Err(err) if would_block(&err) => break,
                Err(err) if interrupted(&err) => continue,
                Err(_) => return true,
            }
        }
    }
    // In forward mode the next hop gets its lines before the sender its reply, as a herd
    // server floods before it replies (a failure shows again at the end of the turn).
    if let Some(f) = forward {
        let _ = flush_forward(poll, f);
    }
    let written = write_pending(
        poll,
        &mut conn.stream,
        token,
        &mut conn.out,
        &mut conn.writable_registered,
    );
    if written.is_err() {
        return true;
    }
    conn.eof && conn.out.is_empty()
}

/// Appends every complete line of `data` (with what came before it) to the output.
/// Whole lines are copied in one slice, so a pipelined burst costs one copy, not one per line.
fn echo_lines(conn: &mut Conn, data: &[u8]) {
    let Some(last_nl) = data.iter().rposition(|&b| b == b'\n') else {
        conn.partial.extend_from_slice(data);
        return;
    };
    conn.out.extend_from_slice(&conn.partial);
    conn.partial.clear();
    conn.out.extend_from_slice(&data[..=last_nl]);
    conn.partial.extend_from_slice(&data[last_nl + 1..]);
}

/// Forward mode: every complete line of `data` (with what came before it) goes to the next
/// hop. A middle hop copies the lines in one slice; the first hop (`name` set) turns each
/// IAMAT into an AT line, forwards it and queues the same line as the reply.
fn forward_lines(conn: &mut Conn, data: &[u8], f: &mut Forward) {
    let Some(last_nl) = data.iter().rposition(|&b| b == b'\n') else {
        conn.partial.extend_from_slice(data);
        return;
    };
    conn.partial.extend_from_slice(&data[..=last_nl]);
    let lines = std::mem::take(&mut conn.partial);
    conn.partial.extend_from_slice(&data[last_nl + 1..]);
    let Some(name) = &f.name else {
        f.out.extend_from_slice(&lines);
        return;
    };
    for line in lines.split_inclusive(|&b| b == b'\n') {
        let Some(rest) = line.strip_prefix(b"IAMAT ") else {
            f.out.extend_from_slice(line);
            continue;
        };
        let start = f.out.len();
        f.out.extend_from_slice(b"AT ");
        f.out.extend_from_slice(name.as_bytes());
        f.out.extend_from_slice(b" +0.000000000 ");
        f.out.extend_from_slice(rest);
        conn.out.extend_from_slice(&f.out[start..]);
    }
}
