//! The reactor: one thread, one `mio::Poll`, every socket of this server.
//!
//! [`Server::run`] is the whole life of the program as a list of steps. The reactor knows
//! tokens, buffers, interest and timers; what a line means is `herd`'s business.
//!
//! Rules it keeps (see the crate docs for why):
//! - fixed sources have named tokens ([`LISTENER`], [`WAKER`], [`SIGNALS`]); every socket
//!   gets a fresh token from a counter that never repeats;
//! - every handler drains to `WouldBlock` (readiness is edge-triggered);
//! - writes happen once per turn in [`Server::flush_writes`], links before clients, and
//!   WRITABLE interest is held only while bytes remain;
//! - a connection is closed only after the event batch, in [`Server::reap_closed`];
//! - an I/O error closes its own connection and nothing else.

use std::collections::HashMap;
use std::io::{self, Read};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream, UnixStream};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::auth::Admission;
use crate::client::Client;
use crate::herd::{Came, Herd, Origin};
use crate::lines::Next;
use crate::liveness;
use crate::logging::{self, trace};
use crate::peer::{Draining, Finished, LinkMode, LinkState, PeerLink, SYNC_TURN};
use crate::places::Provider;
use crate::pressure::Strain;
use crate::signals;
use crate::timeline::{self, mark};
use crate::transport::{Transport, interrupted, would_block};
use crate::workers::Pool;

/// The listening socket.
pub const LISTENER: Token = Token(0);
/// The waker the places workers use to hand results back.
pub const WAKER: Token = Token(1);
/// The self-pipe a SIGTERM or SIGINT writes to.
pub const SIGNALS: Token = Token(2);
/// Connection tokens start here and only go up.
const FIRST_CONNECTION: usize = 3;

/// Bytes asked of the kernel per read.
const READ_CHUNK: usize = 64 << 10;
/// Reads per readiness event before other connections get a turn.
const READS_PER_EVENT: usize = 8;
/// A client's lines handled per pass before the next client's (fair service: see
/// [`Server::read_more`]). A client that pipelines hundreds of lines cannot make one that
/// sends a single line wait for all of them.
pub const LINES_PER_PASS: usize = 2;
/// Lines of *sparse* clients handled per loop turn while flow control holds the others:
/// a client with nothing unanswered and one line sent (one waiting for its answer, not
/// pipelining) is not held, as fq_codel serves a sparse flow ahead of the bulk ones. Held,
/// such a line waited for the links to drain like the pipeliners' thousands: half of the
/// bench's flood latency under load was a probe's wait to be read at the loaded edge. At
/// most this many a turn, so that a crowd of one-line clients cannot undo the hold.
pub const SPARSE_PER_TURN: usize = 16;
/// How often a server whose links are congested looks at them again.
const CONGESTED_RECHECK: Duration = Duration::from_millis(1);
/// A neighbour's lines handled per pass: many more than a client's (they are the herd's
/// work), but not all that came. Reading a link until the kernel had nothing left took
/// 8 reads of 64 KiB, ~5,000 lines: about 10 ms of the loop when a restarted neighbour
/// passes on its catch-up, while this server's own clients waited.
pub const LINK_LINES_PER_PASS: usize = 512;
/// A neighbour's lines handled per pass while its catch-up waits for another's to end (see
/// `Herd::waits_its_turn`): a thirty-second of the one being read, so that the server
/// reads one catch-up after the other, and never stops reading a link.
pub const CATCH_UP_TRICKLE: usize = 16;
/// Lines of the clients left waiting that one loop turn handles (after the passes its new
/// events brought) before the loop polls again, so that a client that has just sent a line
/// waits for a few hundred lines of the others, not for all they have sent: under the
/// bench's 64-connection load its line leaves Hamilton in ~0.5 ms instead of 3.
pub const TURN_LINES: usize = 128;
/// A server that handled a catch-up line this recently says nothing of being behind: a
/// catch-up is a flood of old lines, and a restarted neighbour must not hold the herd's
/// clients for the seconds it takes.
const CATCH_UP_QUIET: Duration = Duration::from_millis(10);
/// A persistent link with this much queued is written at once, mid-turn (see
/// [`Server::flush_early`]): about 40 AT lines.
pub const EARLY_FLUSH: usize = 4 << 10;
/// A client's unsent replies above this pause reading from it (backpressure).
const OUT_HIGH: usize = 1 << 20;
/// Replies waiting for lookups above this pause reading from a client.
const MAX_WAITING: usize = 1024;
/// How long after an overlong line we keep draining a client's input before closing, so
/// our `? ` reply is not destroyed by a reset.
const LINGER: Duration = Duration::from_secs(2);
/// One-line links: the most connections one link opens and writes in one loop turn.
const ONE_LINE_BURST: usize = 32;
/// After `accept` fails for lack of descriptors, wait this long before trying again.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// How a server is set up; made from the command line by `cli`.
pub struct Config {
    /// This server's name.
    pub name: String,
    /// The neighbours: name and address.
    pub neighbours: Vec<(String, SocketAddr)>,
    /// The longest line accepted.
    pub max_line: usize,
    /// Persistent or per-update links.
    pub links: LinkMode,
    /// Send what we know to a (re)connected neighbour (`--catch-up on`).
    pub catch_up: bool,
    /// Places worker threads.
    pub workers: usize,
    /// Lookups that may wait for a worker before WHATSATs are answered "busy".
    pub lookup_queue: usize,
    /// Clients silent this long are closed (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// Log every loop turn and event (`--trace`).
    pub trace: bool,
    /// What is refused: unsigned AT lines, reports from the future.
    pub admission: Admission,
}

