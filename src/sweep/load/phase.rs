//! One stretch of load (the warm-up or the measured run): its clock origin,
//! its shared [`Tally`], the concurrency gauge the models move, and the task
//! that samples that gauge at the end of every second. The models record
//! through it; it knows nothing about how load is generated.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::tally::{Outcome, Tally};
use crate::sweep::model::LoadResult;

/// Shared by every task of one stretch of load.
#[derive(Clone)]
pub(crate) struct Phase {
    start: Instant,
    tally: Arc<Mutex<Tally>>,
    gauge: Arc<AtomicU64>,
}

impl Phase {
    /// Starts a stretch now.
    pub(crate) fn start() -> Phase {
        Phase {
            start: Instant::now(),
            tally: Arc::new(Mutex::new(Tally::new())),
            gauge: Arc::new(AtomicU64::new(0)),
        }
    }

    /// When it started.
    pub(crate) fn started(&self) -> Instant {
        self.start
    }

    /// A request to endpoint number `endpoint` was sent now.
    pub(crate) fn sent(&self, endpoint: usize) {
        let at = self.start.elapsed();
        self.tally().sent(at, endpoint);
    }

    /// An arrival was dropped now.
    pub(crate) fn dropped(&self) {
        let at = self.start.elapsed();
        self.tally().dropped(at);
    }

    /// A request to endpoint number `endpoint` ended now.
    pub(crate) fn ended(&self, endpoint: usize, outcome: Outcome) {
        let at = self.start.elapsed();
        self.tally().ended(at, endpoint, outcome);
    }

    /// One more user running or request in flight.
    pub(crate) fn enter(&self) {
        self.gauge.fetch_add(1, Ordering::Relaxed);
    }

    /// One fewer.
    pub(crate) fn leave(&self) {
        self.gauge.fetch_sub(1, Ordering::Relaxed);
    }

    /// Samples the gauge into the series at the end of each second until aborted.
    pub(crate) fn spawn_sampler(&self) -> JoinHandle<()> {
        let phase = self.clone();
        tokio::spawn(async move {
            for second in 0u32.. {
                tokio::time::sleep_until(phase.start + Duration::from_secs(u64::from(second) + 1))
                    .await;
                let value = phase.gauge.load(Ordering::Relaxed);
                phase.tally().concurrency(second, value);
            }
        })
    }

    /// Closes the tally now; see [`Tally::finish`].
    pub(crate) fn finish(&self) -> LoadResult {
        let elapsed = self.start.elapsed();
        self.tally().finish(elapsed)
    }

    fn tally(&self) -> MutexGuard<'_, Tally> {
        // A panic elsewhere while holding the lock leaves counts that are
        // still whole numbers; keep counting rather than panic again.
        self.tally.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
