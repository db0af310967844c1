//! The edge's pace: how many of its clients' lines a server takes per second while some
//! server's floods come late.
//!
//! A server whose floods come late (see `pressure::Lateness`: a queue of more than 3 ms
//! that stands on their way) says so in a `BUSY … 2` notice. Holding every client until it
//! is on time again, as a server does while one of its *own* links is congested, is all or
//! nothing: the herd drains, sits idle, then takes a burst that fills every queue at once,
//! and floods wait behind those bursts. So the servers that hear it slow down instead, a
//! step at a time, the way TCP finds the rate a path takes: each time the herd is still
//! late once a slowdown could have shown ([`SLOWDOWN_GAP`]), the pace falls by
//! [`DECREASE`]; each [`STEP`] nobody is late, it rises by [`REGAIN`] up to where it last
//! fell and by [`INCREASE`] beyond. The herd then settles just under the rate at which it
//! spreads floods without a standing queue. After [`CALM`] with nobody late, the limit is
//! lifted.
//!
//! The pace counts lines that pipelining clients send. A sparse client's line (see
//! `server`) and a neighbour's AT line are never paced.

use std::time::{Duration, Instant};

/// How often the pace changes, and the span over which the rate taken is measured.
pub const STEP: Duration = Duration::from_millis(10);
/// The pace is multiplied by this while floods come late, at most once every
/// [`SLOWDOWN_GAP`].
pub const DECREASE: f64 = 0.8;
/// The time a slowdown takes to show: the floods taken before it are still on their way,
/// and the servers judge how late they come once every `pressure::INTERVAL`.
pub const SLOWDOWN_GAP: Duration = Duration::from_millis(30);
/// The pace is multiplied by this each step nobody is late, up to where it last fell...
pub const REGAIN: f64 = 1.25;
/// ...and by this past it.
pub const INCREASE: f64 = 1.02;
/// The slowest pace (lines per second): one server late for good is ignored after
/// `pressure::MAX_HOLD`, and clients are never starved altogether meanwhile.
pub const MIN_RATE: f64 = 200.0;
/// Lines a pace saves up at most, as time at the pace: a server that slept for a while
/// does not take a burst when it wakes.
pub const BURST: Duration = Duration::from_millis(2);
/// Nobody late for this long: the limit is lifted.
pub const CALM: Duration = Duration::from_secs(1);

/// The pace of one server's clients (see the module docs).
#[derive(Debug)]
pub struct Pace {
    /// Lines per second, or `None`: no limit.
    rate: Option<f64>,
    /// Lines that may be taken now (fractions accumulate).
    tokens: f64,
    /// When the tokens were last added.
    refilled: Instant,
    /// When the pace last changed.
    changed: Instant,
    /// When the pace last fell.
    slowed: Instant,
    /// The pace before it last fell.
    ceiling: f64,
    /// Since when nobody is late, while paced.
    calm_since: Option<Instant>,
    /// Lines taken since `measured_at`.
    taken: u64,
    /// When the current measurement began.
    measured_at: Instant,
    /// The rate at which lines were taken, smoothed over the last few steps.
    measured: f64,
}

impl Default for Pace {
    fn default() -> Self {
        let now = Instant::now();
        Pace {
            rate: None,
            tokens: 0.0,
            refilled: now,
            changed: now,
            slowed: now,
            ceiling: f64::INFINITY,
            calm_since: None,
            taken: 0,
            measured_at: now,
            measured: 0.0,
        }
    }
}

impl Pace {
    /// Once a loop turn: whether some server's floods come late now; changes the
    /// pace at most once a [`STEP`] and adds the tokens earned since the last turn.
    pub fn turn(&mut self, now: Instant, late: bool) {
        let since = now.saturating_duration_since(self.measured_at);
        if since >= STEP {
            let rate = self.taken as f64 / since.as_secs_f64();
            self.measured = 0.75 * self.measured + 0.25 * rate;
            self.taken = 0;
            self.measured_at = now;
        }
        if now >= self.changed + STEP {
            self.rate = match self.rate {
                // Late: slow down from the pace, or from the rate measured if there was
                // none; again only once the last slowdown could have shown.
                _ if late => {
                    self.calm_since = None;
                    match self.rate {
                        Some(_) if now < self.slowed + SLOWDOWN_GAP => self.rate,
                        rate => {
                            let from = rate.unwrap_or(self.measured);
                            self.slowed = now;
                            self.ceiling = from;
                            Some((from * DECREASE).max(MIN_RATE))
                        }
                    }
                }
                None => None,
                Some(rate) => {
                    let calm = *self.calm_since.get_or_insert(now);
                    // Faster than clients send is no limit: the pace rises no further.
                    let cap = (2.0 * self.measured).max(MIN_RATE);
                    let up = if rate < self.ceiling {
                        REGAIN
                    } else {
                        INCREASE
                    };
                    (now < calm + CALM).then_some((rate * up).min(cap).max(rate))
                }
            };
            self.changed = now;
        }
        if let Some(rate) = self.rate {
            let earned = rate * now.saturating_duration_since(self.refilled).as_secs_f64();
            let most = (rate * BURST.as_secs_f64()).max(1.0);
            self.tokens = (self.tokens + earned).min(most);
        }
        self.refilled = now;
    }

