//! A nonblocking TCP stream with an output buffer: Twisted's `FileDescriptor`, by hand.
//!
//! `queue` only appends; `flush` writes what the socket takes right now and arms WRITABLE
//! interest only while bytes remain, so an idle connection costs the loop nothing and a slow
//! reader gets the rest when the kernel says it has room (mio is edge-triggered: we are told
//! once, and must write until the kernel refuses).

use std::io::{self, Read, Write};

use mio::net::TcpStream;
use mio::{Interest, Registry, Token};

/// True for the error that means "try again later" on a nonblocking socket.
pub fn would_block(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::WouldBlock
}

/// True for the error that means "a signal interrupted the call; just retry it".
pub fn interrupted(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::Interrupted
}

/// One registered, nonblocking socket and the bytes waiting to be written to it.
#[derive(Debug)]
pub struct Transport {
    /// The socket.
    pub stream: TcpStream,
    /// Its token in the poll (fresh for every socket, never reused).
    pub token: Token,
    out: Vec<u8>,
    /// How much of `out` is already written.
    sent: usize,
    /// Whether WRITABLE interest is registered right now.
    write_armed: bool,
    /// The last byte written ended a line (or nothing was written yet). Needed because the
    /// written part of `out` is dropped from time to time, maybe in the middle of a line.
    line_start: bool,
}

impl Transport {
    /// Registers `stream` for READABLE events (plus WRITABLE when `connecting`, because a
    /// nonblocking connect reports its outcome as writability).
    pub fn register(
        mut stream: TcpStream,
        token: Token,
        registry: &Registry,
        connecting: bool,
    ) -> io::Result<Transport> {
        let interest = if connecting {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        registry.register(&mut stream, token, interest)?;
        Ok(Transport {
            stream,
            token,
            out: Vec::new(),
            sent: 0,
            write_armed: connecting,
            line_start: true,
        })
    }

    /// Appends bytes to send. Nothing is written until [`flush`](Self::flush).
    pub fn queue(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// Puts `line` (ending with its `\n`) ahead of everything not yet written, but after
    /// the line being written now, if one was cut short: an urgent line jumps the queue
    /// without splitting another.
    pub fn queue_first(&mut self, line: &[u8]) {
        let at = next_line_start(&self.out, self.sent, self.line_start);
        self.out.splice(at..at, line.iter().copied());
    }

    /// The buffer to append to directly (avoids a copy when building a reply in place).
    pub fn out_mut(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    /// Bytes queued and not yet written.
    pub fn backlog(&self) -> usize {
        self.out.len() - self.sent
    }

    /// Writes until the buffer is empty or the kernel says `WouldBlock`, then arms or
    /// disarms WRITABLE to match. Returns how many bytes were written. An error means the
    /// connection is broken; the caller closes it.
    pub fn flush(&mut self, registry: &Registry) -> io::Result<usize> {
        let mut written = 0;
        while self.sent < self.out.len() {
            match self.stream.write(&self.out[self.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.sent += n;
                    written += n;
                }
                Err(e) if would_block(&e) => break,
                Err(e) if interrupted(&e) => continue,
                Err(e) => return Err(e),
            }
        }
        if written > 0 {
            self.line_start = self.out[self.sent - 1] == b'\n';
        }
        if self.sent == self.out.len() {
            self.out.clear();
            self.sent = 0;
            if self.out.capacity() > 1 << 20 {
                // Give a burst's memory back once it is written.
                self.out = Vec::new();
            }
        } else if self.sent > (1 << 16) && self.sent * 2 > self.out.len() {
            self.out.drain(..self.sent);
            self.sent = 0;
        }
        self.set_write_interest(registry, self.backlog() > 0)?;
        Ok(written)
    }

    /// Registers or drops WRITABLE interest, only when it changes (a syscall each time).
    pub fn set_write_interest(&mut self, registry: &Registry, want: bool) -> io::Result<()> {
        if want != self.write_armed {
            let interest = if want {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            registry.reregister(&mut self.stream, self.token, interest)?;
            self.write_armed = want;
        }
        Ok(())
    }

    /// Reads into `buf`, retrying on `Interrupted`. `Ok(None)` means `WouldBlock`.
    pub fn read(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            match self.stream.read(buf) {
                Ok(n) => return Ok(Some(n)),
                Err(e) if would_block(&e) => return Ok(None),
                Err(e) if interrupted(&e) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Takes the socket out of the poll before it is dropped (closed).
    pub fn deregister(&mut self, registry: &Registry) {
        // An error here means it was not registered; there is nothing else to undo.
        let _ = registry.deregister(&mut self.stream);
    }
}

/// Where the first line not yet begun starts, in a buffer written up to `sent`: `sent`
/// itself when the last byte written ended a line (`line_start`), else just after the line
/// being written.
fn next_line_start(out: &[u8], sent: usize, line_start: bool) -> usize {
    if line_start {
        return sent;
    }
    match out[sent..].iter().position(|&b| b == b'\n') {
        Some(end) => sent + end + 1,
        None => out.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::next_line_start;

    #[test]
    fn urgent_lines_go_between_lines() {
        let out = b"AT one\nAT two\n";
        assert_eq!(next_line_start(out, 0, true), 0);
        assert_eq!(
            next_line_start(out, 3, false),
            7,
            "after the line cut short"
        );
        assert_eq!(next_line_start(out, 7, true), 7, "at a boundary");
        assert_eq!(
            next_line_start(b"AT one", 3, false),
            6,
            "no end yet: at the end"
        );
        // The written part was dropped from the buffer in the middle of a line: what is left
        // at its start is the rest of that line.
        assert_eq!(next_line_start(b"ne\nAT two\n", 0, false), 3);
    }
}
