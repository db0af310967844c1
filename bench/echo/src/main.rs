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
//! Usage: `echo [--listen 127.0.0.1:PORT]` (default `127.0.0.1:0`); prints `listening ADDR`.

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;

const LISTENER: Token = Token(0);

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
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => {
                let value = args.next().expect("--listen needs an address");
                addr = value.parse().expect("--listen: bad address");
            }
            other => {
                eprintln!("echo: unknown argument {other}\nusage: echo [--listen ADDR]");
                std::process::exit(2);
            }
        }
    }

    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind(addr)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    println!("listening {}", listener.local_addr()?);

    let mut conns: HashMap<Token, Conn> = HashMap::new();
    let mut next_token = 1usize;
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
                token => {
                    // Sporadic events for connections already gone are ignored: tokens are
                    // never reused, so they simply miss the map.
                    let Some(conn) = conns.get_mut(&token) else {
                        continue;
                    };
                    let done = conn_ready(&poll, token, conn, &mut buf);
                    if done && let Some(mut conn) = conns.remove(&token) {
                        let _ = poll.registry().deregister(&mut conn.stream);
                    }
                }
            }
        }
    }
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
fn conn_ready(poll: &Poll, token: Token, conn: &mut Conn, buf: &mut [u8]) -> bool {
    if !conn.eof {
        loop {
            match conn.stream.read(buf) {
                Ok(0) => {
                    conn.eof = true;
                    // End of input ends the last line, even without its newline.
                    let trimmed = conn.partial.iter().all(u8::is_ascii_whitespace);
                    if !trimmed {
                        conn.out.extend_from_slice(&conn.partial);
                        conn.out.push(b'\n');
                    }
                    conn.partial.clear();
                    break;
                }
                Ok(n) => echo_lines(conn, &buf[..n]),
                Err(err) if would_block(&err) => break,
                Err(err) if interrupted(&err) => continue,
                Err(_) => return true,
            }
        }
    }
    // Write at once; only a connection with bytes left over waits for WRITABLE.
    while !conn.out.is_empty() {
        match conn.stream.write(&conn.out) {
            Ok(n) => {
                conn.out.drain(..n);
            }
            Err(err) if would_block(&err) => break,
            Err(err) if interrupted(&err) => continue,
            Err(_) => return true,
        }
    }
    let want_writable = !conn.out.is_empty();
    if want_writable != conn.writable_registered {
        let interest = if want_writable {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        if poll
            .registry()
            .reregister(&mut conn.stream, token, interest)
            .is_err()
        {
            return true;
        }
        conn.writable_registered = want_writable;
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