    /// True when a paced line may be taken now.
    pub fn has_room(&self) -> bool {
        self.rate.is_none() || self.tokens >= 1.0
    }

    /// One paced line was taken.
    pub fn take(&mut self) {
        self.taken += 1;
        if self.rate.is_some() {
            self.tokens -= 1.0;
        }
    }

    /// When a paced line may be taken again, while none may now.
    pub fn next_room(&self, now: Instant) -> Option<Instant> {
        let rate = self.rate.filter(|_| self.tokens < 1.0)?;
        Some(now + Duration::from_secs_f64((1.0 - self.tokens) / rate))
    }

    /// The pace, lines per second (`None`: no limit).
    pub fn rate(&self) -> Option<f64> {
        self.rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// Runs `pace` for `steps` [`STEP`]s from `t`, a loop turn a millisecond, for a client
    /// pipelining for ever: every turn it takes whatever the pace allows. Returns the time
    /// after the last turn and the lines taken.
    fn run(pace: &mut Pace, t: Instant, steps: u32, late: bool) -> (Instant, u64) {
        let mut now = t;
        let mut taken = 0;
        for _ in 0..steps * (STEP.as_millis() as u32) {
            now += MS;
            pace.turn(now, late);
            while pace.has_room() && pace.rate().is_some() {
                pace.take();
                taken += 1;
            }
        }
        (now, taken)
    }

    /// A step in which 10,000 lines were taken (a million a second), then floods late.
    fn slowed(pace: &mut Pace, t: Instant) -> Instant {
        for _ in 0..10_000 {
            pace.take();
        }
        pace.turn(t + STEP, true);
        t + STEP
    }

    #[test]
    fn unpaced_until_floods_come_late_then_slower_a_step_at_a_time() {
        let mut pace = Pace::default();
        // Nobody late: no limit.
        let (t, _) = run(&mut pace, Instant::now(), 5, false);
        assert_eq!(pace.rate(), None);
        assert!(pace.has_room());
        assert_eq!(pace.next_room(t), None);
        // Late: paced under the rate measured.
        let t = slowed(&mut pace, t);
        let first = pace.rate().expect("paced once floods come late");
        assert!(
            first > MIN_RATE && first < 1_000_000.0,
            "paced from the rate measured: {first}"
        );
        // Still late: it falls again only once the slowdown could have shown.
        pace.turn(t + MS, true);
        assert_eq!(pace.rate(), Some(first), "not again before SLOWDOWN_GAP");
        let (t, _) = run(&mut pace, t, 3, true);
        let second = pace.rate().unwrap();
        assert!(
            (second - first * DECREASE).abs() < 1e-6,
            "{second} after {first}"
        );
        // Late for long: never under MIN_RATE.
        let (t, _) = run(&mut pace, t, 1000, true);
        assert_eq!(pace.rate(), Some(MIN_RATE));
        // Paced, a client gets lines, but no more than the pace allows.
        let (t, taken) = run(&mut pace, t, 50, false);
        let rate = pace.rate().unwrap();
        assert!(
            taken > 0 && (taken as f64) <= rate * (50 * STEP).as_secs_f64() + 1.0,
            "{taken} lines in half a second at a pace of {rate} at most"
        );
        // Out of room: room again at a time it says.
        assert!(!pace.has_room());
        assert!(pace.next_room(t).is_some_and(|at| at > t));
    }

    #[test]
    fn regains_fast_up_to_where_it_fell_then_slowly_and_lifts_after_a_calm() {
        let mut pace = Pace::default();
        let t = slowed(&mut pace, Instant::now());
        let fell = pace.rate().unwrap();
        let (t, _) = run(&mut pace, t, 30, true);
        let low = pace.rate().unwrap();
        assert!(low < fell / 4.0, "{fell} to {low}");
        // Calm: back up by REGAIN a step, up to where it last fell...
        let (t, _) = run(&mut pace, t, 1, false);
        let up = pace.rate().unwrap();
        assert!((up / low - REGAIN).abs() < 1e-6, "{low} to {up}");
        let (t, _) = run(&mut pace, t, 20, false);
        let high = pace.rate().unwrap();
        // ...then by INCREASE.
        let (t, _) = run(&mut pace, t, 1, false);
        let past = pace.rate().unwrap();
        assert!(
            high > low / DECREASE && (past / high - INCREASE).abs() < 1e-6,
            "{high} to {past}"
        );
        // Calm for CALM: no limit any more.
        run(
            &mut pace,
            t,
            (CALM.as_millis() / STEP.as_millis()) as u32,
            false,
        );
        assert_eq!(pace.rate(), None);
    }
}
