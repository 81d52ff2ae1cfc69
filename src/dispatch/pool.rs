//! The pool as the dispatcher keeps it: each worker's slot (idle lanes,
//! standing, request tally, lent lanes, service time) and the choices made
//! from that state alone — which idle lane serves next, which workers may
//! serve, whether a request may wait behind a running one, what becomes of
//! a new request and of a lane that comes back. No I/O and no clock:
//! `mod.rs` holds the lock, reads the time and moves the requests.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::queue::WaitQueue;
use super::terms::{PoolNews, Standing, Tally};
use super::waiting::{Delivery, LaneBook, Waiting};
use super::{DispatchError, Pipelining};
use crate::protocol::lane::{Lane, LaneId};
use crate::worker::WorkerId;

/// A request admitted by [`State::admit`].
#[derive(Debug)]
pub(super) enum Admission {
    /// This idle lane of this worker serves it now.
    Lend(WorkerId, Box<Lane>),
    /// It waits for a lane; the receiver hears where it went.
    Queued(oneshot::Receiver<Delivery>),
}

#[derive(Debug)]
pub(super) struct State {
    pub(super) slots: Vec<Slot>,
    /// Waiting requests, each with its encoded request ready to write.
    pub(super) queue: WaitQueue<Delivery, Bytes>,
    pub(super) closed: bool,
    /// Lanes handed out so far, the clock of `Slot::last_pick`.
    pub(super) picks: u64,
    /// Requests waiting in lanes of workers already removed: their fate
    /// is known once their lane comes back.
    pub(super) stranded: Vec<(LaneId, Waiting)>,
    pub(super) pipelined: u64,
    pub(super) redispatched: u64,
    /// Whether the task that expires queued requests runs (`Dispatcher::reap`).
    pub(super) reaping: bool,
}

#[derive(Debug)]
pub(super) struct Slot {
    pub(super) worker: WorkerId,
    // Boxed: an idle lane leaves here for a lease and comes back, and a
    // pointer moves where the lane itself would be copied each way.
    #[allow(clippy::vec_box)]
    pub(super) idle: Vec<Box<Lane>>,
    /// Lanes still open: idle plus leased.
    pub(super) open_lanes: usize,
    pub(super) accepting: bool,
    /// Whether it is being replaced, and how much it may still serve.
    pub(super) standing: Standing,
    /// When it was last picked (the pool's pick count then): ties go to
    /// the least recently picked worker.
    pub(super) last_pick: u64,
    pub(super) tally: Tally,
    /// Its open lanes as the dispatcher tracks them while they are lent.
    pub(super) books: Vec<LaneBook>,
    /// Moving average of how long its lanes were lent per request.
    pub(super) service: Option<Duration>,
}

impl Slot {
    pub(super) fn book(&mut self, lane: LaneId) -> Option<&mut LaneBook> {
        self.books.iter_mut().find(|b| b.lane == lane)
    }

    pub(super) fn close_book(&mut self, lane: LaneId) -> Option<LaneBook> {
        let at = self.books.iter().position(|b| b.lane == lane)?;
        Some(self.books.swap_remove(at))
    }

    /// Learns from one lent period; the average moves an eighth of the way.
    pub(super) fn learn(&mut self, took: Duration) {
        self.service = Some(match self.service {
            None => took,
            Some(avg) if took > avg => avg + (took - avg) / 8,
            Some(avg) => avg - (avg - took) / 8,
        });
    }

    /// Whether a request may wait behind this worker's running ones now.
    pub(super) fn takes_waiting(&self, below: Duration) -> bool {
        let waiting = self.books.iter().map(|b| b.waiting.len()).sum::<usize>() as u64;
        self.accepting
            && self.standing == Standing::Normal
            && !self.tally.due()
            && self.tally.has_room(waiting)
            && self.service.is_some_and(|s| s < below)
    }
}

impl State {
    pub(super) fn slot(&mut self, worker: WorkerId) -> Option<&mut Slot> {
        self.slots.iter_mut().find(|s| s.worker == worker)
    }

    /// The first request stranded in `lane` (in lane order).
    pub(super) fn take_stranded(&mut self, lane: LaneId) -> Option<Waiting> {
        let at = self.stranded.iter().position(|(l, _)| *l == lane)?;
        Some(self.stranded.remove(at).1)
    }

