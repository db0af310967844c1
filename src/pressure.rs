//! Backpressure across the herd: `BUSY` notices, so that the edge holds its clients while a
//! server further in cannot keep up.
//!
//! Flow control (see `peer`) holds a server's clients while one of *its* links is congested.
//! That reaches no further than one hop: Powell, two hops from the edge, has no clients to
//! hold, and when it falls behind the queues toward it grow while the edge goes on accepting.
//! So a server that is behind says so to the whole herd:
//!
//! ```text
//! BUSY Powell 1764662400123456 1      Powell is behind (1) or has caught up (0)
//! ```
//!
//! The second field is the notice's number: a server's notices are numbered upward
//! (microseconds since the epoch, so a restarted server's come after its old ones). A notice
//! is passed on to every neighbour, like an AT line, unless it is not newer than the last one
//! from that server: that ends it on a cycle. Every server holds its clients while any
//! server is behind (and paces them while any is late, below). A busy server repeats its
//! notice every [`REPEAT`]; a server that heard nothing more for [`LAPSE`] takes it as
//! clear (its neighbour died, or the link carrying its all-clear dropped). And whatever it
//! is told, a server holds its clients for one busy server at most [`MAX_HOLD`] in a row: a
//! neighbour that is behind for longer is a slow neighbour, which the stall check of its own
//! links deals with, and a forged notice cannot hold the herd for good.
//!
//! Notices go only to proxy-herd neighbours on persistent links, those that showed they read
//! extra fields (`via=`): a course server would answer `? `. With a herd key they are signed
//! like AT lines, and unsigned ones are ignored. They go at the front of a link's queue:
//! they are about that queue being long.
//!
//! What counts as busy is the server's to say ([`Server`](crate::server::Server) decides): a
//! link's queue over its bound; but never while it reads a catch-up (lines marked `sync=1`),
//! which is a flood of old lines by design. (A server once also called itself busy when one
//! read from a link found 8 KiB or more waiting. Under load that was true every few
//! milliseconds at every server, and the herd spent its time holding and releasing: floods
//! waited for the holds, p99 tens of milliseconds.)
//!
//! A server can also be *late* without any queue of its own being long: its floods come
//! late, because queues or busy servers on the way hold them up ([`Lateness`]). Then its
//! notices say `2` instead of `1`, and the herd *paces* its clients instead of holding them
//! (see `pace`): a hold is all or nothing, and over fifty servers lateness comes and goes
//! every few milliseconds somewhere; each hold would drain the herd and each release send a
//! burst. A server behind and late says `1`.
//!
//! ```text
//! BUSY Powell 1764662400123457 2      Powell's floods come late
//! ```

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A busy server repeats its notice this often.
pub const REPEAT: Duration = Duration::from_millis(100);
/// A busy notice comes at least this long after the server's last notice (an all-clear
/// goes at once): a server that flips faster says so once the gap is over. In a herd of
/// fifty, every notice is a line on every link, and servers flipping many thousand times a
/// second would bury the herd in notices.
pub const GAP: Duration = Duration::from_millis(1);
/// A busy notice not repeated within this long has lapsed.
pub const LAPSE: Duration = Duration::from_millis(350);
/// The longest one server's notices hold this server's clients without a break.
pub const MAX_HOLD: Duration = Duration::from_secs(1);

/// At most this many servers' notices are remembered, and names longer than
/// [`MAX_NAME`] are ignored: notices come from the network, and a stranger sending a
/// million made-up names must not grow the map without bound.
pub const MAX_SERVERS: usize = 1024;
/// See [`MAX_SERVERS`].
pub const MAX_NAME: usize = 64;

/// What this server knows of the herd's pressure: its own, and every busy server's.
#[derive(Debug)]
pub struct Pressure {
    /// This server's name.
    me: String,
    /// What this server said last, and when.
    said: Option<(Strain, Instant)>,
    /// What it was when last asked (which it says once [`GAP`] is over), and when.
    busy: (Strain, Instant),
    /// The number of this server's last notice.
    seq: u64,
    /// Other servers' last notices, by name.
    others: HashMap<Vec<u8>, Heard>,
}

