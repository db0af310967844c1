//! What a server knows: the newest AT record of every client ([`Locations`]).
//!
//! Memory is the point here: a herd may know millions of clients, and each record is only
//! the AT line itself (shared, see [`Record::line`]). The client id is not stored a second
//! time as the map's key: it, the time and the coordinates are read from the line when they
//! are needed (the id on every lookup, a time on every update of a known client,
//! coordinates on a WHATSAT). Under 200 bytes per client in all (the bench's `scale-1m`),
//! most of it the line and the map's own slots.

use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::ops::Range;
use std::rc::Rc;

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;

use crate::protocol::{Coords, Report, Timestamp, check_location, parse_location, parse_time};

/// The newest known location of one client: its AT line as the server that got the IAMAT
/// produced it (six fields, single spaces, no line ending).
#[derive(Debug, Clone)]
pub struct Record {
    /// The line. Shared: the same bytes go to every neighbour and into every WHATSAT reply
    /// without copying. It is all a record holds: the client id is found in it when needed
    /// (hashing, comparing), since storing its offsets would make every slot of the map 24
    /// bytes instead of 16, about 17 bytes per client at a million. An `Rc`, not an `Arc`:
    /// only the loop's thread ever holds a line (the workers are given text), so its copies
    /// are counted without atomic instructions, which were a tenth of a restarted server's
    /// time in a profile of the bench's `scale-restart`.
    pub line: Rc<[u8]>,
}

/// The most clients [`Locations::make_room`] makes room for at once: the number comes from
/// the network. Room for four million is 128 MiB of slots, touched only as they fill.
pub const MOST_ROOM: usize = 4 << 20;

/// The fields of a stored line.
const CLIENT: usize = 3;
const LOCATION: usize = 4;
const TIME: usize = 5;

impl Record {
    /// The client id.
    pub fn client(&self) -> &[u8] {
        client_of(&self.line)
    }

    /// The location field as the client wrote it (`+34.068930-118.445127`).
    pub fn location(&self) -> &[u8] {
        field(&self.line, LOCATION).map_or(&[], |r| &self.line[r])
    }

    /// The client's own time for this location; a newer one replaces the record.
    pub fn when(&self) -> Timestamp {
        let time = field(&self.line, TIME).and_then(|r| parse_time(&self.line[r]));
        // Stored lines were checked when they came in; the epoch keeps the no-panic rule.
        time.unwrap_or(Timestamp { secs: 0, nanos: 0 })
    }

    /// The location as numbers (for a WHATSAT).
    pub fn coords(&self) -> Option<Coords> {
        parse_location(self.location())
    }

    /// The latitude and longitude as the client wrote them, without a leading `+`
    /// (`34.068930`, `-118.445127`), which is how Google wants them.
    pub fn lat_lng_text(&self) -> (String, String) {
        let text = self.location();
        let split = check_location(text).unwrap_or(0);
        let (lat, lng) = text.split_at(split);
        let clean =
            |s: &[u8]| String::from_utf8_lossy(s.strip_prefix(b"+").unwrap_or(s)).into_owned();
        (clean(lat), clean(lng))
    }
}

/// A client id's hash, as the store computes it: found once per line, and used again by
/// the tables of lines held back from a neighbour (see `owed`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key(pub u64);

/// Every client's newest record, by client id.
///
/// A `hashbrown::HashTable` (the table under std's `HashSet`) rather than a `HashSet`: a
/// record is found by a hash and a probe, and what to do with it decided there, so an
/// update costs one hash and one probe where a `HashSet` needs two (`get`, then
/// `replace`): a sixth of a restarted server's time per line, which its catch-up is bound by.
#[derive(Debug, Default)]
pub struct Locations {
    records: HashTable<Record>,
    /// The key of the table's hash; see [`Seed`].
    hasher: Seed,
}

