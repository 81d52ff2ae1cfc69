//! The memory policy: given one round of memory samples (from
//! [`crate::worker::memory::read_all`]), which workers to retire or kill.
//! Pure: no /proc, no clock; the arbiter passes the samples in and turns the
//! verdicts into actions.
//!
//! Rules, all "over" meaning strictly greater than the limit:
//! - over `hard`: kill at once, on the first sample. The hard limit protects
//!   the machine, so it waits for nothing.
//! - over `soft` for `consecutive` samples in a row: retire gracefully. A
//!   sample at or below `soft` starts the count again, so a brief spike (one
//!   big request) does not recycle a worker (granian's rule).
//! - the sum over all sampled workers over `total` for `consecutive` rounds in
//!   a row: retire the largest worker that is not leaving. At most one such
//!   verdict per round, and none when the round's kills and retirements, or
//!   workers already leaving, will by themselves bring the sum under
//!   `total`: their memory is on its way back, and retiring one more for the
//!   same excess would overshoot. After one, the count starts again, so the
//!   next needs `consecutive` fresh rounds over the budget.
//!
//! Each worker gets at most one verdict in its life (until [`MemoryWatch::forget`]):
//! the caller acts on it and marks the worker leaving. A caller that defers a
//! verdict (say, to the stagger cap) must remember it: it is not repeated.

use std::collections::{HashMap, HashSet};

use crate::worker::WorkerId;

/// Rounds a soft or total breach must hold when nothing else is configured.
pub const DEFAULT_CONSECUTIVE: u32 = 2;

/// The limits, in bytes of the configured metric (RSS, PSS or USS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryLimits {
    /// Per worker: above it for `consecutive` samples, the worker retires.
    pub soft: Option<u64>,
    /// Per worker: above it, the worker is killed at once.
    pub hard: Option<u64>,
    /// All workers together: above it for `consecutive` rounds, the largest retires.
    pub total: Option<u64>,
    /// Samples in a row a soft or total breach must hold; 0 counts as 1.
    pub consecutive: u32,
}

impl MemoryLimits {
    /// Whether any limit is set; if none is, the caller need not sample at all.
    pub fn is_active(&self) -> bool {
        self.soft.is_some() || self.hard.is_some() || self.total.is_some()
    }
}

/// What to do with one worker, and the figures that led to it (for the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryVerdict {
    /// Over the hard limit: kill now (no consecutive rule: the hard limit
    /// exists to protect the machine).
    Kill {
        /// The worker to kill.
        worker: WorkerId,
        /// Its sampled memory.
        bytes: u64,
    },
    /// Over the soft limit for `consecutive` samples in a row: retire gracefully.
    Retire {
        /// The worker to retire.
        worker: WorkerId,
        /// Its latest sampled memory.
        bytes: u64,
    },
    /// The sum over all workers above `total` for `consecutive` samples in a
    /// row: retire the largest worker not already leaving.
    RetireForTotal {
        /// The worker to retire: the largest one not leaving.
        worker: WorkerId,
        /// Its sampled memory.
        bytes: u64,
        /// The sum over all sampled workers this round, leaving ones included.
        total: u64,
    },
}

impl MemoryVerdict {
    /// The worker the verdict is about.
    pub fn worker(&self) -> WorkerId {
        match *self {
            MemoryVerdict::Kill { worker, .. }
            | MemoryVerdict::Retire { worker, .. }
            | MemoryVerdict::RetireForTotal { worker, .. } => worker,
        }
    }
}

/// The state between rounds: per-worker soft-breach counts, the total-breach
/// count, and which workers already got their verdict.
#[derive(Debug, Clone)]
pub struct MemoryWatch {
    limits: MemoryLimits,
    /// Consecutive samples above `soft`, per worker currently above it.
    soft_streaks: HashMap<WorkerId, u32>,
    /// Consecutive rounds with the sum above `total`.
    total_streak: u32,
    /// Workers that got a verdict; they get no other.
    judged: HashSet<WorkerId>,
    /// Killed for the hard limit: the one verdict that overrides `judged`.
    killed: HashSet<WorkerId>,
}

impl MemoryWatch {
    /// A watch with no history.
    pub fn new(limits: MemoryLimits) -> Self {
        MemoryWatch {
            limits,
            soft_streaks: HashMap::new(),
            total_streak: 0,
            judged: HashSet::new(),
            killed: HashSet::new(),
        }
    }

    /// The limits it applies.
    pub fn limits(&self) -> &MemoryLimits {
        &self.limits
    }

