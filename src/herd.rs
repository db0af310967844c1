//! What a line *does* (SPEC §2): the herd's application logic, Twisted's `lineReceived`.
//!
//! [`Herd`] holds this server's state — its name, the newest location of every client, the
//! links to its neighbours, the lookups in flight — and turns each received line into
//! replies and floods. It writes nothing to a socket: replies go into a connection's output
//! buffer and floods into the links' buffers, and the reactor (`server`) writes them out.

use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::Token;

use crate::auth::{Admission, Refusal};
use crate::client::{Client, Replies};
use crate::json::{self, Prepared};
use crate::logging::trace;
use crate::pace::Pace;
use crate::peer::{PeerLink, Sent, Ticket};
use crate::places::{Provider, Query};
use crate::pressure::{Lateness, Pressure, Strain};
use crate::protocol::{self, Command, Report, Shown, Skew, Timestamp};
use crate::store::{Seed, Update};
use crate::timeline;
use crate::workers::{Done, Job, LookupKey, Pool};

/// A WHATSAT waiting for its lookup.
#[derive(Debug)]
struct Waiter {
    /// The connection that asked.
    token: Token,
    /// Its place in that connection's replies.
    seq: u64,
    /// How many places it wants.
    bound: usize,
    /// The client's AT line when it asked: the first line of the reply.
    at_line: Rc<[u8]>,
}

/// How long a WHATSAT about a client nobody has reported waits for its location to arrive
/// before it is answered `? ` (see [`Herd::defer_whatsat`]).
pub const UNKNOWN_GRACE: Duration = Duration::from_millis(100);

/// A WHATSAT put off to the end of the loop turn (and, if its client is not known yet, a
/// moment longer).
#[derive(Debug)]
struct Unknown {
    token: Token,
    seq: u64,
    client: Vec<u8>,
    radius: protocol::Radius,
    bound: usize,
    /// The line as received, for the `? ` answer.
    line: Vec<u8>,
    deadline: Instant,
}

/// Where a line came from, which decides whether it may be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A connection someone opened to us: every line gets its reply.
    Accepted,
    /// A link we opened to a neighbour: AT lines are taken, nothing is ever answered (so two
    /// servers can never bounce `? ` lines at each other).
    OwnLink,
}

/// This server's share of the herd.
pub struct Herd {
    /// This server's name, as it appears in the AT lines it produces.
    pub name: String,
    /// The newest location of every client.
    pub store: crate::store::Locations,
    /// One link per neighbour.
    pub links: Vec<PeerLink>,
    /// Links that need a connect started (per-update mode); the reactor starts them.
    pub want_connect: Vec<usize>,
    /// Links whose queue overflowed; the reactor drops them.
    pub overflowed: Vec<usize>,
    /// A live link's queue is over its bound: clients wait until the links drain (flow
    /// control; set here as floods are queued, cleared by the reactor after writing).
    pub congested: bool,
    /// The herd's pressure: whether this server said it is busy, and which others are
    /// (`BUSY` notices, see `pressure`).
    pub pressure: Pressure,
    /// Another server's `BUSY` notice holds our clients (refreshed each turn).
    pub others_busy: bool,
    /// Another server's notice says its floods come late: our clients are paced.
    pub others_late: bool,
    /// How fast our clients' lines are taken while floods come late somewhere (see `pace`).
    pub pace: Pace,
    /// A catch-up line (`sync=1`) was handled since the reactor last looked.
    pub catch_up_seen: bool,
    /// When the bytes being handled were read (set by the reactor after each read): the
    /// time a catch-up line came, for its end ([`owed::QUIET`](crate::owed::QUIET)). Read
    /// per line, the clock was a tenth of a restarted server's time.
    pub read_at: Instant,
    /// The same, by the real-time clock (nanoseconds since the epoch): a flood's age.
    pub read_wall: i128,
    /// How late floods reach this server (see `pressure::Lateness`).
    pub lateness: Lateness,
    /// Lookups in flight, and who waits for each: identical lookups share one.
    in_flight: HashMap<LookupKey, Vec<Waiter>>,
    /// WHATSATs read this turn, and those about clients not known yet, waiting a moment.
    unknown: Vec<Unknown>,
    /// Replies held until their flood lines are handled (one-line links), by ticket.
    held: HashMap<Ticket, HeldReply>,
    /// The next ticket to hand out.
    next_ticket: Ticket,
    provider: Arc<dyn Provider>,
    pool: Pool,
    /// `--trace`: say what each line was parsed as, and what was queued where.
    trace: bool,
    /// What is refused: unsigned AT lines, reports from the future (`--herd-key`,
    /// `--max-future`).
    admission: Admission,
    /// What [`Herd::learn`] did with the last line ("flood to Parker, Powell"), for its log
    /// record; one buffer, reused.
    fate: String,
}