/// One server of the herd.
pub struct Server {
    poll: Poll,
    events: Events,
    listener: TcpListener,
    /// Kept alive for the workers; the poll needs it to exist.
    _waker: Arc<Waker>,
    signal_pipe: UnixStream,
    clients: HashMap<Token, Client>,
    herd: Herd,
    next_token: usize,
    max_line: usize,
    idle_timeout: Option<Duration>,
    /// Clients with output to write this turn (duplicates are harmless).
    dirty: Vec<Token>,
    /// Clients with input left to handle (a read budget ran out, or reading resumed).
    more_to_read: Vec<Token>,
    /// Clients held back until the links drain (flow control: see [`Server::release_held`]),
    /// in the order they are read again: those that got nothing in first.
    held: Vec<Token>,
    /// Clients held after they had some lines handled: read again after `held`, so the same
    /// few clients cannot take every turn's share while the others starve.
    held_served: Vec<Token>,
    /// Sparse clients' lines that may still be handled this turn while the others are held
    /// ([`SPARSE_PER_TURN`]).
    sparse_left: usize,
    /// Connections to close after this turn's events, with why.
    to_close: Vec<(Token, String)>,
    /// Clients draining input after an overlong line, and until when.
    lingering: Vec<(Token, Instant)>,
    /// When to retry `accept` after running out of descriptors.
    accept_retry_at: Option<Instant>,
    /// When to look for idle clients next.
    idle_check_at: Option<Instant>,
    /// Every read lands here first (one buffer for all connections).
    read_buf: Box<[u8]>,
    /// `--trace`: log each turn, event and byte count.
    trace: bool,
    /// Loop turns so far (for the trace).
    turn: u64,
    /// Lines handled so far by this turn's [`Server::read_more`] (see [`TURN_LINES`]).
    turn_lines: usize,
    /// When this server last handled a line of a catch-up.
    catch_up_at: Option<Instant>,
}

impl Server {
    /// Sets a server up around an already bound listener (binding first lets start-up
    /// errors about the address come before anything else, and lets clients connect at once).
    pub fn new(
        config: Config,
        mut listener: TcpListener,
        provider: Arc<dyn Provider>,
    ) -> io::Result<Server> {
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let mut signal_pipe = signals::wake_pipe()?;
        poll.registry()
            .register(&mut signal_pipe, SIGNALS, Interest::READABLE)?;
        let pool = Pool::start(
            Arc::clone(&provider),
            config.workers,
            config.lookup_queue,
            Arc::clone(&waker),
        );
        let now = Instant::now();
        let links = config
            .neighbours
            .iter()
            .map(|(name, addr)| {
                let key = config.admission.key.clone();
                let (mode, catch_up) = (config.links, config.catch_up);
                PeerLink::new(&config.name, name.clone(), *addr, mode, key, catch_up, now)
            })
            .collect();
        Ok(Server {
            poll,
            events: Events::with_capacity(1024),
            listener,
            _waker: waker,
            signal_pipe,
            clients: HashMap::new(),
            herd: Herd::new(
                config.name,
                links,
                provider,
                pool,
                config.admission,
                config.trace,
            ),
            next_token: FIRST_CONNECTION,
            max_line: config.max_line,
            idle_timeout: config.idle_timeout,
            dirty: Vec::new(),
            more_to_read: Vec::new(),
            held: Vec::new(),
            held_served: Vec::new(),
            sparse_left: SPARSE_PER_TURN,
            to_close: Vec::new(),
            lingering: Vec::new(),
            accept_retry_at: None,
            idle_check_at: config.idle_timeout.map(|t| now + t),
            read_buf: vec![0; READ_CHUNK].into_boxed_slice(),
            trace: config.trace,
            turn: 0,
            turn_lines: 0,
            catch_up_at: None,
        })
    }

    /// Runs until SIGTERM or SIGINT. Only a failing `poll` is fatal.
    pub fn run(&mut self) -> io::Result<()> {
        log::info!(
            "{} started, listening on {}",
            self.herd.name,
            self.listener.local_addr()?
        );
        while !signals::stop_requested() {
            self.poll_events()?; //     sleep until a socket, the Waker, a signal or a timer
            self.dispatch_events(); //  accept, read, handle lines; queue replies and floods
            self.read_more(); //        input left over from a spent read budget
            self.drain_lookups(); //    places results from the workers, to their WHATSATs
            self.run_timers(); //       link retries, accept retry, idle and lingering clients
            self.flush_writes(); //     write links first, then clients
            self.reap_closed(); //      close what was marked for closing this turn
            logging::flush(); //        one write(2) of this turn's log records
        }
        log::info!("{} stopped (signal)", self.herd.name);
        logging::flush();
        Ok(())
    }

