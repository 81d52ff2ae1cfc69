//! The spare: with planned recycling on (max-requests or a memory limit),
//! one worker more than the desired count is kept booted and not admitted.
//! A worker that becomes due is replaced by it at once: the spare is
//! admitted and the due worker retires, so it serves exactly up to its
//! limit and no request waits for a boot; then the next spare boots. A
//! forked spare costs a few MB of private memory (with `--preload`) and
//! nothing per request; without planned recycling there is none.
//!
//! A spare still booting when a worker becomes due is that worker's
//! replacement, as a fresh spawn would be. Spares of a config that a
//! reload replaced are dropped; the next one boots with the new config.

use std::time::Instant;

use tracing::{debug, info};

use super::{Arbiter, Phase};
use crate::master::action::Action;
use crate::worker::state::{RetireReason, Transition, WorkerState};
use crate::worker::WorkerId;

impl Arbiter {
    /// Boots spares until recycling has the ones it wants, booted or
    /// booting (not while crashed boots are backing off: those come first).
    pub(super) fn keep_spare(&mut self, now: Instant, actions: &mut Vec<Action>) {
        if self.phase != Phase::Running || !self.pending_spawns.is_empty() {
            return;
        }
        for _ in self.spares().count()..self.config.spares() {
            let worker = self.spawn(None, true, now, actions);
            debug!(worker = %worker, "booting a spare worker");
        }
    }

    /// The current config's spares, booted or booting.
    fn spares(&self) -> impl Iterator<Item = (WorkerId, WorkerState)> + '_ {
        self.workers
            .iter()
            .filter(|(_, e)| {
                e.spare && e.generation == self.generation && e.state.counts_toward_capacity()
            })
            .map(|(&id, e)| (id, e.state))
    }

    /// The spare to use next: a ready one, else the oldest booting one.
    pub(super) fn spare(&self) -> Option<(WorkerId, WorkerState)> {
        self.spares()
            .find(|&(_, state)| state == WorkerState::Serving)
            .or_else(|| self.spares().next())
    }

    /// Whether a spare is booted and can take over at once.
    pub(super) fn has_ready_spare(&self) -> bool {
        self.spare()
            .is_some_and(|(_, state)| state == WorkerState::Serving)
    }

    /// Makes the spare `old`'s replacement: a ready one is admitted now and
    /// `old` retires; a booting one takes over when it is ready. Returns
    /// false when there is no spare.
    pub(super) fn use_spare(
        &mut self,
        old: WorkerId,
        now: Instant,
        actions: &mut Vec<Action>,
    ) -> bool {
        let Some((spare, state)) = self.spare() else {
            return false;
        };
        let request_cap = self.config.request_cap();
        let Some(entry) = self.workers.get_mut(&spare) else {
            return false;
        };
        entry.spare = false;
        if let Some(due) = self.workers.get_mut(&old).and_then(|e| e.due.as_mut()) {
            due.replacement = Some(spare);
        }
        let old_pid = super::lines::Pid(self.workers.get(&old).and_then(|e| e.pid));
        let entry = self.workers.get_mut(&spare).expect("looked up above");
        if state == WorkerState::Serving {
            let pid = super::lines::Pid(entry.pid);
            info!(worker = %spare, pid = entry.pid, replaces = %old,
                "Spare worker (pid:{pid}) takes over from worker (pid:{old_pid})");
            actions.push(Action::Admit {
                worker: spare,
                request_limit: entry.request_limit,
                request_cap,
                replaces: Some(old),
            });
            self.replaced(old, now, actions);
        } else {
            entry.replaces = Some(old);
        }
        true
    }

    /// A reload: spares of an older config go (quietly: they served nothing).
    pub(super) fn drop_stale_spares(&mut self, now: Instant, actions: &mut Vec<Action>) {
        let generation = self.generation;
        for (&worker, entry) in self.workers.iter_mut() {
            if !entry.spare || entry.generation == generation {
                continue;
            }
            let Ok(state) = entry
                .state
                .advance(Transition::Retire(RetireReason::Reload))
            else {
                continue;
            };
            let was_ready = entry.state == WorkerState::Serving;
            entry.state = state;
            entry.retired_at = Some(now);
            // A booting one is stopped when it says it is ready.
            if was_ready {
                actions.push(Action::Stop { worker });
            }
        }
    }
}
