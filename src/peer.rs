//! Links to neighbours (SPEC §2 "AT", §3): the outbound side of flooding.
//!
//! Each neighbour has one [`PeerLink`], a small state machine: `Down` (waiting to retry, or
//! idle), `Connecting` (a nonblocking connect is under way; lines queue in the output buffer,
//! as Twisted queues writes on a connecting transport), and `Up`. A link that fails goes
//! `Down` with a retry time that doubles up to [`MAX_BACKOFF`]. When a link comes up after
//! being down, it is owed a catch-up: every location the server knows, streamed from a
//! snapshot a chunk at a time so the output buffer stays small.
//!
//! Two more jobs sit here because they are about one neighbour:
//! - **No echoes.** A line is never sent back to the neighbour it came from. To know where a
//!   line came from, proxy-herd servers append `via=NAME` to the AT lines they forward; a
//!   link adds that field only once the neighbour has shown it reads it (it sent us a `via=`
//!   line itself), because some course servers count fields. A new persistent link *probes*:
//!   its first line goes out twice, plainly and then with `via=`. The second copy is not newer,
//!   so every kind of server drops it (or answers `? `, which we never read), and a proxy-herd
//!   neighbour learns from it that we read `via=` too.
//! - **Flow control.** A live link whose queue passes [`LINK_HIGH`] is *congested*: the
//!   server stops reading clients until every link is back under [`LINK_LOW`]. A congested
//!   link that writes nothing for [`LINK_STALL`] is dropped, so a neighbour that stopped
//!   reading cannot hold the herd; it is caught up when it comes back.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::auth::HerdKey;
use crate::transport::Transport;

/// The first retry delay after a failed or dropped link.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(50);
/// The longest retry delay: a restarted neighbour is reconnected within about this long.
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Most bytes queued for one neighbour. A neighbour that stops reading cannot make us grow
/// without limit: past this the link is dropped, and the catch-up on reconnect resends
/// everything it missed.
pub const MAX_QUEUE: usize = 8 << 20;
/// A connect still under way after this long is given up (a neighbour whose host drops
/// packets would otherwise hold the link for the kernel's two minutes of SYN retries).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The catch-up refills the output buffer while it holds less than this.
const SYNC_CHUNK: usize = 64 << 10;
/// A live link with more than this queued is congested: clients are held back (the herd
/// takes updates only as fast as it can spread them). About 700 AT lines: a couple of
/// milliseconds of a neighbour's work, so a flood never waits long behind others.
pub const LINK_HIGH: usize = 64 << 10;
/// Clients are read again once every live link has at most this queued.
pub const LINK_LOW: usize = 16 << 10;
/// A link whose queue stays over [`LINK_LOW`] while the socket takes less than
/// [`LINK_STALL_BYTES`] in this long is dropped: its neighbour is not reading (or reads a
/// trickle), and one stuck neighbour must hold the herd's clients back at most this long.
/// A queue may well stay over the bound for longer on a server with no clients to hold
/// (it forwards floods from its links to a slower neighbour); that is not a stall as long
/// as the neighbour keeps reading.
pub const LINK_STALL: Duration = Duration::from_secs(1);
/// Less than this written in [`LINK_STALL`] with a queue waiting counts as no progress
/// (about 700 AT lines a second; a healthy neighbour takes hundreds of thousands).
pub const LINK_STALL_BYTES: usize = 64 << 10;

/// How links to neighbours are used (SPEC §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkMode {
    /// One long-lived connection per neighbour, re-opened with backoff.
    Persistent,
    /// A fresh connection per flood, closed once written.
    PerUpdate,
}

/// Where a link is in its life.
#[derive(Debug)]
pub enum LinkState {
    /// No socket. `retry_at` is when to connect again (`None`: only when there is
    /// something to send, in per-update mode).
    Down {
        /// When to try again.
        retry_at: Option<Instant>,
    },
    /// A nonblocking connect is under way; writes are queued.
    Connecting(Transport),
    /// Connected.
    Up(Transport),
}

/// What happened to a line offered to [`PeerLink::send`].
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    /// Queued on the socket.
    Queued,
    /// The link is down; the line will reach the neighbour with the catch-up.
    Dropped,
    /// Per-update mode with no socket open: the caller should connect now; the line is held.
    NeedConnect,
    /// The queue is over [`MAX_QUEUE`]: the caller should drop the link.
    Overflow,
}

