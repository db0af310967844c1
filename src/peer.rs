//! Links to neighbours (SPEC §2 "AT", §3): the outbound side of flooding.
//!
//! Each neighbour has one [`PeerLink`], a small state machine: `Down` (waiting to retry, or
//! idle), `Connecting` (a nonblocking connect is under way; lines queue in the output buffer,
//! as Twisted queues writes on a connecting transport), and `Up`. A link that fails goes
//! `Down` with a retry time that doubles up to [`MAX_BACKOFF`]. When a link comes up after
//! being down, it is owed a catch-up (unless `--catch-up off`): every location the server
//! knows, read from the store a chunk at a time and written a bounded amount per loop turn
//! (see `catchup`), so neither the output buffer nor one turn's work grows with the store.
//!
//! A link in *one-line* mode carries exactly one AT line per connection, catch-up included
//! (SPEC §3): per-update links always, and a persistent link once its neighbour has shown that
//! it closes every connection after one read, as many course servers do. Lines wait in
//! `pending` for a connection of their own, one connect at a time. A line that someone waits
//! for (the reply to an IAMAT, or the close of the connection that brought an AT) carries a
//! [`Ticket`]. Once such a line is written, its connection is half-closed and kept
//! *draining* until the neighbour closes it, which it does after handling the line; only
//! then is the ticket done (a refused connect, or no close within [`DRAIN_TIMEOUT`], counts
//! as done too). Draining connections do not hold up the next connect. See `herd`.
//!
//! Three more jobs sit here because they are about one neighbour:
//! - **No echoes.** A line is never sent back to the neighbour it came from. To know where a
//!   line came from, proxy-herd servers append `via=NAME` to the AT lines they forward; a
//!   link adds that field only once the neighbour has shown it reads it (it sent us a `via=`
//!   line itself), because some course servers count fields. A new persistent link *probes*:
//!   its first line goes out twice, plainly and then with `via=`. The second copy is not newer,
//!   so every kind of server drops it (or answers `? `, which we never read), and a proxy-herd
//!   neighbour learns from it that we read `via=` too.
//! - **Flow control.** A live link whose queue passes [`LINK_HIGH`] is *congested*: the
//!   server stops reading clients until every link is back under [`LINK_LOW`]. The queue
//!   counts the bytes the kernel holds too, written but not yet taken by the neighbour
//!   ([`PeerLink::note_progress`]), except during a catch-up (which is not congestion). A congested
//!   link that writes nothing for [`LINK_STALL`] is dropped, so a neighbour that stopped
//!   reading cannot hold the herd; it is caught up when it comes back. A congested server
//!   also tells the rest of the herd, whose clients then wait too (see `pressure`); the
//!   notices go to the front of the queue through [`PeerLink::notice`].
//! - **Held back while it catches us up.** While the neighbour sends us its own catch-up,
//!   lines of other neighbours' catch-ups wait for it here instead of being sent (it may
//!   well have them); when its catch-up is over, what it did not show goes to it as a small
//!   catch-up of its own (see `owed`, [`PeerLink::catch_up_line`]).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::auth::HerdKey;
use crate::catchup::CatchUp;
use crate::owed::Owed;
use crate::protocol::{SEED, SYNC, VIA};
use crate::store::{Key, Locations};
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
/// The catch-up refills the output buffer while it holds less than this. Below
/// [`LINK_LOW`], so a catch-up alone never makes its link congested (which would hold this
/// server's clients for as long as the catch-up lasts); the writer refills and writes in a
/// loop until the kernel takes no more or [`SYNC_TURN`] is written, so small chunks cost a
/// few more writes, no speed.
const SYNC_CHUNK: usize = 8 << 10;
/// Most catch-up bytes one link writes in one loop turn (about 2,500 lines, a millisecond or
/// two of work). On loopback the kernel takes megabytes as fast as the neighbour reads them:
/// "until the kernel takes no more" could be the whole catch-up in one turn, while this
/// server's own clients wait.
pub const SYNC_TURN: usize = 256 << 10;
/// A live link with more than this queued is congested: clients are held back (the herd
/// takes updates only as fast as it can spread them). About 350 AT lines: a couple of
/// milliseconds of a neighbour's work at full speed, so a flood never waits long behind
/// others. The bound is most of the flood latency under load: a flood waits behind what is
/// queued at every hop. Halved from 64 KiB, same-run bench comparisons on 2 cores
/// (2026-12-03, 4-5 runs each) gave a flood latency under the 64-connection load of p50
/// 2.1 ms, p99 8.0 against 3.3 / 10.5 (and 2.0 / 7.5 against 2.9 / 13.6), at 0.83 and
/// 0.77 × the IAMATs a second of the 64 KiB herd. On these shared machines the trade moves
/// with the hour: against the herd with no bound at all (b412aac) it took 0.86–0.93 × in
/// some hours, 0.68–0.79 × in slower ones (during one of those the hypervisor took a fifth
/// of the CPU, vmstat's `st`): a server paused for milliseconds starves its neighbours
/// sooner with less queued. 40 and 48 KiB sit in between (in one slow run: 2.3 and 2.8 ms
/// p50, at 0.86 and 0.91 × b412aac, against 2.0 ms at 0.79 ×).
pub const LINK_HIGH: usize = 32 << 10;
/// Clients are read again once every live link has at most this queued. Not much under
/// [`LINK_HIGH`]: the queue counts what the kernel holds, so a herd released only at a
/// quarter of the bound ran with too little in flight between hops (same-run bench: 48 KiB
/// carried 13–17% more IAMATs/s than 16 KiB at the same flood latency, when the bound was
/// 64 KiB).
pub const LINK_LOW: usize = 24 << 10;
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
/// A persistent link the neighbour closes this soon after it came up, [`QUICK_CLOSES`] times
/// in a row (with no refused connect in between, so the neighbour did not restart), goes to
/// a neighbour that closes every connection after one read.
const QUICK_CLOSE: Duration = Duration::from_millis(500);
/// See [`QUICK_CLOSE`].
const QUICK_CLOSES: u32 = 3;