/// The last notice heard from one server.
#[derive(Debug)]
struct Heard {
    seq: u64,
    /// What it said.
    strain: Strain,
    /// Behind or late since when (`None`: clear).
    since: Option<Instant>,
    /// When the last busy notice lapses.
    until: Instant,
}

impl Pressure {
    /// Nothing heard, nothing said.
    pub fn new(me: &str) -> Pressure {
        Pressure {
            me: me.to_string(),
            said: None,
            busy: (Strain::Clear, Instant::now()),
            seq: 0,
            others: HashMap::new(),
        }
    }

    /// This server is behind, late, or neither now. Returns the notice to send, if one is
    /// due: on a change, and every [`REPEAT`] while behind or late.
    pub fn own(&mut self, strain: Strain, now: Instant) -> Option<Vec<u8>> {
        let busy = strain != Strain::Clear;
        self.busy = (strain, now);
        let due = match self.said {
            None => busy,
            // An all-clear goes at once (the herd waits for it); a busy notice no sooner
            // than GAP after the last notice, and again every REPEAT.
            Some((was, at)) => {
                (was != strain && (!busy || now >= at + GAP)) || (busy && now >= at + REPEAT)
            }
        };
        if !due {
            return None;
        }
        self.said = Some((strain, now));
        let micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        self.seq = micros.max(self.seq + 1);
        Some(format_notice(&self.me, self.seq, strain))
    }

    /// A notice from `server` came in. Returns true when it is news (pass it on).
    pub fn heard(&mut self, server: &[u8], seq: u64, strain: Strain, now: Instant) -> bool {
        let busy = strain != Strain::Clear;
        let known = self.others.get(server);
        let room = known.is_some() || self.others.len() < MAX_SERVERS;
        if server == self.me.as_bytes() || server.len() > MAX_NAME || !room {
            return false;
        }
        if known.is_some_and(|h| h.seq >= seq) {
            return false;
        }
        let since = match known.and_then(|h| h.since) {
            Some(since) if busy => Some(since),
            _ => busy.then_some(now),
        };
        let heard = Heard {
            seq,
            strain,
            since,
            until: now + LAPSE,
        };
        self.others.insert(server.to_vec(), heard);
        true
    }

    /// A server that said it is behind, whose notice holds this server's clients now, if
    /// any.
    pub fn holder(&self, now: Instant) -> Option<&[u8]> {
        self.saying(Strain::Behind, now)
    }

    /// A server that said its floods come late, whose notice slows this server's clients
    /// now (see `pace`), if any.
    pub fn slower(&self, now: Instant) -> Option<&[u8]> {
        self.saying(Strain::Late, now)
    }

    /// A server whose last notice said `strain` and still counts now, if any.
    fn saying(&self, strain: Strain, now: Instant) -> Option<&[u8]> {
        (self.others.iter())
            .find(|(_, h)| h.strain == strain && h.holds(now))
            .map(|(name, _)| name.as_slice())
    }

    /// When the answer of [`Pressure::holder`] may change by itself, or this
    /// server's notice is due again. Only what is still ahead of `now` counts for the
    /// holder: a notice that lapsed stays in the map (its number still matters), and
    /// waking for it again and again would spin the loop.
    pub fn deadline(&self, now: Instant) -> Option<Instant> {
        // A change not said yet is said once the gap is over. A busy server repeats itself,
        // and looks again every gap: being behind is a measure of the last reads, and with
        // its neighbours held, nothing else may come to wake it for the all-clear.
        let (busy, asked) = self.busy;
        let repeat = match self.said {
            Some((said, at)) if said != busy => Some(at + GAP),
            Some((Strain::Behind | Strain::Late, at)) => Some((at + REPEAT).min(asked + GAP)),
            _ => None,
        };
        let lapses = self.others.values().filter_map(|h| {
            let ends = h.until.min(h.since? + MAX_HOLD);
            (ends > now).then_some(ends)
        });
        repeat.into_iter().chain(lapses).min()
    }
}

impl Heard {
    fn holds(&self, now: Instant) -> bool {
        self.since
            .is_some_and(|since| now < self.until && now < since + MAX_HOLD)
    }
}

