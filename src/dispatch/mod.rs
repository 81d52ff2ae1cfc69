//! The dispatcher: which worker lane serves the next request. Each request
//! takes an idle lane of the least-loaded worker that accepts work; when
//! none is idle it waits in a bounded FIFO ([`queue`]) until a lane frees up
//! or the queue timeout passes (the HTTP side turns both refusals into 503).
//!
//! It only sees lanes and worker ids; which workers exist and when they
//! retire is the arbiter's business, told through `add_worker`,
//! `deprioritize`, `retire` and `remove`. A retiring worker's lanes close as
//! they come back, and the dispatcher reports when the last one is gone. It
//! also counts each worker's requests and checks its RSS after each one
//! ([`terms`]), and reports limits reached as [`PoolNews`].

mod lease;
pub mod queue;
pub mod terms;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::protocol::lane::Lane;
use crate::worker::WorkerId;
pub use lease::LaneLease;
use queue::{Handover, WaitQueue};
use terms::Tally;
pub use terms::{PoolNews, Standing, WorkerTerms};

/// Why a request got no lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DispatchError {
    /// Every lane is busy and the wait queue is full.
    #[error("all workers are busy and the wait queue is full")]
    QueueFull,
    /// The request waited longer than the queue timeout.
    #[error("no worker became free within the queue timeout")]
    QueueTimeout,
    /// The server is stopping.
    #[error("the server is shutting down")]
    ShuttingDown,
}

/// Load figures for readiness probes, logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DispatchStats {
    /// Workers accepting requests.
    pub accepting_workers: usize,
    /// Lanes serving a request right now.
    pub busy_lanes: usize,
    /// Idle lanes of accepting workers.
    pub idle_lanes: usize,
    /// Requests waiting for a lane.
    pub queued: usize,
}

/// Shared handle; clones are cheap and see the same pool.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    queue_timeout: Duration,
    news: mpsc::UnboundedSender<PoolNews>,
    /// Hears how long each queued request waited, for metrics.
    queue_wait: Option<QueueWaitObserver>,
}

/// A callback that hears each queued request's wait.
pub type QueueWaitObserver = Box<dyn Fn(Duration) + Send + Sync>;

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("state", &self.state)
            .field("queue_timeout", &self.queue_timeout)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct State {
    slots: Vec<Slot>,
    /// Waiting requests, each with its encoded request ready to write.
    queue: WaitQueue<LaneLease, Bytes>,
    closed: bool,
    /// Lanes handed out so far, the clock of `Slot::last_pick`.
    picks: u64,
}

#[derive(Debug)]
struct Slot {
    worker: WorkerId,
    idle: Vec<Lane>,
    /// Lanes still open: idle plus leased.
    open_lanes: usize,
    accepting: bool,
    /// Whether it is being replaced, and how much it may still serve.
    standing: Standing,
    /// When it was last picked (the pool's pick count then): ties go to
    /// the least recently picked worker.
    last_pick: u64,
    tally: Tally,
}

impl Dispatcher {
    /// A dispatcher with no workers yet; `news` hears drained workers and
    /// limits reached; `queue_wait`, if given, how long queued requests waited.
    pub fn new(
        backlog: usize,
        queue_timeout: Duration,
        news: mpsc::UnboundedSender<PoolNews>,
        queue_wait: Option<QueueWaitObserver>,
    ) -> Dispatcher {
        Dispatcher {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    slots: Vec::new(),
                    queue: WaitQueue::new(backlog.max(1)),
                    closed: false,
                    picks: 0,
                }),
                queue_timeout,
                news,
                queue_wait,
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock is a bug elsewhere; the pool data
        // itself stays consistent, so keep serving.
        self.shared
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits for a lane: at once if one is idle, else in the queue. A queued
    /// request is written to its lane the moment the lane frees up, by
    /// whoever frees it, so a busy worker goes straight on to the next
    /// request; [`LaneLease::request_written`] then says so.
    pub async fn acquire(&self, request: Bytes) -> Result<LaneLease, DispatchError> {
        let waiting = {
            let mut state = self.state();
            if state.closed {
                return Err(DispatchError::ShuttingDown);
            }
            if let Some((worker, lane)) = state.pick() {
                return Ok(self.lease(worker, lane));
            }
            state
                .queue
                .push(request)
                .map_err(|_| DispatchError::QueueFull)?
        };
        let queued_at = self.shared.queue_wait.as_ref().map(|_| Instant::now());
        let outcome = tokio::time::timeout(self.shared.queue_timeout, waiting).await;
        if let (Some(observe), Some(at)) = (&self.shared.queue_wait, queued_at) {
            observe(at.elapsed());
        }
        match outcome {
            Ok(Ok(lease)) => Ok(lease),
            Ok(Err(_)) => Err(DispatchError::ShuttingDown),
            Err(_) => Err(DispatchError::QueueTimeout),
        }
    }

