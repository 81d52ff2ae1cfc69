//! Stopping the whole server: TERM drains connections, then workers stop,
//! with the graceful timeout and a KILL grace as deadlines; INT and QUIT
//! stop at once.

use std::time::Instant;

use tracing::{debug, warn};

use super::{Arbiter, Phase};
use crate::exit::ExitCode;
use crate::master::action::{Action, WorkerSignal};
use crate::worker::state::RetireReason;
use crate::worker::WorkerId;

impl Arbiter {
    pub(super) fn begin_graceful_stop(&mut self, now: Instant, actions: &mut Vec<Action>) {
        if self.phase == Phase::Running {
            debug!("graceful stop: finishing requests in flight");
            self.phase = Phase::Draining {
                deadline: now + self.config.graceful_timeout,
            };
            self.pending_spawns.clear();
            actions.push(Action::StopAccepting { graceful: true });
        }
    }

    pub(super) fn quick_stop(&mut self, actions: &mut Vec<Action>) {
        debug!("quick stop");
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

    /// Every worker goes: the stop's second half. They finish what they
    /// have until the graceful deadline (the drain's, if one ran), then
    /// the deadline kills them.
    pub(super) fn reap(&mut self, now: Instant, actions: &mut Vec<Action>) {
        let deadline = match self.phase {
            Phase::Reaping { .. } | Phase::Finished => return,
            Phase::Draining { deadline } => deadline,
            Phase::Running => now + self.config.graceful_timeout,
        };
        self.phase = Phase::Reaping { deadline };
        let ids: Vec<WorkerId> = self.workers.keys().copied().collect();
        for worker in ids {
            self.retire(worker, RetireReason::Shutdown, now, actions);
            actions.push(Action::Stop { worker });
        }
        self.exit_when_empty(actions);
    }

    /// `--graceful-timeout` bounds the whole stop, as in gunicorn: past it,
    /// workers still busy are killed at once and the master exits, which
    /// closes the connections of the clients still waiting.
    pub(super) fn stop_deadlines(&mut self, now: Instant, actions: &mut Vec<Action>) {
        let (Phase::Draining { deadline } | Phase::Reaping { deadline }) = self.phase else {
            return;
        };
        if now < deadline {
            return;
        }
        for (&worker, entry) in &self.workers {
            let pid = super::lines::Pid(entry.pid);
            warn!(worker = %worker, pid = entry.pid, "Worker (pid:{pid}) still busy at the graceful timeout, sending SIGKILL");
            actions.push(Action::Signal {
                worker,
                signal: WorkerSignal::Kill,
            });
        }
        actions.push(self.exit(ExitCode::Clean, None));
    }

    pub(super) fn exit_when_empty(&mut self, actions: &mut Vec<Action>) {
        if self.workers.is_empty() && matches!(self.phase, Phase::Reaping { .. }) {
            actions.push(self.exit(ExitCode::Clean, None));
        }
    }
}