/// What a handled line showed of the connection it came on (see [`Herd::handle_line`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Came {
    /// Nothing: a client's line, or an invalid one.
    Other,
    /// A valid AT or `BUSY` line: the connection is a neighbour's link, and `Some(i)` when
    /// the line's `via=` named our neighbour `i` (a `BUSY` notice names none).
    Flood(Option<usize>),
}

impl Herd {
    /// A herd member with no known locations.
    pub fn new(
        name: String,
        links: Vec<PeerLink>,
        provider: Arc<dyn Provider>,
        pool: Pool,
        admission: Admission,
        trace: bool,
    ) -> Herd {
        Herd {
            pressure: Pressure::new(&name),
            name,
            store: crate::store::Locations::new(),
            links,
            want_connect: Vec::new(),
            overflowed: Vec::new(),
            congested: false,
            others_busy: false,
            others_late: false,
            pace: Pace::default(),
            catch_up_seen: false,
            read_at: Instant::now(),
            read_wall: crate::protocol::Timestamp::now().as_nanos(),
            lateness: Lateness::default(),
            in_flight: HashMap::new(),
            unknown: Vec::new(),
            held: HashMap::new(),
            next_ticket: 0,
            provider,
            pool,
            trace,
            admission,
            fate: String::new(),
        }
    }