    /// Every request stranded in `lane`, in lane order.
    pub(super) fn take_all_stranded(
        &mut self,
        lane: LaneId,
    ) -> std::collections::VecDeque<Waiting> {
        let mut taken = std::collections::VecDeque::new();
        while let Some(waiting) = self.take_stranded(lane) {
            taken.push_back(waiting);
        }
        taken
    }

    /// The best standing among accepting workers with room under their
    /// request cap: a worker serves only if its standing allows it next to
    /// that one. Excluded workers never do.
    pub(super) fn lowest_standing(&self) -> Option<Standing> {
        let best = self
            .slots
            .iter()
            .filter(|s| s.accepting && s.tally.has_room(0))
            .map(|s| s.standing)
            .min()?;
        (best != Standing::Excluded).then_some(best)
    }

    pub(super) fn may_serve(&self, worker: WorkerId) -> bool {
        let floor = self.lowest_standing();
        self.slots.iter().any(|s| {
            s.worker == worker && s.tally.has_room(0) && floor.is_some_and(|f| s.standing <= f)
        })
    }

    pub(super) fn park(&mut self, worker: WorkerId, lane: Box<Lane>) {
        if let Some(slot) = self.slots.iter_mut().find(|s| s.worker == worker) {
            slot.idle.push(lane);
        }
    }

