//! A catch-up: everything a server knows, owed to a neighbour whose link has just come up
//! after being down (see `peer`).
//!
//! It is read from the store a chunk at a time ([`CHUNK`] lines, through a [`Cursor`]),
//! never copied whole: copying a million records takes about 40 ms, a stall of the loop
//! while this server's own clients wait, where a chunk takes about 2 ms. And its first line
//! says how big it is (`sync=N`, see `protocol::SYNC`), so that a restarted neighbour makes
//! room for every client at once instead of growing its store a doubling at a time.

use std::sync::Arc;

use crate::store::{Cursor, Locations};

/// Lines read from the store at a time.
pub const CHUNK: usize = 16 << 10;

/// What is still owed to one neighbour.
#[derive(Debug)]
pub struct CatchUp {
    /// Where the next chunk starts in the store.
    cursor: Cursor,
    /// The chunk being sent.
    chunk: Vec<Arc<[u8]>>,
    /// How many clients the store held when the catch-up began.
    size: usize,
    /// The size is still to be told (on the first line).
    announce: bool,
}

impl CatchUp {
    /// A catch-up of everything `store` holds now.
    pub fn new(store: &Locations) -> CatchUp {
        CatchUp {
            cursor: store.cursor(),
            chunk: Vec::new(),
            size: store.len(),
            announce: true,
        }
    }

    /// The catch-up's size, the first time it is asked: its first line carries it.
    pub fn announce(&mut self) -> Option<usize> {
        std::mem::take(&mut self.announce).then_some(self.size)
    }

    /// The next line to send, or `None` when the catch-up is done.
    pub fn next(&mut self, store: &Locations) -> Option<Arc<[u8]>> {
        if self.chunk.is_empty() {
            store.read(&mut self.cursor, CHUNK, &mut self.chunk);
        }
        // Each chunk goes out backwards: the order does not matter.
        self.chunk.pop()
    }
}