/// The key of the store's hash: SipHash with a random key, as std's maps use, since client
/// ids are chosen by clients, and a known hash would let them pick ids that all land in one
/// probe sequence. Unlike std's `RandomState`, its key can be read and set, because
/// neighbours share it: a catch-up is sent in the order of the sender's table, which is the
/// order of its hashes, and a restarted server that hashes with the same key stores it in
/// that order, one slot after the next (see [`Locations::adopt`]). Stored in a random order
/// instead, each of a million records lands in a slot far from the last, and waiting for
/// the memory was a quarter of the restarted server's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seed(pub u64, pub u64);

impl Seed {
    /// A random key: std's `RandomState` is seeded from the system's randomness, and two of
    /// its hashes are as good as its key.
    pub fn random() -> Seed {
        Seed(
            RandomState::new().hash_one(0u8),
            RandomState::new().hash_one(1u8),
        )
    }

    /// Reads the 32 hexadecimal digits that [`Seed`]'s `Display` writes.
    pub fn parse(text: &[u8]) -> Option<Seed> {
        let hex = std::str::from_utf8(text).ok()?;
        if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let half = |r: Range<usize>| u64::from_str_radix(&hex[r], 16).ok();
        Some(Seed(half(0..16)?, half(16..32)?))
    }
}

impl Default for Seed {
    fn default() -> Seed {
        Seed::random()
    }
}

impl fmt::Display for Seed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}{:016x}", self.0, self.1)
    }
}

impl BuildHasher for Seed {
    // std's only SipHash that takes a key (SipHash-2-4: a few nanoseconds more per id than
    // the 1-3 of `RandomState`, whose key cannot be set). Deprecated only in favour of
    // `DefaultHasher`, which takes none.
    #[allow(deprecated)]
    type Hasher = std::hash::SipHasher;

    #[allow(deprecated)]
    fn build_hasher(&self) -> Self::Hasher {
        std::hash::SipHasher::new_with_keys(self.0, self.1)
    }
}

impl Locations {
    /// An empty store.
    pub fn new() -> Locations {
        Locations::default()
    }

    /// Stores `line` (a six-field AT line holding `report`, single spaces between fields) if
    /// it is newer than what is known of the client, comparing client times as numbers;
    /// `key` is the client's ([`Locations::key`]).
    /// Returns the stored line when it was newer (the caller floods it); otherwise it
    /// changed nothing (the flood stops here), and says whether what is known is just as
    /// new.
    pub fn update(&mut self, key: Key, report: &Report<'_>, line: &[u8]) -> Update {
        // The table finds a record by the id in its line: it must be the report's.
        if client_of(line) != report.client {
            return Update::Older;
        }
        let Locations { records, hasher } = self;
        let same_client = |r: &Record| r.client() == report.client;
        let record = match records.entry(key.0, same_client, rehash(hasher)) {
            Entry::Occupied(known) => {
                let record = known.into_mut();
                let when = record.when();
                if when == report.when {
                    return Update::Same;
                }
                if when > report.when {
                    return Update::Older;
                }
                record.line = Rc::from(line);
                record
            }
            Entry::Vacant(slot) => slot
                .insert(Record {
                    line: Rc::from(line),
                })
                .into_mut(),
        };
        Update::Stored(record.line.clone())
    }

    /// The key of the store's hash, which the first line of a catch-up carries.
    pub fn seed(&self) -> Seed {
        self.hasher
    }

    /// Hashes with `seed` from now on, if nothing is stored yet: a restarted server takes its
    /// first catch-up's key, and stores that catch-up in the order it comes (see [`Seed`]).
    /// A store that holds anything keeps its key (changing it would mean hashing every
    /// record again). True when it took the key.
    pub fn adopt(&mut self, seed: Seed) -> bool {
        let empty = self.records.is_empty();
        if empty {
            self.hasher = seed;
        }
        empty
    }

    /// The key of `client` (its hash), for [`Locations::update`] and the tables of `owed`.
    pub fn key(&self, client: &[u8]) -> Key {
        Key(self.hasher.hash_one(client))
    }