/// The link to one neighbour.
#[derive(Debug)]
pub struct PeerLink {
    /// The neighbour's name.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Persistent or per-update.
    pub mode: LinkMode,
    /// Down, connecting or up.
    pub state: LinkState,
    /// The delay before the next retry.
    backoff: Duration,
    /// True once a connect failed or the link dropped: the next connection starts with a
    /// catch-up.
    pub needs_sync: bool,
    /// The rest of a catch-up, still to send.
    sync: Vec<Arc<[u8]>>,
    /// Lines held for the next connection (per-update mode only).
    held: Vec<u8>,
    /// When the connect under way is given up.
    connect_deadline: Option<Instant>,
    /// The herd's secret (`--herd-key`): every line we send carries its tag.
    key: Option<Arc<HerdKey>>,
    /// ` via=OURNAME`: the field that names us on lines we forward.
    via_field: Box<[u8]>,
    /// The neighbour has sent us a `via=` line: it reads the field, so our lines carry it.
    /// Kept for the life of the process (a restarted neighbour re-learns it from our probe).
    pub speaks_via: bool,
    /// The next line goes out twice, the second time with `via=` (see the module docs).
    probe_pending: bool,
    /// While the queue is over [`LINK_LOW`]: since when we have been watching its progress,
    /// and how many bytes the socket took since then (see [`LINK_STALL`]).
    watch: Option<(Instant, usize)>,
}

impl PeerLink {
    /// A link that is down and due to connect at once (persistent) or on the first flood.
    pub fn new(
        me: &str,
        name: String,
        addr: SocketAddr,
        mode: LinkMode,
        key: Option<Arc<HerdKey>>,
        now: Instant,
    ) -> PeerLink {
        let retry_at = match mode {
            LinkMode::Persistent => Some(now),
            LinkMode::PerUpdate => None,
        };
        PeerLink {
            name,
            addr,
            mode,
            state: LinkState::Down { retry_at },
            backoff: FIRST_BACKOFF,
            needs_sync: mode == LinkMode::Persistent,
            sync: Vec::new(),
            held: Vec::new(),
            connect_deadline: None,
            key,
            via_field: [b" ", crate::protocol::VIA, me.as_bytes()].concat().into(),
            speaks_via: false,
            probe_pending: false,
            watch: None,
        }
    }

    /// The socket, when there is one.
    pub fn transport(&mut self) -> Option<&mut Transport> {
        match &mut self.state {
            LinkState::Connecting(t) | LinkState::Up(t) => Some(t),
            LinkState::Down { .. } => None,
        }
    }

    /// The current socket's token.
    pub fn token(&self) -> Option<mio::Token> {
        match &self.state {
            LinkState::Connecting(t) | LinkState::Up(t) => Some(t.token),
            LinkState::Down { .. } => None,
        }
    }

    /// When this link wants the loop to wake it, if it is waiting to retry.
    pub fn retry_at(&self) -> Option<Instant> {
        match self.state {
            LinkState::Down { retry_at } => retry_at,
            _ => None,
        }
    }

    /// When the connect under way must be given up, if one is under way.
    pub fn connect_deadline(&self) -> Option<Instant> {
        match self.state {
            LinkState::Connecting(_) => self.connect_deadline,
            _ => None,
        }
    }

    /// Offers one AT line (without its `\n`, which is added here) to this neighbour.
    pub fn send(&mut self, line: &[u8]) -> Sent {
        match (&mut self.state, self.mode) {
            (LinkState::Connecting(t) | LinkState::Up(t), _) => {
                let via = self.speaks_via.then_some(&*self.via_field);
                let key = self.key.as_deref();
                put_line(t.out_mut(), line, via, key);
                let pending = &mut self.probe_pending;
                probe(t.out_mut(), line, &self.via_field, key, pending);
                if t.backlog() > MAX_QUEUE {
                    Sent::Overflow
                } else {
                    Sent::Queued
                }
            }
            (LinkState::Down { retry_at: None }, LinkMode::PerUpdate) => {
                put_line(&mut self.held, line, None, self.key.as_deref());
                Sent::NeedConnect
            }
            (LinkState::Down { .. }, _) => Sent::Dropped,
        }
    }

    /// Bytes waiting for this neighbour: on the socket, or held for the next connection.
    pub fn queued(&self) -> usize {
        match &self.state {
            LinkState::Connecting(t) | LinkState::Up(t) => t.backlog(),
            LinkState::Down { .. } => self.held.len(),
        }
    }

    /// True when this link is up and its queue is over [`LINK_HIGH`].
    pub fn congested(&self) -> bool {
        matches!(&self.state, LinkState::Up(t) if t.backlog() > LINK_HIGH)
    }

    /// True unless this link is up with more than [`LINK_LOW`] queued.
    pub fn drained(&self) -> bool {
        !matches!(&self.state, LinkState::Up(t) if t.backlog() > LINK_LOW)
    }