    /// Handles one received line (without its line ending). Replies go to `replies`/`out`.
    /// Returns what the line showed of its connection: a valid AT or `BUSY` line comes from a
    /// neighbour's link.
    pub fn handle_line(
        &mut self,
        token: Token,
        origin: Origin,
        line: &[u8],
        replies: &mut Replies,
        out: &mut Vec<u8>,
    ) -> Came {
        if protocol::is_blank(line) {
            return Came::Other;
        }
        let command = protocol::parse(line);
        // An AT line's record is written once it is handled, with what became of it (one
        // record per line: the log is most of a busy server's work).
        if !matches!(command, Some(Command::At { .. })) {
            log::info!("conn {} < {}", token.0, Shown(line));
        }
        trace!(
            self.trace,
            "conn {}: parsed as {}",
            token.0,
            match &command {
                Some(Command::IAmAt(_)) => "IAMAT",
                Some(Command::At { .. }) => "AT",
                Some(Command::WhatsAt { .. }) => "WHATSAT",
                Some(Command::Busy { .. }) => "BUSY",
                None => "invalid",
            }
        );
        match command {
            Some(Command::IAmAt(report)) if self.admission.too_far_ahead(report.when) => {
                log::warn!("conn {}: IAMAT time too far in the future", token.0);
                self.invalid(token, line, replies, out);
            }
            Some(Command::IAmAt(report)) => self.iamat(token, origin, &report, replies, out),
            Some(Command::At {
                report,
                line: at,
                via,
                tag,
                sync,
                seed,
                ..
            }) => {
                if let Some(why) = self.admission.refuse_at(&at, tag, report.when) {
                    log::warn!("conn {} < {}: rejected: {why}", token.0, Shown(line));
                    // Answered only on a connection someone opened to us, and only when it
                    // is a stranger's forgery; a link's line from the future is just dropped.
                    if origin == Origin::Accepted && why == Refusal::NoValidTag {
                        self.invalid(token, line, replies, out);
                    }
                    return Came::Other;
                }
                // An AT gets no reply; if it is news, it goes on to every neighbour but the
                // one that sent it. A `via=` field names that neighbour, and shows it reads
                // the field itself.
                let from =
                    via.and_then(|name| self.links.iter().position(|l| l.name.as_bytes() == name));
                if let Some(i) = from {
                    self.links[i].speaks_via = true;
                }
                timeline::flood_in(&self.name, &at, via);
                // When it goes on over one-line links, the connection that brought it stays
                // open (an empty reply held) until those copies are handled: the sender,
                // waiting for our close, learns that the line went on (see `Herd::iamat`).
                let ticket = (origin == Origin::Accepted).then_some(self.next_ticket);
                // The first line of a catch-up says how big it is: room for it all at once
                // (growing the store a doubling at a time rehashes it again and again). And
                // with nothing stored yet, this server takes the sender's hash key, to store
                // the catch-up in the order it comes (see `store::Seed`); only from a
                // neighbour that named itself.
                if let Some(size) = sync
                    && size > 1
                {
                    if let (Some(seed), Some(f)) = (seed.and_then(Seed::parse), from)
                        && self.store.adopt(seed)
                    {
                        log::info!("store: hashing with {}'s key", self.links[f].name);
                    }
                    self.store.make_room(size);
                }
                // How old the flood is (a catch-up's lines are old by design): copies that
                // took a longer way count too, but only the least age of an interval does.
                if sync.is_none()
                    && let Some((origin, began)) = crate::protocol::flood_began(&at, report.when)
                {
                    self.lateness.seen(origin, self.read_wall - began);
                }
                // A catch-up line that is news is passed on as part of the catch-up.
                self.catch_up_seen |= sync.is_some();
                let waiting = self.learn(&report, &at, from, ticket, sync.is_some());
                // A line of a neighbour's own catch-up may be its last (see `owed`).
                if let (Some(size), Some(f)) = (sync, from) {
                    self.links[f].catch_up_line(size, self.read_at);
                }
                log::info!("conn {} < {}{}", token.0, Shown(line), Fate(&self.fate));
                if waiting > 0 {
                    let seq = replies.reserve();
                    self.hold_reply(token, seq, Vec::new(), waiting);
                }
                return Came::Flood(from);
            }
            Some(Command::Busy {
                server,
                seq,
                level,
                tag,
            }) => {
                let strain = Strain::from_digit(level);
                // Only from a connection someone opened to us (a neighbour's link); never
                // answered, so a server that does not know the word costs nothing.
                if origin != Origin::Accepted {
                    return Came::Other;
                }
                let name = String::from_utf8_lossy(server);
                let notice = crate::pressure::format_notice(&name, seq, strain);
                if self.admission.refuse_notice(&notice, tag) {
                    log::warn!(
                        "conn {}: BUSY notice without the herd's tag ignored",
                        token.0
                    );
                    return Came::Other;
                }
                let now = Instant::now();
                if self.pressure.heard(server, seq, strain, now) {
                    self.send_notice(&notice);
                }
                self.note_pressure(now);
                return Came::Flood(None);
            }
            Some(Command::WhatsAt {
                client,
                radius,
                bound,
            }) if origin == Origin::Accepted => {
                let seq = replies.reserve();
                self.defer_whatsat(token, seq, client, radius, bound, line);
            }
            _ if origin == Origin::Accepted => self.invalid(token, line, replies, out),
            _ => log::warn!(
                "conn {}: ignored a line from a neighbour we connected to",
                token.0
            ),
        }
        Came::Other
    }

