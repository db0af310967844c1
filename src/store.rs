//! What a server knows: the newest AT record of every client ([`Locations`]).

use std::collections::HashMap;
use std::sync::Arc;

use crate::protocol::{Coords, Report, Timestamp};

/// The newest known location of one client.
#[derive(Debug, Clone)]
pub struct Record {
    /// The client's own time for this location; a newer one replaces the record.
    pub when: Timestamp,
    /// The AT line as the server that got the IAMAT produced it (no line ending). Shared:
    /// the same bytes go to every neighbour and into every WHATSAT reply without copying.
    pub line: Arc<[u8]>,
    /// The location, parsed.
    pub coords: Coords,
    /// Where the location field sits in `line`.
    pub location: std::ops::Range<usize>,
}

impl Record {
    /// The latitude and longitude as the client wrote them, without a leading `+`
    /// (`34.068930`, `-118.445127`), which is how Google wants them.
    pub fn lat_lng_text(&self) -> (String, String) {
        let text = &self.line[self.location.clone()];
        let (lat, lng) = text.split_at(self.coords.split);
        let clean =
            |s: &[u8]| String::from_utf8_lossy(s.strip_prefix(b"+").unwrap_or(s)).into_owned();
        (clean(lat), clean(lng))
    }
}

/// Every client's newest record, by client id.
#[derive(Debug, Default)]
pub struct Locations {
    records: HashMap<Box<[u8]>, Record>,
}

impl Locations {
    /// An empty store.
    pub fn new() -> Locations {
        Locations::default()
    }

    /// Stores `line` (a six-field AT line holding `report`, single spaces between fields) if it is newer than what is known of the
    /// client, comparing client times as numbers. Returns the stored line when it was newer
    /// (the caller floods it), `None` when it changed nothing (the flood stops here).
    pub fn update(&mut self, report: &Report<'_>, line: &[u8]) -> Option<Arc<[u8]>> {
        if let Some(old) = self.records.get(report.client)
            && old.when >= report.when
        {
            return None;
        }
        // Stored lines are six fields joined by single spaces; the location is the fifth.
        let location = field_range(line, 4)?;
        let record = Record {
            when: report.when,
            line: Arc::from(line),
            coords: report.coords,
            location,
        };
        let shared = record.line.clone();
        self.records.insert(Box::from(report.client), record);
        Some(shared)
    }

    /// The record of a client, if any server reported it.
    pub fn get(&self, client: &[u8]) -> Option<&Record> {
        self.records.get(client)
    }

    /// How many clients are known.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True when no client is known.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Every stored line, for catching a (re)connected neighbour up. Only the pointers are
    /// copied.
    pub fn snapshot(&self) -> Vec<Arc<[u8]>> {
        self.records.values().map(|r| r.line.clone()).collect()
    }
}

/// Where field `n` (from 0) of a line of single-space-separated fields sits.
fn field_range(line: &[u8], n: usize) -> Option<std::ops::Range<usize>> {
    let start = if n == 0 {
        0
    } else {
        line.iter()
            .enumerate()
            .filter(|&(_, &b)| b == b' ')
            .nth(n - 1)?
            .0
            + 1
    };
    let len = line[start..]
        .iter()
        .position(|&b| b == b' ')
        .unwrap_or(line.len() - start);
    Some(start..start + len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Command, parse};

    fn at(line: &[u8]) -> (Report<'_>, Vec<u8>) {
        match parse(line) {
            Some(Command::At { report, line, .. }) => (report, line),
            _ => panic!("not an AT line"),
        }
    }

    #[test]
    fn newer_wins_by_number_not_by_string() {
        let mut store = Locations::new();
        let (r, l) = at(b"AT A +0.1 kiwi +34.5-118.25 99.5");
        assert!(store.update(&r, &l).is_some());
        // "100" < "99.5" as strings, but it is newer.
        let (r2, l2) = at(b"AT B +0.1 kiwi +1-2 100");
        assert_eq!(store.update(&r2, &l2).as_deref(), Some(&l2[..]));
        // Same time again, or older: nothing changes.
        assert!(store.update(&r2, &l2).is_none());
        assert!(store.update(&r, &l).is_none());
        let rec = store.get(b"kiwi").unwrap();
        assert_eq!(&rec.line[..], &l2[..]);
        assert_eq!(rec.lat_lng_text(), ("1".to_string(), "-2".to_string()));
        assert_eq!(store.len(), 1);
        assert_eq!(store.snapshot().len(), 1);
    }

    #[test]
    fn location_text_without_plus() {
        let mut store = Locations::new();
        let (r, l) = at(b"AT A +0.1 +1+2 +34.068930-118.445127 5");
        store.update(&r, &l);
        let rec = store.get(b"+1+2").unwrap();
        assert_eq!(
            rec.lat_lng_text(),
            ("34.068930".to_string(), "-118.445127".to_string())
        );
    }
}
