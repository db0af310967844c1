//! # A guided tour of the reactor
//!
//! This page follows one `IAMAT` from `accept` to flood to reply, and one `WHATSAT` through
//! the worker pool and back, naming the function that does each step. Then it explains the
//! rules the loop keeps, and maps Twisted's concepts onto this code. The traces at the end
//! were written by the binary itself with `--trace` (and `tests/tour.rs` checks that a fresh
//! trace still shows every step quoted here, so the two cannot drift apart). The last section
//! shows the same story as a picture: the timeline of the whole herd, open in Perfetto.
//!
//! ## The picture
//!
//! ```text
//!                     one process = one server of the herd
//!  ┌──────────────────────────────── loop thread ─────────────────────────────────┐
//!  │  Server::run                                                                  │
//!  │    ┌─> poll_events ── epoll_wait: sockets, the Waker, the signal pipe, timers  │
//!  │    │   dispatch_events ─┬─ LISTENER ─> accept_ready ─> add_client             │
//!  │    │                    ├─ conn N  ──> client_readable ─> handle_input        │
//!  │    │                    │                 └─> Herd::handle_line (IAMAT/AT/…)  │
//!  │    │                    └─ link    ──> link_event (connect done? closed?)     │
//!  │    │   read_more        (clients' lines left for later: fair passes)          │
//!  │    │   drain_lookups ───────────────< results channel <──────────┐           │
//!  │    │   run_timers       (link retries, accept retry, idle)        │           │
//!  │    │   flush_writes     (links first, then clients)               │           │
//!  │    │   reap_closed      (closes happen here, never mid-batch)     │           │
//!  │    └── logging::flush   (one write(2) per turn for the log)       │           │
//!  └───────────────────────────────┬──────────────────────────────────┼───────────┘
//!                  Job (bounded    │ sync_channel)            Done +  │ Waker::wake
//!  ┌───────────────────────────────v──────────────────────────────────┴───────────┐
//!  │ worker threads (places-0..N): Provider::nearby ─> json::prepare              │
//!  │ own no socket, no server state; may block on a file or an HTTP request       │
//!  └──────────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! ## The life of one IAMAT
//!
//! 1. **Accept.** The client connects; the listener's token [`LISTENER`] comes back from
//!    `epoll_wait` readable. [`Server::accept_ready`] calls `accept` until `WouldBlock` and
//!    [`Server::add_client`] gives each new socket a fresh token from a counter
//!    ([`Server::new_token`]), registers it for READABLE, and stores a [`Client`] under it.
//! 2. **Read.** The client writes its line; its token comes back readable.
//!    [`Server::client_readable`] reads into one buffer shared by all connections and
//!    appends what came to the connection's own [`LineBuffer`] ([`LineBuffer::extend`]),
//!    until `WouldBlock` (or a budget: see *Fair service* below).
//! 3. **Frame.** [`Server::handle_input`] takes complete lines out with
//!    [`LineBuffer::next_line`]; at end of input, [`LineBuffer::finish`] hands over the last,
//!    unterminated one (the grading scripts send no final newline).
//! 4. **Parse.** [`Herd::handle_line`] logs the line and calls [`protocol::parse`], a pure
//!    function: the reactor never sees command syntax.
//! 5. **Reply and flood.** [`Herd::iamat`] computes the skew ([`Skew::between`], integer
//!    nanoseconds) and the AT line ([`protocol::format_at`]). [`Herd::learn`] asks
//!    [`Locations::update`] whether it is newer; if so it offers the line to every neighbour
//!    with [`PeerLink::send`], which appends it to that link's output buffer (with a
//!    `via=Alford` field for neighbours that read it: see *No echoes* below). Only then does
//!    the reply go into the client's output through [`Replies::push`]. Nothing is written yet.
//! 6. **Write.** At the end of the turn [`Server::flush_writes`] writes the links first
//!    ([`Server::flush_link`]), then the clients, each with [`Transport::flush`]. So the flood
//!    is on the wire before the reply: a client that asks a server two hops away right after
//!    its reply finds the location already there. Under load one turn may handle thousands of
//!    lines; a link with [`EARLY_FLUSH`] (4 KiB) queued is written at once, mid-turn, by
//!    [`Server::flush_early`], so the neighbours start on the first lines while this server
//!    reads the rest (a pipeline, not batches a turn long). Replies still wait for the end.
//! 7. **Close.** The client had half-closed; once its reply is written, [`Client::finished`]
//!    is true, the token goes on the close list, and [`Server::reap_closed`] deregisters and
//!    drops the socket after the batch.
//! 8. **The next server.** At a neighbour the AT line arrives on an accepted connection and
//!    takes steps 2–6 without a reply, flooding to every neighbour *but the one named in
//!    `via=`*. A server that already has it ([`Locations::update`] says "not newer") stores
//!    nothing and floods nothing: that is what ends the flood on the herd's cycle. The log
//!    record of each handled line says what became of it (`=> flood to Bolden, Hamilton`,
//!    `=> not newer`).
//!
//! ## The life of one WHATSAT
//!
//! 1. Steps 1–4 as above. [`Herd::whatsat`] finds the client's record, reserves the reply's
//!    place in line ([`Replies::reserve`]) and builds a [`Query`].
//! 2. **Coalesce.** A [`LookupKey`] (location, radius, how many results) names the lookup. If
//!    one is in flight already, this WHATSAT joins its waiters; if not, [`Pool::submit`] puts a
//!    [`Job`] on the bounded queue (full: the reply is an `OVER_QUERY_LIMIT` at once).
//! 3. **Work.** A worker thread ([`workers`]) takes the job, calls [`Provider::nearby`] (the
//!    offline grid search, or an HTTP request to Google), prints the body once
//!    ([`json::prepare`]), sends a [`Done`] over the channel and calls `Waker::wake`.
//! 4. **Wake.** The loop's `epoll_wait` returns with the [`WAKER`] token. Wakes coalesce, so
//!    [`Server::drain_lookups`] takes *every* result from the channel, not one per wake.
//! 5. **Answer.** [`Herd::lookup_done`] gives each waiter its own cut of the results
//!    ([`json::compose`]) behind the stored AT line, and [`Replies::fill`] releases every
//!    reply that is now at the front of the line. A waiter whose connection has closed is
//!    skipped: its token is never reused, so the result cannot reach a stranger.
//! 6. Write and close as steps 6–7 above.
//!
//! ## The rules, and why
//!
//! **Edge-triggered readiness; drain to `WouldBlock`.** mio registers sockets with
//! `EPOLLET`: `epoll_wait` reports a socket when it *becomes* ready, not while it *is* ready.
//! A handler that reads once and returns, leaving bytes in the kernel, is never told about
//! them again. So every handler loops until the kernel says `WouldBlock`: `accept_ready`,
//! `client_readable` (or it puts the token on `more_to_read` when its budget runs out, and
//! the next poll does not sleep), `Transport::flush`.
//!
//! **Fair service: short passes, short turns.** A client that pipelines sends hundreds of
//! lines at once; a phone sends one. If each ready client had all its lines handled when its
//! turn came, the phone's line would wait for every line the pipeliners sent before it: under
//! the bench's load (64 connections, 16 lines each in flight) a turn was ~1,000 lines, 3 ms,
//! before the location even left this server. So [`Server::client_readable`] handles at most
//! [`LINES_PER_PASS`] (2) of a client's lines and puts it on `more_to_read`;
//! [`Server::read_more`] goes round those clients, a pass each, until it has handled
//! [`TURN_LINES`] (128) lines; then the turn ends (writes, poll with no sleep) and whoever
//! was not reached goes first next turn. A client waits on that list once (`read_later`),
//! and more input from it does not buy it an extra pass: its event is skipped, and what it
//! sent is read when its turn comes. A client that just became ready is handled in the
//! next turn's `dispatch_events`, before the pipeliners' leftovers: it waits for a few hundred
//! lines, not for all of theirs. (The leftovers' budget is their own: if the new events'
//! passes counted against it, a busy turn could leave nothing for a client whose sender
//! waits for its replies, and which so never becomes ready again.) A link's pass is longer,
//! [`LINK_LINES_PER_PASS`] (512): its lines are the herd's work. But not all it brought: a
//! restarted neighbour passing on its catch-up at full speed once held a turn for 10 ms
//! (eight reads of 64 KiB), while this server's clients waited. Writing each client's replies
//! two at a time would multiply the writes (and the pipeliners' reads and writes) by eight:
//! a client with a line still waiting keeps its replies, up to 4 KiB, until a later pass
//! ([`Client::replies_can_wait`]); they waited for its backlog before, so they are no later.
//!
//! **WRITABLE only while bytes wait.** A connected socket is almost always writable. Keeping
//! WRITABLE interest on an idle socket would wake the loop for nothing. [`Transport::flush`]
//! writes what the kernel takes right away and arms WRITABLE only when bytes remain
//! (a slow reader), disarming it once they are gone.
//!
//! **How a nonblocking connect ends.** `TcpStream::connect` returns at once with the connect
//! under way ([`Server::start_connect`]); the socket is registered for WRITABLE. When the
//! connect ends, the socket becomes writable (or errors). [`Server::link_event`] then asks
//! [`Server::connect_outcome`], which calls `take_error()` exactly once (a second call
//! returns `None`, hiding a refusal), and then `peer_addr()`: connected if it has a peer,
//! still connecting if `NotConnected`. Lines flooded meanwhile wait in the link's output
//! buffer. (A one-line link asks at once, without waiting for the event: on loopback the
//! connect has usually finished when `connect` returns.)
//!
//! **Tokens never repeat.** A token is how an event, and a lookup result, find their
//! connection. If a closed connection's token were reused, a late event or a slow lookup's
//! result would land on whoever got the token next. A counter that only goes up makes a late
//! arrival simply miss the map.
//!
//! **Closes wait for the end of the batch.** One `epoll_wait` may return several events for
//! one socket, and a handler may decide to close a connection other events still refer to.
//! Handlers only put tokens on `to_close`; [`Server::reap_closed`] removes them once the
//! batch is done (Redis's `freeClientAsync`, libuv's closing phase).
//!
//! **Replies in request order.** A WHATSAT may take seconds (Google), an IAMAT behind it
//! microseconds. [`Replies`] holds the later reply until the earlier one is filled, so a
//! pipelining client reads its answers in the order it asked.
//!
//! **A flood beats the client, by construction.** The grading scripts send an IAMAT, and the
//! moment its reply arrives, a WHATSAT to a neighbour. With persistent links the flood is
//! written in the same turn as the reply, links first. A per-update link needs a connect
//! first, which ends in a later turn, so there [`Herd::iamat`] *holds* the reply
//! ([`Replies::reserve`]): the flood line goes to the link with a ticket, and
//! [`Herd::flood_done`] releases the reply once every such link reports the line handled.
//! Handled means written, and then the neighbour closed the connection, which a server does
//! once it has read the line ([`Server::drain_event`]); a neighbour that is down is done at
//! once. A neighbour that passes the line on holds the incoming connection open (an empty
//! reply held the same way) until its own copies are handled, so the client's reply comes
//! after the whole herd has the line. On every server, a WHATSAT is put off to the end of
//! the turn ([`Herd::defer_whatsat`]), after every line read in that turn: a flood line and
//! a WHATSAT read in the same turn are applied in that order, whatever order `epoll`
//! reported them in.
//!
//! **Backpressure.** A client that sends faster than it reads has its reading paused while
//! its unsent replies exceed 1 MiB (or it has 1,024 lookups waiting), and resumed when they
//! drain: the server's memory stays bounded and nothing is lost.
//!
//! **No echoes.** A server floods a new line to all its neighbours but the one it came
//! from; in the default herd an IAMAT costs 6 link lines, not 10. The AT line itself does
//! not say who forwarded it, and on 127.0.0.1 every neighbour's connection comes from the
//! same address, so proxy-herd servers append `via=NAME` ([`protocol::VIA`]). Some course
//! servers count fields, so a link adds it only once the neighbour has sent us a `via=` line
//! ([`PeerLink::speaks_via`]). Who starts? Each new persistent link sends its first line
//! twice, plainly and then with `via=`: the copy is not newer, so every server drops it (or
//! answers `? `, which we never read), and a proxy-herd neighbour learns from it that we read
//! the field. Per-update links never carry it: one plain line per connection.
//!
//! **A dead neighbour is noticed by the kernel.** A host that reboots or drops off the
//! network sends no FIN: its neighbours' links to it stay "up", and while the herd is quiet
//! nothing is written that could fail, so a rebooted neighbour was never caught up. Every link
//! socket gets TCP keepalive with short timers and `TCP_USER_TIMEOUT` ([`liveness::watch`]):
//! after 1 s of quiet the kernel probes; a rebooted host answers with a reset, and a vanished
//! one leaves probes or data unacknowledged for 3 s; either way the socket reports an error
//! and the link reconnects with its catch-up, like any failure. Chosen over the others:
//! an *application-level probe* (an empty line now and then) changes the wire protocol and
//! is answered `? ` by some course servers, and still needs a timeout for the host that
//! answers nothing; *treating a neighbour's new inbound connection as the sign* needs to know
//! which neighbour connected, which the source address does not tell (on one machine every
//! server is 127.0.0.1) and a rebooted server with nothing to send never says, and it misses
//! a neighbour that is simply gone. Keepalive needs no timer in the loop and no protocol
//! change, and its probes are answered by the neighbour's kernel, so a busy neighbour is not
//! taken for a dead one. The cost is a 66-byte probe and its answer per quiet connection per
//! second.
//!
//! ## Flow control: the herd takes updates only as fast as it spreads them
//!
//! One server can accept IAMATs faster than the herd can pass them on: each is one line to
//! read at the edge but several line-handlings further in. Without flow control the links'
//! queues grow (to megabytes, in our buffers and the kernel's) and every flood waits behind
//! them: a location took up to a second to cross the herd under load. So:
//!
//! - **Where it pauses.** When a live link's queue passes [`LINK_HIGH`] (32 KiB, about 350
//!   lines) [`Herd::learn`] marks the herd *congested*. Before [`Server::handle_input`]
//!   handles a client's next line it looks: while congested, the client is *held* (not read,
//!   its next line left in its buffer). After the links are written, [`Server::release_held`]
//!   reads the held clients again once every link is back under [`LINK_LOW`], those that got
//!   nothing last time first. TCP does the rest: a client we do not read fills its window and
//!   its writes stop. Twisted's version of the same idea is a transport that calls
//!   `pauseProducing()` on its producer past a high-water mark. The bound is a trade: a
//!   flood waits behind what is queued at every hop, so a smaller one spreads it sooner,
//!   and leaves less to cover a server that the machine pauses for a few milliseconds.
//!   Halved from 64 KiB, it took the bench's flood latency under load from about 3 to 2 ms
//!   (p50), for a fifth of the IAMATs a second (0.77–0.83 × in same-run comparisons).
//! - **Never on links.** A connection that has sent AT lines is a neighbour's, and its lines
//!   are always handled; so is any connection whose next line is an AT (a link that just
//!   connected). Pausing links would deadlock a herd with a cycle (the default herd has one):
//!   every server waiting for the next to read. A server with no clients to hold (Parker)
//!   can still queue faster than a neighbour reads; then only its queue bound protects it.
//! - **Not the sparse clients.** A client with nothing unanswered and one line sent waits
//!   for each answer before it sends more: it is not what fills the links, and held, its
//!   one line waited for the links to drain like the pipeliners' thousands. So up to
//!   [`SPARSE_PER_TURN`] (16) such lines a turn go through while the others are held
//!   ([`Client::sparse`]), as fq_codel serves a sparse flow ahead of the bulk ones; the
//!   bound keeps a crowd of one-line clients from undoing the hold. Under the bench's load
//!   a probe's answer came in 1.2 ms instead of 2.0 (p50; p99 5.8 instead of 8.9).
//! - **The kernel's share.** What the kernel holds is queue too: bytes written to the socket
//!   that the neighbour has not taken. Link sockets ask for 128 KiB each way (Linux gives
//!   twice that), so counting only our buffer hid up to 256 KiB per link that a flood line
//!   sat behind unseen; under the bench's load the flood took twice as long. So
//!   [`PeerLink::note_progress`] asks the kernel once per turn (`SIOCOUTQ`) and flow control
//!   counts both. Nothing wakes us when the kernel's share drains (we wrote everything, so
//!   there is no WRITABLE interest): while congested, the loop looks again every
//!   millisecond ([`Server::next_timeout`]).
//! - **A catch-up is not congestion.** A catch-up ([`PeerLink::refill`]) tops the queue up
//!   only to 8 KiB, under [`LINK_LOW`]: streaming a million locations to a restarted
//!   neighbour does not hold this server's clients for the seconds it takes. Nor does it
//!   take their turns: it reads the store 16,384 records at a time ([`CatchUp`], not a
//!   40 ms copy of a million), and writes at most [`SYNC_TURN`] (256 KiB) a turn; on
//!   loopback the kernel takes megabytes as fast as the neighbour reads, so "write until the
//!   kernel takes no more" could have been the whole catch-up in one turn. A catch-up that
//!   stops at that bound gets no writable event, so the loop polls without sleeping
//!   ([`Server::next_timeout`]). Its first line says how big it is (`sync=1000000`), and
//!   the restarted neighbour makes room for that many clients at once, instead of growing
//!   its store a doubling at a time (each growth rehashes every record: a third of the
//!   time it takes to store a million). It gives the key of its store's hash too
//!   (`seed=…`, [`Seed`]): the lines come in the order of the sender's table, and a
//!   restarted server that hashes with the same key ([`Locations::adopt`]) stores them slot
//!   after slot, where in an order of its own each of a million records landed far from
//!   the last, and waiting for memory was a quarter of its time (2.2 to 1.7 s in the bench).
//! - **Nothing passed on that the neighbour is sending us.** A restarted server is caught
//!   up by all its neighbours at once, and what is news from one would go on to the
//!   others, which are sending it the very same clients: a million lines written, read and
//!   dropped as not newer. So while a neighbour is catching us up, the lines of the other
//!   catch-ups are held back from it ([`owed`], asked in [`Herd::learn`]). Each line of its
//!   own catch-up that is as new as what we know shows that it has the client, and the
//!   line held back is dropped; when its catch-up ends (the number of lines its first line
//!   announced, or a second with none, in [`Server::run_timers`]), what is left goes to it
//!   as a small catch-up of its own ([`PeerLink::catch_up_line`]): only what it lacked.
//! - **One catch-up at a time.** Those catch-ups are mostly the same clients, so read side
//!   by side (512 lines a pass each), the restarted server holds everything only once it
//!   has read nearly all of both: two million lines for a million clients. So the one
//!   that began first is read at full speed and the others get 16 lines a pass
//!   ([`Herd::waits_its_turn`], asked in [`Server::client_readable`]); once the first is
//!   over, the server holds everything, and the rest of the others is mostly lines it
//!   drops as not newer. A trickle, not a stop: links are always read (a cycle of servers
//!   each waiting for the next could stall for good), the waiting link carries its live
//!   floods too, and when the first has nothing to read, passes come fast and the trickle
//!   is a stream. The bench's `scale-restart` went from 5.1 to 2.4 s.
//! - **Across the herd.** Holding clients works only where the clients are. Powell, two
//!   hops from the edge, has none: when it falls behind, the queues toward it grow while
//!   the edge goes on accepting. So a server that is behind says so to the whole herd with
//!   a `BUSY` notice ([`pressure`]), and every server holds its clients until the all-clear.
//!   *Behind* is decided in [`Server::herd_pressure`], once per turn: a link over
//!   [`LINK_HIGH`]. The notice is flooded like an AT line
//!   (numbered, so a cycle ends it), goes to the front of each link's queue
//!   ([`Transport::queue_first`]), and lapses if not repeated: a dead server cannot hold the
//!   herd. A busy server's deadline ([`Pressure::deadline`]) wakes it every millisecond to
//!   look again, because with every client held nothing else may come to wake it. A server
//!   reading a catch-up (its lines carry `sync=1`) is behind by design and says nothing: a
//!   restarted neighbour must not hold the herd for the seconds a million lines take.
//! - **When floods come late: pace, do not hold.** In a herd of fifty on two cores no one
//!   queue need be long for floods to take 40 ms: each waits a little at each of seven
//!   hops for a core among fifty processes. So each server also measures how late its
//!   floods come ([`Lateness`], fed in [`Herd::handle_line`] with the age the line's time
//!   and skew give, judged in [`Server::herd_pressure`]), against the least age seen from
//!   the same origin lately (clocks differ; the difference cancels), and a queue that stands
//!   over 3 ms for 30 ms makes it *late*: a notice with `2` ([`Strain`]). The servers that
//!   hear it do not hold their clients (over fifty servers, lateness is somewhere every few
//!   milliseconds; each hold drained the herd and each release sent a burst) but *pace*
//!   them ([`Pace`], asked in [`Server::handle_input`]): a token bucket whose rate falls by
//!   0.8 while a server is late and climbs back once none is, the way TCP finds the rate a
//!   path takes. The loop sleeps until the next token ([`Pace::next_room`] in
//!   [`Server::next_timeout`]). The herd of fifty under load went from p50 / p99 37 / 83 ms
//!   to 11 / 65 ms in a same-run comparison with a target of 5 ms, taking 4.9k IAMATs a
//!   second instead of 13k; the target is 3 ms since, which kept the p99 at 31–46 ms in
//!   four runs, taking 0.5–2.0k: what it spreads in time.
//!
//! ## Twisted side by side
//!
//! | Twisted | here | what is different, and why |
//! |---|---|---|
//! | `reactor` (`mainLoop`, `doIteration`) | [`Server::run`], [`Server::poll_events`] | the same loop, written out: the steps are methods you can read in order |
//! | `reactor.listenTCP(port, factory)` | `cli::run_server` binds, [`Server::new`] registers [`LISTENER`] | one listener per process; binding comes first so start-up errors come first |
//! | `reactor.connectTCP(host, port, factory)` | [`Server::start_connect`], [`PeerLink`] | the connect is a state (`LinkState::Connecting`), like Twisted's `doConnect`, with retry and backoff built in |
//! | `Factory` / `buildProtocol` | [`Server::add_client`] | no factory object: a new connection is a [`Client`] struct stored under a fresh token |
//! | `Protocol` / `LineReceiver.lineReceived` | [`LineBuffer`] + [`Herd::handle_line`] | the line splitter is pure and capped like `LineOnlyReceiver.MAX_LENGTH`; the handler gets the connection's buffers, not a `self.transport` |
//! | `transport.write` | [`Replies::push`], [`PeerLink::send`], [`Transport::queue`] | append only; the write happens in [`Server::flush_writes`] once per turn (like Redis's `beforeSleep`) |
//! | `registerProducer` / `pauseProducing` / `resumeProducing` | `Client::held`, [`Server::release_held`] | the "producer" is every client at once, paused by the state of the links rather than of its own transport |
//! | `transport.loseConnection` | `Client::input_closed` + [`Client::finished`] | "close after the output is written": stop reading, finish writing, then the reaper closes |
//! | `Deferred` | a [`Replies`] slot + a waiter in `Herd::in_flight` | no callback chain: the result comes back as data ([`Done`]) and is matched by token and sequence number |
//! | `deferToThread` / `callFromThread` | [`Pool::submit`] / channel + `Waker::wake` | the worker never touches server state; the loop drains the whole channel per wake |
//! | `reactor.callLater` | `PeerLink::retry_at`, `accept_retry_at`, `idle_check_at` | no timer heap: the few deadlines are scanned to choose the poll timeout ([`Server::next_timeout`]) |
//!
//! ## A real trace
//!
//! `proxy-herd --herd --trace`, then an IAMAT for another client (so that every link has
//! carried its first line, and its `via=` probe), then `IAMAT kiwi.cs.ucla.edu
//! +34.068930-118.445127 1621464827.959498503` sent to Alford (half-closed, no final
//! newline), then `WHATSAT kiwi.cs.ucla.edu 10 1` sent to Hamilton. Timestamps are cut off;
//! a record carries the time of the loop's last poll or read (see `logging`).
//!
//! Alford: accept, read, parse, flood queued to both neighbours *before* the reply (102
//! bytes: the line and ` via=Alford`), then the writes, links first. Nothing comes back:
//! Parker and Powell do not send the line back where it came from.
//!
//! ```text
//! # Alford.log
//! trace: turn 10: poll(timeout 598623 ms) slept 1003682 us, 1 events
//! trace: event listener: readable
//! conn 8 connected from 127.0.0.1:40426
//! trace: turn 11: poll(timeout 597619 ms) slept 35 us, 1 events
//! trace: event conn 8: readable
//! trace: conn 8: read 65 bytes
//! trace: conn 8: read would block
//! trace: turn 12: poll(timeout 597619 ms) slept 15 us, 1 events
//! trace: event conn 8: readable read-closed
//! trace: conn 8: read end of input
//! conn 8 < IAMAT kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503
//! trace: conn 8: parsed as IAMAT
//! trace: queued 102 bytes for Parker
//! trace: queued 102 bytes for Powell
//! conn 8 > AT Alford +174719903.909206937 kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503 => flood to Parker, Powell
//! trace: link to Parker: wrote 102 bytes, 0 left
//! trace: link to Powell: wrote 102 bytes, 0 left
//! trace: conn 8: wrote 91 bytes, 0 left
//! trace: conn 8: deregistered and closed
//! conn 8 from 127.0.0.1:40426 closed: done
//! ```
//!
//! Parker: the line arrives from Alford, named by `via=`, and goes on to Bolden and Hamilton
//! only. (Bolden gets it from Parker and from Powell; whichever comes second is dropped
//! there as not newer, and the copy Bolden forwards is dropped by the other: the end of the
//! flood on the cycle.)
//!
//! ```text
//! # Parker.log
//! conn 4 < AT Alford +174719903.909206937 kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503 via=Alford => flood to Bolden, Hamilton
//! ```
//!
//! Hamilton: the WHATSAT goes to the workers; the Waker brings the result back in a later
//! turn.
//!
//! ```text
//! # Hamilton.log
//! trace: turn 4: poll(timeout 599043 ms) slept 421091 us, 1 events
//! trace: event listener: readable
//! conn 5 connected from 127.0.0.1:44638
//! trace: turn 5: poll(timeout 598622 ms) slept 1 us, 1 events
//! trace: event conn 5: readable read-closed
//! trace: conn 5: read 29 bytes
//! trace: conn 5: read end of input
//! conn 5 < WHATSAT kiwi.cs.ucla.edu 10 1
//! trace: conn 5: parsed as WHATSAT
//! trace: conn 5: lookup queued for the workers
//! lookup offline at 34.068930,-118.445127 radius 10000 m: OK, 15 results in 0.1 ms
//! trace: turn 6: poll(timeout 598622 ms) slept 205 us, 1 events
//! trace: event waker: readable
//! trace: waker delivered 1 lookup results
//! conn 5 > AT Alford +173850491.593622804 kiwi.cs.ucla.edu +34.068930-118.445127 1621464827.959498503 + places JSON (OK, 414 bytes)
//! trace: conn 5: wrote 505 bytes, 0 left
//! trace: conn 5: deregistered and closed
//! conn 5 from 127.0.0.1:44638 closed: done
//! ```
//!
//! ## The timeline: the same story as a picture
//!
//! The trace above is exact, and it is text: following one line through five files means
//! lining them up by timestamp in your head. `proxy-herd --herd --timeline` draws it instead
//! ([`timeline`]): each server writes `logs/<SERVER>.trace.json` in Chrome's trace-event
//! format, and when the herd stops the five are merged into `logs/herd.trace.json`.
//!
//! **Opening it.** In <https://ui.perfetto.dev>, "Open trace file" (the file is read in the
//! browser, not uploaded); or `chrome://tracing` and "Load". W and S zoom, A and D pan; click
//! a slice to see its arguments and its arrows ("Flow events" in the details pane: click one
//! to jump to the other end).
//!
//! **What is in it.** One process per server, in topology order, each with a `loop` thread
//! and its workers `places-0`..`places-3`. On `loop`, a `poll` slice for each sleep in
//! `epoll_wait` (its arguments: the timeout, how many events it woke with), then a `turn`
//! slice for the work that follows, the steps of [`Server::run`]. Inside a turn, `lines`
//! slices (one connection's lines handled, and how many) and instants: `accept`, `read`
//! (bytes), `flood` (to whom), `write` (bytes, what is left), `close` (why), `connect`,
//! `link down`, `accept retry`. Arrows: `AT` from the turn that queued a flood line to the
//! neighbour's turn that handled it; `lookup` from the WHATSAT's turn to the worker's
//! `lookup` slice, and `result` from there to the turn that delivers it.
//!
//! **What to look for**, with the figures of one run (release build, the default herd on
//! this two-core machine, shared with other work; an IAMAT at Alford first so that every
//! link carries `via=`, then `IAMAT kiwi.cs.ucla.edu ...` at Hamilton and `WHATSAT
//! kiwi.cs.ucla.edu 10 1` at Powell; your figures will differ):
//!
//! - **The loop is mostly asleep.** 41 turns in 3 s across the five servers. A turn's work
//!   took 56 µs at the median (5 to 233 µs); the sleeps in `poll` 1.8 ms at the median and up
//!   to 1.08 s: with nothing due, the loop sleeps until the next timer, not in a spin.
//! - **A flood crossing the herd.** Times from the moment Hamilton queued the line for
//!   Parker. Hamilton's turn writes it to Parker at +22 µs and only then the 85-byte reply to
//!   the client, at +33 µs (links first). Parker handles it at +75 µs and floods it to Alford
//!   and Bolden, not back to Hamilton. Alford handles it at +155 µs and sends it to Powell
//!   only; Powell has it at **+216 µs, three hops, about 70 µs a hop**: 30 to 50 µs of work
//!   in a turn from its read to its writes, and 30 to 50 µs from one server's write to the
//!   next one's read (loopback, and the next process waking up). Powell passes it to Bolden,
//!   which meanwhile got Parker's copy (+277 µs); the two copies that cross on the cycle are
//!   each handled once more, as not newer, and have no arrow out: the end of the flood.
//! - **Where the lookup runs.** Powell's turn reads the WHATSAT (30 bytes) and hands the
//!   lookup to the workers 15 µs later. The `lookup` slice is on `places-0`, not on `loop`:
//!   it starts 81 µs after the hand-off (the worker thread waking) and lasts 213 µs (the
//!   offline grid search and printing the JSON once). Meanwhile the loop sleeps again. The
//!   `result` arrow lands in Powell's next turn, which began 34 µs after the worker finished
//!   (the Waker), and which writes the 564-byte reply 48 µs later and closes the connection.
//!
//! A timeline costs: one branch per hook when off; on, about a hundred bytes and a clock read
//! per event, and each server's file stops at 16 MiB unless `--timeline-max` says otherwise
//! (the README has the measured cost).
//!
//! [`LISTENER`]: crate::server::LISTENER
//! [`WAKER`]: crate::server::WAKER
//! [`Server::run`]: crate::server::Server::run
//! [`Server::new`]: crate::server::Server::new
//! [`Server::poll_events`]: crate::server::Server::poll_events
//! [`Server::next_timeout`]: crate::server::Server::next_timeout
//! [`Server::accept_ready`]: crate::server::Server::accept_ready
//! [`Server::add_client`]: crate::server::Server::add_client
//! [`Server::new_token`]: crate::server::Server::new_token
//! [`Client::replies_can_wait`]: crate::client::Client::replies_can_wait
//! [`LINES_PER_PASS`]: crate::server::LINES_PER_PASS
//! [`LINK_LINES_PER_PASS`]: crate::server::LINK_LINES_PER_PASS
//! [`SYNC_TURN`]: crate::peer::SYNC_TURN
//! [`PeerLink::note_progress`]: crate::peer::PeerLink::note_progress
//! [`CatchUp`]: crate::catchup::CatchUp
//! [`TURN_LINES`]: crate::server::TURN_LINES
//! [`Server::read_more`]: crate::server::Server::read_more
//! [`Server::client_readable`]: crate::server::Server::client_readable
//! [`Server::handle_input`]: crate::server::Server::handle_input
//! [`Server::flush_writes`]: crate::server::Server::flush_writes
//! [`Server::release_held`]: crate::server::Server::release_held
//! [`LINK_HIGH`]: crate::peer::LINK_HIGH
//! [`LINK_LOW`]: crate::peer::LINK_LOW
//! [`LINK_STALL`]: crate::peer::LINK_STALL
//! [`LINK_STALL_BYTES`]: crate::peer::LINK_STALL_BYTES
//! [`PeerLink::speaks_via`]: crate::peer::PeerLink::speaks_via
//! [`protocol::VIA`]: crate::protocol::VIA
//! [`Server::flush_link`]: crate::server::Server::flush_link
//! [`Server::flush_early`]: crate::server::Server::flush_early
//! [`Server::herd_pressure`]: crate::server::Server::herd_pressure
//! [`pressure`]: crate::pressure
//! [`Pressure::deadline`]: crate::pressure::Pressure::deadline
//! [`Lateness`]: crate::pressure::Lateness
//! [`Strain`]: crate::pressure::Strain
//! [`Pace`]: crate::pace::Pace
//! [`Pace::next_room`]: crate::pace::Pace::next_room
//! [`Transport::queue_first`]: crate::transport::Transport::queue_first
//! [`EARLY_FLUSH`]: crate::server::EARLY_FLUSH
//! [`PeerLink::refill`]: crate::peer::PeerLink::refill
//! [`PeerLink::catch_up_line`]: crate::peer::PeerLink::catch_up_line
//! [`owed`]: crate::owed
//! [`Server::run_timers`]: crate::server::Server::run_timers
//! [`Server::reap_closed`]: crate::server::Server::reap_closed
//! [`Server::drain_lookups`]: crate::server::Server::drain_lookups
//! [`Server::start_connect`]: crate::server::Server::start_connect
//! [`Server::client_readable`]: crate::server::Server::client_readable
//! [`Server::link_event`]: crate::server::Server::link_event
//! [`Server::connect_outcome`]: crate::server::Server::connect_outcome
//! [`Server::drain_event`]: crate::server::Server::drain_event
//! [`Client`]: crate::client::Client
//! [`Client::finished`]: crate::client::Client::finished
//! [`Replies`]: crate::client::Replies
//! [`Replies::push`]: crate::client::Replies::push
//! [`Replies::reserve`]: crate::client::Replies::reserve
//! [`Replies::fill`]: crate::client::Replies::fill
//! [`LineBuffer`]: crate::lines::LineBuffer
//! [`LineBuffer::extend`]: crate::lines::LineBuffer::extend
//! [`LineBuffer::next_line`]: crate::lines::LineBuffer::next_line
//! [`LineBuffer::finish`]: crate::lines::LineBuffer::finish
//! [`Herd::handle_line`]: crate::herd::Herd::handle_line
//! [`Herd::iamat`]: crate::herd::Herd::iamat
//! [`Herd::learn`]: crate::herd::Herd::learn
//! [`Herd::waits_its_turn`]: crate::herd::Herd::waits_its_turn
//! [`Herd::whatsat`]: crate::herd::Herd::whatsat
//! [`Herd::flood_done`]: crate::herd::Herd::flood_done
//! [`Herd::defer_whatsat`]: crate::herd::Herd::defer_whatsat
//! [`Herd::lookup_done`]: crate::herd::Herd::lookup_done
//! [`protocol::parse`]: crate::protocol::parse
//! [`protocol::format_at`]: crate::protocol::format_at
//! [`Skew::between`]: crate::protocol::Skew::between
//! [`Locations::update`]: crate::store::Locations::update
//! [`Locations::adopt`]: crate::store::Locations::adopt
//! [`SPARSE_PER_TURN`]: crate::server::SPARSE_PER_TURN
//! [`Client::sparse`]: crate::client::Client::sparse
//! [`Seed`]: crate::store::Seed
//! [`PeerLink`]: crate::peer::PeerLink
//! [`liveness::watch`]: crate::liveness::watch
//! [`PeerLink::send`]: crate::peer::PeerLink::send
//! [`Transport::flush`]: crate::transport::Transport::flush
//! [`Transport::queue`]: crate::transport::Transport::queue
//! [`Query`]: crate::places::Query
//! [`Provider::nearby`]: crate::places::Provider::nearby
//! [`LookupKey`]: crate::workers::LookupKey
//! [`Pool::submit`]: crate::workers::Pool::submit
//! [`Job`]: crate::workers::Job
//! [`Done`]: crate::workers::Done
//! [`workers`]: crate::workers
//! [`timeline`]: crate::timeline
//! [`json::prepare`]: crate::json::prepare
//! [`json::compose`]: crate::json::compose
