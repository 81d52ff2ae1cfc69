//! What the dispatcher learns per worker and passes on to the arbiter:
//! requests served against the worker's own limit, and its RSS after each
//! request when a memory limit applies to RSS. The dispatcher only counts
//! and measures; deciding what happens next is the arbiter's job.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::worker::memory::RssProbe;
use crate::worker::WorkerId;

/// News for the arbiter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolNews {
    /// A retiring worker's last lane came back.
    Drained {
        /// Which worker.
        worker: WorkerId,
        /// Requests it served in all.
        served: u64,
    },
    /// The worker has been given its request limit (the last ones may
    /// still be running).
    RequestLimit {
        /// Which worker.
        worker: WorkerId,
        /// Requests served so far.
        served: u64,
    },
    /// The worker's RSS after a request: sent while it is above the
    /// threshold, and once more when it drops back below.
    Rss {
        /// Which worker.
        worker: WorkerId,
        /// Resident bytes.
        bytes: u64,
        /// Requests served so far.
        served: u64,
    },
}

/// The terms a worker is admitted on.
#[derive(Debug, Default)]
pub struct WorkerTerms {
    /// Requests given to the worker after which the arbiter hears `RequestLimit`.
    pub request_limit: Option<u64>,
    /// Requests the worker is given at most, whatever its standing
    /// (`max_requests + max_requests_jitter`): past its own limit it may
    /// serve on while its replacement boots, but never past this.
    pub request_cap: Option<u64>,
    /// RSS checked after each request, reported above this many bytes.
    pub rss_watch: Option<(RssProbe, u64)>,
}

/// A worker's running tally.
#[derive(Debug, Default)]
pub(super) struct Tally {
    pub request_limit: Option<u64>,
    pub request_cap: Option<u64>,
    /// Its RSS probe, which each lease carries so the reading after a
    /// request is taken outside the dispatcher's lock, and the threshold.
    pub rss_watch: Option<(Arc<RssProbe>, u64)>,
    pub served: u64,
    /// Requests handed to the worker so far (served or running).
    pub taken: u64,
    rss_over: bool,
}

impl Tally {
    pub fn new(terms: WorkerTerms) -> Tally {
        Tally {
            request_limit: terms.request_limit,
            request_cap: terms.request_cap,
            rss_watch: terms
                .rss_watch
                .map(|(probe, threshold)| (Arc::new(probe), threshold)),
            served: 0,
            taken: 0,
            rss_over: false,
        }
    }

    /// What reads the worker's RSS after a request, if a limit applies to it.
    pub fn rss_probe(&self) -> Option<Arc<RssProbe>> {
        self.rss_watch.as_ref().map(|(probe, _)| probe.clone())
    }

    /// Whether the worker may be given `more` requests beyond those it has.
    pub fn has_room(&self, more: u64) -> bool {
        self.request_cap.is_none_or(|cap| self.taken + more < cap)
    }

    /// Whether it has been given its request limit or the last count
    /// found RSS over its threshold: the worker is about to be told to retire.
    pub fn due(&self) -> bool {
        self.rss_over || self.request_limit.is_some_and(|limit| self.taken >= limit)
    }

    /// One more request given to `worker`. The arbiter hears of the limit
    /// when it is handed out, not when it is done, so the replacement can
    /// take over before the worker is asked for more.
    pub fn take(&mut self, worker: WorkerId, news: &mpsc::UnboundedSender<PoolNews>) {
        self.taken += 1;
        if self.request_limit == Some(self.taken) {
            let _ = news.send(PoolNews::RequestLimit {
                worker,
                served: self.served,
            });
        }
    }

    /// One more request done on `worker`, which read `rss` bytes after it
    /// (None: no probe, or the process vanished and its exit is on the way).
    pub fn count(
        &mut self,
        worker: WorkerId,
        rss: Option<u64>,
        news: &mpsc::UnboundedSender<PoolNews>,
    ) {
        self.served += 1;
        if let Some((_, threshold)) = &self.rss_watch {
            if let Some(bytes) = rss {
                let over = bytes > *threshold;
                if over || self.rss_over {
                    let _ = news.send(PoolNews::Rss {
                        worker,
                        bytes,
                        served: self.served,
                    });
                }
                self.rss_over = over;
            }
        }
    }
}

/// How much a worker may serve while its replacement boots. Ordered: a
/// worker serves only when no accepting worker has a better standing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Standing {
    /// Not being replaced.
    #[default]
    Normal,
    /// Being replaced (max-requests, reload): serves only when no worker
    /// in normal standing is left, so the pool never stalls.
    Reserve,
    /// Being replaced for memory: takes no new requests; they go to other
    /// workers or wait for the replacement rather than grow it further. (With
    /// `-w 1` the arbiter uses Reserve instead, so one worker never stalls.)
    Excluded,
}
