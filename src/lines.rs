//! Framing (SPEC §2): turning a byte stream into lines, with a length cap.
//!
//! [`LineBuffer`] holds the bytes read from one connection that have not been handled yet.
//! The reactor appends what each read brought ([`LineBuffer::extend`]) and then takes lines out
//! one at a time ([`LineBuffer::next_line`]), so it can stop in the middle of a read (when a
//! client's replies pile up) and go on later without losing anything. Once every byte is
//! handled the buffer gives its memory back, so ten thousand idle connections cost next to
//! nothing. It is pure: no socket, tested by feeding the same bytes in every chunk size, like
//! Twisted's `test_buffer`.

use std::ops::Range;

/// An empty buffer keeps up to this much capacity; a larger one is freed.
const KEEP: usize = 1024;

/// What [`LineBuffer::next_line`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// A complete line: its bytes are `buffer.get(range)`, without `\n` or `\r\n`.
    Line(Range<usize>),
    /// A line longer than the cap: `range` is its first `max_line` bytes. The stream
    /// cannot be resynchronised, so the caller answers and closes.
    TooLong(Range<usize>),
    /// No complete line yet: read more.
    Incomplete,
}

/// Unhandled input of one connection, split into lines of at most `max_line` bytes.
#[derive(Debug)]
pub struct LineBuffer {
    buf: Vec<u8>,
    /// Start of the first byte not yet handed out as part of a line.
    start: usize,
    /// How far past `start` we already looked for `\n`, so each byte is scanned once.
    scanned: usize,
    max_line: usize,
}

impl LineBuffer {
    /// An empty buffer. It allocates nothing until bytes arrive, so idle connections are cheap.
    pub fn new(max_line: usize) -> LineBuffer {
        LineBuffer {
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            max_line,
        }
    }

    /// The bytes of a range returned by [`next_line`](Self::next_line) or
    /// [`finish`](Self::finish). Valid until the next call that changes the buffer.
    pub fn get(&self, range: Range<usize>) -> &[u8] {
        &self.buf[range]
    }

    /// How many bytes are buffered and not yet handed out.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Appends bytes just read.
    pub fn extend(&mut self, data: &[u8]) {
        self.compact();
        self.buf.extend_from_slice(data);
    }

    /// Takes the next complete line out of the buffer, if there is one.
    pub fn next_line(&mut self) -> Next {
        let from = self.start + self.scanned;
        match memchr(b'\n', &self.buf[from..]) {
            Some(i) => {
                let nl = from + i;
                let line_start = self.start;
                self.start = nl + 1;
                self.scanned = 0;
                let mut end = nl;
                if end > line_start && self.buf[end - 1] == b'\r' {
                    end -= 1;
                }
                if end - line_start > self.max_line {
                    Next::TooLong(line_start..line_start + self.max_line)
                } else {
                    Next::Line(line_start..end)
                }
            }
            None if self.start == self.buf.len() => {
                // Everything handled: give the memory back now, not at the next read.
                self.compact();
                Next::Incomplete
            }
            None => {
                self.scanned = self.buf.len() - self.start;
                // One byte of grace, but only for a `\r`: it may end a line exactly at the
                // cap. Any other byte past the cap makes the line too long right now; waiting
                // would let `finish` hand out a line of `max_line + 1` bytes at end of input
                // (found by tests/props.rs).
                let over = self.scanned > self.max_line + 1
                    || (self.scanned == self.max_line + 1 && self.buf.last() != Some(&b'\r'));
                if over {
                    let line_start = self.start;
                    self.start = self.buf.len();
                    self.scanned = 0;
                    Next::TooLong(line_start..line_start + self.max_line)
                } else {
                    Next::Incomplete
                }
            }
        }
    }

    /// The next line without taking it out: a complete line, or at end of input (`eof`) the
    /// unterminated rest. `None` when no line is complete yet. Used only while the server
    /// holds clients back, to let a neighbour's AT line through (a second scan is cheap then).
    pub fn peek(&self, eof: bool) -> Option<&[u8]> {
        let rest = &self.buf[self.start..];
        match memchr(b'\n', rest) {
            Some(i) => Some(&rest[..i]),
            None if eof && !rest.is_empty() => Some(rest),
            None => None,
        }
    }

    /// True when what is buffered is one line and nothing more: a complete one, or at end
    /// of input (`eof`) the unterminated rest.
    pub fn holds_one_line(&self, eof: bool) -> bool {
        let rest = &self.buf[self.start..];
        match memchr(b'\n', rest) {
            Some(i) => i + 1 == rest.len(),
            None => eof && !rest.is_empty(),
        }
    }

    /// At end of input: the last, unterminated line, if any bytes are left (SPEC §2: end of
    /// input ends the last line). Call after [`next_line`](Self::next_line) gave `Incomplete`.
    pub fn finish(&mut self) -> Option<Range<usize>> {
        let rest = self.start..self.buf.len();
        self.start = self.buf.len();
        self.scanned = 0;
        let mut end = rest.end;
        if end > rest.start && self.buf[end - 1] == b'\r' {
            end -= 1;
        }
        (!rest.is_empty()).then_some(rest.start..end)
    }