/// Names the flood lines of one IAMAT (or one AT passed on) on one-line links: the IAMAT's
/// reply (or the AT's connection) is held until every link has reported its ticket done.
pub type Ticket = u64;

/// The longest a written line's connection waits for the neighbour to close it. Only a
/// backstop for a neighbour that never closes: a flood through a few hops of a loaded herd
/// may take a while, and giving up early would let the client outrun it.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(3);
/// At most this many connections per link wait for their neighbour's close; past it, a
/// written line counts as done at once.
const MAX_DRAINING: usize = 64;

/// A written one-line connection, half-closed, waiting for the neighbour to close it: the
/// sign that the neighbour has handled the line.
#[derive(Debug)]
pub struct Draining {
    /// The socket.
    pub transport: Transport,
    /// The ticket done when the neighbour closes.
    pub ticket: Ticket,
    /// When to stop waiting.
    pub deadline: Instant,
}

/// How a one-line connection ended once its line was written.
#[derive(Debug)]
pub enum Finished {
    /// Closed at once (nobody waits for the line, or too many are draining): the caller
    /// deregisters the socket and reports the ticket, if any, done.
    Closed(Transport, Option<Ticket>),
    /// Half-closed and moved to [`PeerLink::draining`].
    Draining,
}

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
    /// The link is down; the line will reach the neighbour with the catch-up (if any).
    Dropped,
    /// One-line mode: the line waits for a connection of its own, and its ticket (if any) is
    /// reported done later. The caller makes sure a connect is started.
    Held,
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
    /// The catch-up being sent, if any.
    sync: Option<CatchUp>,
    /// When the connect under way is given up.
    connect_deadline: Option<Instant>,
    /// The herd's secret (`--herd-key`): every line we send carries its tag.
    key: Option<Arc<HerdKey>>,
    /// `--catch-up`: whether a (re)connected link is sent what the server knows.
    catch_up: bool,
    /// One AT line per connection: per-update mode, or a neighbour that closes after one read.
    one_line: bool,
    /// One-line mode: lines waiting for a connection of their own, oldest first, each with
    /// the ticket of whoever waits for it.
    pending: VecDeque<(Rc<[u8]>, Option<Ticket>)>,
    /// Bytes in `pending`, bounded by [`MAX_QUEUE`].
    pending_bytes: usize,
    /// One-line mode: the ticket of the line on the connection open now.
    current: Option<Ticket>,
    /// When the connection open now came up.
    up_since: Option<Instant>,
    /// Persistent links closed by the neighbour soon after coming up, in a row.
    quick_closes: u32,
    /// One-line connections written and waiting for the neighbour's close.
    pub draining: Vec<Draining>,
    /// ` via=OURNAME`: the field that names us on lines we forward.
    via_field: Box<[u8]>,
    /// ` via=OURNAME sync=1`: the same, on lines of a catch-up.
    via_sync_field: Box<[u8]>,
    /// Bytes written to the socket that the neighbour has not taken yet, as of this turn's
    /// write ([`PeerLink::note_progress`]).
    unsent: usize,
    /// The neighbour has sent us a `via=` line: it reads the field, so our lines carry it.
    /// Kept for the life of the process (a restarted neighbour re-learns it from our probe).
    pub speaks_via: bool,
    /// The next line goes out twice, the second time with `via=` (see the module docs).
    probe_pending: bool,
    /// While the queue is over [`LINK_LOW`]: since when we have been watching its progress,
    /// and how many bytes the socket took since then (see [`LINK_STALL`]).
    watch: Option<(Instant, usize)>,
    /// While the neighbour is sending us its catch-up: the lines of other catch-ups held
    /// back from it meanwhile (see `owed`).
    owed: Option<Owed>,
}

