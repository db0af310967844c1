//! The places lookup pool: Twisted's `deferToThread` and `callFromThread`, by hand.
//!
//! Worker threads own no socket and no server state. Each takes a [`Job`] from a bounded
//! queue, asks the provider (which may block: a file, an HTTP request), prints the answer
//! once ([`json::prepare`]), sends a [`Done`] back over a channel and wakes the loop with the
//! `mio::Waker`. Wakes coalesce — ten results may cost one wake — so the loop drains the whole
//! channel every time it is woken (as libuv's threadpool does).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;

use mio::Waker;

use crate::json::{self, Prepared};
use crate::places::{Provider, Query};
use crate::timeline;

/// What makes two lookups the same (and so shareable): the location, the radius and how
/// many results are fetched. Floats are compared by their bits: `+34.5` and `+34.50` are one
/// location.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LookupKey {
    lat_bits: u64,
    lng_bits: u64,
    radius_m: String,
    fetch: usize,
}

impl LookupKey {
    /// The key of a query.
    pub fn of(query: &Query) -> LookupKey {
        LookupKey {
            lat_bits: query.lat.to_bits(),
            lng_bits: query.lng.to_bits(),
            radius_m: query.radius_m_text.clone(),
            fetch: query.max_results,
        }
    }
}

/// One lookup to do.
#[derive(Debug)]
pub struct Job {
    /// Which in-flight lookup this is.
    pub key: LookupKey,
    /// What to ask the provider.
    pub query: Query,
}

/// One lookup done.
#[derive(Debug)]
pub struct Done {
    /// Which in-flight lookup this answers.
    pub key: LookupKey,
    /// The provider's answer, printed once and shared by every WHATSAT that waited for it.
    pub body: Arc<Prepared>,
    /// The provider's status, for the log.
    pub status: String,
    /// The lookup's number on the timeline (0 without `--timeline`).
    pub flow: u64,
}

/// The pool: a bounded job queue in, a channel of results out.
pub struct Pool {
    /// Each job goes with its number on the timeline.
    jobs: SyncSender<(Job, u64)>,
    results: Receiver<Done>,
}

impl Pool {
    /// Starts `workers` threads answering from `provider`; at most `queue` jobs wait.
    pub fn start(
        provider: Arc<dyn Provider>,
        workers: usize,
        queue: usize,
        waker: Arc<Waker>,
    ) -> Pool {
        let (jobs, job_rx) = mpsc::sync_channel::<(Job, u64)>(queue);
        let (done_tx, results) = mpsc::channel::<Done>();
        // std's Receiver is single-consumer; the workers take turns at it behind a mutex.
        let job_rx = Arc::new(Mutex::new(job_rx));
        for i in 0..workers.max(1) {
            let job_rx = Arc::clone(&job_rx);
            let done_tx = done_tx.clone();
            let provider = Arc::clone(&provider);
            let waker = Arc::clone(&waker);
            thread::Builder::new()
                .name(format!("places-{i}"))
                .spawn(move || worker(i, &*provider, &job_rx, &done_tx, &waker))
                .expect("cannot start a worker thread");
        }
        Pool { jobs, results }
    }

    /// Queues a job; `false` when the queue is full (the caller answers "busy").
    pub fn submit(&self, job: Job) -> bool {
        match self.jobs.try_send((job, timeline::lookup_queued())) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }

    /// Every result that has arrived, without waiting.
    pub fn finished(&self) -> impl Iterator<Item = Done> + '_ {
        self.results.try_iter()
    }
}

/// One worker's life: take a job, look it up, hand the answer back, wake the loop.
fn worker(
    i: usize,
    provider: &dyn Provider,
    jobs: &Mutex<Receiver<(Job, u64)>>,
    done: &mpsc::Sender<Done>,
    waker: &Waker,
) {
    timeline::worker_thread(i);
    loop {
        // The lock is held only while waiting for a job, never while looking it up.
        let job = match jobs.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok((job, flow)) = job else { return }; // the server is gone
        let started = Instant::now();
        let begun = timeline::begin();
        // A provider bug must cost one reply, not a worker: turn a panic into an error body.
        let body = catch_unwind(AssertUnwindSafe(|| provider.nearby(&job.query)))
            .unwrap_or_else(|_| json::error_body("UNKNOWN_ERROR", "the places provider failed"));
        let status = body
            .get("status")
            .and_then(|s| s.as_str())
            .unwrap_or("?")
            .to_string();
        let count = body
            .get("results")
            .and_then(|r| r.as_array())
            .map_or(0, Vec::len);
        log::info!(
            "lookup {} at {},{} radius {} m: {status}, {count} results in {:.1} ms",
            provider.name(),
            job.query.lat_text,
            job.query.lng_text,
            job.query.radius_m_text,
            started.elapsed().as_secs_f64() * 1e3
        );
        let body = Arc::new(json::prepare(&body));
        timeline::lookup_done(flow, begun, &status);
        if done
            .send(Done {
                key: job.key,
                body,
                status,
                flow,
            })
            .is_err()
        {
            return;
        }
        // A failed wake means the poll is gone: the server is stopping.
        let _ = waker.wake();
    }
}