    /// One round of samples, one per live worker. `leaving`: workers already
    /// retiring/dying (they get no soft or total verdict, but their bytes
    /// still count toward the total, since they still use memory; the hard
    /// limit applies to them too).
    ///
    /// A worker missing from a round (its read failed) keeps its soft count:
    /// no sample is neither a breach nor a recovery.
    pub fn observe(
        &mut self,
        samples: &[(WorkerId, u64)],
        leaving: &dyn Fn(WorkerId) -> bool,
    ) -> Vec<MemoryVerdict> {
        let needed = self.limits.consecutive.max(1);
        let (mut verdicts, sum, departing) = self.judge_each(samples, leaving, needed);
        if let Some(verdict) = self.judge_total(samples, leaving, sum, departing, needed) {
            self.judged.insert(verdict.worker());
            verdicts.push(verdict);
        }
        verdicts
    }

    /// One worker's reading between rounds (right after one of its
    /// requests): the per-worker limits only, since the total needs a round.
    pub fn observe_one(
        &mut self,
        worker: WorkerId,
        bytes: u64,
        leaving: &dyn Fn(WorkerId) -> bool,
    ) -> Vec<MemoryVerdict> {
        let needed = self.limits.consecutive.max(1);
        self.judge_each(&[(worker, bytes)], leaving, needed).0
    }

    /// A worker that exited: drop everything known about it.
    pub fn forget(&mut self, worker: WorkerId) {
        self.soft_streaks.remove(&worker);
        self.judged.remove(&worker);
        self.killed.remove(&worker);
    }

    /// Per-worker verdicts, the sum of the samples, and the bytes that will
    /// come back without a new verdict (workers leaving before these samples
    /// plus those given a verdict now).
    fn judge_each(
        &mut self,
        samples: &[(WorkerId, u64)],
        leaving: &dyn Fn(WorkerId) -> bool,
        needed: u32,
    ) -> (Vec<MemoryVerdict>, u64, u64) {
        let mut verdicts = Vec::new();
        let mut departing: u64 = 0;
        let mut sum: u64 = 0;
        for &(worker, bytes) in samples {
            sum = sum.saturating_add(bytes);
            if self.killed.contains(&worker) {
                departing = departing.saturating_add(bytes);
                continue;
            }
            // The hard limit applies to leaving workers too: one serving
            // while its replacement boots can still grow.
            if self.limits.hard.is_some_and(|hard| bytes > hard) {
                self.killed.insert(worker);
                self.soft_streaks.remove(&worker);
                departing = departing.saturating_add(bytes);
                verdicts.push(MemoryVerdict::Kill { worker, bytes });
                continue;
            }
            if leaving(worker) || self.judged.contains(&worker) {
                self.soft_streaks.remove(&worker);
                departing = departing.saturating_add(bytes);
                continue;
            }
            if let Some(verdict) = self.judge_soft(worker, bytes, needed) {
                self.judged.insert(worker);
                self.soft_streaks.remove(&worker);
                departing = departing.saturating_add(bytes);
                verdicts.push(verdict);
            }
        }
        (verdicts, sum, departing)
    }

    /// The soft rule for one worker that is not leaving.
    fn judge_soft(&mut self, worker: WorkerId, bytes: u64, needed: u32) -> Option<MemoryVerdict> {
        if self.limits.soft.is_none_or(|soft| bytes <= soft) {
            self.soft_streaks.remove(&worker);
            return None;
        }
        let streak = self.soft_streaks.entry(worker).or_insert(0);
        *streak += 1;
        (*streak >= needed).then_some(MemoryVerdict::Retire { worker, bytes })
    }

