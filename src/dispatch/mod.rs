//! The dispatcher: which worker lane serves the next request. Each request
//! takes an idle lane of the least-loaded worker that accepts work; when
//! none is idle it waits in a bounded FIFO ([`queue`]) until a lane frees up
//! or the queue timeout passes (the HTTP side turns both refusals into 503;
//! one timer for the whole queue, [`reap`], expires the waiters).
//!
//! Under overload (two or more requests queued) the oldest queued requests
//! may also wait *in* a busy lane, written behind the running one, so a
//! worker serving short requests goes straight on to the next without
//! sleeping (docs/design/lane-pipelining.md): up to `--pipeline-depth` in a
//! lane counting the running one, only on workers in normal standing whose
//! recent requests took less than `--pipeline-below` and behind a request
//! younger than that, never ahead of an older queued request. If the
//! worker dies before such a request started, it is served elsewhere
//! ([`waiting`]).
//!
//! It only sees lanes and worker ids; which workers exist and when they
//! retire is the arbiter's business, told through `add_worker`,
//! `deprioritize`, `retire` and `remove`. A retiring worker's lanes close as
//! they come back, and the dispatcher reports when the last one is gone. It
//! also counts each worker's requests and checks its RSS after each one
//! ([`terms`]), and reports limits reached as [`PoolNews`]. The pool's state
//! and the transitions made from it alone (admit a request: lend, queue or
//! refuse; a lane back: count, learn, next waiting; which lane, who may
//! serve, who may take a waiting request) are `pool.rs`'s, on a fake clock
//! in its tests. This file is their shell: it reads the clock once per call
//! before taking the lock, holds the lock, and moves requests between the
//! queue and the lanes. Nothing under the lock touches a lane's bytes or
//! /proc: a lease reads its worker's RSS before it comes back, and a
//! queued request given a lane is written to it once the lock is released
//! (`Handoff`).

mod lease;
mod pool;
pub mod queue;
pub mod terms;
mod waiting;

use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::protocol::frame::HEADER_LEN;
use crate::protocol::lane::{Lane, MAX_WAITING_REQUEST};
use crate::worker::WorkerId;
pub use lease::LaneLease;
use pool::{Admission, Slot, State};
use queue::WaitQueue;
use terms::Tally;
pub use terms::{PoolNews, Standing, WorkerTerms};
use waiting::{Delivery, LaneBook, Waiting};

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
    /// The request waited in a lane behind another, and the worker died
    /// after it may have started it (502, like any request in flight).
    #[error("the worker died with the request")]
    WorkerLost,
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
    /// Requests waiting in a busy lane behind the running one.
    pub waiting_in_lanes: usize,
    /// Requests that waited in a lane, since the start.
    pub pipelined_total: u64,
    /// Requests served elsewhere because their lane's worker died before
    /// they started, since the start.
    pub redispatched_total: u64,
}

/// Shared handle; clones are cheap and see the same pool.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    shared: Arc<Shared>,
}

/// When requests may wait in busy lanes (`--pipeline-below`, `--pipeline-depth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pipelining {
    /// Only on workers whose recent requests took less than this; zero never.
    pub below: Duration,
    /// Most requests in a lane, the running one included; 1 never.
    pub depth: usize,
}

impl Pipelining {
    /// Requests never wait in lanes.
    pub const OFF: Pipelining = Pipelining {
        below: Duration::ZERO,
        depth: 1,
    };
}

struct Shared {
    state: Mutex<State>,
    queue_timeout: Duration,
    pipelining: Pipelining,
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
            .field("pipelining", &self.pipelining)
            .finish_non_exhaustive()
    }
}

