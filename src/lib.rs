//! # proxy-herd
//!
//! A places proxy herd (UCLA CS 131): named servers that take clients' locations (`IAMAT`),
//! flood them to each other (`AT`), and answer "what is near client X" (`WHATSAT`). Each
//! server is one process running a hand-written, single-threaded event loop on `mio`, the
//! way Twisted's reactor runs a Twisted program.
//!
//! **Start with the [`tour`]**: the life of one IAMAT and one WHATSAT through the loop, the
//! rules the loop keeps and why, Twisted's concepts mapped onto this code, and a real trace.
//! Then read [`server::Server::run`], the whole program in a dozen named steps.
//!
//! # Layout
//!
//! | module | what it holds |
//! |---|---|
//! | [`server`] | the reactor: the poll loop, tokens, accept, read, write, close, timers |
//! | [`transport`] | a nonblocking socket with its output buffer (Twisted's `FileDescriptor`) |
//! | [`client`] | one accepted connection: input lines, replies kept in request order |
//! | [`peer`] | a link to one neighbour: connect, queue, catch-up, backoff, one line per connection |
//! | [`catchup`] | what a catch-up still owes a neighbour: the store, a chunk at a time |
//! | [`owed`] | catch-up lines held back from a neighbour that is catching us up itself |
//! | [`pressure`] | `BUSY` notices: a server further in is behind, or its floods come late |
//! | [`pace`] | how fast the edge takes its clients' lines while floods come late somewhere |
//! | [`liveness`] | TCP keepalive and `TCP_USER_TIMEOUT` on links: noticing a dead neighbour |
//! | [`herd`] | what a line does: IAMAT, AT, WHATSAT, flooding, lookups in flight |
//! | [`auth`] | `--herd-key`: signing and checking AT lines with the herd's secret |
//! | [`protocol`] | parsing and formatting the wire format, pure functions |
//! | [`lines`] | splitting a byte stream into capped lines, pure |
//! | [`store`] | the newest location of every client (a record is its AT line), and the key of its hash |
//! | [`json`] | printing places JSON in Google's layout, cutting results to a bound |
//! | [`workers`] | the places lookup thread pool and its hand-off through the `Waker` |
//! | [`places`] | the providers: offline dataset (built into the binary), Google legacy and New APIs |
//! | [`topology`] | reading `topology.txt`; the built-in default herd |
//! | [`cli`] | the command line and start-up |
//! | [`ask`] | `--ask`: a client for people, one connection, pipelined, half-closed |
//! | [`launcher`] | `--herd`: all servers as child processes |
//! | [`logging`] | the log file: fixed-width records buffered per turn, our logger under simplelog |
//! | [`signals`] | SIGTERM/SIGINT through a self-pipe |
//! | [`timeline`] | `--timeline`: the loop, its workers and the floods as Chrome trace-event JSON for Perfetto |
//! | [`tour`] | documentation only: the guided tour |

// The docs are built with private items (see .cargo/config.toml): the loop's steps are
// private methods, and the tour links to them.
#![allow(rustdoc::private_intra_doc_links)]
// Every public item is documented: the code is read to learn from.
#![warn(missing_docs)]

pub mod ask;
pub mod auth;
pub mod catchup;
pub mod cli;
pub mod client;
pub mod herd;
pub mod json;
pub mod launcher;
pub mod lines;
pub mod liveness;
pub mod logging;
pub mod owed;
pub mod pace;
pub mod peer;
pub mod places;
pub mod pressure;
pub mod protocol;
pub mod server;
pub mod signals;
pub mod store;
pub mod timeline;
pub mod topology;
pub mod tour;
pub mod transport;
pub mod workers;