    /// The busy lane a queued request should wait in at `now`, if any: on
    /// a worker that takes waiting requests, with room under the depth,
    /// behind a request running for less than `below` (an older one may be
    /// a slow one); the shortest line first, and among lines as long the
    /// oldest running request, which ends first.
    pub(super) fn lane_for_waiting(
        &self,
        rules: Pipelining,
        now: Instant,
    ) -> Option<(usize, usize)> {
        let Pipelining { below, depth } = rules;
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.takes_waiting(below))
            .flat_map(|(i, s)| s.books.iter().enumerate().map(move |(j, b)| (i, j, b)))
            .filter(|(_, _, b)| {
                b.waiting.len() + 1 < depth
                    && b.since
                        .is_some_and(|t| now.saturating_duration_since(t) < below)
            })
            .min_by_key(|(_, _, b)| (b.waiting.len(), b.since))
            .map(|(i, j, _)| (i, j))
    }

    /// What becomes of a request that arrives now: an idle lane serves it
    /// ([`State::pick`]), or it waits in the queue, or it is refused (the
    /// server is stopping, or the queue is full: 503).
    pub(super) fn admit(
        &mut self,
        request: Bytes,
        now: Instant,
    ) -> Result<Admission, DispatchError> {
        if self.closed {
            return Err(DispatchError::ShuttingDown);
        }
        if let Some((worker, lane)) = self.pick() {
            return Ok(Admission::Lend(worker, lane));
        }
        self.queue
            .push(request, now)
            .map(Admission::Queued)
            .map_err(|_| DispatchError::QueueFull)
    }

    /// A lane of `worker` is back at `now` from a finished request, after
    /// which the worker's RSS read `rss`: counts the request (news of a
    /// limit goes to `news`), learns how long the lane was lent, and
    /// returns the request waiting next in that lane, if any (also when the
    /// worker is gone: requests stranded in its lanes keep their order).
    pub(super) fn lane_back(
        &mut self,
        worker: WorkerId,
        lane: LaneId,
        now: Instant,
        rss: Option<u64>,
        news: &mpsc::UnboundedSender<PoolNews>,
    ) -> Option<Waiting> {
        let Some(slot) = self.slot(worker) else {
            return self.take_stranded(lane);
        };
        slot.tally.count(worker, rss, news);
        let (took, waiting) = match slot.book(lane) {
            Some(book) => (
                book.since.take().map(|t| now.saturating_duration_since(t)),
                book.waiting.pop_front(),
            ),
            None => (None, None),
        };
        if let Some(took) = took {
            slot.learn(took);
        }
        waiting
    }

    /// The least-loaded idle lane among the workers that may serve.
    /// Among equally loaded workers the least recently picked wins, so
    /// light load rotates over every worker instead of piling onto the
    /// first (which would make one worker leak, and recycle, for all).
    pub(super) fn pick(&mut self) -> Option<(WorkerId, Box<Lane>)> {
        let floor = self.lowest_standing()?;
        self.picks += 1;
        let picks = self.picks;
        let slot = self
            .slots
            .iter_mut()
            .filter(|s| {
                s.accepting && s.standing <= floor && !s.idle.is_empty() && s.tally.has_room(0)
            })
            .min_by_key(|s| (s.standing, s.open_lanes - s.idle.len(), s.last_pick))?;
        slot.last_pick = picks;
        Some((slot.worker, slot.idle.pop()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::terms::WorkerTerms;

    const MS: Duration = Duration::from_millis(1);

    /// A pool of one worker whose lanes were lent at `since` (None: idle),
    /// with `service` as its average, on a fake clock starting at `t0`.
    fn pool(t0: Instant, since: &[Option<u64>], service: Duration) -> State {
        let books = since
            .iter()
            .enumerate()
            .map(|(i, at)| {
                let mut book = LaneBook::detached(i as u64 + 1);
                book.since = at.map(|ms| t0 + MS * ms as u32);
                book
            })
            .collect();
        State {
            slots: vec![Slot {
                worker: WorkerId(1),
                idle: Vec::new(),
                open_lanes: since.len(),
                accepting: true,
                standing: Standing::Normal,
                last_pick: 0,
                tally: Tally::new(WorkerTerms::default()),
                books,
                service: Some(service),
            }],
            queue: WaitQueue::new(8),
            closed: false,
            picks: 0,
            stranded: Vec::new(),
            pipelined: 0,
            redispatched: 0,
            reaping: false,
        }
    }

    /// `pool`, with `idle` idle lanes on its worker (socketpairs: a lane
    /// is a socket; the other ends are returned to keep them open).
    fn with_idle_lanes(
        mut state: State,
        idle: usize,
    ) -> (State, Vec<std::os::unix::net::UnixStream>) {
        let mut theirs = Vec::new();
        for _ in 0..idle {
            let (ours, other) = std::os::unix::net::UnixStream::pair().unwrap();
            ours.set_nonblocking(true).unwrap();
            let lane = Lane::new(tokio::net::UnixStream::from_std(ours).unwrap());
            let slot = &mut state.slots[0];
            slot.books.push(LaneBook::new(&lane));
            slot.open_lanes += 1;
            slot.idle.push(Box::new(lane));
            theirs.push(other);
        }
        (state, theirs)
    }

    #[tokio::test]
    async fn a_request_gets_an_idle_lane_else_waits_else_503_and_none_once_closed() {
        let t0 = Instant::now();
        let (mut state, _keep) = with_idle_lanes(pool(t0, &[], MS), 1);
        state.queue = WaitQueue::new(1);
        assert!(matches!(
            state.admit(Bytes::new(), t0),
            Ok(Admission::Lend(WorkerId(1), _))
        ));
        let queued = state.admit(Bytes::new(), t0);
        assert!(matches!(queued, Ok(Admission::Queued(_))));
        assert_eq!(
            state.admit(Bytes::new(), t0).err(),
            Some(DispatchError::QueueFull),
            "the queue holds one"
        );
        // A waiter that gave up frees its place.
        drop(queued);
        assert!(matches!(
            state.admit(Bytes::new(), t0),
            Ok(Admission::Queued(_))
        ));
        state.closed = true;
        assert_eq!(
            state.admit(Bytes::new(), t0).err(),
            Some(DispatchError::ShuttingDown)
        );
    }

    #[tokio::test]
    async fn an_excluded_or_capped_worker_lends_no_lane_and_the_request_waits() {
        let t0 = Instant::now();
        let (mut excluded, _keep) = with_idle_lanes(pool(t0, &[], MS), 2);
        excluded.slots[0].standing = Standing::Excluded;
        assert!(matches!(
            excluded.admit(Bytes::new(), t0),
            Ok(Admission::Queued(_))
        ));
        let (mut capped, _keep) = with_idle_lanes(pool(t0, &[], MS), 2);
        capped.slots[0].tally = Tally::new(WorkerTerms {
            request_cap: Some(1),
            ..WorkerTerms::default()
        });
        assert!(matches!(
            capped.admit(Bytes::new(), t0),
            Ok(Admission::Lend(..))
        ));
        capped.slots[0].tally.taken = 1;
        assert!(matches!(
            capped.admit(Bytes::new(), t0),
            Ok(Admission::Queued(_))
        ));
    }

    #[test]
    fn a_lane_back_counts_its_request_learns_its_time_and_yields_the_next_waiting_one() {
        let t0 = Instant::now();
        let (news, mut heard) = mpsc::unbounded_channel();
        let mut state = pool(t0, &[Some(0)], 8 * MS);
        state.slots[0].tally = Tally::new(WorkerTerms {
            rss_watch: Some((
                crate::worker::memory::RssProbe::open(std::process::id()).unwrap(),
                1000,
            )),
            ..WorkerTerms::default()
        });
        state.slots[0].books[0]
            .waiting
            .push_back(Waiting::detached());
        // Lent at 0 ms, back at 16 ms: the average moves an eighth of the way.
        let next = state.lane_back(WorkerId(1), 1, t0 + 16 * MS, Some(5000), &news);
        assert!(next.is_some(), "the waiting request runs next");
        let slot = &state.slots[0];
        assert_eq!((slot.tally.served, slot.service), (1, Some(9 * MS)));
        assert_eq!(
            heard.try_recv().ok(),
            Some(PoolNews::Rss {
                worker: WorkerId(1),
                bytes: 5000,
                served: 1
            })
        );
        // Nothing waits now; an unread RSS is no news.
        assert!(state
            .lane_back(WorkerId(1), 1, t0 + 17 * MS, None, &news)
            .is_none());
        assert!(heard.try_recv().is_err());
        assert_eq!(state.slots[0].tally.served, 2);
    }

    #[test]
    fn a_gone_workers_lane_yields_what_was_stranded_in_it_in_order() {
        let t0 = Instant::now();
        let (news, _heard) = mpsc::unbounded_channel();
        let mut state = pool(t0, &[Some(0)], MS);
        state.slots.clear();
        state.stranded.push((7, Waiting::detached()));
        state.stranded.push((3, Waiting::detached()));
        state.stranded.push((7, Waiting::detached()));
        assert!(state.lane_back(WorkerId(1), 7, t0, None, &news).is_some());
        assert_eq!(state.stranded.len(), 2);
        assert!(state.lane_back(WorkerId(1), 7, t0, None, &news).is_some());
        assert!(state.lane_back(WorkerId(1), 7, t0, None, &news).is_none());
        assert_eq!(state.stranded.len(), 1, "lane 3's stays");
    }

    fn rules(depth: usize) -> Pipelining {
        Pipelining {
            below: 2 * MS,
            depth,
        }
    }

    fn wait_in(state: &mut State, rules: Pipelining, now: Instant) -> Option<LaneId> {
        let (slot, book) = state.lane_for_waiting(rules, now)?;
        let book = &mut state.slots[slot].books[book];
        book.waiting.push_back(Waiting::detached());
        Some(book.lane)
    }

    #[test]
    fn the_oldest_running_request_gets_the_first_waiting_one_then_lines_even_out() {
        let t0 = Instant::now();
        // Lane 1 lent at 0 ms, lane 2 at 1 ms; now is 1.5 ms.
        let mut state = pool(t0, &[Some(0), Some(1)], MS / 10);
        let now = t0 + MS * 3 / 2;
        let order: Vec<_> = (0..5).map(|_| wait_in(&mut state, rules(3), now)).collect();
        assert_eq!(
            order,
            [Some(1), Some(2), Some(1), Some(2), None],
            "depth 3: two behind each"
        );
    }

    #[test]
    fn nothing_waits_behind_a_request_running_for_the_bound_or_on_an_idle_lane() {
        let t0 = Instant::now();
        let mut state = pool(t0, &[Some(0), None], MS / 10);
        assert_eq!(wait_in(&mut state, rules(8), t0 + MS), Some(1));
        // Two milliseconds on, lane 1's request may be a slow one.
        assert_eq!(wait_in(&mut state, rules(8), t0 + 2 * MS), None);
    }

    #[test]
    fn a_worker_with_slow_requests_or_depth_one_takes_no_waiting_request() {
        let t0 = Instant::now();
        let mut slow = pool(t0, &[Some(0)], 3 * MS);
        assert_eq!(wait_in(&mut slow, rules(8), t0), None);
        let mut fast = pool(t0, &[Some(0)], MS / 10);
        assert_eq!(wait_in(&mut fast, rules(1), t0), None);
    }
}