    fn lease(&self, worker: WorkerId, lane: Lane) -> LaneLease {
        LaneLease::new(lane, worker, self.clone())
    }

    /// Makes a ready worker's lanes available; queued requests get them first.
    pub fn add_worker(&self, worker: WorkerId, lanes: Vec<Lane>, terms: WorkerTerms) {
        let mut orphans = Vec::new();
        let mut state = self.state();
        state.slots.push(Slot {
            worker,
            idle: Vec::with_capacity(lanes.len()),
            open_lanes: lanes.len(),
            accepting: true,
            standing: Standing::Normal,
            last_pick: 0,
            tally: Tally::new(terms),
        });
        for lane in lanes {
            orphans.extend(self.put_back(&mut state, worker, lane));
        }
        drop(state);
        drop(orphans);
    }

    /// The worker's replacement is booting: from now on it serves only as
    /// `standing` allows.
    pub fn set_standing(&self, worker: WorkerId, standing: Standing) {
        let mut orphans = Vec::new();
        let mut state = self.state();
        if let Some(slot) = state.slots.iter_mut().find(|s| s.worker == worker) {
            slot.standing = standing;
        }
        self.serve_waiters(&mut state, &mut orphans);
        drop(state);
        drop(orphans);
    }

    /// Requests served so far by each worker that still has lanes here.
    pub fn served(&self) -> Vec<(WorkerId, u64)> {
        let state = self.state();
        state
            .slots
            .iter()
            .map(|s| (s.worker, s.tally.served))
            .collect()
    }

    /// Stops giving the worker requests; its lanes close as they come back.
    pub fn retire(&self, worker: WorkerId) {
        let mut state = self.state();
        let Some(slot) = state.slots.iter_mut().find(|s| s.worker == worker) else {
            return;
        };
        slot.accepting = false;
        slot.open_lanes -= slot.idle.len();
        slot.idle.clear();
        self.forget_if_drained(&mut state, worker);
        // A worker in reserve may be the one left to serve the waiters.
        let mut orphans = Vec::new();
        self.serve_waiters(&mut state, &mut orphans);
        drop(state);
        drop(orphans);
    }

    /// Forgets a worker that is gone; its leased lanes are dropped on return.
    pub fn remove(&self, worker: WorkerId) {
        let mut orphans = Vec::new();
        let mut state = self.state();
        state.slots.retain(|s| s.worker != worker);
        self.serve_waiters(&mut state, &mut orphans);
        drop(state);
        drop(orphans);
    }

    /// Refuses new requests and empties the queue (its waiters get
    /// `ShuttingDown`); leased lanes finish their requests.
    pub fn close(&self) {
        let mut state = self.state();
        state.closed = true;
        state.queue = WaitQueue::new(1);
    }

    /// Current load figures.
    pub fn stats(&self) -> DispatchStats {
        let state = self.state();
        let mut stats = DispatchStats {
            queued: state.queue.len(),
            ..DispatchStats::default()
        };
        for slot in &state.slots {
            stats.busy_lanes += slot.open_lanes - slot.idle.len();
            if slot.accepting {
                stats.accepting_workers += 1;
                stats.idle_lanes += slot.idle.len();
            }
        }
        stats
    }

    /// A lane is back from a finished request.
    fn release(&self, worker: WorkerId, lane: Lane) {
        let mut state = self.state();
        if let Some(slot) = state.slots.iter_mut().find(|s| s.worker == worker) {
            slot.tally.count(worker, &self.shared.news);
        }
        let orphan = self.put_back(&mut state, worker, lane);
        drop(state);
        // Dropped outside the lock: it cancels its request and comes back.
        drop(orphan);
    }

