//! The pool as the dispatcher keeps it: each worker's slot (idle lanes,
//! standing, request tally, lent lanes, service time) and the choices made
//! from that state alone — which idle lane serves next, which workers may
//! serve, whether a request may wait behind a running one. No I/O and no
//! clock: `mod.rs` holds the lock, reads the time and moves the requests.

use std::time::Duration;

use bytes::Bytes;

use super::queue::WaitQueue;
use super::terms::{Standing, Tally};
use super::waiting::{Delivery, LaneBook, Waiting};
use crate::protocol::lane::{Lane, LaneId};
use crate::worker::WorkerId;

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
}

#[derive(Debug)]
pub(super) struct Slot {
    pub(super) worker: WorkerId,
    pub(super) idle: Vec<Lane>,
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

    pub(super) fn park(&mut self, worker: WorkerId, lane: Lane) {
        if let Some(slot) = self.slots.iter_mut().find(|s| s.worker == worker) {
            slot.idle.push(lane);
        }
    }

    /// The least-loaded idle lane among the workers that may serve.
    /// Among equally loaded workers the least recently picked wins, so
    /// light load rotates over every worker instead of piling onto the
    /// first (which would make one worker leak, and recycle, for all).
    pub(super) fn pick(&mut self) -> Option<(WorkerId, Lane)> {
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