/// How long floods take to reach this server, beyond the least they have taken lately:
/// the herd's queues, measured where it matters (a flood's age is what a WHATSAT here
/// answers with). A server whose floods come late says so ([`Strain::Late`]), and the edge
/// paces its clients, so that it takes updates only as fast as the herd spreads them.
///
/// A flood's age is the time now less when its origin received the IAMAT (the client's
/// time plus the AT line's skew). Servers' clocks differ by a constant, so the age is
/// taken over the least age seen from the same origin in the last [`BASE_WINDOW`] or the
/// one before (LEDBAT's base delay): what is left is queueing. Within each [`INTERVAL`]
/// the least of those counts (CoDel's idea: a queue that never empties in an interval is
/// standing, a burst that drains is not); over [`TARGET`], the server is late.
#[derive(Debug)]
pub struct Lateness {
    /// Per origin server, the least age seen (ns) in this base window and the last.
    base: HashMap<Vec<u8>, (i128, i128)>,
    /// When this base window began.
    window_since: Instant,
    /// The least queueing over [`TARGET`] seen this interval (ns), if any flood came.
    least: Option<i128>,
    /// How many floods came this interval.
    count: usize,
    /// When this interval began.
    interval_since: Instant,
    /// How many intervals in a row the floods came late.
    late_intervals: u32,
}

/// See [`Lateness`].
pub const INTERVAL: Duration = Duration::from_millis(10);
/// Queueing a flood may meet on its way before it is late. With CoDel's default target,
/// 5 ms, a herd of fifty on two cores under load had a flood p99 of 42–66 ms in six runs;
/// with 3 ms, 31–46 ms in four, taking a third as many IAMATs a second or fewer. With 1 ms (or
/// the base itself), it slowed to a few hundred IAMATs a second: there, a flood's way is
/// milliseconds of waiting for the scheduler even on a quiet herd.
pub const TARGET: Duration = Duration::from_millis(3);
/// Fewer floods than this in an interval are no queue, whatever their age: on a quiet
/// herd an age is the scheduler's noise (fifty servers on two cores), and a server that
/// said it is busy for it slowed the herd for nothing.
pub const MIN_FLOODS: usize = 16;
/// Late this many intervals in a row: a standing queue. One late interval is as often
/// the scheduler's noise: on fifty servers sharing two cores, each was late in one
/// interval of thirty at a few hundred IAMATs a second, so one of the fifty nearly always
/// was, and the herd slowed to nothing.
pub const LATE_INTERVALS: u32 = 3;
/// See [`Lateness`].
pub const BASE_WINDOW: Duration = Duration::from_secs(10);

impl Default for Lateness {
    fn default() -> Self {
        let now = Instant::now();
        Lateness {
            base: HashMap::new(),
            window_since: now,
            least: None,
            count: 0,
            interval_since: now,
            late_intervals: 0,
        }
    }
}

impl Lateness {
    /// A flood line (not a catch-up's) came from `origin`, `age` nanoseconds after it
    /// began there.
    pub fn seen(&mut self, origin: &[u8], age: i128) {
        // One lookup per line (this is every AT line's path); a new origin is inserted.
        let room = origin.len() <= MAX_NAME && self.base.len() < MAX_SERVERS;
        let least = match self.base.get_mut(origin) {
            Some(base) => {
                base.0 = base.0.min(age);
                base.0.min(base.1)
            }
            None if room => {
                self.base.insert(origin.to_vec(), (age, i128::MAX));
                age
            }
            None => return,
        };
        let queued = age - least - TARGET.as_nanos() as i128;
        self.least = Some(self.least.map_or(queued, |l| l.min(queued)));
        self.count += 1;
    }

    /// Whether floods come late, judged once per [`INTERVAL`] (an interval with no flood
    /// is not late).
    pub fn judge(&mut self, now: Instant) -> bool {
        if now >= self.interval_since + INTERVAL {
            let queued = self.least.take().filter(|_| self.count >= MIN_FLOODS);
            self.late_intervals = match queued {
                Some(q) if q > 0 => self.late_intervals.saturating_add(1),
                _ => 0,
            };
            self.count = 0;
            self.interval_since = now;
        }
        if now >= self.window_since + BASE_WINDOW {
            for b in self.base.values_mut() {
                *b = (i128::MAX, b.0);
            }
            self.window_since = now;
        }
        self.late_intervals >= LATE_INTERVALS
    }
}

