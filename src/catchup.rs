//! A catch-up: everything a server knows, owed to a neighbour whose link has just come up
//! after being down (see `peer`).
//!
//! It is read from the store a chunk at a time ([`CHUNK`] lines, through a [`Cursor`]),
//! never copied whole: copying a million records takes about 40 ms, a stall of the loop
//! while this server's own clients wait, where a chunk takes about 2 ms. And its first line
//! says how big it is (`sync=N`, see `protocol::SYNC`), so that a restarted neighbour makes
//! room for every client at once instead of growing its store a doubling at a time.
//!
//! A catch-up can also be a given list of lines ([`CatchUp::of_lines`]): what a server held
//! back from a neighbour while that neighbour caught it up (see `owed`).

use std::rc::Rc;

use crate::store::{Cursor, Locations};

/// Lines read from the store at a time.
pub const CHUNK: usize = 16 << 10;

/// What is still owed to one neighbour.
#[derive(Debug)]
pub struct CatchUp {
    /// Where the next chunk starts in the store (`None`: nothing to read from it).
    cursor: Option<Cursor>,
    /// The chunk being sent.
    chunk: Vec<Rc<[u8]>>,
    /// How many clients the store held when the catch-up began.
    size: usize,
    /// The size is still to be told (on the first line).
    announce: bool,
}

impl CatchUp {
    /// A catch-up of everything `store` holds now.
    pub fn new(store: &Locations) -> CatchUp {
        CatchUp {
            cursor: Some(store.cursor()),
            chunk: Vec::new(),
            size: store.len(),
            announce: true,
        }
    }

    /// A catch-up of just these lines.
    pub fn of_lines(lines: Vec<Rc<[u8]>>) -> CatchUp {
        CatchUp {
            cursor: None,
            size: lines.len(),
            chunk: lines,
            announce: true,
        }
    }

    /// The catch-up's size, the first time it is asked: its first line carries it.
    pub fn announce(&mut self) -> Option<usize> {
        std::mem::take(&mut self.announce).then_some(self.size)
    }

    /// The next line to send, or `None` when the catch-up is done.
    pub fn next(&mut self, store: &Locations) -> Option<Rc<[u8]>> {
        if let (true, Some(cursor)) = (self.chunk.is_empty(), &mut self.cursor) {
            store.read(cursor, CHUNK, &mut self.chunk);
        }
        // Each chunk goes out backwards: the order does not matter.
        self.chunk.pop()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Command, parse};
    use crate::store::Update;

    #[test]
    fn a_catch_up_of_lines_sends_just_those_lines_and_announces_their_number() {
        let mut store = Locations::new();
        let Some(Command::At { report, line, .. }) = parse(b"AT A +0.1 c +1-2 5") else {
            panic!("not an AT line");
        };
        let key = store.key(report.client);
        assert!(matches!(
            store.update(key, &report, &line),
            Update::Stored(_)
        ));
        let lines: Vec<Rc<[u8]>> = vec![Rc::from(&b"AT B +0.1 x +1-2 6"[..])];
        let mut catch_up = CatchUp::of_lines(lines.clone());
        assert_eq!(catch_up.announce(), Some(1));
        assert_eq!(catch_up.announce(), None);
        // Not the store's line: only those given.
        assert_eq!(catch_up.next(&store), Some(lines[0].clone()));
        assert_eq!(catch_up.next(&store), None);
    }
}
