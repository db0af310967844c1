//! One accepted connection (a client, or a neighbour flooding AT lines to us): its input,
//! its output, and the replies still waiting for a places lookup.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use crate::lines::LineBuffer;
use crate::transport::Transport;

/// Replies a client with lines still waiting may have queued before they are written (see
/// [`Client::replies_can_wait`]): about 60 IAMAT replies.
pub const REPLY_BATCH: usize = 4 << 10;

/// Replies of one connection, kept in request order (SPEC §2).
///
/// While no WHATSAT is waiting for its lookup, a reply goes straight to the output buffer.
/// Once one is waiting, later replies queue behind it, and [`Replies::fill`] releases the
/// ready prefix when the lookup is done: an IAMAT behind a slow WHATSAT waits for it.
#[derive(Debug, Default)]
pub struct Replies {
    /// Replies not yet in the output buffer: `(sequence number, bytes once ready)`.
    queue: VecDeque<(u64, Option<Vec<u8>>)>,
    next_seq: u64,
}

impl Replies {
    /// Sends a ready reply: straight to `out`, or behind a pending one.
    pub fn push(&mut self, out: &mut Vec<u8>, reply: &[u8]) {
        if self.queue.is_empty() {
            out.extend_from_slice(reply);
        } else {
            let seq = self.reserve();
            self.fill_slot(seq, reply.to_vec());
        }
    }

    /// Holds a place for a reply that is not ready yet; returns its sequence number.
    pub fn reserve(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.queue.push_back((seq, None));
        seq
    }

    /// Fills a reserved place, then moves every ready reply at the front into `out`.
    pub fn fill(&mut self, out: &mut Vec<u8>, seq: u64, reply: Vec<u8>) {
        self.fill_slot(seq, reply);
        while let Some((_, Some(_))) = self.queue.front() {
            if let Some((_, Some(bytes))) = self.queue.pop_front() {
                out.extend_from_slice(&bytes);
            }
        }
    }

    fn fill_slot(&mut self, seq: u64, reply: Vec<u8>) {
        if let Some(slot) = self.queue.iter_mut().find(|(s, _)| *s == seq) {
            slot.1 = Some(reply);
        }
    }

    /// How many replies are not yet in the output buffer (waiting, or behind a waiting one).
    pub fn waiting(&self) -> usize {
        self.queue.len()
    }
}

/// One accepted connection.
#[derive(Debug)]
pub struct Client {
    /// The socket and its output buffer.
    pub io: Transport,
    /// Who connected.
    pub peer: SocketAddr,
    /// Bytes read and not yet handled, split into lines.
    pub input: LineBuffer,
    /// Replies in request order.
    pub replies: Replies,
    /// No more lines will be handled (end of input, or an overlong line); close once every
    /// reply is written.
    pub input_closed: bool,
    /// The peer sent end of input: handle what is buffered, then stop reading.
    pub eof: bool,
    /// After an overlong line: read and throw input away until the peer closes, so closing
    /// with unread bytes does not reset the connection before our `? ` reply arrives.
    pub lingering_discard: bool,
    /// Reading is paused because replies pile up faster than the client reads them.
    pub paused: bool,
    /// Reading is paused because a link to a neighbour is congested (flow control).
    pub held: bool,
    /// On the server's `more_to_read` list (once only: see `Server::read_later`).
    pub read_later: bool,
    /// When the connection last did anything (for the idle timeout).
    pub last_active: Instant,
    /// It has sent AT lines: it is a neighbour's link, which the idle timeout spares. A quiet
    /// herd sends nothing for long stretches, and a dropped link costs a full catch-up when
    /// the neighbour reconnects (found by tests/neighbours.rs).
    pub carries_floods: bool,
    /// The neighbour (index into the herd's links) whose AT lines name it in `via=`.
    pub neighbour: Option<usize>,
}

impl Client {
    /// A new connection with empty buffers.
    pub fn new(io: Transport, peer: SocketAddr, max_line: usize) -> Client {
        Client {
            io,
            peer,
            input: LineBuffer::new(max_line),
            replies: Replies::default(),
            input_closed: false,
            eof: false,
            lingering_discard: false,
            paused: false,
            held: false,
            read_later: false,
            last_active: Instant::now(),
            carries_floods: false,
            neighbour: None,
        }
    }

    /// True when this turn's replies can go out with the next pass's instead: the client
    /// has a line waiting for its next pass (see `Server::read_more`), nothing holds it back,
    /// and less than [`REPLY_BATCH`] is queued. Fair service cuts a pipelining client's
    /// lines into passes of two, and writing after each would multiply its writes (and the
    /// reads and writes of the client, which shares the machine) several times over; its
    /// replies waited for its backlog before, so they are no later for waiting now.
    pub fn replies_can_wait(&self) -> bool {
        !self.held
            && !self.paused
            && !self.input_closed
            && self.io.backlog() < REPLY_BATCH
            && self.input.peek(self.eof).is_some()
    }

    /// True when the client waits for an answer before it sends more: nothing of it is
    /// unanswered or unwritten, and what it sent is one line. Flow control lets a few such
    /// lines through while it holds the pipeliners (see `server::SPARSE_PER_TURN`).
    pub fn sparse(&self) -> bool {
        self.replies.waiting() == 0 && self.io.backlog() == 0 && self.input.holds_one_line(self.eof)
    }

    /// True when nothing more will be read, and every reply is written: time to close.
    pub fn finished(&self) -> bool {
        self.input_closed && self.replies.waiting() == 0 && self.io.backlog() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_stay_in_request_order() {
        let mut r = Replies::default();
        let mut out = Vec::new();
        r.push(&mut out, b"1 ");
        let slow = r.reserve();
        r.push(&mut out, b"3 ");
        let fast = r.reserve();
        r.push(&mut out, b"5 ");
        assert_eq!(out, b"1 ");
        r.fill(&mut out, fast, b"4 ".to_vec());
        assert_eq!(out, b"1 ", "4 must wait for 2");
        r.fill(&mut out, slow, b"2 ".to_vec());
        assert_eq!(out, b"1 2 3 4 5 ");
        assert_eq!(r.waiting(), 0);
        r.push(&mut out, b"6");
        assert_eq!(out, b"1 2 3 4 5 6");
    }
}