    /// Sleeps until a socket is ready, a worker wakes us, or the next timer is due.
    fn poll_events(&mut self) -> io::Result<()> {
        let timeout = self.next_timeout();
        let slept = Instant::now();
        self.turn += 1;
        self.sparse_left = SPARSE_PER_TURN;
        timeline::asleep(timeout);
        let result = self.poll.poll(&mut self.events, timeout);
        // This turn's log records carry the time it began (one clock read per turn).
        logging::tick();
        timeline::awake(self.turn, &self.events);
        match result {
            Ok(()) => {
                trace!(
                    self.trace,
                    "turn {}: poll(timeout {}) slept {} us, {} events",
                    self.turn,
                    timeout.map_or("none".to_string(), |t| format!("{} ms", t.as_millis())),
                    slept.elapsed().as_micros(),
                    self.events.iter().count()
                );
                Ok(())
            }
            // A signal landed: not an error. The loop condition looks at the stop flag.
            Err(e) if interrupted(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Zero when input is waiting to be handled, else the time until the earliest timer.
    fn next_timeout(&self) -> Option<Duration> {
        if !self.more_to_read.is_empty() {
            return Some(Duration::ZERO);
        }
        // A catch-up that stopped at its turn's bound with the socket still taking more
        // gets no writable event: it goes on next turn, without sleeping.
        if self.herd.links.iter().any(PeerLink::sync_due) {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        let links = self.herd.links.iter();
        let deadlines = links.flat_map(|l| {
            let draining = l.draining.iter().map(|d| d.deadline);
            (l.retry_at().into_iter())
                .chain(l.connect_deadline())
                .chain(l.stall_deadline())
                .chain(l.owed_deadline())
                .chain(draining)
        });
        // While our own links are congested, look again every millisecond: the kernel's
        // share of their queues drains with no event to tell us (see `PeerLink::note_progress`).
        let recheck = self.herd.congested.then(|| now + CONGESTED_RECHECK);
        let deadlines = deadlines
            .chain(recheck)
            .chain(self.accept_retry_at)
            .chain(self.idle_check_at)
            .chain(self.herd.unknown_deadline())
            .chain(self.herd.pressure.deadline(now))
            // Clients held by the pace: wake when the next line may be taken.
            .chain(
                (self.held.iter().chain(&self.held_served).next())
                    .and_then(|_| self.herd.pace.next_room(now)),
            )
            .chain(self.lingering.iter().map(|&(_, t)| t));
        deadlines.min().map(|t| t.saturating_duration_since(now))
    }

    /// Hands each ready event to its handler.
    fn dispatch_events(&mut self) {
        // The events are moved out while handlers (which need `&mut self`) run.
        let events = std::mem::replace(&mut self.events, Events::with_capacity(0));
        for event in events.iter() {
            if self.trace {
                self.trace_event(event);
            }
            match event.token() {
                LISTENER => self.accept_ready(),
                // Results are drained once per turn, however many wakes there were.
                WAKER => {}
                SIGNALS => self.drain_signal_pipe(),
                token if self.clients.contains_key(&token) => {
                    // Read first: the bytes may produce replies that the write then sends.
                    // A client already waiting on `more_to_read` keeps its place there: an
                    // extra pass for sending more would serve it ahead of those that wait.
                    let ready = event.is_readable() || event.is_read_closed() || event.is_error();
                    if ready && !self.clients.get(&token).is_some_and(|c| c.read_later) {
                        self.client_readable(token);
                    }
                    if event.is_writable() {
                        self.dirty.push(token);
                    }
                }
                // Otherwise a link, or a sporadic event for a socket closed earlier: safe to
                // ignore, since tokens are never reused.
                token => {
                    if let Some(i) = self.link_index(token) {
                        self.link_event(i, event.is_readable() || event.is_read_closed());
                    } else if let Some(i) = self.draining_link(token) {
                        self.drain_event(i, token);
                    }
                }
            }
        }
        self.events = events;
    }

    /// Writes one trace line for an event: whose token, ready for what.
    fn trace_event(&self, event: &mio::event::Event) {
        let token = event.token();
        let who = match token {
            LISTENER => "listener".to_string(),
            WAKER => "waker".to_string(),
            SIGNALS => "signals".to_string(),
            t if self.clients.contains_key(&t) => format!("conn {}", t.0),
            t => match self.link_index(t) {
                Some(i) => format!("link to {} (conn {})", self.herd.links[i].name, t.0),
                None => format!("closed conn {} (ignored)", t.0),
            },
        };
        let flags = [
            (event.is_readable(), "readable"),
            (event.is_writable(), "writable"),
            (event.is_read_closed(), "read-closed"),
            (event.is_write_closed(), "write-closed"),
            (event.is_error(), "error"),
        ];
        let flags: Vec<&str> = flags.iter().filter(|f| f.0).map(|f| f.1).collect();
        trace!(true, "event {who}: {}", flags.join(" "));
    }

    /// Accepts every pending connection.
    fn accept_ready(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => self.add_client(stream, peer),
                Err(e) if would_block(&e) => return,
                Err(e) if interrupted(&e) => continue,
                Err(e) if out_of_descriptors(&e) => {
                    // The pending connection stays in the backlog, and edge-triggered
                    // readiness will not fire again for it: come back on a timer, not a spin.
                    log::warn!(
                        "accept failed: {e}; retrying in {} ms",
                        ACCEPT_RETRY.as_millis()
                    );
                    self.accept_retry_at = Some(Instant::now() + ACCEPT_RETRY);
                    return;
                }
                // ECONNABORTED and friends concern one connection that is already gone.
                Err(e) => log::warn!("accept failed: {e}"),
            }
        }
    }

    /// Registers a newly accepted connection under a fresh token.
    fn add_client(&mut self, stream: TcpStream, peer: SocketAddr) {
        let token = self.new_token();
        // Replies are small and latency matters more than packet count.
        let _ = stream.set_nodelay(true);
        match Transport::register(stream, token, self.poll.registry(), false) {
            Ok(io) => {
                log::info!("conn {} connected from {peer}", token.0);
                mark!("accept", conn = token.0);
                self.clients
                    .insert(token, Client::new(io, peer, self.max_line));
            }
            Err(e) => log::warn!("cannot register a connection from {peer}: {e}"),
        }
    }

    /// The next token: a counter that only goes up, so a token is never reused.
    fn new_token(&mut self) -> Token {
        let token = Token(self.next_token);
        self.next_token += 1;
        token
    }

    /// Reads what a client sent and handles its complete lines: at most [`LINES_PER_PASS`]
    /// for a client, [`LINK_LINES_PER_PASS`] for a neighbour's link (the rest wait on
    /// `more_to_read` for the next pass).
    fn client_readable(&mut self, token: Token) {
        let Some(client) = self.clients.get_mut(&token) else {
            return;
        };
        if client.lingering_discard {
            return self.discard_input(token);
        }
        let mut quota = if !client.carries_floods {
            LINES_PER_PASS
        } else if self.herd.waits_its_turn(client.neighbour) {
            CATCH_UP_TRICKLE
        } else {
            LINK_LINES_PER_PASS
        };
        // Lines left over from an earlier turn come first.
        quota -= self.handle_input(token, quota);
        for _ in 0..READS_PER_EVENT {
            let Some(client) = self.clients.get_mut(&token) else {
                return;
            };
            if client.paused || client.held || client.input_closed || client.eof {
                return;
            }
            if quota == 0 {
                // This pass is over; the lines read stay buffered for the next one.
                return self.read_later(token);
            }
            // Read into the one buffer all connections share, then keep only the bytes that
            // came: an idle connection holds no input buffer of its own.
            let result = client.io.read(&mut self.read_buf);
            if let Ok(Some(n)) = result {
                client.input.extend(&self.read_buf[..n]);
                mark!("read", conn = token.0, bytes = n);
            }
            match &result {
                Ok(Some(0)) => trace!(self.trace, "conn {}: read end of input", token.0),
                Ok(Some(n)) => trace!(self.trace, "conn {}: read {n} bytes", token.0),
                Ok(None) => trace!(self.trace, "conn {}: read would block", token.0),
                Err(_) => {}
            }
            match result {
                Ok(Some(0)) => client.eof = true,
                Ok(Some(_)) => {
                    client.last_active = Instant::now();
                    self.herd.read_at = client.last_active;
                    // The records of the lines these bytes hold carry the time they came, and
                    // so do the ages of the floods among them.
                    self.herd.read_wall = logging::tick().as_nanos() as i128;
                }
                Ok(None) => return,
                Err(e) => return self.to_close.push((token, format!("read error: {e}"))),
            }
            quota -= self.handle_input(token, quota);
        }
        // Budget spent with bytes maybe still in the kernel: come back next turn.
        self.read_later(token);
    }

    /// Handles buffered lines, at most `quota`, until none is complete or the client must
    /// wait (backpressure); returns how many. At end of input, the last unterminated line is
    /// handled too.
    fn handle_input(&mut self, token: Token, quota: usize) -> usize {
        let Some(client) = self.clients.get_mut(&token) else {
            return 0;
        };
        let mut handled = 0;
        let begun = timeline::begin();
        while !client.input_closed && handled < quota {
            if client.io.backlog() > OUT_HIGH || client.replies.waiting() > MAX_WAITING {
                client.paused = true;
                break;
            }
            // Flow control: while a link is congested, a client's next line waits (and the
            // client is not read), so the herd takes updates only as fast as it spreads them;
            // and while floods come late somewhere, each line takes one of the pace's tokens,
            // and waits when there is none (see `pace`). A neighbour's AT line always goes
            // through: pausing links could deadlock a herd with a cycle, every server waiting
            // for the next. So does a sparse client's line, a few a turn, without a token
            // (see `SPARSE_PER_TURN`).
            let client_line = !client.carries_floods
                && (client.input.peek(client.eof)).is_some_and(|l| !crate::protocol::is_flood(l));
            let held_back = client_line && self.herd.holds_clients();
            if held_back && client.sparse() && self.sparse_left > 0 {
                self.sparse_left -= 1;
            } else if client_line && !held_back {
                self.herd.pace.take();
            } else if held_back {
                trace!(
                    self.trace,
                    "conn {}: held {}",
                    token.0,
                    self.herd.why_held()
                );
                client.held = true;
                match handled {
                    0 => self.held.push(token),
                    _ => self.held_served.push(token),
                }
                break;
            }
            let range = match client.input.next_line() {
                Next::Line(range) => range,
                Next::TooLong(range) => {
                    let reply = crate::protocol::format_invalid(client.input.get(range));
                    log::warn!(
                        "conn {}: line over {} bytes; answering and closing",
                        token.0,
                        self.max_line
                    );
                    client.replies.push(client.io.out_mut(), &reply);
                    client.input_closed = true;
                    client.lingering_discard = true;
                    break;
                }
                // End of input ends the last line too (the grading scripts send no final
                // newline); after it, nothing more is read.
                Next::Incomplete if client.eof => {
                    client.input_closed = true;
                    match client.input.finish() {
                        Some(range) => range,
                        None => break,
                    }
                }
                Next::Incomplete => break,
            };
            handled += 1;
            let came = self.herd.handle_line(
                token,
                Origin::Accepted,
                client.input.get(range),
                &mut client.replies,
                client.io.out_mut(),
            );
            // A connection that sends AT lines is a neighbour's link (see the idle timeout);
            // it is watched like our own links, so a dead neighbour's one is closed (if the
            // options cannot be set, it is merely left unwatched).
            let Came::Flood(via) = came else {
                continue;
            };
            client.neighbour = via.or(client.neighbour);
            if !client.carries_floods {
                client.carries_floods = true;
                // Flow control: what waits for us on this link should wait in the
                // neighbour's queue, where it holds its clients back, not in our kernel.
                limit_kernel_buffers(&client.io.stream);
                let _ = liveness::watch(&client.io.stream);
            }
        }
        timeline::lines_handled(begun, token.0, handled);
        self.turn_lines += handled;
        self.dirty.push(token);
        self.flush_early();
        handled
    }

    /// Writes the persistent links that have [`EARLY_FLUSH`] bytes queued now, in the middle
    /// of the turn, instead of after every ready client was read: under load one turn can
    /// handle thousands of lines, and the neighbours would sit idle until its end, then get
    /// them all at once. Writing early keeps the herd working as a pipeline. Replies still go
    /// out at the end of the turn, after the floods that came before them (SPEC §2).
    fn flush_early(&mut self) {
        for i in 0..self.herd.links.len() {
            let link = &self.herd.links[i];
            if !link.one_line() && link.queued() > EARLY_FLUSH {
                self.write_link(i);
            }
        }
    }

    /// Throws away input from a client that is being closed after an overlong line.
    fn discard_input(&mut self, token: Token) {
        let Some(client) = self.clients.get_mut(&token) else {
            return;
        };
        let mut scratch = [0u8; 4096];
        for _ in 0..256 {
            match client.io.read(&mut scratch) {
                Ok(Some(0)) => {
                    return self
                        .to_close
                        .push((token, "closed after an overlong line".into()));
                }
                Ok(Some(_)) => {}
                Ok(None) => return,
                Err(e) => return self.to_close.push((token, format!("read error: {e}"))),
            }
        }
        self.read_later(token);
    }

    /// Puts a connection on `more_to_read`, unless it is there already: a client that sends
    /// more while it waits for its pass must not get a second place in line (the list would
    /// grow every turn, and those behind would wait longer each time).
    fn read_later(&mut self, token: Token) {
        if let Some(client) = self.clients.get_mut(&token) {
            read_later(&mut self.more_to_read, client, token);
        }
    }

    /// Goes back to clients whose input was left for later, a pass each in turn, until
    /// [`TURN_LINES`] lines more are handled; who is left goes first next turn. The budget is
    /// this step's own: however many lines the turn's new events brought (two a client at
    /// most), the clients left waiting get their share, or one whose sender waits for
    /// replies (and so sends nothing that would make it ready again) could wait for good.
    fn read_more(&mut self) {
        self.turn_lines = 0;
        // Connections whose pass handled no line (half a line so far, or input being thrown
        // away after an overlong one) get no second pass this turn: they would not count
        // toward the budget, and a fast writer could keep the loop here for good.
        let mut next_turn = Vec::new();
        while !self.more_to_read.is_empty() && self.turn_lines < TURN_LINES {
            let mut round = std::mem::take(&mut self.more_to_read).into_iter();
            for token in round.by_ref() {
                let (lines, queued) = (self.turn_lines, self.more_to_read.len());
                if let Some(client) = self.clients.get_mut(&token) {
                    client.read_later = false;
                }
                self.client_readable(token);
                if self.turn_lines == lines {
                    next_turn.extend(self.more_to_read.drain(queued..));
                }
                if self.turn_lines >= TURN_LINES {
                    break;
                }
            }
            let again = std::mem::take(&mut self.more_to_read);
            self.more_to_read = round.chain(again).collect();
        }
        self.more_to_read.append(&mut next_turn);
    }

    /// Gives every finished lookup to the WHATSATs waiting for it (and goes back to the
    /// WHATSATs about clients that were not known yet).
    fn drain_lookups(&mut self) {
        let finished = self.herd.finished_lookups();
        if !finished.is_empty() {
            trace!(
                self.trace,
                "waker delivered {} lookup results",
                finished.len()
            );
        }
        for done in finished {
            timeline::lookup_delivered(done.flow);
            self.herd
                .lookup_done(done, &mut self.clients, &mut self.dirty);
        }
        self.herd
            .recheck_unknown(&mut self.clients, &mut self.dirty);
    }

    /// Starts link connects that are due, retries `accept`, closes idle and lingering clients.
    fn run_timers(&mut self) {
        let now = Instant::now();
        for i in 0..self.herd.links.len() {
            for d in self.herd.links[i].take_expired(now) {
                self.drained(i, d, "no close from the neighbour in time");
            }
            if self.herd.links[i].owed_deadline().is_some_and(|t| t <= now) {
                self.herd.links[i].settle_quiet();
            }
            let link = &self.herd.links[i];
            if link.retry_at().is_some_and(|t| t <= now) {
                self.start_connect(i);
            } else if link.connect_deadline().is_some_and(|t| t <= now) {
                let why = format!("connect to {} timed out", link.addr);
                self.link_failed(i, &why);
            } else if link.stall_deadline().is_some_and(|t| t <= now)
                && self.herd.links[i].stalled(now)
            {
                let link = &self.herd.links[i];
                let why = format!(
                    "{} is not reading: under {} KiB taken in {} ms with a queue waiting",
                    link.name,
                    crate::peer::LINK_STALL_BYTES >> 10,
                    crate::peer::LINK_STALL.as_millis()
                );
                self.link_failed(i, &why);
            }
        }
        if self.accept_retry_at.is_some_and(|t| t <= now) {
            mark!("accept retry");
            self.accept_retry_at = None;
            self.accept_ready();
        }
        let (due, waiting): (Vec<_>, Vec<_>) =
            self.lingering.drain(..).partition(|&(_, t)| t <= now);
        self.lingering = waiting;
        for (token, _) in due {
            self.to_close
                .push((token, "closed after an overlong line".into()));
        }
        if let (Some(limit), Some(at)) = (self.idle_timeout, self.idle_check_at)
            && at <= now
        {
            for (token, client) in &self.clients {
                let idle = now.duration_since(client.last_active);
                if idle >= limit && client.replies.waiting() == 0 && !client.carries_floods {
                    self.to_close
                        .push((*token, format!("idle for {} s", idle.as_secs())));
                }
            }
            self.idle_check_at = Some(now + limit.min(Duration::from_secs(1)));
        }
    }

    /// Writes everything queued this turn: links first, so a flood leaves before the reply
    /// to the IAMAT that caused it (SPEC §2), then clients.
    fn flush_writes(&mut self) {
        for i in std::mem::take(&mut self.herd.overflowed) {
            let name = self.herd.links[i].name.clone();
            self.link_failed(i, &format!("{name} is not reading: queue over its limit"));
        }
        for i in std::mem::take(&mut self.herd.want_connect) {
            self.start_connect(i);
        }
        for i in 0..self.herd.links.len() {
            self.flush_link(i);
        }
        self.release_held();
        let registry = self.poll.registry();
        for token in std::mem::take(&mut self.dirty) {
            let Some(client) = self.clients.get_mut(&token) else {
                continue;
            };
            if client.replies_can_wait() {
                continue;
            }
            match client.io.flush(registry) {
                Ok(0) => {}
                Ok(n) => {
                    mark!("write", conn = token.0, bytes = n);
                    trace!(
                        self.trace,
                        "conn {}: wrote {n} bytes, {} left{}",
                        token.0,
                        client.io.backlog(),
                        if client.io.backlog() > 0 {
                            " (WRITABLE armed)"
                        } else {
                            ""
                        }
                    )
                }
                Err(e) => {
                    self.to_close.push((token, format!("write error: {e}")));
                    continue;
                }
            }
            if client.finished() {
                if client.lingering_discard {
                    // Send FIN after the reply, then drain what the client still sends.
                    if !self.lingering.iter().any(|&(t, _)| t == token) {
                        let _ = client.io.stream.shutdown(Shutdown::Write);
                        self.lingering.push((token, Instant::now() + LINGER));
                        read_later(&mut self.more_to_read, client, token);
                    }
                } else {
                    self.to_close.push((token, "done".into()));
                }
            } else if client.paused
                && client.io.backlog() <= OUT_HIGH / 2
                && client.replies.waiting() <= MAX_WAITING / 2
            {
                client.paused = false;
                read_later(&mut self.more_to_read, client, token);
            }
        }
    }

    /// Flow control, after the links were written: the herd stays congested until every
    /// live link is down to [`LINK_LOW`](crate::peer::LINK_LOW) (or becomes congested when
    /// one is over [`LINK_HIGH`](crate::peer::LINK_HIGH)); once it is not, the clients held
    /// back are read again (next turn, through `more_to_read`).
    fn release_held(&mut self) {
        let links = &self.herd.links;
        self.herd.congested = if self.herd.congested {
            !links.iter().all(PeerLink::drained)
        } else {
            links.iter().any(PeerLink::congested)
        };
        self.herd_pressure();
        self.held.append(&mut self.held_served);
        if self.herd.holds_clients() || self.held.is_empty() {
            return;
        }
        trace!(
            self.trace,
            "links drained: {} held clients read again",
            self.held.len()
        );
        for token in std::mem::take(&mut self.held) {
            if let Some(client) = self.clients.get_mut(&token) {
                client.held = false;
                self.read_later(token);
            }
        }
    }

    /// Flow control across the herd (see `pressure`): tells the neighbours when this server
    /// falls behind (one of its links congested), or its floods come late, or neither any
    /// more; notes whether another server's notice holds or paces our clients, and sets the
    /// pace for this turn. A notice is written at once: it is about the queues being long.
    fn herd_pressure(&mut self) {
        let now = Instant::now();
        // A server reading a catch-up is behind by design: it does not hold the herd.
        if std::mem::take(&mut self.herd.catch_up_seen) {
            self.catch_up_at = Some(now);
        }
        let catching_up = self.catch_up_at.is_some_and(|t| now < t + CATCH_UP_QUIET);
        let late = self.herd.lateness.judge(now) && !catching_up;
        let strain = match (self.herd.congested && !catching_up, late) {
            (true, _) => Strain::Behind,
            (false, true) => Strain::Late,
            (false, false) => Strain::Clear,
        };
        if let Some(notice) = self.herd.pressure.own(strain, now) {
            log::info!("{}", crate::protocol::Shown(&notice));
            trace!(
                self.trace,
                "herd pressure: {}",
                crate::protocol::Shown(&notice)
            );
            self.herd.send_notice(&notice);
            for i in 0..self.herd.links.len() {
                if !self.herd.links[i].one_line() {
                    self.write_link(i);
                }
            }
        }
        self.herd.note_pressure(now);
        self.herd.pace.turn(now, self.herd.others_late || late);
    }

    /// Removes and deregisters the connections marked for closing during this turn.
    fn reap_closed(&mut self) {
        for (token, why) in std::mem::take(&mut self.to_close) {
            if let Some(mut client) = self.clients.remove(&token) {
                trace!(self.trace, "conn {}: deregistered and closed", token.0);
                mark!("close", conn = token.0, why = &why);
                client.io.deregister(self.poll.registry());
                log::info!("conn {} from {} closed: {why}", token.0, client.peer);
            }
        }
    }

    /// Empties the self-pipe; the stop flag it announces is checked by the loop.
    fn drain_signal_pipe(&mut self) {
        let mut buf = [0u8; 64];
        while let Ok(n) = self.signal_pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
    }

    // ---- links to neighbours ----

    /// Which neighbour link a token belongs to, if any (a linear scan: a server has a
    /// handful of neighbours).
    fn link_index(&self, token: Token) -> Option<usize> {
        self.herd
            .links
            .iter()
            .position(|l| l.token() == Some(token))
    }

    /// Which neighbour link has a draining connection with this token, if any.
    fn draining_link(&self, token: Token) -> Option<usize> {
        let drains = |l: &PeerLink| l.draining.iter().any(|d| d.transport.token == token);
        self.herd.links.iter().position(drains)
    }

    /// An event on a draining one-line connection: read until the neighbour's close.
    fn drain_event(&mut self, i: usize, token: Token) {
        let Some(mut d) = self.herd.links[i].take_draining(token) else {
            return;
        };
        let mut scratch = [0u8; 512];
        let how = loop {
            match d.transport.read(&mut scratch) {
                Ok(Some(0)) => break "handled",
                Ok(Some(_)) => {}
                Ok(None) => {
                    // Not closed yet: keep waiting.
                    self.herd.links[i].draining.push(d);
                    return;
                }
                Err(_) => break "handled (reset)",
            }
        };
        self.drained(i, d, how);
    }

    /// A draining connection is over: close it, and report its line's ticket done.
    fn drained(&mut self, i: usize, mut d: Draining, how: &str) {
        d.transport.deregister(self.poll.registry());
        log::info!(
            "link to {}: update written, connection closed ({how})",
            self.herd.links[i].name
        );
        self.herd
            .flood_done(d.ticket, &mut self.clients, &mut self.dirty);
    }

    /// Starts a nonblocking connect to neighbour `i`.
    fn start_connect(&mut self, i: usize) {
        let token = self.new_token();
        let link = &mut self.herd.links[i];
        if link.token().is_some() {
            return;
        }
        let result = TcpStream::connect(link.addr).and_then(|stream| {
            // A flood is one short line that must leave now, not wait for Nagle's
            // algorithm to batch it with the next one.
            stream.set_nodelay(true)?;
            // Flow control: a queue the kernel holds is a queue we cannot see or bound.
            limit_kernel_buffers(&stream);
            // The kernel checks on the neighbour while the link is quiet (see `liveness`).
            liveness::watch(&stream)?;
            Transport::register(stream, token, self.poll.registry(), true)
        });
        match result {
            Ok(transport) => {
                log::debug!("link to {}: connecting (conn {})", link.name, token.0);
                mark!("connect", link = &link.name, conn = token.0);
                link.connecting(transport);
            }
            // A refusal can come straight back from connect().
            Err(e) => {
                let why = format!("connect to {} failed: {e}", link.addr);
                self.link_failed(i, &why);
            }
        }
    }

    /// An event on a link's socket.
    fn link_event(&mut self, i: usize, readable: bool) {
        let link = &mut self.herd.links[i];
        match &mut link.state {
            LinkState::Connecting(_) => self.connect_outcome(i),
            LinkState::Up(t) if readable => {
                // Neighbours do not answer AT lines; read only to notice a close.
                let mut scratch = [0u8; 4096];
                let why = loop {
                    match t.read(&mut scratch) {
                        Ok(Some(0)) => break "closed by the neighbour".to_string(),
                        Ok(Some(n)) => log::debug!("link to {}: ignored {n} bytes", link.name),
                        Ok(None) => return,
                        Err(e) => break format!("read error: {e}"),
                    }
                };
                // Many course servers read one chunk, handle its first line and close.
                // Noticed once, such a neighbour is sent one line per connection (SPEC §3).
                if link.closed_by_neighbour(Instant::now()) {
                    log::info!(
                        "link to {0}: {0} closes every connection after one read; sending it \
                         one line per connection from now on",
                        link.name
                    );
                }
                self.link_failed(i, &why);
            }
            _ => {}
        }
    }

    /// Looks at how a link's nonblocking connect went: failed, up, or still under way.
    fn connect_outcome(&mut self, i: usize) {
        let link = &mut self.herd.links[i];
        let LinkState::Connecting(t) = &mut link.state else {
            return;
        };
        // take_error() exactly once, first: a second call returns None and would make a
        // refusal look like success.
        match t.stream.take_error() {
            Ok(Some(e)) | Err(e) => {
                let why = format!("connect to {} failed: {e}", link.addr);
                return self.link_failed(i, &why);
            }
            Ok(None) => {}
        }
        match t.stream.peer_addr() {
            Ok(_) => {
                let token = t.token;
                link.connected(&self.herd.store);
                log::info!(
                    "link to {} up (conn {}){}",
                    link.name,
                    token.0,
                    if link.syncing() {
                        ", sending what we know"
                    } else {
                        ""
                    }
                );
            }
            // Not connected yet (a spurious event, or not done): wait for the next event.
            Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
            Err(e) => {
                let why = format!("connect to {} failed: {e}", link.addr);
                self.link_failed(i, &why);
            }
        }
    }

    /// Writes a link's queue. A one-line link may go through several connections in one
    /// turn: on loopback a nonblocking connect has usually finished by the time `connect`
    /// returns, so its line is written at once instead of a loop turn later (at most
    /// [`ONE_LINE_BURST`] per turn, so one busy link cannot hold up the loop).
    fn flush_link(&mut self, i: usize) {
        for _ in 0..ONE_LINE_BURST {
            if matches!(self.herd.links[i].state, LinkState::Connecting(_)) {
                self.connect_outcome(i);
            }
            if !self.write_link(i) {
                return;
            }
        }
    }

    /// Writes a link's queue (topping it up from a catch-up); in one-line mode, once the line
    /// is written, closes the connection (or leaves it draining until the neighbour closes
    /// it, when someone waits for the line: see [`Herd::iamat`]) and starts the next
    /// connection if more lines wait. Returns true when it started one.
    fn write_link(&mut self, i: usize) -> bool {
        let registry = self.poll.registry();
        let link = &mut self.herd.links[i];
        if !matches!(link.state, LinkState::Up(_)) {
            return false;
        }
        let now = Instant::now();
        let mut wrote_total = 0;
        loop {
            link.refill(&self.herd.store);
            let LinkState::Up(t) = &mut link.state else {
                return false;
            };
            if t.backlog() == 0 {
                break;
            }
            let (wrote, left) = match t.flush(registry) {
                Ok(n) => (n, t.backlog()),
                Err(e) => {
                    self.link_failed(i, &format!("write error: {e}"));
                    return false;
                }
            };
            trace!(
                self.trace,
                "link to {}: wrote {wrote} bytes, {left} left", link.name
            );
            mark!("write", link = &link.name, bytes = wrote, left = left);
            wrote_total += wrote;
            // The rest of a catch-up waits for the next turn (see `next_timeout`).
            if left > 0 || !link.syncing() || wrote_total >= SYNC_TURN {
                break;
            }
        }
        // For flow control: how much the kernel holds, and is the neighbour taking it?
        link.note_progress(now, wrote_total);
        let done = match link.finish_update(now) {
            None => return false,
            Some(Finished::Draining) => {
                log::debug!(
                    "link to {}: update written, waiting for its close",
                    link.name
                );
                None
            }
            Some(Finished::Closed(mut t, ticket)) => {
                t.deregister(registry);
                log::info!("link to {}: update written, connection closed", link.name);
                ticket
            }
        };
        let more = link.wants_connect();
        if let Some(ticket) = done {
            self.herd
                .flood_done(ticket, &mut self.clients, &mut self.dirty);
        }
        if more {
            self.start_connect(i);
        }
        more
    }

    /// A link failed or dropped: close its socket and schedule a retry. Held IAMAT replies
    /// waiting for its lines are released: a neighbour that cannot be reached is done.
    fn link_failed(&mut self, i: usize, why: &str) {
        let link = &mut self.herd.links[i];
        if let Some(t) = link.transport() {
            t.deregister(self.poll.registry());
        }
        let (delay, given_up) = link.failed(Instant::now());
        let retry = match (delay, link.mode) {
            (None, _) => "the next flood tries again".to_string(),
            (Some(d), LinkMode::Persistent) => format!("retry in {} ms", d.as_millis()),
            (Some(d), LinkMode::PerUpdate) => format!("probe in {} ms", d.as_millis()),
        };
        log::info!("link to {} down: {why}; {retry}", link.name);
        mark!("link down", link = &link.name, why = why);
        for ticket in given_up {
            self.herd
                .flood_done(ticket, &mut self.clients, &mut self.dirty);
        }
    }
}

/// Puts `client` on `more_to_read` unless it is there already (see [`Server::read_later`]).
fn read_later(more_to_read: &mut Vec<Token>, client: &mut Client, token: Token) {
    if !client.read_later {
        client.read_later = true;
        more_to_read.push(token);
    }
}

/// True for the accept errors that mean "no file descriptors (or memory) left right now".
fn out_of_descriptors(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Kernel buffer (each way) of a socket that carries floods. The kernel's defaults grow to
/// megabytes: a flood line behind them waits hundreds of milliseconds. Flow control counts
/// the sending kernel's share ([`PeerLink::note_progress`]), but not what sits read into
/// the neighbour's kernel, unread; small buffers keep that small. Not too small: a catch-up
/// goes through the same socket, and with 32 KiB a restarted neighbour took 7.4 s to learn
/// a million clients (4.4 s with 128 KiB); with 8 KiB, delayed ACKs stalled the links.
const LINK_KERNEL_BUFFER: libc::c_int = 128 << 10;

/// Shrinks a link socket's send and receive buffers to [`LINK_KERNEL_BUFFER`]. Best effort:
/// a refusal leaves the kernel's sizes, which costs latency, not correctness.
fn limit_kernel_buffers(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    for option in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
        let fd = stream.as_raw_fd();
        let _ = liveness::set(fd, libc::SOL_SOCKET, option, LINK_KERNEL_BUFFER);
    }
}