    /// IAMAT: answer with a fresh AT line; store and flood it if it is news. The flood is
    /// queued before the reply, so it is written first (`server::flush_writes` writes links
    /// before clients). On one-line links (per-update mode) a flood line needs a connect
    /// first, which ends in a later loop turn: there the reply is *held* until every such
    /// link reports the line handled: the neighbour closed the connection after reading it,
    /// or could not be reached ([`Herd::flood_done`]). A proxy-herd neighbour closes only once
    /// its own copies onward are handled in turn, so when the client reads its reply, every
    /// server the flood can reach has applied it, or has it waiting on a connection it
    /// accepted before the client's next one.
    fn iamat(
        &mut self,
        token: Token,
        origin: Origin,
        report: &Report<'_>,
        replies: &mut Replies,
        out: &mut Vec<u8>,
    ) {
        let skew = Skew::between(Timestamp::now(), report.when);
        let mut at = protocol::format_at(&self.name, skew, report);
        if origin != Origin::Accepted {
            self.learn(report, &at, None, None, false);
            return;
        }
        let waiting = self.learn(report, &at, None, Some(self.next_ticket), false);
        log::info!("conn {} > {}{}", token.0, Shown(&at), Fate(&self.fate));
        at.push(b'\n');
        if waiting == 0 {
            replies.push(out, &at);
            return;
        }
        let seq = replies.reserve();
        trace!(
            self.trace,
            "conn {}: reply held until {waiting} flood connections are handled", token.0
        );
        self.hold_reply(token, seq, at, waiting);
    }

    /// Holds a reply (its place `seq` reserved) under the next ticket, which `waiting`
    /// one-line links took with the flood line.
    fn hold_reply(&mut self, token: Token, seq: u64, reply: Vec<u8>, waiting: usize) {
        let held = HeldReply {
            token,
            seq,
            reply,
            waiting,
        };
        self.held.insert(self.next_ticket, held);
        self.next_ticket += 1;
    }

    /// True when the catch-up that `link` is sending us waits its turn: another neighbour's,
    /// begun earlier, is still going on. A restarted server is caught up by every neighbour
    /// at once, each sending all it knows, and mostly the same clients: read side by side,
    /// the server holds them all only once it has read nearly all of both. Read one after
    /// the other, it holds them all after the first, and the rest is mostly lines it drops
    /// as not newer. The one waiting is still read, a trickle a pass (see
    /// `Server::client_readable`): links are always read, and it carries floods too.
    pub fn waits_its_turn(&self, link: Option<usize>) -> bool {
        let Some(mine) = link.and_then(|i| self.links[i].catching_us_up_since()) else {
            return false;
        };
        self.links
            .iter()
            .filter_map(PeerLink::catching_us_up_since)
            .any(|began| began < mine)
    }

    /// True while clients must wait: a link of ours is congested, another server said it is
    /// behind, or the pace set while floods come late allows no more lines yet (flow
    /// control).
    pub fn holds_clients(&self) -> bool {
        self.congested || self.others_busy || !self.pace.has_room()
    }