    /// The total rule, after the per-worker verdicts of the round.
    fn judge_total(
        &mut self,
        samples: &[(WorkerId, u64)],
        leaving: &dyn Fn(WorkerId) -> bool,
        sum: u64,
        departing: u64,
        needed: u32,
    ) -> Option<MemoryVerdict> {
        let budget = self.limits.total?;
        if sum <= budget {
            self.total_streak = 0;
            return None;
        }
        self.total_streak += 1;
        if self.total_streak < needed || sum - departing <= budget {
            return None;
        }
        // Ties go to the oldest worker (lowest id), so the choice is stable.
        let (worker, bytes) = samples
            .iter()
            .filter(|&&(worker, _)| !leaving(worker) && !self.judged.contains(&worker))
            .max_by_key(|&&(worker, bytes)| (bytes, std::cmp::Reverse(worker)))
            .copied()?;
        self.total_streak = 0;
        Some(MemoryVerdict::RetireForTotal {
            worker,
            bytes,
            total: sum,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn w(id: u64) -> WorkerId {
        WorkerId(id)
    }

    fn nobody(_: WorkerId) -> bool {
        false
    }

    fn per_worker(soft: u64, hard: u64) -> MemoryWatch {
        MemoryWatch::new(MemoryLimits {
            soft: Some(soft * MIB),
            hard: Some(hard * MIB),
            total: None,
            consecutive: 2,
        })
    }

    fn total_only(total: u64) -> MemoryWatch {
        MemoryWatch::new(MemoryLimits {
            soft: None,
            hard: None,
            total: Some(total * MIB),
            consecutive: 2,
        })
    }

    #[test]
    fn a_single_spike_over_soft_does_nothing() {
        let mut watch = per_worker(100, 200);
        assert_eq!(watch.observe(&[(w(1), 150 * MIB)], &nobody), []);
        assert_eq!(watch.observe(&[(w(1), 90 * MIB)], &nobody), []);
    }

    #[test]
    fn two_consecutive_samples_over_soft_retire() {
        let mut watch = per_worker(100, 200);
        assert_eq!(watch.observe(&[(w(1), 150 * MIB)], &nobody), []);
        assert_eq!(
            watch.observe(&[(w(1), 160 * MIB)], &nobody),
            [MemoryVerdict::Retire {
                worker: w(1),
                bytes: 160 * MIB
            }]
        );
        // Issued once, even if the caller is slow to mark it leaving.
        assert_eq!(watch.observe(&[(w(1), 170 * MIB)], &nobody), []);
    }

    #[test]
    fn spike_dip_spike_does_nothing() {
        let mut watch = per_worker(100, 200);
        for bytes in [150, 100, 150, 90, 150] {
            assert_eq!(
                watch.observe(&[(w(1), bytes * MIB)], &nobody),
                [],
                "{bytes}"
            );
        }
    }

    #[test]
    fn a_missing_sample_neither_breaches_nor_recovers() {
        let mut watch = per_worker(100, 200);
        assert_eq!(watch.observe(&[(w(1), 150 * MIB)], &nobody), []);
        assert_eq!(watch.observe(&[], &nobody), []);
        assert_eq!(watch.observe(&[(w(1), 150 * MIB)], &nobody).len(), 1);
    }

    #[test]
    fn over_hard_kills_on_the_first_sample() {
        let mut watch = per_worker(100, 200);
        assert_eq!(
            watch.observe(&[(w(1), 50 * MIB), (w(2), 201 * MIB)], &nobody),
            [MemoryVerdict::Kill {
                worker: w(2),
                bytes: 201 * MIB
            }]
        );
        // Exactly at a limit is not over it.
        let mut watch = per_worker(100, 200);
        assert_eq!(watch.observe(&[(w(1), 200 * MIB)], &nobody), []);
    }

    #[test]
    fn over_hard_after_a_soft_streak_still_kills() {
        let mut watch = per_worker(100, 200);
        assert_eq!(watch.observe(&[(w(1), 150 * MIB)], &nobody), []);
        assert_eq!(
            watch.observe(&[(w(1), 250 * MIB)], &nobody),
            [MemoryVerdict::Kill {
                worker: w(1),
                bytes: 250 * MIB
            }]
        );
    }

    #[test]
    fn a_leaving_worker_gets_no_soft_verdict_but_the_hard_limit_still_kills() {
        let mut watch = per_worker(100, 200);
        let leaving = |worker: WorkerId| worker == w(1);
        for _ in 0..3 {
            assert_eq!(watch.observe(&[(w(1), 150 * MIB)], &leaving), []);
        }
        assert_eq!(
            watch.observe(&[(w(1), 500 * MIB)], &leaving),
            [MemoryVerdict::Kill {
                worker: w(1),
                bytes: 500 * MIB
            }]
        );
        assert_eq!(watch.observe(&[(w(1), 600 * MIB)], &leaving), [], "once");
    }

    #[test]
    fn one_reading_between_rounds_applies_the_per_worker_limits_only() {
        let mut watch = MemoryWatch::new(MemoryLimits {
            soft: Some(100 * MIB),
            hard: None,
            total: Some(50 * MIB),
            consecutive: 2,
        });
        assert_eq!(watch.observe_one(w(1), 120 * MIB, &nobody), []);
        assert_eq!(
            watch.observe_one(w(1), 121 * MIB, &nobody),
            [MemoryVerdict::Retire {
                worker: w(1),
                bytes: 121 * MIB
            }]
        );
        assert_eq!(watch.observe_one(w(2), 60 * MIB, &nobody), [], "no total");
    }

    #[test]
    fn total_over_budget_for_consecutive_rounds_retires_the_largest() {
        let mut watch = total_only(300);
        let round = [(w(1), 100 * MIB), (w(2), 130 * MIB), (w(3), 90 * MIB)];
        assert_eq!(watch.observe(&round, &nobody), []);
        assert_eq!(
            watch.observe(&round, &nobody),
            [MemoryVerdict::RetireForTotal {
                worker: w(2),
                bytes: 130 * MIB,
                total: 320 * MIB
            }]
        );
    }

    #[test]
    fn total_breach_must_be_consecutive() {
        let mut watch = total_only(300);
        let over = [(w(1), 200 * MIB), (w(2), 200 * MIB)];
        let under = [(w(1), 100 * MIB), (w(2), 200 * MIB)];
        assert_eq!(watch.observe(&over, &nobody), []);
        assert_eq!(watch.observe(&under, &nobody), []);
        assert_eq!(watch.observe(&over, &nobody), []);
    }

    #[test]
    fn leaving_workers_count_toward_the_total_but_are_not_chosen() {
        let mut watch = total_only(300);
        let leaving = |worker: WorkerId| worker == w(1);
        // w1 is the largest but leaving; without it 310 is still over 300.
        let round = [(w(1), 200 * MIB), (w(2), 150 * MIB), (w(3), 160 * MIB)];
        assert_eq!(watch.observe(&round, &leaving), []);
        assert_eq!(
            watch.observe(&round, &leaving),
            [MemoryVerdict::RetireForTotal {
                worker: w(3),
                bytes: 160 * MIB,
                total: 510 * MIB
            }]
        );
    }

    #[test]
    fn no_total_verdict_when_departing_memory_covers_the_excess() {
        let mut watch = total_only(300);
        let leaving = |worker: WorkerId| worker == w(1);
        // 350 over 300, but w1's 100 is on its way back.
        let round = [(w(1), 100 * MIB), (w(2), 150 * MIB), (w(3), 100 * MIB)];
        for _ in 0..3 {
            assert_eq!(watch.observe(&round, &leaving), []);
        }
    }

    #[test]
    fn a_retire_in_the_same_round_can_cover_the_total() {
        let mut watch = MemoryWatch::new(MemoryLimits {
            soft: Some(100 * MIB),
            hard: None,
            total: Some(300 * MIB),
            consecutive: 2,
        });
        let round = [(w(1), 150 * MIB), (w(2), 90 * MIB), (w(3), 80 * MIB)];
        assert_eq!(watch.observe(&round, &nobody), []);
        // Retiring w1 takes 320 to 170: no second verdict for the total.
        assert_eq!(
            watch.observe(&round, &nobody),
            [MemoryVerdict::Retire {
                worker: w(1),
                bytes: 150 * MIB
            }]
        );
    }

    #[test]
    fn at_most_one_total_verdict_per_round_then_the_count_restarts() {
        let mut watch = total_only(100);
        let round = [(w(1), 100 * MIB), (w(2), 100 * MIB), (w(3), 100 * MIB)];
        assert_eq!(watch.observe(&round, &nobody), []);
        let first = watch.observe(&round, &nobody);
        assert_eq!(first.len(), 1);
        // Ties go to the oldest worker.
        assert_eq!(first[0].worker(), w(1));
        // The count restarts, and w1 (judged) is departing: 200 still over 100.
        assert_eq!(watch.observe(&round, &nobody), []);
        let second = watch.observe(&round, &nobody);
        assert_eq!(second.len(), 1);
        assert_eq!(second[0].worker(), w(2));
    }

    #[test]
    fn no_total_verdict_when_every_worker_is_leaving() {
        let mut watch = total_only(100);
        let round = [(w(1), 100 * MIB), (w(2), 100 * MIB)];
        let everyone = |_: WorkerId| true;
        for _ in 0..3 {
            assert_eq!(watch.observe(&round, &everyone), []);
        }
    }

    #[test]
    fn forget_resets_a_workers_state() {
        let mut watch = per_worker(100, 200);
        assert_eq!(watch.observe(&[(w(1), 150 * MIB)], &nobody), []);
        watch.forget(w(1));
        assert_eq!(watch.observe(&[(w(1), 150 * MIB)], &nobody), []);
        assert_eq!(watch.observe(&[(w(1), 150 * MIB)], &nobody).len(), 1);
        // A forgotten worker can be judged again (ids are not reused, but the
        // state must not leak).
        watch.forget(w(1));
        assert_eq!(watch.observe(&[(w(1), 150 * MIB)], &nobody), []);
        assert_eq!(watch.observe(&[(w(1), 150 * MIB)], &nobody).len(), 1);
    }

    #[test]
    fn consecutive_zero_acts_like_one_and_no_limits_do_nothing() {
        let mut watch = MemoryWatch::new(MemoryLimits {
            soft: Some(100),
            hard: None,
            total: None,
            consecutive: 0,
        });
        assert_eq!(watch.observe(&[(w(1), 101)], &nobody).len(), 1);
        let limits = MemoryLimits {
            soft: None,
            hard: None,
            total: None,
            consecutive: 2,
        };
        assert!(!limits.is_active());
        let mut watch = MemoryWatch::new(limits);
        for _ in 0..3 {
            assert_eq!(watch.observe(&[(w(1), u64::MAX)], &nobody), []);
        }
    }
}