impl PeerLink {
    /// A link that is down and due to connect at once (persistent) or on the first flood.
    /// `me` is this server's name; `catch_up` is `--catch-up`.
    pub fn new(
        me: &str,
        name: String,
        addr: SocketAddr,
        mode: LinkMode,
        key: Option<Arc<HerdKey>>,
        catch_up: bool,
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
            needs_sync: mode == LinkMode::Persistent && catch_up,
            sync: None,
            connect_deadline: None,
            key,
            catch_up,
            one_line: mode == LinkMode::PerUpdate,
            pending: VecDeque::new(),
            pending_bytes: 0,
            current: None,
            up_since: None,
            quick_closes: 0,
            draining: Vec::new(),
            via_field: [b" ", VIA, me.as_bytes()].concat().into(),
            via_sync_field: [b" ", VIA, me.as_bytes(), b" ", SYNC, b"1"].concat().into(),
            speaks_via: false,
            unsent: 0,
            probe_pending: false,
            watch: None,
            owed: None,
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

    /// Offers one AT line (without its `\n`, which is added here) to this neighbour. In
    /// one-line mode, `ticket` goes with the line and is reported done once it is handled.
    pub fn send(&mut self, line: &[u8], ticket: Option<Ticket>, sync: bool) -> Sent {
        if self.one_line {
            return self.hold(line, ticket);
        }
        match &mut self.state {
            LinkState::Connecting(t) | LinkState::Up(t) => {
                let field = if sync {
                    &*self.via_sync_field
                } else {
                    &*self.via_field
                };
                let via = self.speaks_via.then_some(field);
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
            LinkState::Down { .. } => Sent::Dropped,
        }
    }

    /// Puts a `BUSY` notice at the front of the queue (see `pressure`), if the neighbour
    /// is a proxy-herd server on a live persistent link; other neighbours never get one.
    pub fn notice(&mut self, notice: &[u8]) {
        if self.one_line || !self.speaks_via {
            return;
        }
        if let LinkState::Up(t) = &mut self.state {
            let mut line = Vec::with_capacity(notice.len() + 80);
            put_line(&mut line, notice, None, self.key.as_deref());
            t.queue_first(&line);
        }
    }

    /// One-line mode: the line waits for a connection of its own.
    fn hold(&mut self, line: &[u8], ticket: Option<Ticket>) -> Sent {
        if self.catch_up && self.retry_at().is_some() {
            // Backing off after a failure: the catch-up brings it when the link is back.
            return Sent::Dropped;
        }
        if self.pending_bytes + line.len() > MAX_QUEUE {
            return Sent::Overflow;
        }
        self.pending_bytes += line.len();
        self.pending.push_back((Rc::from(line), ticket));
        Sent::Held
    }

    /// One-line mode: true while lines wait for a connection and none is open.
    pub fn wants_connect(&self) -> bool {
        self.one_line && self.token().is_none() && !(self.pending.is_empty() && self.sync.is_none())
    }

    /// Bytes waiting for this neighbour: on the socket, or waiting for a connection.
    pub fn queued(&self) -> usize {
        let on_socket = match &self.state {
            LinkState::Connecting(t) | LinkState::Up(t) => t.backlog(),
            LinkState::Down { .. } => 0,
        };
        on_socket + self.pending_bytes
    }

    /// True when this link is up and its queue, ours and the kernel's, is over
    /// [`LINK_HIGH`].
    pub fn congested(&self) -> bool {
        self.pressing() > LINK_HIGH
    }

    /// True unless this link is up with more than [`LINK_LOW`] queued, ours and the
    /// kernel's.
    pub fn drained(&self) -> bool {
        self.pressing() <= LINK_LOW
    }

    /// What flow control counts of a live link's queue: our buffer, plus what the kernel
    /// holds unless a catch-up fills it (a catch-up is not congestion, see `refill`).
    fn pressing(&self) -> usize {
        match &self.state {
            LinkState::Up(t) if self.syncing() => t.backlog(),
            LinkState::Up(t) => t.backlog() + self.unsent,
            _ => 0,
        }
    }

    /// Notes, after this turn's write of `wrote` bytes at `now`, how the queue is doing.
    /// First what the kernel holds: bytes written that the neighbour has not taken yet.
    /// Without them flow control saw only our buffer, while the kernel held up to 256 KiB
    /// more at every hop (its buffers are twice what is asked): megabytes across the herd
    /// that a flood waited behind, unseen (the bench's flood latency under load: p99 20 ms
    /// counting our buffer only, 9-10 ms counting both, at about 0.7 of the throughput). One
    /// ioctl per link per turn. Then the stall watch: on while the queue is over
    /// [`LINK_LOW`], counting what the neighbour took (the kernel's share may drain while
    /// we, holding our clients, write nothing), forgotten once the queue drains.
    pub fn note_progress(&mut self, now: Instant, wrote: usize) {
        let held = self.unsent;
        self.unsent = match &self.state {
            LinkState::Up(t) => crate::liveness::unsent(&t.stream),
            _ => 0,
        };
        let taken = (held + wrote).saturating_sub(self.unsent);
        self.watch = match self.watch {
            _ if self.drained() => None,
            None => Some((now, 0)),
            Some((since, bytes)) => Some((since, bytes + taken)),
        };
    }

    /// When to look at this link's progress next (while its queue is watched).
    pub fn stall_deadline(&self) -> Option<Instant> {
        self.watch.map(|(since, _)| since + LINK_STALL)
    }

    /// At the stall deadline: true when the socket took less than [`LINK_STALL_BYTES`] since
    /// the watch began (drop the link); otherwise the watch starts over.
    pub fn stalled(&mut self, now: Instant) -> bool {
        // Ask the kernel first. Its share of the queue drains with no event to tell us, and
        // once our clients stop no turn may have looked since: a neighbour that read it all
        // would be called deaf, dropped, and sent everything we know again.
        self.note_progress(now, 0);
        match self.watch {
            Some((_, bytes)) if bytes < LINK_STALL_BYTES => true,
            Some(_) => {
                self.watch = Some((now, 0));
                false
            }
            None => false,
        }
    }

    /// A connect was started on `transport`.
    pub fn connecting(&mut self, transport: Transport) {
        self.state = LinkState::Connecting(transport);
        self.connect_deadline = Some(Instant::now() + CONNECT_TIMEOUT);
    }

    /// The connect succeeded. If a catch-up is owed, it starts: everything `store` holds.
    pub fn connected(&mut self, store: &Locations) {
        if let LinkState::Connecting(t) =
            std::mem::replace(&mut self.state, LinkState::Down { retry_at: None })
        {
            self.state = LinkState::Up(t);
        }
        self.backoff = FIRST_BACKOFF;
        self.watch = None;
        self.up_since = Some(Instant::now());
        // One-line links carry one plain line per connection, for course servers.
        self.probe_pending = !self.one_line && !self.speaks_via;
        if self.needs_sync {
            self.sync = Some(CatchUp::new(store));
            self.needs_sync = false;
        }
        if self.one_line {
            self.load_one_line(store);
        }
    }

    /// One-line mode: puts the next line on the connection just up: a waiting flood first
    /// (someone may be waiting for it), else the next line of the catch-up.
    fn load_one_line(&mut self, store: &Locations) {
        let LinkState::Up(t) = &mut self.state else {
            return;
        };
        let line = match self.pending.pop_front() {
            Some((line, ticket)) => {
                self.pending_bytes -= line.len();
                self.current = ticket;
                line
            }
            None => match next_sync(&mut self.sync, store) {
                Some(line) => line,
                None => return,
            },
        };
        // Plain six fields: one-line links are for course servers (see the module docs).
        put_line(t.out_mut(), &line, None, self.key.as_deref());
    }

    /// The link failed or dropped: forget the socket and what was queued on it, and schedule
    /// a retry. Returns the delay chosen (`None`: one-line mode without catch-up, where the
    /// next flood simply tries a fresh connection) and the tickets of the lines given up: a
    /// refused connect counts as done, and the catch-up (if on) resends everything later.
    pub fn failed(&mut self, now: Instant) -> (Option<Duration>, Vec<Ticket>) {
        if matches!(self.state, LinkState::Connecting(_)) {
            // The neighbour was really down: its earlier closes were not its habit.
            self.quick_closes = 0;
        }
        let mut given_up: Vec<Ticket> = self.current.take().into_iter().collect();
        given_up.extend(self.pending.drain(..).filter_map(|(_, ticket)| ticket));
        self.pending_bytes = 0;
        self.sync = None;
        // What was owed is in the full catch-up the link owes when it is back.
        self.owed = None;
        self.up_since = None;
        self.watch = None;
        if self.one_line && !self.catch_up {
            self.state = LinkState::Down { retry_at: None };
            return (None, given_up);
        }
        let delay = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        self.state = LinkState::Down {
            retry_at: Some(now + delay),
        };
        self.needs_sync = self.catch_up;
        (Some(delay), given_up)
    }

    /// The neighbour closed a persistent link. Returns true when that makes it the
    /// [`QUICK_CLOSES`]th quick close in a row: the neighbour closes every connection after
    /// one read, and from now on this link sends it one line per connection.
    pub fn closed_by_neighbour(&mut self, now: Instant) -> bool {
        let quick = self
            .up_since
            .is_some_and(|t| now.duration_since(t) < QUICK_CLOSE);
        self.quick_closes = if quick { self.quick_closes + 1 } else { 0 };
        if self.one_line || self.quick_closes < QUICK_CLOSES {
            return false;
        }
        self.one_line = true;
        true
    }

    /// One-line mode: the connection has written its line, and the link goes idle (ready
    /// for the next connect). A line someone waits for keeps its connection, half-closed,
    /// until the neighbour closes it ([`Finished::Draining`]); any other is closed at once.
    pub fn finish_update(&mut self, now: Instant) -> Option<Finished> {
        match &self.state {
            LinkState::Up(t) if self.one_line && t.backlog() == 0 => {}
            _ => return None,
        }
        self.up_since = None;
        let LinkState::Up(t) =
            std::mem::replace(&mut self.state, LinkState::Down { retry_at: None })
        else {
            return None;
        };
        let ticket = self.current.take();
        match ticket {
            Some(ticket) if self.draining.len() < MAX_DRAINING => {
                // Our FIN tells a neighbour that reads to the end that nothing more comes.
                let _ = t.stream.shutdown(std::net::Shutdown::Write);
                self.draining.push(Draining {
                    transport: t,
                    ticket,
                    deadline: now + DRAIN_TIMEOUT,
                });
                Some(Finished::Draining)
            }
            _ => Some(Finished::Closed(t, ticket)),
        }
    }

    /// The draining connection with this token, taken out of the list.
    pub fn take_draining(&mut self, token: mio::Token) -> Option<Draining> {
        let k = self
            .draining
            .iter()
            .position(|d| d.transport.token == token)?;
        Some(self.draining.swap_remove(k))
    }

    /// The draining connections past their deadline, taken out of the list.
    pub fn take_expired(&mut self, now: Instant) -> Vec<Draining> {
        let (expired, waiting) = std::mem::take(&mut self.draining)
            .into_iter()
            .partition(|d| d.deadline <= now);
        self.draining = waiting;
        expired
    }

    /// Moves the next part of a catch-up into the output buffer, if it has room (not in
    /// one-line mode, where each connection carries one line).
    pub fn refill(&mut self, store: &Locations) {
        let LinkState::Up(t) = &mut self.state else {
            return;
        };
        if self.one_line {
            return;
        }
        let via = self.speaks_via.then_some(&*self.via_sync_field);
        // The first line of a catch-up says how big it is, and the key of the store's hash
        // whose order the lines come in: ` via=NAME sync=N seed=HEX`.
        let mut sized = match self.sync.as_mut().and_then(CatchUp::announce) {
            Some(n) if self.speaks_via => {
                let n = n.to_string();
                let seed = store.seed().to_string();
                let (n, seed) = (n.as_bytes(), seed.as_bytes());
                Some([&self.via_field[..], b" ", SYNC, n, b" ", SEED, seed].concat())
            }
            _ => None,
        };
        while t.backlog() < SYNC_CHUNK {
            let Some(line) = next_sync(&mut self.sync, store) else {
                break;
            };
            let key = self.key.as_deref();
            let first = sized.take();
            put_line(t.out_mut(), &line, first.as_deref().or(via), key);
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
        self.sync.is_some()
    }

    /// A line of the neighbour's own catch-up to us came, with `sync=size`. Its end
    /// settles what we owe it (see `owed`).
    pub fn catch_up_line(&mut self, size: u64, now: Instant) {
        let owed = self.owed.get_or_insert_with(|| Owed::new(now));
        if owed.line_came(size, now) {
            self.settle("over");
        }
    }

    /// The neighbour's catch-up sent nothing for [`owed::QUIET`](crate::owed::QUIET): it
    /// counts as over.
    pub fn settle_quiet(&mut self) {
        self.settle("quiet");
    }

    /// True when a line of another neighbour's catch-up is held back from this one rather
    /// than sent: it is catching us up itself, and may well have the line (see `owed`). Only
    /// on a live persistent link to a proxy-herd server that is not being sent a catch-up
    /// (which would carry the line anyway).
    pub fn holds_back(&self) -> bool {
        self.owed.is_some() && self.may_hold_back()
    }

    /// Holds `line`, a line of `client`, back from this neighbour until its catch-up ends.
    /// False when it could not be held (send it).
    pub fn hold_back(&mut self, key: Key, client: &[u8], line: Rc<[u8]>) -> bool {
        self.owed
            .as_mut()
            .is_some_and(|owed| owed.hold(key, client, line))
    }

    /// The neighbour's catch-up showed it has the newest line we know of `client`.
    pub fn shown(&mut self, key: Key, client: &[u8]) {
        if let Some(owed) = &mut self.owed {
            owed.shown(key, client);
        }
    }

    /// When the neighbour's catch-up to us began, while it goes on.
    pub fn catching_us_up_since(&self) -> Option<Instant> {
        self.owed.as_ref().map(|owed| owed.began)
    }

    /// When the neighbour's catch-up counts as over if no line of it comes first.
    pub fn owed_deadline(&self) -> Option<Instant> {
        self.owed.as_ref().map(Owed::deadline)
    }

    /// The neighbour's catch-up is over (`how`): what it did not show goes to it as a
    /// catch-up of its own.
    fn settle(&mut self, how: &str) {
        let Some(owed) = self.owed.take() else {
            return;
        };
        let lines = owed.into_lines();
        if lines.is_empty() {
            return;
        }
        log::info!(
            "{}'s catch-up is {how}: {} lines held back go to it",
            self.name,
            lines.len()
        );
        // The lines were held back on this very link (a link that went down forgot them:
        // the full catch-up it owes carries them).
        if self.may_hold_back() {
            self.sync = Some(CatchUp::of_lines(lines));
        }
    }

    /// What [`PeerLink::holds_back`] asks of the link itself.
    fn may_hold_back(&self) -> bool {
        matches!(self.state, LinkState::Up(_))
            && !self.one_line
            && self.speaks_via
            && self.sync.is_none()
    }

    /// True when a catch-up on a live persistent link has written all it refilled: it
    /// stopped at [`SYNC_TURN`], and the socket, still taking more, gives no event to go on.
    pub fn sync_due(&self) -> bool {
        !self.one_line
            && self.syncing()
            && matches!(&self.state, LinkState::Up(t) if t.backlog() == 0)
    }

    /// True when this link sends one line per connection.
    pub fn one_line(&self) -> bool {
        self.one_line
    }
}

/// The next line of catch-up `sync`; ends it (`None`) when it is done.
fn next_sync(sync: &mut Option<CatchUp>, store: &Locations) -> Option<Rc<[u8]>> {
    let line = sync.as_mut()?.next(store);
    if line.is_none() {
        *sync = None;
    }
    line
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

#[cfg(test)]
mod tests {
    use super::*;

    fn link(mode: LinkMode, catch_up: bool) -> PeerLink {
        let addr = SocketAddr::from(([127, 0, 0, 1], 9));
        PeerLink::new("Me", "N".into(), addr, mode, None, catch_up, Instant::now())
    }

    #[test]
    fn one_line_links_hold_each_line_with_its_ticket() {
        let mut l = link(LinkMode::PerUpdate, false);
        assert_eq!(l.send(b"AT a", Some(7), false), Sent::Held);
        assert_eq!(l.send(b"AT b", None, false), Sent::Held);
        assert!(l.wants_connect());
        // A refused connect: both lines are given up, and the ticket with them, so the
        // IAMAT reply waiting for it is released. Without catch-up, no backoff: the next
        // flood tries a fresh connection at once.
        assert_eq!(l.failed(Instant::now()), (None, vec![7]));
        assert!(!l.wants_connect());
        assert_eq!(l.retry_at(), None);
        assert_eq!(l.send(b"AT c", Some(8), false), Sent::Held);
    }

    #[test]
    fn with_catch_up_a_failed_link_backs_off_and_owes_a_catch_up() {
        let mut l = link(LinkMode::PerUpdate, true);
        assert_eq!(l.send(b"AT a", Some(1), false), Sent::Held);
        let (delay, given_up) = l.failed(Instant::now());
        assert_eq!((delay, given_up), (Some(FIRST_BACKOFF), vec![1]));
        assert!(l.needs_sync);
        // While backing off, lines are left to the catch-up.
        assert_eq!(l.send(b"AT b", Some(2), false), Sent::Dropped);
    }

    #[test]
    fn without_catch_up_a_persistent_link_owes_nothing() {
        let mut l = link(LinkMode::Persistent, false);
        assert!(!l.needs_sync);
        l.failed(Instant::now());
        assert!(!l.needs_sync);
        assert_eq!(l.send(b"AT a", None, false), Sent::Dropped);
        let mut l = link(LinkMode::Persistent, true);
        l.failed(Instant::now());
        assert!(l.needs_sync);
    }

    #[test]
    fn three_quick_closes_in_a_row_switch_to_one_line() {
        let mut l = link(LinkMode::Persistent, true);
        let now = Instant::now();
        let closes = |l: &mut PeerLink, lived: Duration| {
            l.up_since = Some(now);
            l.closed_by_neighbour(now + lived)
        };
        assert!(!closes(&mut l, Duration::from_millis(5)));
        assert!(!closes(&mut l, Duration::from_millis(5)));
        // A connection that lived long resets the count: a neighbour that restarted.
        assert!(!closes(&mut l, Duration::from_secs(2)));
        assert!(!closes(&mut l, Duration::from_millis(5)));
        assert!(!closes(&mut l, Duration::from_millis(5)));
        assert!(!l.one_line());
        assert!(closes(&mut l, Duration::from_millis(5)), "third in a row");
        assert!(l.one_line());
        // Said once: later closes do not switch again.
        assert!(!closes(&mut l, Duration::from_millis(5)));
        // The link goes down as usual; the catch-up when it is back goes one line per
        // connection.
        let (delay, _) = l.failed(now);
        assert!(delay.is_some() && l.needs_sync);
    }
}