    /// A broken lane is closed instead of coming back.
    fn discard(&self, worker: WorkerId) {
        let mut state = self.state();
        if let Some(slot) = state.slots.iter_mut().find(|s| s.worker == worker) {
            slot.open_lanes -= 1;
        }
        self.forget_if_drained(&mut state, worker);
    }

    /// Returns a lease whose waiter left just as its request was written:
    /// the caller drops it once the lock is released.
    #[must_use]
    fn put_back(&self, state: &mut State, worker: WorkerId, lane: Lane) -> Option<LaneLease> {
        let Some(slot) = state.slots.iter_mut().find(|s| s.worker == worker) else {
            return None; // the worker is gone: drop the lane
        };
        if !slot.accepting {
            slot.open_lanes -= 1;
            self.forget_if_drained(state, worker);
            return None;
        }
        if !state.may_serve(worker) {
            state.park(worker, lane);
            return None;
        }
        self.hand_over(state, worker, lane)
    }

    /// Gives idle lanes that may serve to waiting requests, oldest first.
    fn serve_waiters(&self, state: &mut State, orphans: &mut Vec<LaneLease>) {
        while !state.queue.is_empty() {
            let Some((worker, lane)) = state.pick() else {
                return;
            };
            orphans.extend(self.hand_over(state, worker, lane));
        }
    }

    #[must_use]
    fn hand_over(&self, state: &mut State, worker: WorkerId, lane: Lane) -> Option<LaneLease> {
        let write_request = |lease: &mut LaneLease, request: &Bytes| {
            lease.lane().write_now(request);
            lease.mark_written();
        };
        match state
            .queue
            .hand_over(self.lease(worker, lane), write_request)
        {
            Handover::Delivered => None,
            Handover::NoWaiter(mut lease) => {
                let lane = lease.take_lane().expect("a fresh lease holds its lane");
                state.park(worker, lane);
                None
            }
            Handover::Orphaned(lease) => Some(lease),
        }
    }

    fn forget_if_drained(&self, state: &mut State, worker: WorkerId) {
        let drained = state
            .slots
            .iter()
            .position(|s| s.worker == worker && !s.accepting && s.open_lanes == 0);
        if let Some(index) = drained {
            let slot = state.slots.swap_remove(index);
            let _ = self.shared.news.send(PoolNews::Drained {
                worker,
                served: slot.tally.served,
            });
        }
    }
}

impl State {
    /// The best standing among accepting workers: a worker serves only if
    /// its standing allows it next to that one. Excluded workers never do.
    fn lowest_standing(&self) -> Option<Standing> {
        let best = self
            .slots
            .iter()
            .filter(|s| s.accepting)
            .map(|s| s.standing)
            .min()?;
        (best != Standing::Excluded).then_some(best)
    }

    fn may_serve(&self, worker: WorkerId) -> bool {
        let floor = self.lowest_standing();
        self.slots
            .iter()
            .any(|s| s.worker == worker && floor.is_some_and(|f| s.standing <= f))
    }

    fn park(&mut self, worker: WorkerId, lane: Lane) {
        if let Some(slot) = self.slots.iter_mut().find(|s| s.worker == worker) {
            slot.idle.push(lane);
        }
    }

    /// The least-loaded idle lane among the workers that may serve.
    /// Among equally loaded workers the least recently picked wins, so
    /// light load rotates over every worker instead of piling onto the
    /// first (which would make one worker leak, and recycle, for all).
    fn pick(&mut self) -> Option<(WorkerId, Lane)> {
        let floor = self.lowest_standing()?;
        self.picks += 1;
        let picks = self.picks;
        let slot = self
            .slots
            .iter_mut()
            .filter(|s| s.accepting && s.standing <= floor && !s.idle.is_empty())
            .min_by_key(|s| (s.standing, s.open_lanes - s.idle.len(), s.last_pick))?;
        slot.last_pick = picks;
        Some((slot.worker, slot.idle.pop()?))
    }
}

#[cfg(test)]
mod tests;