    /// Why clients wait now (see [`Herd::holds_clients`]), for the trace.
    pub fn why_held(&self) -> &'static str {
        if self.congested || self.others_busy {
            "until the links drain"
        } else {
            "by the pace"
        }
    }

    /// Notes whether another server's `BUSY` notice holds or slows our clients now, and logs
    /// when that changes.
    pub fn note_pressure(&mut self, now: Instant) {
        let holder = self.pressure.holder(now);
        match (holder, self.others_busy) {
            (Some(name), false) => log::info!("clients held: {} is behind", Shown(name)),
            (None, true) => log::info!("clients read again: the herd has caught up"),
            _ => {}
        }
        self.others_busy = holder.is_some();
        let slower = self.pressure.slower(now);
        match (slower, self.others_late) {
            (Some(name), false) => log::info!("clients paced: floods reach {} late", Shown(name)),
            (None, true) => log::info!("clients no longer paced: floods are on time"),
            _ => {}
        }
        self.others_late = slower.is_some();
    }

    /// Puts a `BUSY` notice (ours, or one passed on) at the front of every link to a
    /// proxy-herd neighbour (see `pressure`).
    pub fn send_notice(&mut self, notice: &[u8]) {
        for link in &mut self.links {
            link.notice(notice);
        }
    }

    /// A flood line of a held reply is handled by its neighbour (or cannot be delivered).
    /// When it was the last one, the reply is released.
    pub fn flood_done(
        &mut self,
        ticket: Ticket,
        clients: &mut HashMap<Token, Client>,
        touched: &mut Vec<Token>,
    ) {
        let Some(held) = self.held.get_mut(&ticket) else {
            return;
        };
        held.waiting -= 1;
        if held.waiting > 0 {
            return;
        }
        let Some(held) = self.held.remove(&ticket) else {
            return;
        };
        if let Some(c) = clients.get_mut(&held.token) {
            c.replies.fill(c.io.out_mut(), held.seq, held.reply);
            touched.push(held.token);
        }
    }

    /// Stores an AT line if it is newer than what is known, and floods it to every
    /// neighbour except `from`, the one it came from. An AT that is not newer stops here:
    /// that is what ends a flood on a cycle. What became of the line is left in `self.fate`
    /// for the caller's log record. Returns how many one-line links took `ticket` with the
    /// line (and will report it done, see [`Herd::flood_done`]). `sync`: the line came in a
    /// catch-up, and goes on marked as such, except to a neighbour that is catching us up
    /// itself, which it waits for (see `owed`).
    fn learn(
        &mut self,
        report: &Report<'_>,
        at: &[u8],
        from: Option<usize>,
        ticket: Option<Ticket>,
        sync: bool,
    ) -> usize {
        self.fate.clear();
        // The client's hash, found once: for the store and for what is held back.
        let key = self.store.key(report.client);
        // A line of a neighbour's catch-up at least as new as what we know shows that the
        // neighbour has it: nothing is held back for it (see `owed`).
        let shown = |links: &mut Vec<PeerLink>| {
            if let (true, Some(f)) = (sync, from) {
                links[f].shown(key, report.client);
            }
        };
        let line = match self.store.update(key, report, at) {
            Update::Stored(line) => line,
            other => {
                if other == Update::Same {
                    shown(&mut self.links);
                }
                self.fate.push_str("not newer");
                trace!(
                    self.trace,
                    "not newer than what we know: stored nothing, flooded nothing"
                );
                return 0;
            }
        };
        shown(&mut self.links);
        let mut taken = 0;
        let logging = log::log_enabled!(log::Level::Info);
        for (i, link) in self.links.iter_mut().enumerate() {
            if Some(i) == from {
                continue;
            }
            // A neighbour catching us up itself may well have this line (see `owed`).
            if sync && link.holds_back() && link.hold_back(key, report.client, line.clone()) {
                if logging {
                    let fate = &mut self.fate;
                    fate.push_str(if fate.is_empty() {
                        "held back from "
                    } else {
                        ", held back from "
                    });
                    fate.push_str(&link.name);
                }
                continue;
            }
            let before = link.queued();
            let sent = link.send(&line, ticket, sync);
            let via = link.speaks_via && !link.one_line();
            timeline::flood_out(&self.name, &link.name, &line, &sent, via);
            self.congested |= link.congested();
            if logging {
                let fate = &mut self.fate;
                fate.push_str(if fate.is_empty() { "flood to " } else { ", " });
                fate.push_str(&link.name);
                fate.push_str(match sent {
                    Sent::Queued => "",
                    Sent::Held => " (new connection)",
                    Sent::Dropped => " (link down: sent with the catch-up)",
                    Sent::Overflow => " (not reading: link dropped)",
                });
            }
            if sent == Sent::Queued {
                trace!(
                    self.trace,
                    "queued {} bytes for {}",
                    link.queued() - before,
                    link.name
                );
            }
            match sent {
                Sent::Held => {
                    taken += usize::from(ticket.is_some());
                    if !self.want_connect.contains(&i) {
                        self.want_connect.push(i);
                    }
                }
                Sent::Overflow if !self.overflowed.contains(&i) => self.overflowed.push(i),
                _ => {}
            }
        }
        taken
    }

    /// WHATSAT for a known client: join a lookup already in flight for the same place, or
    /// start one. The reply's place in line is held until the lookup is done.
    #[allow(clippy::too_many_arguments)]
    fn whatsat(
        &mut self,
        token: Token,
        seq: u64,
        client: &[u8],
        radius: &protocol::Radius,
        bound: usize,
        replies: &mut Replies,
        out: &mut Vec<u8>,
    ) {
        let Some(record) = self.store.get(client) else {
            return;
        };
        // Stored lines were checked when they came in, so this cannot fail.
        let Some(coords) = record.coords() else {
            return;
        };
        let (lat_text, lng_text) = record.lat_lng_text();
        let query = Query {
            lat: coords.lat,
            lng: coords.lng,
            lat_text,
            lng_text,
            radius_m: radius.km * 1000.0,
            radius_m_text: radius.metres_text.clone(),
            max_results: self.provider.fetch_bound(bound),
        };
        let waiter = Waiter {
            token,
            seq,
            bound,
            at_line: record.line.clone(),
        };
        let key = LookupKey::of(&query);
        if let Some(waiters) = self.in_flight.get_mut(&key) {
            log::debug!(
                "conn {}: joins a lookup in flight ({} waiting)",
                token.0,
                waiters.len()
            );
            waiters.push(waiter);
            return;
        }
        let job = Job {
            key: key.clone(),
            query,
        };
        // Traced before the hand-off: once submitted, a worker may log its lookup at once.
        trace!(
            self.trace,
            "conn {}: lookup queued for the workers", token.0
        );
        if self.pool.submit(job) {
            self.in_flight.insert(key, vec![waiter]);
        } else {
            log::warn!("conn {}: lookup queue full, answering busy", token.0);
            let body = json::prepare(&json::error_body(
                "OVER_QUERY_LIMIT",
                "server busy: too many places lookups waiting; try again later",
            ));
            let reply = whatsat_reply(&waiter, &body);
            log_whatsat_reply(&waiter, "OVER_QUERY_LIMIT", &reply);
            replies.fill(out, waiter.seq, reply);
        }
    }

    /// Puts a WHATSAT off until every line read in this loop turn has been handled
    /// ([`Herd::recheck_unknown`] runs after the turn's reads): a flood that arrived in the
    /// same turn as the WHATSAT, on a connection accepted earlier, is applied first, whatever
    /// order the events came in.
    ///
    /// A WHATSAT about a client nobody has reported *yet* waits longer. The grading scripts
    /// send a WHATSAT to a server two hops away the moment the IAMAT's reply arrives; the
    /// flood is written before that reply, but on a busy machine it may still be on its way.
    /// So the answer `? ` waits up to [`UNKNOWN_GRACE`] for the location to arrive.
    fn defer_whatsat(
        &mut self,
        token: Token,
        seq: u64,
        client: &[u8],
        radius: protocol::Radius,
        bound: usize,
        line: &[u8],
    ) {
        trace!(
            self.trace,
            "conn {}: WHATSAT put off to the end of the turn", token.0
        );
        self.unknown.push(Unknown {
            token,
            seq,
            client: client.to_vec(),
            radius,
            bound,
            line: line.to_vec(),
            deadline: Instant::now() + UNKNOWN_GRACE,
        });
    }

    /// Goes back to the WHATSATs put off (after the turn's reads, see
    /// [`Herd::defer_whatsat`]): those whose client is known start their lookup; those past
    /// their deadline get `? `; the rest wait for their client a little longer.
    pub fn recheck_unknown(
        &mut self,
        clients: &mut HashMap<Token, Client>,
        touched: &mut Vec<Token>,
    ) {
        if self.unknown.is_empty() {
            return;
        }
        let now = Instant::now();
        for w in std::mem::take(&mut self.unknown) {
            let known = self.store.get(&w.client).is_some();
            if !known && w.deadline > now {
                self.unknown.push(w);
                continue;
            }
            let Some(c) = clients.get_mut(&w.token) else {
                continue;
            };
            if known {
                self.whatsat(
                    w.token,
                    w.seq,
                    &w.client,
                    &w.radius,
                    w.bound,
                    &mut c.replies,
                    c.io.out_mut(),
                );
            } else {
                let reply = protocol::format_invalid(&w.line);
                log::info!("conn {} > {}", w.token.0, Shown(&reply[..reply.len() - 1]));
                c.replies.fill(c.io.out_mut(), w.seq, reply);
            }
            touched.push(w.token);
        }
    }

    /// When the earliest WHATSAT about an unknown client must be answered.
    pub fn unknown_deadline(&self) -> Option<Instant> {
        self.unknown.iter().map(|w| w.deadline).min()
    }

    /// Answers an invalid line with `? ` and the line.
    fn invalid(&mut self, token: Token, line: &[u8], replies: &mut Replies, out: &mut Vec<u8>) {
        let reply = protocol::format_invalid(line);
        log::info!("conn {} > {}", token.0, Shown(&reply[..reply.len() - 1]));
        replies.push(out, &reply);
    }

    /// Every lookup result that has come back from the workers, without waiting.
    pub fn finished_lookups(&self) -> Vec<Done> {
        self.pool.finished().collect()
    }

    /// A lookup is done: every WHATSAT that waited for it gets its own cut of the results.
    /// Results for connections that have gone are dropped. Returns the connections that got
    /// output.
    pub fn lookup_done(
        &mut self,
        done: Done,
        clients: &mut HashMap<Token, Client>,
        touched: &mut Vec<Token>,
    ) {
        let Some(waiters) = self.in_flight.remove(&done.key) else {
            return;
        };
        for waiter in waiters {
            let Some(client) = clients.get_mut(&waiter.token) else {
                log::info!("conn {}: gone before its places came back", waiter.token.0);
                continue;
            };
            let reply = whatsat_reply(&waiter, &done.body);
            log_whatsat_reply(&waiter, &done.status, &reply);
            client.replies.fill(client.io.out_mut(), waiter.seq, reply);
            touched.push(waiter.token);
        }
    }

    /// How many lookups are in flight (for the trace and tests).
    pub fn lookups_in_flight(&self) -> usize {
        self.in_flight.len()
    }
}