    /// Moves unhandled bytes to the front, and frees the buffer once it is empty, so an idle
    /// connection keeps no memory for input (small buffers are kept: a pipelining client
    /// would otherwise allocate on every read).
    fn compact(&mut self) {
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
            if self.buf.capacity() > KEEP {
                self.buf = Vec::new();
            }
        } else if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }
}

/// The position of the first `needle` in `haystack` (std's slice search is fast enough here:
/// the compiler vectorises this loop).
fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|&b| b == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in chunks of `chunk` bytes and collects what comes out, the way the
    /// reactor does: read, take lines until `Incomplete`, repeat; at the end, `finish`.
    fn split(input: &[u8], chunk: usize, max_line: usize) -> Vec<Result<Vec<u8>, Vec<u8>>> {
        let mut lb = LineBuffer::new(max_line);
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            lb.extend(piece);
            loop {
                match lb.next_line() {
                    Next::Line(r) => out.push(Ok(lb.get(r).to_vec())),
                    Next::TooLong(r) => {
                        out.push(Err(lb.get(r).to_vec()));
                        return out;
                    }
                    Next::Incomplete => break,
                }
            }
        }
        if let Some(r) = lb.finish() {
            out.push(Ok(lb.get(r).to_vec()));
        }
        out
    }

    #[test]
    fn peek_shows_the_next_line_without_taking_it() {
        let mut b = LineBuffer::new(100);
        b.extend(b"AT x\r\nIAMAT y");
        assert_eq!(b.peek(false), Some(&b"AT x\r"[..]));
        assert_eq!(b.next_line(), Next::Line(0..4), "peek took nothing");
        assert_eq!(b.peek(false), None, "incomplete");
        assert_eq!(b.peek(true), Some(&b"IAMAT y"[..]), "end of input ends it");
        assert_eq!(
            b.finish().map(|r| b.get(r).to_vec()),
            Some(b"IAMAT y".to_vec())
        );
        assert_eq!(b.peek(true), None);
    }

    #[test]
    fn one_line_and_nothing_more() {
        let mut b = LineBuffer::new(100);
        assert!(!b.holds_one_line(false) && !b.holds_one_line(true), "empty");
        b.extend(b"IAMAT a");
        assert!(!b.holds_one_line(false), "not complete yet");
        assert!(b.holds_one_line(true), "end of input ends it");
        b.extend(b" +1+2 3\n");
        assert!(b.holds_one_line(false));
        b.extend(b"IAMAT b");
        assert!(
            !b.holds_one_line(false) && !b.holds_one_line(true),
            "a second begun"
        );
        assert!(matches!(b.next_line(), Next::Line(_)));
        assert!(b.holds_one_line(true) && !b.holds_one_line(false));
    }

    #[test]
    fn every_chunk_size_gives_the_same_lines() {
        let input = b"IAMAT a +1+2 3\nWHATSAT a 10 5\r\n\n  \nlast line without newline";
        let want: Vec<Result<Vec<u8>, Vec<u8>>> = vec![
            Ok(b"IAMAT a +1+2 3".to_vec()),
            Ok(b"WHATSAT a 10 5".to_vec()),
            Ok(b"".to_vec()),
            Ok(b"  ".to_vec()),
            Ok(b"last line without newline".to_vec()),
        ];
        for chunk in 1..=input.len() {
            assert_eq!(split(input, chunk, 100), want, "chunk size {chunk}");
        }
    }

    #[test]
    fn overlong_lines_are_cut_at_every_chunk_size() {
        // A complete line over the cap, and one that never ends, are both cut to the cap.
        let input = b"ok\n0123456789ABC\nnever";
        for chunk in 1..=input.len() {
            let got = split(input, chunk, 10);
            assert_eq!(
                got,
                vec![Ok(b"ok".to_vec()), Err(b"0123456789".to_vec())],
                "chunk {chunk}"
            );
        }
        let endless = vec![b'x'; 1000];
        for chunk in [1, 7, 64, 1000] {
            assert_eq!(split(&endless, chunk, 10), vec![Err(vec![b'x'; 10])]);
        }
        // Exactly at the cap is fine, with or without \r.
        assert_eq!(
            split(b"0123456789\r\n", 3, 10),
            vec![Ok(b"0123456789".to_vec())]
        );
    }

    #[test]
    fn cr_only_dropped_before_newline_or_end() {
        assert_eq!(split(b"a\rb\n", 1, 10), vec![Ok(b"a\rb".to_vec())]);
        assert_eq!(split(b"ab\r", 1, 10), vec![Ok(b"ab".to_vec())]);
        assert_eq!(split(b"", 1, 10), vec![]);
    }

    #[test]
    fn memory_is_released_when_idle() {
        let mut lb = LineBuffer::new(1 << 20);
        lb.extend(&vec![b'a'; 200_000]);
        lb.extend(b"\n");
        assert!(matches!(lb.next_line(), Next::Line(_)));
        assert_eq!(lb.pending(), 0);
        assert_eq!(lb.next_line(), Next::Incomplete);
        assert!(lb.buf.capacity() <= KEEP);
    }
}
