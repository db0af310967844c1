//! The location store and what a line asks of it: shared by tokio-herd and threads-herd (which
//! includes this file by path), so the two Rust herds differ only in how they run.

use crate::proto::{self, Command, Nanos};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::info;

/// The newest AT line known for each client, behind a lock (every task or thread shares it).
#[derive(Default)]
pub struct Locations {
    records: Mutex<HashMap<String, (Nanos, Arc<str>)>>,
}

impl Locations {
    /// Stores `line` if it is newer than what we know for `id`; says whether it was.
    pub fn store_if_newer(&self, id: &str, time_ns: Nanos, line: &Arc<str>) -> bool {
        let mut records = self.records.lock().expect("locations lock");
        if let Some((known, _)) = records.get(id)
            && *known >= time_ns
        {
            return false;
        }
        records.insert(id.to_string(), (time_ns, Arc::clone(line)));
        true
    }

    pub fn lookup(&self, id: &str) -> Option<Arc<str>> {
        let records = self.records.lock().expect("locations lock");
        records.get(id).map(|(_, l)| Arc::clone(l))
    }

    /// Every stored AT line: what a (re)connected link sends first.
    pub fn snapshot(&self) -> Vec<Arc<str>> {
        let records = self.records.lock().expect("locations lock");
        records.values().map(|(_, l)| Arc::clone(l)).collect()
    }
}

fn now_ns() -> Nanos {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as Nanos)
        .unwrap_or(0)
}

/// What is left to do for a line once its location part is done.
pub enum Action {
    /// Write this reply.
    Reply(String),
    /// Nothing to write (an AT line from a neighbour).
    Silent,
    /// Look places up around the stored `at` line's location; the reply is `at`, the JSON,
    /// and a blank line.
    Whatsat {
        at: Arc<str>,
        radius_km: f64,
        bound: usize,
    },
}

/// Acts on one line for server `name`: a newer location (IAMAT, AT) is stored and handed to
/// `flood` before the IAMAT's reply is returned, as the flood must beat the client to the
/// next server.
pub fn act(name: &str, locations: &Locations, line: &str, flood: impl Fn(&Arc<str>)) -> Action {
    let received = now_ns();
    let learn = |id: &str, time_ns: Nanos, at: &Arc<str>| {
        let newer = locations.store_if_newer(id, time_ns, at);
        if newer {
            flood(at);
        }
        newer
    };
    match proto::parse(line) {
        Some(Command::Iamat {
            id,
            location,
            time,
            time_ns,
        }) => {
            let at = format!(
                "AT {name} {} {id} {location} {time}",
                proto::format_diff(received - time_ns)
            );
            learn(id, time_ns, &Arc::from(at.as_str()));
            Action::Reply(at + "\n")
        }
        Some(Command::At { id, time_ns, line }) => {
            if learn(id, time_ns, &Arc::from(line.as_str())) {
                info!("learned {id}");
            }
            Action::Silent
        }
        Some(Command::Whatsat {
            id,
            radius_km,
            bound,
        }) => match locations.lookup(id) {
            Some(at) => Action::Whatsat {
                at,
                radius_km,
                bound,
            },
            None => Action::Reply(format!("? {line}\n")),
        },
        None => Action::Reply(format!("? {line}\n")),
    }
}

/// What a read of one line (at most `max_line` + 1 bytes, up to and with its newline) holds.
pub enum Input<'a> {
    /// Longer than the limit: answer with this and close.
    TooLong(String),
    /// Only whitespace: ignored.
    Blank,
    /// A line, without its line ending.
    Line(&'a str),
}

/// Classifies the bytes of one read line, `text` being `buf` as UTF-8 (lossy).
pub fn input<'a>(buf: &[u8], text: &'a str, max_line: usize) -> Input<'a> {
    if buf.last() != Some(&b'\n') && buf.len() > max_line {
        let head = String::from_utf8_lossy(&buf[..max_line]);
        return Input::TooLong(format!("? {head}\n"));
    }
    let line = text.strip_suffix('\n').unwrap_or(text);
    let line = line.strip_suffix('\r').unwrap_or(line);
    if line.trim().is_empty() && !line.is_empty() {
        return Input::Blank;
    }
    Input::Line(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn stores_and_floods_only_newer_locations() {
        let locations = Locations::default();
        let flooded = RefCell::new(Vec::new());
        let flood = |at: &Arc<str>| flooded.borrow_mut().push(at.to_string());
        let reply = act(
            "Hamilton",
            &locations,
            "IAMAT kiwi +34-118 1700000000.5",
            flood,
        );
        let Action::Reply(text) = reply else {
            panic!("an IAMAT is answered")
        };
        assert!(
            text.starts_with("AT Hamilton +") && text.ends_with(" kiwi +34-118 1700000000.5\n")
        );
        // An older AT from a neighbour is dropped, a newer one stored and flooded.
        let old = "AT Parker +0.1 kiwi +1-1 1600000000";
        assert!(matches!(
            act("Hamilton", &locations, old, flood),
            Action::Silent
        ));
        assert_eq!(flooded.borrow().len(), 1);
        let new = "AT Parker +0.1 kiwi +1-1 1800000000 via=Parker";
        assert!(matches!(
            act("Hamilton", &locations, new, flood),
            Action::Silent
        ));
        assert_eq!(flooded.borrow()[1], "AT Parker +0.1 kiwi +1-1 1800000000");
        assert!(matches!(
            act("Hamilton", &locations, "WHATSAT kiwi 10 5", flood),
            Action::Whatsat { bound: 5, .. }
        ));
        assert!(matches!(
            act("Hamilton", &locations, "WHATSAT nobody 10 5", flood),
            Action::Reply(r) if r == "? WHATSAT nobody 10 5\n"
        ));
        assert_eq!(locations.snapshot().len(), 1);
    }

    #[test]
    fn classifies_input_lines() {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let b = b"IAMAT x\r\n";
        assert!(matches!(input(b, &text(b), 64), Input::Line("IAMAT x")));
        let b = b" \t\n";
        assert!(matches!(input(b, &text(b), 64), Input::Blank));
        let b = b"abcdef";
        assert!(matches!(input(b, &text(b), 4), Input::TooLong(r) if r == "? abcd\n"));
    }
}
