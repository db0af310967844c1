//! The edge's pace: how many of its clients' lines a server takes per second while the
//! herd says it is behind.
//!
//! Holding every client until the herd has caught up (what a server does while one of its
//! *own* links is congested) is all or nothing: the herd drains, sits idle, and then takes
//! a burst that fills every queue at once. Floods wait behind those bursts. So when another
//! server says it is behind (a `BUSY` notice, see `pressure`), this server instead slows
//! down, a step at a time, the way TCP finds the rate a path takes: every [`STEP`] the
//! herd is still behind, the pace falls by [`DECREASE`]; every step it is not, the pace
//! rises by [`INCREASE`]. The herd then settles just under the rate at which it spreads
//! floods without a standing queue, and floods stop waiting behind bursts. After [`CALM`]
//! with nobody behind, the limit is lifted.
//!
//! The pace counts lines that pipelining clients send. A sparse client's line (see
//! `server`) and a neighbour's AT line are never paced.

use std::time::{Duration, Instant};

/// How often the pace changes, and the span over which the rate taken is measured.
pub const STEP: Duration = Duration::from_millis(10);
/// The pace is multiplied by this when the herd is behind, at most once every
/// [`SLOWDOWN_GAP`].
pub const DECREASE: f64 = 0.8;
/// The time a slowdown takes to show: the floods taken before it are still on their way,
/// and the servers judge how late they come once every `pressure::INTERVAL`. Slowing down
/// every step while the herd is behind slowed it far below what it spreads.
pub const SLOWDOWN_GAP: Duration = Duration::from_millis(30);
/// The pace is multiplied by this each step the herd is not behind, up to where it last
/// was behind...
pub const REGAIN: f64 = 1.25;
/// ...and by this past it.
pub const INCREASE: f64 = 1.02;
/// The slowest pace (lines per second): a herd behind for good is dealt with by the stall
/// check and `pressure::MAX_HOLD`, not by starving clients altogether.
pub const MIN_RATE: f64 = 200.0;
/// Lines a pace saves up at most, as time at the pace: a server that slept for a while
/// does not take a burst when it wakes.
pub const BURST: Duration = Duration::from_millis(2);
/// Nobody behind for this long: the limit is lifted.
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
    /// Since when nobody is behind, while paced.
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
    /// Once a loop turn: whether the herd is `behind` now; changes the pace at most once a
    /// [`STEP`] and adds the tokens earned since the last turn.
    pub fn turn(&mut self, now: Instant, behind: bool) {
        let since = now.saturating_duration_since(self.measured_at);
        if since >= STEP {
            let rate = self.taken as f64 / since.as_secs_f64();
            self.measured = 0.75 * self.measured + 0.25 * rate;
            self.taken = 0;
            self.measured_at = now;
        }
        if now >= self.changed + STEP {
            self.rate = match self.rate {
                None if behind => {
                    self.slowed = now;
                    self.ceiling = self.measured;
                    Some((self.measured * DECREASE).max(MIN_RATE))
                }
                Some(rate) if behind => {
                    self.calm_since = None;
                    if now >= self.slowed + SLOWDOWN_GAP {
                        self.slowed = now;
                        self.ceiling = rate;
                        Some((rate * DECREASE).max(MIN_RATE))
                    } else {
                        Some(rate)
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
