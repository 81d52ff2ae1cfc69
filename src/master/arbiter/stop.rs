//! Stopping the whole server: TERM drains connections, then workers stop,
//! with the graceful timeout and a KILL grace as deadlines; INT and QUIT
//! stop at once.

use std::time::Instant;

use tracing::{info, warn};

use super::{Arbiter, Phase, KILL_GRACE};
use crate::exit::ExitCode;
use crate::master::action::{Action, WorkerSignal};
use crate::worker::state::RetireReason;
use crate::worker::WorkerId;

impl Arbiter {
    pub(super) fn begin_graceful_stop(&mut self, now: Instant, actions: &mut Vec<Action>) {
        if self.phase == Phase::Running {
            info!("graceful stop: finishing requests in flight");
            self.phase = Phase::Draining {
                deadline: now + self.config.graceful_timeout,
            };
            self.pending_spawns.clear();
            actions.push(Action::StopAccepting { graceful: true });
        }
    }

    pub(super) fn quick_stop(&mut self, actions: &mut Vec<Action>) {
        info!("quick stop");
        actions.push(Action::StopAccepting { graceful: false });
        for (&worker, entry) in &self.workers {
            if entry.pid.is_some() {
                actions.push(Action::Signal {
                    worker,
                    signal: WorkerSignal::Quit,
                });
            }
        }
        actions.push(self.exit(ExitCode::Clean, None));
    }

    /// Every worker goes: the stop's second half.
    pub(super) fn reap(&mut self, now: Instant, actions: &mut Vec<Action>) {
        if matches!(self.phase, Phase::Reaping { .. } | Phase::Finished) {
            return;
        }
        self.phase = Phase::Reaping {
            deadline: now + KILL_GRACE,
        };
        let ids: Vec<WorkerId> = self.workers.keys().copied().collect();
        for worker in ids {
            self.retire(worker, RetireReason::Shutdown, now, actions);
            actions.push(Action::Stop { worker });
        }
        self.exit_when_empty(actions);
    }

    pub(super) fn stop_deadlines(&mut self, now: Instant, actions: &mut Vec<Action>) {
        match self.phase {
            Phase::Draining { deadline } if now >= deadline => {
                warn!("graceful timeout passed; stopping workers with requests in flight");
                self.reap(now, actions);
            }
            Phase::Reaping { deadline } if now >= deadline => {
                for (&worker, entry) in &self.workers {
                    warn!(worker = %worker, pid = entry.pid, "worker did not stop in time; killing it");
                    actions.push(Action::Signal {
                        worker,
                        signal: WorkerSignal::Kill,
                    });
                }
                actions.push(self.exit(ExitCode::Clean, None));
            }
            _ => {}
        }
    }

    pub(super) fn exit_when_empty(&mut self, actions: &mut Vec<Action>) {
        if self.workers.is_empty() && matches!(self.phase, Phase::Reaping { .. }) {
            actions.push(self.exit(ExitCode::Clean, None));
        }
    }
}
