//! Catch-up lines held back from a neighbour while that neighbour catches this server up.
//!
//! A restarted server is sent everything each of its neighbours knows (see `catchup`). What
//! is news to it goes on to its other neighbours, as every flood does, but they are sending
//! it the very same clients and drop nearly all of it as not newer: with two neighbours and
//! a million clients, a million lines written, read and parsed for nothing while the herd
//! is busiest (bench `scale-restart`: the two senders spent half their time on them).
//!
//! So a line learned from one neighbour's catch-up is not sent to a neighbour that is
//! catching us up as well: it is *owed* to it ([`Owed`]). Each line of that neighbour's own
//! catch-up that is as new as what we know shows that it has the client, and the debt is
//! dropped. When its catch-up ends (as many lines as its first line announced, or
//! [`QUIET`] with none), what is still owed goes to it as a catch-up of its own: exactly
//! what it did not have, for instance what one side of a partition learned while this
//! server, the bridge, was down. A line owed is only ever late, never lost: a link that
//! fails forgets its debts, and the full catch-up owed on reconnect covers them.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{BuildHasherDefault, Hasher};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::store::{Key, client_of};

/// A neighbour's catch-up that sends no line for this long is taken as over (it may have
/// lost its link to us half-way, or announced more than it had).
pub const QUIET: Duration = Duration::from_secs(1);

/// What a neighbour that is catching us up has not been sent, and how far its catch-up is.
#[derive(Debug)]
pub struct Owed {
    /// When its catch-up began (its first line came): the first of several catch-ups at
    /// once is read first (see `Herd::waits_its_turn`).
    pub began: Instant,
    /// Lines of its catch-up still to come, by the size its first line announced.
    left: u64,
    /// When its last catch-up line came.
    last: Instant,
    /// The lines held back, one per client (the newest we learned), by the store's hash of
    /// the client id ([`Key`], found once per line): a restarted server holds back up to a
    /// million lines per neighbour, and keys that are numbers are found and moved (as the
    /// map grows) without reading each line from memory again. Two clients with the same
    /// hash cannot both be held.
    lines: HashMap<u64, Rc<[u8]>, BuildHasherDefault<AsIs>>,
}

impl Owed {
    /// A neighbour's catch-up began at `now` (its lines are counted by
    /// [`Owed::line_came`], the first one too).
    pub fn new(now: Instant) -> Owed {
        Owed {
            began: now,
            left: 0,
            last: now,
            lines: HashMap::default(),
        }
    }

    /// A line of the catch-up came; `size` is its `sync=` value (more than 1 only on the
    /// first line of a catch-up, which starts the count again). True when it was the last.
    pub fn line_came(&mut self, size: u64, now: Instant) -> bool {
        if size > 1 {
            self.left = size;
        }
        self.left = self.left.saturating_sub(1);
        self.last = now;
        self.left == 0
    }

    /// Holds `line`, a line of `client`, back (replacing an older one of the same client).
    /// False when it cannot be held (another client held has the same hash): send it.
    pub fn hold(&mut self, key: Key, client: &[u8], line: Rc<[u8]>) -> bool {
        match self.lines.entry(key.0) {
            Entry::Occupied(held) if client_of(held.get()) != client => false,
            Entry::Occupied(mut held) => {
                held.insert(line);
                true
            }
            Entry::Vacant(slot) => {
                slot.insert(line);
                true
            }
        }
    }

    /// The neighbour showed that it has the newest line we know of `client`.
    pub fn shown(&mut self, key: Key, client: &[u8]) {
        if self.lines.is_empty() {
            return;
        }
        if let Entry::Occupied(held) = self.lines.entry(key.0)
            && client_of(held.get()) == client
        {
            held.remove();
        }
    }

    /// When the catch-up counts as over if no line comes first.
    pub fn deadline(&self) -> Instant {
        self.last + QUIET
    }

    /// The lines still owed.
    pub fn into_lines(self) -> Vec<Rc<[u8]>> {
        self.lines.into_values().collect()
    }
}

/// A hasher for keys that are hashes already: the key as it is.
#[derive(Debug, Default)]
struct AsIs(u64);

impl Hasher for AsIs {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys come here (`write_u64`); any other bytes still hash.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> Rc<[u8]> {
        Rc::from(text.as_bytes())
    }

    #[test]
    fn a_catch_up_ends_after_the_lines_its_first_line_announced() {
        let now = Instant::now();
        let mut owed = Owed::new(now);
        assert!(!owed.line_came(3, now));
        assert!(!owed.line_came(1, now));
        assert!(owed.line_came(1, now));
        // A one-line catch-up is over at once (and so is one whose first line was missed);
        // a new catch-up starts the count again.
        assert!(Owed::new(now).line_came(1, now));
        let mut again = Owed::new(now);
        assert!(!again.line_came(2, now));
        assert!(!again.line_came(5, now + QUIET));
        assert_eq!(again.deadline(), now + QUIET + QUIET);
    }

    #[test]
    fn what_the_neighbour_shows_is_no_longer_owed() {
        let mut owed = Owed::new(Instant::now());
        let store = crate::store::Locations::new();
        let key = |client: &[u8]| store.key(client);
        assert!(owed.hold(key(b"kiwi"), b"kiwi", line("AT A +0.1 kiwi +1-2 5")));
        assert!(owed.hold(key(b"kiwi"), b"kiwi", line("AT A +0.1 kiwi +1-2 6")));
        assert!(owed.hold(key(b"plum"), b"plum", line("AT B +0.1 plum +1-2 5")));
        // Another client with a held client's key cannot be held too: it is sent.
        assert!(!owed.hold(key(b"kiwi"), b"fig", line("AT B +0.1 fig +1-2 5")));
        owed.shown(key(b"plum"), b"plum");
        owed.shown(key(b"fig"), b"fig");
        // Shown under a held client's key, but another client: the held line stays.
        owed.shown(key(b"kiwi"), b"fig");
        let left: Vec<Rc<[u8]>> = owed.into_lines();
        assert_eq!(left, vec![line("AT A +0.1 kiwi +1-2 6")]);
    }
}
