//! One worker's news: ready (admit it, and retire the worker it replaces),
//! boot failed (the app cannot load: stop the master), exited (log how,
//! back off a boot crash loop, replace a crash), a request timed out, and
//! what the dispatcher saw of it (drained, at its limit, its RSS).

use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::lines::{self, Pid};
use super::{Arbiter, Phase};
use crate::dispatch::PoolNews;
use crate::exit::ExitCode;
use crate::master::action::{Action, WorkerSignal};
use crate::master::event::ExitStatus;
use crate::master::policy::backoff;
use crate::worker::state::{RestartReason, RetireReason, Transition, WorkerState};
use crate::worker::{WorkerId, EXIT_RELOAD};

/// A worker that crashes younger than this (or before it served a request)
/// died young: its replacement is backed off.
pub(super) const YOUNG: Duration = Duration::from_secs(1);

impl Arbiter {
    pub(super) fn on_ready(&mut self, worker: WorkerId, now: Instant, actions: &mut Vec<Action>) {
        let Some(entry) = self.workers.get_mut(&worker) else {
            return;
        };
        match entry.state.advance(Transition::Ready) {
            Ok(state) => {
                entry.state = state;
                self.boot_steps.reset();
                self.ever_ready = true;
                if entry.spare {
                    let pid = Pid(entry.pid);
                    info!(worker = %worker, pid = entry.pid, "Spare worker (pid:{pid}) is ready");
                    // A due worker may be waiting for it.
                    self.advance_due(now, actions);
                    return;
                }
                let pid = Pid(entry.pid);
                info!(worker = %worker, pid = entry.pid, "Worker (pid:{pid}) is ready");
                let replaces = entry.replaces.take();
                actions.push(Action::Admit {
                    worker,
                    request_limit: entry.request_limit,
                    request_cap: self.config.request_cap(),
                    replaces,
                });
                if let Some(old) = replaces {
                    self.replaced(old, now, actions);
                    // Its turn under the stagger cap is over: the next may start.
                    self.advance_due(now, actions);
                }
            }
            // Retired while booting (e.g. a stop or a reload began): not wanted.
            Err(_) => actions.push(Action::Stop { worker }),
        }
    }

    pub(super) fn on_boot_failed(
        &mut self,
        worker: WorkerId,
        app_load: bool,
        message: String,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        // The worker wrote the whole traceback to the error log already.
        let summary = message.lines().next().unwrap_or_default().to_string();
        let reload_abandoned = app_load && self.abandon_reload(worker, now, actions);
        // When the master stops for it, `Reason: ...` says it: one line.
        if reload_abandoned || !app_load {
            error!(worker = %worker, "{summary}");
        }
        if reload_abandoned {
            return;
        }
        if app_load {
            // An app that cannot import will not import on the next try either.
            let hint = if message.lines().nth(1).is_some() {
                " (the traceback is in the error log above)"
            } else {
                ""
            };
            actions.push(self.exit(ExitCode::AppLoad, Some(format!("{summary}{hint}"))));
        } else {
            actions.push(Action::Signal {
                worker,
                signal: WorkerSignal::Kill,
            });
        }
    }