    /// Notes, after a write of `wrote` bytes at `now`, how the queue is doing: watched while
    /// it is over [`LINK_LOW`], forgotten once it drains.
    pub fn note_progress(&mut self, now: Instant, wrote: usize) {
        self.watch = match self.watch {
            _ if self.drained() => None,
            None => Some((now, 0)),
            Some((since, bytes)) => Some((since, bytes + wrote)),
        };
    }

    /// When to look at this link's progress next (while its queue is watched).
    pub fn stall_deadline(&self) -> Option<Instant> {
        self.watch.map(|(since, _)| since + LINK_STALL)
    }

    /// At the stall deadline: true when the socket took less than [`LINK_STALL_BYTES`] since
    /// the watch began (drop the link); otherwise the watch starts over.
    pub fn stalled(&mut self, now: Instant) -> bool {
        match self.watch {
            Some((_, bytes)) if bytes < LINK_STALL_BYTES => true,
            Some(_) => {
                self.watch = Some((now, 0));
                false
            }
            None => false,
        }
    }

    /// A connect was started on `transport`; anything held goes into its queue.
    pub fn connecting(&mut self, mut transport: Transport) {
        transport.queue(&self.held);
        self.held = Vec::new();
        self.state = LinkState::Connecting(transport);
        self.connect_deadline = Some(Instant::now() + CONNECT_TIMEOUT);
    }

    /// The connect succeeded. If a catch-up is owed, `snapshot` (called only then) gives it.
    pub fn connected(&mut self, snapshot: impl FnOnce() -> Vec<Arc<[u8]>>) {
        if let LinkState::Connecting(t) =
            std::mem::replace(&mut self.state, LinkState::Down { retry_at: None })
        {
            self.state = LinkState::Up(t);
        }
        self.backoff = FIRST_BACKOFF;
        self.watch = None;
        // Per-update links carry one plain line per connection, for course servers.
        self.probe_pending = self.mode == LinkMode::Persistent && !self.speaks_via;
        if self.needs_sync {
            self.sync = snapshot();
            self.needs_sync = false;
        }
    }

    /// The link failed or dropped: forget the socket and what was queued on it (the next
    /// catch-up resends it all), and schedule a retry. Returns the delay chosen.
    pub fn failed(&mut self, now: Instant) -> Duration {
        let delay = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        self.state = LinkState::Down {
            retry_at: Some(now + delay),
        };
        self.needs_sync = true;
        self.sync = Vec::new();
        self.held = Vec::new();
        self.watch = None;
        delay
    }

    /// Per-update mode: the connection has written everything; close it and go idle.
    /// Returns the closed socket so the caller can deregister it.
    pub fn finish_update(&mut self) -> Option<Transport> {
        let idle = self.mode == LinkMode::PerUpdate && self.sync.is_empty();
        match &self.state {
            LinkState::Up(t) if idle && t.backlog() == 0 => {
                match std::mem::replace(&mut self.state, LinkState::Down { retry_at: None }) {
                    LinkState::Up(t) => Some(t),
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// Moves the next part of a catch-up into the output buffer, if it has room.
    pub fn refill(&mut self) {
        let LinkState::Up(t) = &mut self.state else {
            return;
        };
        let via = self.speaks_via.then_some(&*self.via_field);
        while t.backlog() < SYNC_CHUNK {
            let Some(line) = self.sync.pop() else { break };
            let key = self.key.as_deref();
            put_line(t.out_mut(), &line, via, key);
            probe(
                t.out_mut(),
                &line,
                &self.via_field,
                key,
                &mut self.probe_pending,
            );
        }
    }

    /// True while a catch-up is being sent.
    pub fn syncing(&self) -> bool {
        !self.sync.is_empty()
    }
}

/// Appends one AT line to a link's buffer: the six fields, ` via=NAME` when given, the
/// herd's ` tag=HEX` when it has a key, `\n`.
fn put_line(out: &mut Vec<u8>, line: &[u8], via: Option<&[u8]>, key: Option<&HerdKey>) {
    out.extend_from_slice(line);
    if let Some(via) = via {
        out.extend_from_slice(via);
    }
    if let Some(key) = key {
        key.put_tag(line, out);
    }
    out.push(b'\n');
}

/// When a probe is due, sends `line` again with ` via=NAME` (see the module docs), once.
fn probe(
    out: &mut Vec<u8>,
    line: &[u8],
    via_field: &[u8],
    key: Option<&HerdKey>,
    pending: &mut bool,
) {
    if std::mem::take(pending) {
        put_line(out, line, Some(via_field), key);
    }
}
