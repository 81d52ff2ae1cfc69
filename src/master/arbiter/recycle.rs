//! Planned recycling: a worker that reaches its request limit or memory
//! limit, or is rolled by a reload, becomes *due*. At most the stagger cap
//! of workers are being replaced at once; the others wait their turn,
//! serving as before. When its turn comes, its replacement spawns and the
//! dispatcher puts it in reserve (it serves only when no other worker is
//! accepting, so even `-w 1` never stalls on an app's import) or, for
//! memory with more than one worker, excludes it (it takes no new request:
//! feeding a worker that is over its limit is what the limit forbids). Once the
//! replacement is ready the due worker gets no new requests, finishes its
//! own and stops.

use std::time::Instant;

use tracing::info;

use super::{lines, Arbiter, ArbiterConfig, Due, Entry, Phase};
use crate::dispatch::Standing;
use crate::master::action::{Action, WorkerSignal};
use crate::master::policy::memory::{MemoryVerdict, MemoryWatch};
use crate::master::policy::stagger;
use crate::worker::state::{RestartReason, RetireReason, WorkerState};
use crate::worker::WorkerId;

impl Arbiter {
    /// Marks a serving worker due to retire and starts its replacement if
    /// the stagger cap allows.
    pub(super) fn plan_retirement(
        &mut self,
        worker: WorkerId,
        reason: RetireReason,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        if self.phase != Phase::Running {
            return;
        }
        let Some(entry) = self.workers.get_mut(&worker) else {
            return;
        };
        if !entry.is_serving() || entry.due.is_some() {
            return;
        }
        entry.due = Some(Due {
            reason,
            started: false,
            replacement: None,
        });
        let limit = match reason {
            RetireReason::MaxRequests => entry.request_limit,
            _ => self.config.memory.soft,
        };
        lines::due(entry.record(worker, now), reason, limit);
        // Until its turn comes it serves only when no other worker can:
        // a due worker that kept normal standing took all the traffic
        // while another's replacement booted, far past its limit.
        actions.push(Action::SetStanding {
            worker,
            standing: Standing::Reserve,
        });
        self.advance_due(now, actions);
    }

    /// Starts the replacements of due workers whose turn has come (oldest
    /// worker first), then fills the pool. A ready spare replaces a due
    /// worker at once, whatever the stagger cap: the pool never dips.
    pub(super) fn advance_due(&mut self, now: Instant, actions: &mut Vec<Action>) {
        let desired = self.desired;
        let cap = stagger::cap(desired, self.config.max_concurrent_retirements);
        let mut in_progress = self.workers.values().filter(|e| in_progress(e)).count();
        let waiting: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, e)| e.is_serving() && e.due.is_some_and(|d| !d.started))
            .map(|(&id, _)| id)
            .collect();
        for worker in waiting {
            let swap = self.has_ready_spare();
            if !swap && !stagger::may_start(in_progress, cap) {
                break;
            }
            let Some(due) = self.workers.get_mut(&worker).and_then(|e| e.due.as_mut()) else {
                continue;
            };
            due.started = true;
            let reason = due.reason;
            actions.push(Action::CountRestart {
                reason: RestartReason::Retired(reason),
            });
            if swap {
                self.use_spare(worker, now, actions);
                continue;
            }
            in_progress += 1;
            // A worker over its memory limit takes nothing more, unless
            // it is the pool's only worker: then stalling is worse.
            let standing = match reason {
                RetireReason::Memory | RetireReason::MemoryTotal if desired > 1 => {
                    Standing::Excluded
                }
                _ => Standing::Reserve,
            };
            actions.push(Action::SetStanding { worker, standing });
        }
        self.fill(now, actions);
    }

    /// Due workers whose turn came and that have no replacement yet.
    pub(super) fn waiting_for_replacement(&self) -> Vec<WorkerId> {
        self.workers
            .iter()
            .filter(|(_, e)| {
                e.is_serving() && e.due.is_some_and(|d| d.started && d.replacement.is_none())
            })
            .map(|(&id, _)| id)
            .collect()
    }

    /// The due worker's replacement is ready (or none is needed): it leaves.
    pub(super) fn replaced(&mut self, worker: WorkerId, now: Instant, actions: &mut Vec<Action>) {
        let Some(due) = self.workers.get(&worker).and_then(|e| e.due) else {
            return;
        };
        self.retire(worker, due.reason, now, actions);
    }

    /// A worker that leaves stops standing in for (or waiting on) another.
    pub(super) fn unpair(&mut self, leaving: &Entry) {
        if let Some(old) = leaving.replaces {
            if let Some(due) = self.workers.get_mut(&old).and_then(|e| e.due.as_mut()) {
                due.replacement = None;
            }
        }
    }

    /// Memory readings: from the periodic sample (`full_round`: one per
    /// live worker, so the total budget can be judged) or right after one
    /// worker's request.
    pub(super) fn on_memory(
        &mut self,
        readings: &[(WorkerId, u64)],
        full_round: bool,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        for &(worker, bytes) in readings {
            if let Some(entry) = self.workers.get_mut(&worker) {
                entry.memory = Some(bytes);
            }
        }
        let workers = &self.workers;
        let leaving = |id: WorkerId| {
            workers
                .get(&id)
                .is_none_or(|e| !e.is_serving() || e.due.is_some())
        };
        let verdicts = match readings {
            [(worker, bytes)] if !full_round => self.memory.observe_one(*worker, *bytes, &leaving),
            _ => self.memory.observe(readings, &leaving),
        };
        for verdict in verdicts {
            match verdict {
                MemoryVerdict::Kill { worker, bytes } => {
                    if let Some(entry) = self.workers.get(&worker) {
                        let pid = lines::Pid(entry.pid);
                        tracing::warn!(worker = %worker, pid = entry.pid, bytes,
                            limit = self.config.memory.hard, "Worker (pid:{pid}) is above the hard memory limit, sending SIGKILL");
                    }
                    self.retire(worker, RetireReason::MemoryHard, now, actions);
                    actions.push(Action::Signal {
                        worker,
                        signal: WorkerSignal::Kill,
                    });
                    self.fill(now, actions);
                }
                MemoryVerdict::Retire { worker, .. } => {
                    self.plan_retirement(worker, RetireReason::Memory, now, actions)
                }
                MemoryVerdict::RetireForTotal { worker, total, .. } => {
                    info!(
                        total,
                        budget = self.config.memory.total,
                        "All workers together are above the memory budget; the largest restarts"
                    );
                    self.plan_retirement(worker, RetireReason::MemoryTotal, now, actions)
                }
            }
        }
    }

    /// HUP: new parameters; every worker of an older config is rolled,
    /// new workers first.
    pub(super) fn on_reloaded(
        &mut self,
        config: ArbiterConfig,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        if self.phase != Phase::Running {
            return;
        }
        self.desired = config.workers;
        self.memory = MemoryWatch::new(config.memory);
        self.before_reload = Some(std::mem::replace(&mut self.config, config));
        self.generation += 1;
        self.drop_stale_spares(now, actions);
        let old: Vec<(WorkerId, WorkerState)> = self
            .workers
            .iter()
            .filter(|(_, e)| e.generation < self.generation && !e.spare)
            .map(|(&id, e)| (id, e.state))
            .collect();
        info!(
            workers = self.desired,
            rolling = old.len(),
            "Configuration reloaded; restarting the workers"
        );
        for (worker, state) in old {
            match state {
                // It has served nothing yet: it goes now, stopped when ready.
                WorkerState::Booting => self.retire(worker, RetireReason::Reload, now, actions),
                WorkerState::Serving => {
                    // A reload overrides an older reason: the new config wins.
                    if let Some(entry) = self.workers.get_mut(&worker) {
                        if let Some(due) = entry.due.as_mut() {
                            due.reason = RetireReason::Reload;
                            continue;
                        }
                    }
                    self.plan_retirement(worker, RetireReason::Reload, now, actions)
                }
                _ => {}
            }
        }
        self.advance_due(now, actions);
    }
}