    pub(super) fn on_exit(
        &mut self,
        worker: WorkerId,
        status: ExitStatus,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let Some(entry) = self.workers.remove(&worker) else {
            return;
        };
        self.memory.forget(worker);
        actions.push(Action::Forget { worker });
        self.unpair(&entry);
        self.settle_reload(actions);
        let age = now.saturating_duration_since(entry.spawned_at);
        let record = entry.record(worker, now);
        match entry.state {
            WorkerState::Retiring(reason) => lines::exited(record, status, reason.as_str()),
            WorkerState::Booting => {
                lines::exited(record, status, "booting");
                let (step, new_step) = self.boot_steps.failed(entry.spawned_at, now);
                // Give up only on an app that never served: while any worker
                // serves (or once one has), keep serving and back off.
                if !self.ever_ready && step >= backoff::GIVE_UP_AFTER {
                    let message = format!(
                        "workers keep dying while booting ({step} rounds in a row, last: {status}); see the error log above"
                    );
                    actions.push(self.exit(ExitCode::WorkerBoot, Some(message)));
                    return;
                }
                let delay = backoff::delay(step);
                if new_step {
                    warn!(
                        step,
                        delay_ms = delay.as_millis() as u64,
                        "Workers keep dying while booting; the next one starts after a back-off"
                    );
                }
                if self.phase == Phase::Running {
                    self.pending_spawns.push(now + delay);
                }
                self.fill(now, actions);
                return;
            }
            // `--reload` saw its code change: gunicorn's "Worker reloading",
            // a replacement now, no back-off (the reloader polls once a second).
            _ if status == ExitStatus::Code(EXIT_RELOAD) => {
                let reason = RetireReason::Reload;
                lines::exited(record, status, reason.as_str());
                actions.push(Action::CountRestart {
                    reason: RestartReason::Retired(reason),
                });
            }
            _ => {
                lines::exited(record, status, "crash");
                actions.push(Action::CountRestart {
                    reason: RestartReason::Crash,
                });
                if age < YOUNG || entry.served == 0 {
                    // An app that kills its worker at once (or at its first
                    // request) must not make the master spin on respawns.
                    let (step, new_step) = self.young_steps.failed(entry.spawned_at, now);
                    let delay = backoff::delay(step);
                    if new_step {
                        warn!(
                            step,
                            delay_ms = delay.as_millis() as u64,
                            "Workers keep dying young; the next one starts after a back-off"
                        );
                    }
                    if self.phase == Phase::Running {
                        self.pending_spawns.push(now + delay);
                    }
                } else {
                    self.young_steps.reset();
                }
            }
        }
        if self.phase == Phase::Running {
            self.advance_due(now, actions);
        } else {
            self.exit_when_empty(actions);
        }
    }

    /// A request on `worker` ran past `--timeout`: the client has its 504.
    /// A sync worker dumps its stack and dies at once (SIGABRT). A worker
    /// with more lanes takes no new requests and dumps its stacks, its other
    /// lanes finish their requests, and it is aborted once they are done:
    /// one slow request fails alone. Its replacement starts now either way.
    pub(super) fn on_timeout(&mut self, worker: WorkerId, now: Instant, actions: &mut Vec<Action>) {
        self.retire(worker, RetireReason::Timeout, now, actions);
        if self.config.lanes > 1 {
            if let Some(entry) = self.workers.get_mut(&worker) {
                entry.abort_when_drained = true;
            }
            actions.push(Action::DumpStacks { worker });
        } else {
            actions.push(Action::Signal {
                worker,
                signal: WorkerSignal::Abort,
            });
        }
        self.fill(now, actions);
    }

    /// What the dispatcher saw: a drained worker, a request limit reached,
    /// an RSS reading after a request.
    pub(super) fn on_pool(&mut self, news: PoolNews, now: Instant, actions: &mut Vec<Action>) {
        let (PoolNews::Drained { worker, served }
        | PoolNews::RequestLimit { worker, served }
        | PoolNews::Rss { worker, served, .. }) = news;
        if let Some(entry) = self.workers.get_mut(&worker) {
            entry.served = entry.served.max(served);
        }
        match news {
            PoolNews::Drained { .. } => {
                let abort = self
                    .workers
                    .get(&worker)
                    .is_some_and(|e| e.abort_when_drained);
                // Only its timed-out request is left running: it goes now.
                actions.push(match abort {
                    true => Action::Signal {
                        worker,
                        signal: WorkerSignal::Abort,
                    },
                    false => Action::Stop { worker },
                });
            }
            PoolNews::RequestLimit { .. } => {
                self.plan_retirement(worker, RetireReason::MaxRequests, now, actions)
            }
            PoolNews::Rss { bytes, .. } => self.on_memory(&[(worker, bytes)], false, now, actions),
        }
    }
}