    /// Makes room for `clients` in all (at most [`MOST_ROOM`]), so that storing that many
    /// does not grow the set again and again: each growth rehashes every record, reading
    /// each one's line from memory, about a third of the time it takes to store a million.
    pub fn make_room(&mut self, clients: u64) {
        let clients = usize::try_from(clients)
            .unwrap_or(usize::MAX)
            .min(MOST_ROOM);
        let Locations { records, hasher } = self;
        let more = clients.saturating_sub(records.len());
        records.reserve(more, rehash(hasher));
    }

    /// The record of a client, if any server reported it.
    pub fn get(&self, client: &[u8]) -> Option<&Record> {
        self.records
            .find(self.key(client).0, |r| r.client() == client)
    }

    /// How many clients are known.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when no client is known.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// A cursor at the start of the store's own order, for reading it a chunk at a time.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            next: 0,
            capacity: self.records.capacity(),
            done: false,
        }
    }

    /// Appends up to `n` stored lines, from `at` on in the store's order, to `out`, and moves
    /// `at` past them; nothing once a read has reached the end. Every record stored when
    /// the cursor was made is read, however the store changes between calls: a record is
    /// never removed and a newer one takes its old one's slot, so a record's place in the
    /// order only moves up, by the new clients stored before it. Some are read twice
    /// (harmless: a line that is not newer stops where it arrives), and the new clients
    /// may or may not be read (they are flooded anyway). Growing the set reorders it all:
    /// then reading starts over, and ends as long as new clients come slower than it reads.
    pub fn read(&self, at: &mut Cursor, n: usize, out: &mut Vec<Rc<[u8]>>) {
        if at.done {
            return;
        }
        if self.records.capacity() != at.capacity {
            *at = self.cursor();
        }
        let before = out.len();
        // Skipping to `at` reads the set's control bytes only, not the records: about
        // 2 ms for a million.
        let chunk = self.records.iter().skip(at.next).take(n);
        out.extend(chunk.map(|r| r.line.clone()));
        let read = out.len() - before;
        at.next += read;
        // The end: waiting for more would never end while new clients keep coming.
        at.done = read < n;
    }
}

/// How the table finds a stored record's hash again when it grows: from the id in its line,
/// with the same hasher as [`Locations::key`].
fn rehash(hasher: &Seed) -> impl Fn(&Record) -> u64 + '_ {
    |r| hasher.hash_one(r.client())
}

/// What [`Locations::update`] made of a line.
#[derive(Debug, PartialEq, Eq)]
pub enum Update {
    /// It was newer, and is stored: the line, shared.
    Stored(Rc<[u8]>),
    /// The client's time in it is the one known.
    Same,
    /// It is older than what is known (or not a line of its client).
    Older,
}

/// A place in the store's order (see [`Locations::read`]).
#[derive(Debug, Clone, Copy)]
pub struct Cursor {
    /// Records read so far.
    next: usize,
    /// The set's capacity when reading began: when it changes, so has the order.
    capacity: usize,
    /// A read reached the end.
    done: bool,
}

/// The client id in a stored line (empty if it has no such field).
pub fn client_of(line: &[u8]) -> &[u8] {
    field(line, CLIENT).map_or(&[], |r| &line[r])
}

