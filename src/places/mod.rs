//! Where WHATSAT answers come from: the [`Provider`] trait and its implementations.
//!
//! A provider runs on a worker thread (see `workers`), never on the event loop, so it may
//! block (read a file, make an HTTP request). It returns a JSON object in the shape of
//! Google's Nearby Search response (`html_attributions`, `results`, `status`, maybe
//! `error_message`), with *all* the results it has: the loop cuts them to each WHATSAT's bound.

pub mod google;
pub mod offline;

use serde_json::Value;

/// The most places a WHATSAT may ask for (SPEC §2: a bound from 0 to 20).
pub const MAX_BOUND: usize = 20;

/// One places lookup, as a worker receives it.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// Latitude in decimal degrees.
    pub lat: f64,
    /// Longitude in decimal degrees.
    pub lng: f64,
    /// Latitude as the client wrote it, without a leading `+` (`34.068930`).
    pub lat_text: String,
    /// Longitude as the client wrote it, without a leading `+` (`-118.445127`).
    pub lng_text: String,
    /// Radius in metres.
    pub radius_m: f64,
    /// Radius in metres as exact decimal text (`10587.1263` for `10.5871263` km).
    pub radius_m_text: String,
    /// How many results the provider should fetch at most (its `fetch_bound`).
    pub max_results: usize,
}

/// A source of places. Implementations must be cheap to share between worker threads.
pub trait Provider: Send + Sync {
    /// A short name for logs (`offline`, `google`, `google-new`).
    fn name(&self) -> &'static str;

    /// How many results to ask for when some WHATSAT wants `bound` of them. Lookups that
    /// share a location, a radius and this number share one request (coalescing), so a
    /// provider whose request does not depend on the bound returns [`MAX_BOUND`].
    fn fetch_bound(&self, bound: usize) -> usize {
        let _ = bound;
        MAX_BOUND
    }

    /// Looks places up. Never panics on bad data from outside; failures come back as a
    /// Google-shaped body with `"status" : "UNKNOWN_ERROR"` and an `error_message`.
    fn nearby(&self, query: &Query) -> Value;
}