impl Arbiter {
    /// Once no worker of the config before a reload is left, that config
    /// is gone for good: a reload can no longer be called off.
    pub(super) fn settle_reload(&mut self, actions: &mut Vec<Action>) {
        let generation = self.generation;
        if self.before_reload.is_some() && self.workers.values().all(|e| e.generation == generation)
        {
            self.before_reload = None;
            actions.push(Action::SettleReload);
        }
    }

    /// A worker of the reloaded config cannot load the app: if workers of
    /// the previous config still serve, the reload is called off and they
    /// keep serving (returns true); otherwise the caller stops the master.
    pub(super) fn abandon_reload(
        &mut self,
        failed: WorkerId,
        now: Instant,
        actions: &mut Vec<Action>,
    ) -> bool {
        let generation = self.generation;
        let old_serving = self
            .workers
            .values()
            .any(|e| e.generation < generation && e.is_serving());
        let Some(previous) = self.before_reload.take().filter(|_| old_serving) else {
            return false;
        };
        tracing::error!(worker = %failed, "the reloaded app cannot be loaded; the reload is called off and the workers of the previous configuration keep serving");
        actions.push(Action::RevertConfig);
        self.desired = previous.workers;
        self.memory = MemoryWatch::new(previous.memory);
        self.config = previous;
        let new: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, e)| e.generation == generation)
            .map(|(&id, _)| id)
            .collect();
        for worker in new {
            self.retire(worker, RetireReason::Reload, now, actions);
            actions.push(Action::Signal {
                worker,
                signal: WorkerSignal::Kill,
            });
        }
        for (&worker, entry) in self.workers.iter_mut() {
            if entry.generation < generation {
                entry.generation = generation;
                if entry.due.is_some_and(|d| d.reason == RetireReason::Reload) {
                    if entry.due.is_some_and(|d| d.started) {
                        actions.push(Action::SetStanding {
                            worker,
                            standing: Standing::Normal,
                        });
                    }
                    entry.due = None;
                }
            }
        }
        self.advance_due(now, actions);
        true
    }
}

/// Being replaced: due, with its replacement booting. A worker already
/// draining does not count: its replacement is serving, so the pool is
/// whole again, and holding the next turn back for its drain would leave a
/// worker over its limit serving (and growing) meanwhile.
fn in_progress(entry: &Entry) -> bool {
    entry.is_serving() && entry.due.is_some_and(|d| d.started)
}

#[cfg(test)]
mod tests;