/// What a server says of itself in its notices (the fourth field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strain {
    /// `0`: neither of the others (any more).
    Clear,
    /// `1`: a link's queue is over its bound; the herd holds its clients.
    Behind,
    /// `2`: floods reach this server late (see [`Lateness`]); the herd slows its clients
    /// (see `pace`).
    Late,
}

impl Strain {
    /// The notice's digit for it.
    pub fn digit(self) -> u8 {
        match self {
            Strain::Clear => 0,
            Strain::Behind => 1,
            Strain::Late => 2,
        }
    }

    /// From a notice's digit (`parse` checked it is 0, 1 or 2).
    pub fn from_digit(digit: u8) -> Strain {
        match digit {
            1 => Strain::Behind,
            2 => Strain::Late,
            _ => Strain::Clear,
        }
    }
}

/// `BUSY NAME SEQ 0|1|2`, without a line ending.
pub fn format_notice(server: &str, seq: u64, strain: Strain) -> Vec<u8> {
    format!("BUSY {server} {seq} {}", strain.digit()).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_notices_on_change_and_repeat_while_busy() {
        let mut p = Pressure::new("Powell");
        let t = Instant::now();
        assert_eq!(
            p.own(Strain::Clear, t),
            None,
            "clear from the start: nothing to say"
        );
        let first = p.own(Strain::Behind, t).expect("busy: say so");
        assert!(first.starts_with(b"BUSY Powell ") && first.ends_with(b" 1"));
        assert_eq!(p.own(Strain::Behind, t + REPEAT / 2), None);
        let again = p.own(Strain::Behind, t + REPEAT).expect("repeated");
        assert!(
            again > first || again.len() > first.len(),
            "numbered upward"
        );
        assert_eq!(
            p.deadline(t),
            Some(t + REPEAT + GAP),
            "look again while busy"
        );
        let clear = p
            .own(Strain::Clear, t + REPEAT)
            .expect("clear: said at once");
        assert!(clear.ends_with(b" 0"));
        assert_eq!(
            p.own(Strain::Behind, t + REPEAT),
            None,
            "busy again: too soon after the last"
        );
        assert_eq!(
            p.deadline(t),
            Some(t + REPEAT + GAP),
            "said once the gap is over"
        );
        assert!(p.own(Strain::Behind, t + REPEAT + GAP).is_some());
        assert!(p.own(Strain::Clear, t + REPEAT + GAP).is_some());
        assert_eq!(p.own(Strain::Clear, t + REPEAT * 5), None);
        assert_eq!(p.deadline(t), None);
    }

    #[test]
    fn others_hold_until_clear_lapse_or_max_hold() {
        let mut p = Pressure::new("Hamilton");
        let t = Instant::now();
        assert!(p.heard(b"Powell", 10, Strain::Behind, t));
        assert!(
            !p.heard(b"Powell", 10, Strain::Behind, t),
            "not newer: not passed on"
        );
        assert!(!p.heard(b"Powell", 9, Strain::Clear, t), "older: ignored");
        assert!(p.holder(t).is_some());
        // Clear.
        assert!(p.heard(b"Powell", 11, Strain::Clear, t));
        assert!(p.holder(t).is_none());
        // Busy, never repeated: it lapses, and nothing is left to wake for.
        assert!(p.heard(b"Powell", 12, Strain::Behind, t));
        assert_eq!(p.deadline(t), Some(t + LAPSE));
        assert!(p.holder(t + LAPSE).is_none());
        assert_eq!(p.deadline(t + LAPSE), None);
        // Busy and repeated for ever: held at most MAX_HOLD from the first busy notice.
        let mut seq = 13;
        let mut now = t;
        while now < t + MAX_HOLD {
            assert!(p.heard(b"Powell", seq, Strain::Behind, now));
            assert_eq!(p.holder(now).is_some(), now < t + MAX_HOLD, "{now:?}");
            seq += 1;
            now += REPEAT;
        }
        assert!(p.holder(t + MAX_HOLD).is_none());
        // Our own name coming back is not news.
        assert!(!p.heard(b"Hamilton", 99, Strain::Behind, t));
        // Made-up names: bounded in length and in number.
        assert!(!p.heard(&[b'x'; MAX_NAME + 1], 1, Strain::Behind, t));
        for i in 0..MAX_SERVERS * 2 {
            p.heard(format!("s{i}").as_bytes(), 1, Strain::Clear, t);
        }
        assert_eq!(p.others.len(), MAX_SERVERS);
        assert!(
            p.heard(b"Powell", 1000, Strain::Clear, t),
            "a known server is still heard"
        );
    }

    #[test]
    fn a_late_server_says_so_and_slows_others_without_holding_them() {
        let mut p = Pressure::new("Powell");
        let t = Instant::now();
        let late = p.own(Strain::Late, t).expect("late: say so");
        assert!(late.starts_with(b"BUSY Powell ") && late.ends_with(b" 2"));
        let behind = p.own(Strain::Behind, t + GAP).expect("a change is said");
        assert!(behind.ends_with(b" 1"));

        let mut h = Pressure::new("Hamilton");
        assert!(h.heard(b"Powell", 10, Strain::Late, t));
        assert_eq!(h.slower(t), Some(&b"Powell"[..]));
        assert_eq!(h.holder(t), None, "late slows; it does not hold");
        assert!(h.heard(b"Powell", 11, Strain::Behind, t));
        assert_eq!((h.slower(t), h.holder(t)), (None, Some(&b"Powell"[..])));
        assert!(h.heard(b"Powell", 12, Strain::Late, t));
        assert!(h.slower(t + LAPSE).is_none(), "a late notice lapses too");
    }

    const MS: i128 = 1_000_000;

    /// Judges `l` at the end of each of `intervals` intervals from `t`, in each of which
    /// `floods` floods from Alford came `age` nanoseconds old.
    fn intervals(l: &mut Lateness, t: Instant, n: u32, floods: usize, age: i128) -> Vec<bool> {
        (1..=n)
            .map(|i| {
                for _ in 0..floods {
                    l.seen(b"Alford", age);
                }
                l.judge(t + INTERVAL * i)
            })
            .collect()
    }

    #[test]
    fn floods_are_late_when_a_queue_stands_for_three_intervals() {
        let target = TARGET.as_nanos() as i128;
        let mut l = Lateness::default();
        let t = l.interval_since;
        // Alford's clock is 40 ms behind ours: every age has it in. The least age seen is the
        // base, so on time is on time, whatever the clocks.
        assert_eq!(
            intervals(&mut l, t, 4, MIN_FLOODS, 40 * MS),
            [false; 4],
            "on time"
        );
        let t = t + INTERVAL * 4;
        // Later than the base by less than the target: not late.
        let under = 40 * MS + target - MS;
        assert_eq!(intervals(&mut l, t, 4, MIN_FLOODS, under), [false; 4]);
        let t = t + INTERVAL * 4;
        // Later by more: late from the third interval in a row on.
        let over = 40 * MS + target + MS;
        assert_eq!(
            intervals(&mut l, t, 4, MIN_FLOODS, over),
            [false, false, true, true]
        );
        let t = t + INTERVAL * 4;
        // One flood on time in an interval: the queue emptied, not late.
        l.seen(b"Alford", 40 * MS);
        assert_eq!(intervals(&mut l, t, 1, MIN_FLOODS, over), [false]);
        let t = t + INTERVAL;
        // A few late floods are no queue: the scheduler's noise on a quiet herd.
        assert_eq!(intervals(&mut l, t, 4, MIN_FLOODS - 1, over), [false; 4]);
        // The base is forgotten after two windows: a clock set back is on time again.
        let t = t + BASE_WINDOW * 2 + INTERVAL * 5;
        l.judge(t);
        let t = t + BASE_WINDOW;
        l.judge(t);
        assert_eq!(intervals(&mut l, t, 4, MIN_FLOODS, over), [false; 4]);
        // Made-up origins: bounded in length and in number.
        l.seen(&[b'x'; MAX_NAME + 1], 0);
        for i in 0..MAX_SERVERS * 2 {
            l.seen(format!("s{i}").as_bytes(), 0);
        }
        assert_eq!(l.base.len(), MAX_SERVERS);
    }
}