/// Where field `n` (from 0) of a line of single-space-separated fields sits. Called on every
/// lookup and rehash of the store (the client id is not stored apart), so it is one plain
/// pass over the bytes up to the field's end.
fn field(line: &[u8], n: usize) -> Option<Range<usize>> {
    let mut start = 0;
    let mut spaces = 0;
    for (i, &b) in line.iter().enumerate() {
        if b == b' ' {
            if spaces == n {
                return Some(start..i);
            }
            spaces += 1;
            start = i + 1;
        }
    }
    (spaces == n).then_some(start..line.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Command, parse};
    use std::collections::HashSet;

    /// Updates the store, finding the key as the herd does.
    fn put(store: &mut Locations, r: &Report<'_>, l: &[u8]) -> Update {
        let key = store.key(r.client);
        store.update(key, r, l)
    }

    fn at(line: &[u8]) -> (Report<'_>, Vec<u8>) {
        match parse(line) {
            Some(Command::At { report, line, .. }) => (report, line.into_owned()),
            _ => panic!("not an AT line"),
        }
    }

    #[test]
    fn newer_wins_by_number_not_by_string() {
        let mut store = Locations::new();
        let (r, l) = at(b"AT A +0.1 kiwi +34.5-118.25 99.5");
        assert!(matches!(put(&mut store, &r, &l), Update::Stored(_)));
        // "100" < "99.5" as strings, but it is newer.
        let (r2, l2) = at(b"AT B +0.1 kiwi +1-2 100");
        assert_eq!(put(&mut store, &r2, &l2), Update::Stored(Rc::from(&l2[..])));
        // Same time again, or older: nothing changes.
        assert_eq!(put(&mut store, &r2, &l2), Update::Same);
        assert_eq!(put(&mut store, &r, &l), Update::Older);
        // A line that is not the report's client's is never stored (the table would file
        // it under the wrong id), whether the client is known or not.
        let (r3, _) = at(b"AT B +0.1 kiwi +1-2 200");
        assert_eq!(
            put(&mut store, &r3, b"AT B +0.1 plum +1-2 200"),
            Update::Older
        );
        let (r4, _) = at(b"AT B +0.1 fig +1-2 200");
        assert_eq!(
            put(&mut store, &r4, b"AT B +0.1 plum +1-2 200"),
            Update::Older
        );
        assert!(store.get(b"plum").is_none() && store.get(b"fig").is_none());
        let rec = store.get(b"kiwi").unwrap();
        assert_eq!(&rec.line[..], &l2[..]);
        assert_eq!(rec.lat_lng_text(), ("1".to_string(), "-2".to_string()));
        assert_eq!(rec.client(), b"kiwi");
        assert_eq!(
            rec.when(),
            Timestamp {
                secs: 100,
                nanos: 0
            }
        );
        let coords = rec.coords().unwrap();
        assert_eq!((coords.lat, coords.lng), (1.0, -2.0));
        assert_eq!(store.len(), 1);
    }

    fn store(store: &mut Locations, client: &str, time: u32) {
        let text = format!("AT A +0.1 {client} +1-2 {time}");
        let (r, l) = at(text.as_bytes());
        put(store, &r, &l);
    }

    /// Reads `store` 7 records at a time, calling `between` after each chunk, and returns
    /// the clients read.
    fn read_all(
        store: &mut Locations,
        mut between: impl FnMut(&mut Locations, usize),
    ) -> Vec<String> {
        let mut cursor = store.cursor();
        let mut seen = Vec::new();
        for chunk in 0..10_000 {
            let mut out = Vec::new();
            store.read(&mut cursor, 7, &mut out);
            if out.is_empty() {
                return seen;
            }
            assert!(out.len() <= 7);
            let client = |line: &Rc<[u8]>| Record { line: line.clone() }.client().to_vec();
            seen.extend(out.iter().map(|l| String::from_utf8(client(l)).unwrap()));
            between(store, chunk);
        }
        panic!("reading never ended");
    }

    #[test]
    fn reading_in_chunks_misses_no_record_while_the_store_changes() {
        let mut s = Locations::new();
        for i in 0..1000 {
            store(&mut s, &format!("c{i}"), 1);
        }
        let before: HashSet<String> = (0..1000).map(|i| format!("c{i}")).collect();
        // Between chunks: one client newer, one client new. No growth: the order holds,
        // and every record there at the start is read once, new ones maybe.
        let capacity = s.records.capacity();
        let seen = read_all(&mut s, |s, k| {
            store(s, &format!("c{}", k % 1000), 2);
            store(s, &format!("new{k}"), 1);
        });
        assert_eq!(s.records.capacity(), capacity, "the set did not grow");
        let seen_set: HashSet<String> = seen.iter().cloned().collect();
        assert!(before.is_subset(&seen_set));
        let old = seen.iter().filter(|c| before.contains(*c)).count();
        assert!(old < 1000 + 150, "records read again: {}", old - 1000);
        // More new clients between chunks: the set grows, and reading starts over (and
        // ends, as new clients come slower than it reads).
        let seen = read_all(&mut s, |s, k| {
            for j in 0..3 {
                store(s, &format!("more{k}.{j}"), 1);
            }
        });
        assert!(s.records.capacity() > capacity, "the set grew");
        let seen: HashSet<String> = seen.into_iter().collect();
        assert!(before.is_subset(&seen));
    }

    #[test]
    fn a_store_with_the_senders_key_holds_a_catch_up_in_the_senders_order() {
        let mut sender = Locations::new();
        for i in 0..1000 {
            store(&mut sender, &format!("c{i}"), 1);
        }
        let sent = read_all(&mut sender, |_, _| {});
        // Stored in the order they come by a store that took the sender's key, and one
        // that did not: the first holds them in the sender's order (slot after slot).
        let receive = |adopt: bool| {
            let mut receiver = Locations::new();
            assert!(!adopt || receiver.adopt(sender.seed()));
            receiver.make_room(sent.len() as u64);
            for client in &sent {
                store(&mut receiver, client, 1);
            }
            read_all(&mut receiver, |_, _| {})
        };
        // How many of the records that came one after the other are stored one after the
        // other: in order, but for the few a collision moved to the next group of slots.
        let in_order = |held: Vec<String>| {
            let place: std::collections::HashMap<&String, usize> =
                held.iter().enumerate().map(|(i, c)| (c, i)).collect();
            let next = |pair: &[String]| place[&pair[1]] > place[&pair[0]];
            sent.windows(2).filter(|pair| next(pair)).count() * 100 / (sent.len() - 1)
        };
        let (same_key, own_key) = (in_order(receive(true)), in_order(receive(false)));
        eprintln!("in order: {same_key}% with the sender's key, {own_key}% with its own");
        assert!(same_key >= 95, "{same_key}% in the sender's order");
        assert!(own_key < 75, "{own_key}%: a key of its own, another order");
        // A store that holds anything keeps its key.
        let mut other = Locations::new();
        store(&mut other, "x", 1);
        let key = other.seed();
        assert!(!other.adopt(sender.seed()));
        assert_eq!(other.seed(), key);
        assert!(other.get(b"x").is_some());
    }

    #[test]
    fn a_seed_is_written_and_read_as_32_hex_digits() {
        let seed = Seed(0x0123_4567_89ab_cdef, 42);
        let text = seed.to_string();
        assert_eq!(text, "0123456789abcdef000000000000002a");
        assert_eq!(Seed::parse(text.as_bytes()), Some(seed));
        assert_eq!(Seed::parse(b"0123456789ABCDEF000000000000002A"), Some(seed));
        for bad in [
            &b""[..],
            b"0123",
            b"0123456789abcdef000000000000002x",
            b"+123456789abcdef000000000000002a",
        ] {
            assert_eq!(Seed::parse(bad), None, "{bad:?}");
        }
        assert_ne!(Seed::random(), Seed::random());
    }

    #[test]
    fn fields_by_number() {
        let line = b"AT A +0.1 kiwi +1-2 5";
        let get = |n| field(line, n).map(|r| &line[r]);
        assert_eq!(get(0), Some(&b"AT"[..]));
        assert_eq!(get(3), Some(&b"kiwi"[..]));
        assert_eq!(get(5), Some(&b"5"[..]));
        assert_eq!(get(6), None);
        assert_eq!(field(b"", 0), Some(0..0));
    }

    #[test]
    fn location_text_without_plus() {
        let mut store = Locations::new();
        let (r, l) = at(b"AT A +0.1 +1+2 +34.068930-118.445127 5");
        put(&mut store, &r, &l);
        let rec = store.get(b"+1+2").unwrap();
        assert_eq!(
            rec.lat_lng_text(),
            ("34.068930".to_string(), "-118.445127".to_string())
        );
    }
}