impl Dispatcher {
    /// A dispatcher with no workers yet; `news` hears drained workers and
    /// limits reached; `queue_wait`, if given, how long queued requests waited.
    pub fn new(
        backlog: usize,
        queue_timeout: Duration,
        pipelining: Pipelining,
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
                    stranded: Vec::new(),
                    pipelined: 0,
                    redispatched: 0,
                    reaping: false,
                }),
                queue_timeout,
                pipelining,
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
    ///
    /// Under overload a queued request may move into a busy lane instead
    /// ([module docs](self)); it is then past the queue, and the queue
    /// timeout no longer applies to it.
    pub async fn acquire(&self, request: Bytes) -> Result<LaneLease, DispatchError> {
        let now = clock();
        let waiting = {
            let mut state = self.state();
            match state.admit(request, now)? {
                Admission::Lend(worker, lane) => {
                    self.give(&mut state, worker);
                    return Ok(self.lease(&mut state, worker, lane, now));
                }
                Admission::Queued(waiting) => {
                    self.move_into_lanes(&mut state, now);
                    if !state.reaping {
                        state.reaping = true;
                        tokio::spawn(reap(Arc::downgrade(&self.shared)));
                    }
                    waiting
                }
            }
        };
        let queued_at = self.shared.queue_wait.as_ref().map(|_| now);
        let outcome = waiting.await;
        if let (Some(observe), Some(at)) = (&self.shared.queue_wait, queued_at) {
            observe(at.elapsed());
        }
        match outcome {
            Ok(delivery) => follow_from(delivery).await,
            Err(_) => Err(DispatchError::ShuttingDown),
        }
    }

    /// Lends `lane`, noting when (`now`), for the service-time average; the
    /// lease carries the worker's RSS probe, read when it comes back.
    fn lease(
        &self,
        state: &mut State,
        worker: WorkerId,
        lane: Box<Lane>,
        now: Instant,
    ) -> LaneLease {
        let slot = state.slot(worker);
        let rss = slot.as_ref().and_then(|s| s.tally.rss_probe());
        if let Some(book) = slot.and_then(|s| s.book(lane.id())) {
            book.since = Some(now);
        }
        LaneLease::new(lane, worker, self.clone(), rss)
    }

    /// Under overload (at least two requests queued), moves the oldest
    /// queued requests into busy lanes, behind their running request, each
    /// into the lane most likely to free up first. With fewer waiting, a
    /// request waits for whichever lane frees up first, as without this.
    fn move_into_lanes(&self, state: &mut State, now: Instant) {
        if self.shared.pipelining.below.is_zero() || self.shared.pipelining.depth < 2 {
            return;
        }
        while state.queue.live_at_least(2) {
            let Some((slot, book)) = state.lane_for_waiting(self.shared.pipelining, now) else {
                return;
            };
            // The oldest live waiter if it is small enough; never a younger
            // one past it.
            let Some((waiter, request)) = state
                .queue
                .pop_if(|r| (HEADER_LEN..=MAX_WAITING_REQUEST).contains(&r.len()))
            else {
                return;
            };
            let (tx, rx) = oneshot::channel();
            if waiter.send(Delivery::Moved(rx)).is_ok() {
                state.slots[slot].books[book].wait(tx, request);
                state.pipelined += 1;
            }
        }
    }

    /// Makes a ready worker's lanes available; queued requests get them first.
    pub fn add_worker(&self, worker: WorkerId, lanes: Vec<Lane>, terms: WorkerTerms) {
        let mut handoffs = Vec::new();
        let now = clock();
        let mut state = self.state();
        state.slots.push(Slot {
            worker,
            idle: Vec::with_capacity(lanes.len()),
            open_lanes: lanes.len(),
            accepting: true,
            standing: Standing::Normal,
            last_pick: 0,
            tally: Tally::new(terms),
            books: lanes.iter().map(LaneBook::new).collect(),
            service: None,
        });
        for lane in lanes {
            // Boxed once for the lane's life: it moves between the pool,
            // its leases and the queue's hand-overs as one pointer.
            handoffs.extend(self.put_back(&mut state, worker, Box::new(lane), now));
        }
        drop(state);
        Handoff::complete_all(handoffs);
    }

    /// The worker's replacement is booting: from now on it serves only as
    /// `standing` allows.
    pub fn set_standing(&self, worker: WorkerId, standing: Standing) {
        let mut handoffs = Vec::new();
        let now = clock();
        let mut state = self.state();
        if let Some(slot) = state.slots.iter_mut().find(|s| s.worker == worker) {
            slot.standing = standing;
        }
        self.serve_waiters(&mut state, &mut handoffs, now);
        drop(state);
        Handoff::complete_all(handoffs);
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
        let now = clock();
        let mut state = self.state();
        let Some(slot) = state.slots.iter_mut().find(|s| s.worker == worker) else {
            return;
        };
        slot.accepting = false;
        slot.open_lanes -= slot.idle.len();
        for lane in std::mem::take(&mut slot.idle) {
            slot.close_book(lane.id());
        }
        self.forget_if_drained(&mut state, worker);
        // A worker in reserve may be the one left to serve the waiters.
        let mut handoffs = Vec::new();
        self.serve_waiters(&mut state, &mut handoffs, now);
        drop(state);
        Handoff::complete_all(handoffs);
    }

    /// Forgets a worker that is gone; its leased lanes are dropped on return.
    pub fn remove(&self, worker: WorkerId) {
        let mut handoffs = Vec::new();
        let now = clock();
        let mut state = self.state();
        if let Some(at) = state.slots.iter().position(|s| s.worker == worker) {
            // `remove`, not `swap_remove`: ties in `pick` go by slot order.
            let slot = state.slots.remove(at);
            for book in slot.books {
                for waiting in book.waiting {
                    state.stranded.push((book.lane, waiting));
                }
            }
        }
        self.serve_waiters(&mut state, &mut handoffs, now);
        drop(state);
        Handoff::complete_all(handoffs);
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
            waiting_in_lanes: state.stranded.len(),
            pipelined_total: state.pipelined,
            redispatched_total: state.redispatched,
            ..DispatchStats::default()
        };
        for slot in &state.slots {
            stats.busy_lanes += slot.open_lanes - slot.idle.len();
            stats.waiting_in_lanes += slot.books.iter().map(|b| b.waiting.len()).sum::<usize>();
            if slot.accepting {
                stats.accepting_workers += 1;
                stats.idle_lanes += slot.idle.len();
            }
        }
        stats
    }

    /// A lane is back from a finished request, after which its worker's
    /// RSS read `rss` (if it is watched). A request waiting in it runs now
    /// and gets the lane; otherwise it goes back to the pool.
    fn release(&self, worker: WorkerId, mut lane: Box<Lane>, rss: Option<u64>) {
        let now = clock();
        let mut state = self.state();
        let waiting = state.lane_back(worker, lane.id(), now, rss, &self.shared.news);
        let handoff = match waiting {
            Some(waiting) => {
                // Its holder never got to write it: it is written once the
                // lock is released. Any behind it the next holder writes
                // while it waits.
                let write = (lane.written() == lane.ended()).then(|| {
                    let _ = lane.take_unwritten_ahead();
                    waiting.request
                });
                // The lane is settled: the request that ended was the
                // last to end, and this one is the next.
                let number = lane.ended() + 1;
                self.give(&mut state, worker);
                let mut lease = self.lease(&mut state, worker, lane, now);
                lease.mark_written_as(number);
                self.move_into_lanes(&mut state, now);
                Some(Handoff {
                    lease,
                    write,
                    to: waiting.tx,
                })
            }
            None => self.put_back(&mut state, worker, lane, now),
        };
        drop(state);
        Handoff::complete_all(handoff);
    }

    /// A broken lane is closed instead of coming back. `running` is the
    /// number of the request that was running on it; requests waiting
    /// behind it are served elsewhere if they never started.
    fn discard(&self, worker: WorkerId, lane: Box<Lane>, running: u64) {
        let now = clock();
        let mut state = self.state();
        let waiting = match state.slots.iter_mut().find(|s| s.worker == worker) {
            Some(slot) => {
                slot.open_lanes -= 1;
                slot.close_book(lane.id())
                    .map(|b| b.waiting)
                    .unwrap_or_default()
            }
            None => state.take_all_stranded(lane.id()),
        };
        self.forget_if_drained(&mut state, worker);
        if waiting.is_empty() {
            return;
        }
        let (running, written) =
            waiting::written_behind(running, lane.ended(), lane.written(), waiting.len());
        let mut waiting = waiting;
        let unwritten = waiting.split_off(written);
        let mut handoffs = Vec::new();
        for request in unwritten.into_iter().rev() {
            self.redispatch(&mut state, request, &mut handoffs, now);
        }
        drop(state);
        Handoff::complete_all(handoffs);
        if !waiting.is_empty() {
            waiting::settle(self.clone(), lane, running, waiting);
        }
    }

    /// Serves a request that waited in a lane whose worker died before it
    /// started: first in the queue, ahead of every queued one.
    fn redispatch(
        &self,
        state: &mut State,
        waiting: Waiting,
        handoffs: &mut Vec<Handoff>,
        now: Instant,
    ) {
        let (tx, rx) = oneshot::channel();
        if waiting.tx.send(Delivery::Moved(rx)).is_err() {
            return; // its client left
        }
        state.redispatched += 1;
        state.queue.push_front(tx, waiting.request);
        self.serve_waiters(state, handoffs, now);
    }

    /// Returns the hand-over to a queued request the lane goes to, if any:
    /// the caller completes it once the lock is released.
    #[must_use]
    fn put_back(
        &self,
        state: &mut State,
        worker: WorkerId,
        lane: Box<Lane>,
        now: Instant,
    ) -> Option<Handoff> {
        let Some(slot) = state.slots.iter_mut().find(|s| s.worker == worker) else {
            return None; // the worker is gone: drop the lane
        };
        if !slot.accepting {
            slot.open_lanes -= 1;
            slot.close_book(lane.id());
            self.forget_if_drained(state, worker);
            return None;
        }
        if !state.may_serve(worker) {
            state.park(worker, lane);
            return None;
        }
        self.hand_over(state, worker, lane, now)
    }

    /// Gives idle lanes that may serve to waiting requests, oldest first.
    fn serve_waiters(&self, state: &mut State, handoffs: &mut Vec<Handoff>, now: Instant) {
        while !state.queue.is_empty() {
            let Some((worker, lane)) = state.pick() else {
                return;
            };
            handoffs.extend(self.hand_over(state, worker, lane, now));
        }
    }

    /// Gives `lane` to the oldest live queued request, whose request is
    /// written to it once the lock is released; parks it if none waits.
    #[must_use]
    fn hand_over(
        &self,
        state: &mut State,
        worker: WorkerId,
        lane: Box<Lane>,
        now: Instant,
    ) -> Option<Handoff> {
        let Some((to, request)) = state.queue.pop_if(|_| true) else {
            state.park(worker, lane);
            return None;
        };
        let lease = self.lease(state, worker, lane, now);
        self.give(state, worker);
        self.move_into_lanes(state, now);
        Some(Handoff {
            lease,
            write: Some(request),
            to,
        })
    }

    /// Counts a request handed to `worker` against its limit and cap.
    fn give(&self, state: &mut State, worker: WorkerId) {
        if let Some(slot) = state.slot(worker) {
            slot.tally.take(worker, &self.shared.news);
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

/// A lane given to a waiting request under the lock, finished after it:
/// the request written (so the worker goes straight on to it, before the
/// waiter's task even runs), then the lease delivered. The lock never
/// covers a write to a lane.
#[must_use]
struct Handoff {
    lease: LaneLease,
    /// The request to write first, unless it is in the lane already.
    write: Option<Bytes>,
    to: oneshot::Sender<Delivery>,
}

impl Handoff {
    fn complete(mut self) {
        if let Some(request) = self.write {
            self.lease.lane().write_now(&request);
            self.lease.mark_written();
        }
        // A waiter that left just now drops the lease here: written
        // already, it cancels its request and comes back.
        let _ = self.to.send(Delivery::Lease(self.lease));
    }

    /// Completes each, once the lock is released.
    fn complete_all(handoffs: impl IntoIterator<Item = Handoff>) {
        handoffs.into_iter().for_each(Handoff::complete);
    }
}

/// The dispatcher's clock: tokio's, which is std's outside tests, so that
/// a test on tokio's paused clock moves the queue timeout (the reaper sleeps
/// on tokio's timer) and the times the dispatcher keeps alike.
fn clock() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// Expires the requests queued longer than the queue timeout, while any
/// are queued: one timer for the whole queue, set for its oldest request's
/// deadline, where a timer per queued request cost the master about 500
/// instructions per request under load (callgrind, plain WSGI). A request
/// queued while it does not run starts it.
async fn reap(shared: Weak<Shared>) {
    loop {
        let deadline = {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let dispatcher = Dispatcher { shared };
            let mut state = dispatcher.state();
            let timeout = dispatcher.shared.queue_timeout;
            if let Some(cutoff) = clock().checked_sub(timeout) {
                for waiter in state.queue.expire(cutoff) {
                    let _ = waiter.send(Delivery::Expired);
                }
            }
            match state
                .queue
                .oldest_admitted()
                .and_then(|admitted| admitted.checked_add(timeout))
            {
                Some(deadline) => deadline,
                None => {
                    state.reaping = false;
                    return;
                }
            }
        };
        tokio::time::sleep_until(deadline.into()).await;
    }
}

/// Waits for a lane, following moves (into a lane, back to the queue).
async fn follow_from(mut delivery: Delivery) -> Result<LaneLease, DispatchError> {
    loop {
        delivery = match delivery {
            Delivery::Lease(lease) => return Ok(lease),
            Delivery::Lost => return Err(DispatchError::WorkerLost),
            Delivery::Expired => return Err(DispatchError::QueueTimeout),
            Delivery::Moved(rx) => match rx.await {
                Ok(next) => next,
                Err(_) => return Err(DispatchError::ShuttingDown),
            },
        };
    }
}

#[cfg(test)]
mod tests;