/// An IAMAT reply (or the empty reply that keeps an AT's connection open) held until the
/// flood lines it caused are handled (see [`Herd::iamat`]).
#[derive(Debug)]
struct HeldReply {
    /// The connection that asked.
    token: Token,
    /// Its place in that connection's replies.
    seq: u64,
    /// The AT line, with its `\n` (nothing for an AT passed on).
    reply: Vec<u8>,
    /// One-line links whose copy is not handled yet.
    waiting: usize,
}

/// A WHATSAT reply: the stored AT line, the JSON cut to the bound, and a blank line.
fn whatsat_reply(waiter: &Waiter, body: &Prepared) -> Vec<u8> {
    let mut reply = Vec::with_capacity(waiter.at_line.len() + 4096);
    reply.extend_from_slice(&waiter.at_line);
    reply.push(b'\n');
    json::compose(body, waiter.bound, &mut reply);
    reply.extend_from_slice(b"\n\n");
    reply
}

/// Logs a WHATSAT reply: its first line, and the size of the JSON (the JSON itself only at
/// debug level: a full page of places per request would drown the log).
fn log_whatsat_reply(waiter: &Waiter, status: &str, reply: &[u8]) {
    log::info!(
        "conn {} > {} + places JSON ({status}, {} bytes)",
        waiter.token.0,
        Shown(&waiter.at_line),
        reply.len() - waiter.at_line.len() - 1
    );
    log::debug!(
        "conn {} > {}",
        waiter.token.0,
        Shown(&reply[waiter.at_line.len() + 1..])
    );
}

/// The end of a handled line's log record: ` => flood to Parker, Powell`, or nothing.
struct Fate<'a>(&'a str);

impl std::fmt::Display for Fate<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return Ok(());
        }
        f.write_str(" => ")?;
        f.write_str(self.0)
    }
}
