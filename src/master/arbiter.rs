//! The arbiter: the worker table and the desired worker count. It turns
//! each [`Event`] into [`Action`]s and never awaits, reads a clock or does
//! I/O: `now` is an argument, so every decision is unit-tested with a fake
//! clock (see the tests at the bottom).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use super::action::{Action, WorkerSignal};
use super::event::{Event, ExitStatus, Sig};
use super::policy::backoff::{self, Verdict};
use crate::exit::ExitCode;
use crate::worker::state::{RetireReason, Transition, WorkerState};
use crate::worker::WorkerId;

/// How long a retiring worker has after the graceful timeout before KILL.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// The arbiter's fixed parameters.
#[derive(Debug, Clone)]
pub struct ArbiterConfig {
    /// Workers to keep serving.
    pub workers: usize,
    /// Time a stopping server or a retiring worker gets to finish requests.
    pub graceful_timeout: Duration,
}

#[derive(Debug)]
struct Entry {
    state: WorkerState,
    pid: Option<u32>,
    /// When it started retiring: TERM and KILL deadlines count from here.
    retired_at: Option<Instant>,
    term_sent: bool,
    kill_sent: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// Listeners closed; connections finish until the deadline.
    Draining {
        deadline: Instant,
    },
    /// Workers are told to stop; exit once they are gone.
    Reaping {
        deadline: Instant,
    },
    Finished,
}

/// The worker table and its policies.
#[derive(Debug)]
pub struct Arbiter {
    config: ArbiterConfig,
    desired: usize,
    workers: BTreeMap<WorkerId, Entry>,
    next_id: u64,
    phase: Phase,
    boot_failures: u32,
    /// Replacements waiting out a back-off.
    pending_spawns: Vec<Instant>,
}

impl Arbiter {
    /// An arbiter with no workers yet; `Event::Start` spawns them.
    pub fn new(config: ArbiterConfig) -> Arbiter {
        Arbiter {
            desired: config.workers,
            config,
            workers: BTreeMap::new(),
            next_id: 1,
            phase: Phase::Running,
            boot_failures: 0,
            pending_spawns: Vec::new(),
        }
    }

    /// Whether the master should leave its loop.
    pub fn finished(&self) -> bool {
        self.phase == Phase::Finished
    }

    /// Workers that are ready and accept requests.
    pub fn serving(&self) -> usize {
        self.count(|s| s == WorkerState::Serving)
    }

    fn count(&self, pred: impl Fn(WorkerState) -> bool) -> usize {
        self.workers.values().filter(|e| pred(e.state)).count()
    }

    /// Reacts to one event.
    pub fn on_event(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        match event {
            Event::Start => self.fill(&mut actions),
            Event::Signal(sig) => self.on_signal(sig, now, &mut actions),
            Event::Spawned { worker, pid } => {
                if let Some(entry) = self.workers.get_mut(&worker) {
                    entry.pid = Some(pid);
                }
            }
            Event::SpawnFailed { error, .. } => {
                actions.push(self.exit(ExitCode::WorkerBoot, Some(error)));
            }
            Event::Ready { worker } => self.on_ready(worker, &mut actions),
            Event::BootFailed {
                worker,
                app_load,
                message,
            } => self.on_boot_failed(worker, app_load, message, &mut actions),
            Event::Exited { worker, status } => self.on_exit(worker, status, now, &mut actions),
            Event::Drained { worker } => actions.push(Action::Stop { worker }),
            Event::RequestTimeout { worker } => {
                self.retire(worker, RetireReason::Timeout, now, &mut actions);
                actions.push(Action::Signal {
                    worker,
                    signal: WorkerSignal::Abort,
                });
                self.fill(&mut actions);
            }
            Event::ProtocolError { worker } => {
                self.retire(worker, RetireReason::ProtocolError, now, &mut actions);
                self.fill(&mut actions);
            }
            Event::ConnectionsClosed => self.reap(now, &mut actions),
            Event::Tick => self.on_tick(now, &mut actions),
        }
        actions
    }

    fn on_signal(&mut self, sig: Sig, now: Instant, actions: &mut Vec<Action>) {
        match sig {
            Sig::Term => {
                if self.phase == Phase::Running {
                    info!("graceful stop: finishing requests in flight");
                    self.phase = Phase::Draining {
                        deadline: now + self.config.graceful_timeout,
                    };
                    self.pending_spawns.clear();
                    actions.push(Action::StopAccepting { graceful: true });
                }
            }
            Sig::Int | Sig::Quit => {
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
            Sig::Ttin if self.phase == Phase::Running => {
                self.desired += 1;
                info!(workers = self.desired, "one worker more (TTIN)");
                self.fill(actions);
            }
            Sig::Ttou if self.phase == Phase::Running && self.desired > 1 => {
                self.desired -= 1;
                info!(workers = self.desired, "one worker less (TTOU)");
                let newest = self
                    .workers
                    .iter()
                    .rev()
                    .find(|(_, e)| e.state.counts_toward_capacity())
                    .map(|(&id, _)| id);
                if let Some(worker) = newest {
                    self.retire(worker, RetireReason::ScaleDown, now, actions);
                }
            }
            Sig::Hup => warn!("SIGHUP reload is not supported yet; ignoring it"),
            Sig::Usr1 => actions.push(Action::ReopenLogs),
            Sig::Ttin | Sig::Ttou => {}
        }
    }

    fn on_ready(&mut self, worker: WorkerId, actions: &mut Vec<Action>) {
        let Some(entry) = self.workers.get_mut(&worker) else {
            return;
        };
        match entry.state.advance(Transition::Ready) {
            Ok(state) => {
                entry.state = state;
                self.boot_failures = 0;
                info!(worker = %worker, pid = entry.pid, "worker ready");
                actions.push(Action::Admit { worker });
            }
            // Retired while booting (e.g. a stop began): it is not wanted.
            Err(_) => actions.push(Action::Stop { worker }),
        }
    }

    fn on_boot_failed(
        &mut self,
        worker: WorkerId,
        app_load: bool,
        message: String,
        actions: &mut Vec<Action>,
    ) {
        // The worker wrote the whole traceback to the error log already.
        let summary = message.lines().next().unwrap_or_default().to_string();
        error!(worker = %worker, "{summary}");
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

    fn on_exit(
        &mut self,
        worker: WorkerId,
        status: ExitStatus,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let Some(entry) = self.workers.remove(&worker) else {
            return;
        };
        actions.push(Action::Forget { worker });
        match entry.state {
            WorkerState::Retiring(reason) => {
                info!(worker = %worker, pid = entry.pid, reason = %reason, status = %status, "worker stopped");
            }
            WorkerState::Booting => {
                self.boot_failures += 1;
                error!(worker = %worker, pid = entry.pid, status = %status, "worker died while booting");
                match backoff::after_failures(self.boot_failures) {
                    Verdict::GiveUp => {
                        let message = format!(
                            "workers keep dying while booting ({} in a row, last: {status}); see the error log above",
                            self.boot_failures
                        );
                        actions.push(self.exit(ExitCode::WorkerBoot, Some(message)));
                        return;
                    }
                    Verdict::RetryAfter(delay) => {
                        if self.phase == Phase::Running {
                            self.pending_spawns.push(now + delay);
                        }
                        return;
                    }
                }
            }
            _ => {
                error!(worker = %worker, pid = entry.pid, status = %status, "worker crashed; replacing it");
            }
        }
        if self.phase == Phase::Running {
            self.fill(actions);
        } else if self.workers.is_empty() && matches!(self.phase, Phase::Reaping { .. }) {
            actions.push(self.exit(ExitCode::Clean, None));
        }
    }

    fn on_tick(&mut self, now: Instant, actions: &mut Vec<Action>) {
        if self.phase == Phase::Running {
            let due = self.pending_spawns.iter().filter(|&&t| t <= now).count();
            if due > 0 {
                self.pending_spawns.retain(|&t| t > now);
                self.fill(actions);
            }
        }
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
        // Retiring workers that overstay the graceful timeout.
        let graceful = self.config.graceful_timeout;
        for (&worker, entry) in self.workers.iter_mut() {
            let Some(since) = entry.retired_at else {
                continue;
            };
            if !entry.term_sent && now >= since + graceful {
                entry.term_sent = true;
                actions.push(Action::Signal {
                    worker,
                    signal: WorkerSignal::Term,
                });
            } else if !entry.kill_sent && now >= since + graceful + KILL_GRACE {
                entry.kill_sent = true;
                actions.push(Action::Signal {
                    worker,
                    signal: WorkerSignal::Kill,
                });
            }
        }
    }

    /// Every worker goes: the stop's second half.
    fn reap(&mut self, now: Instant, actions: &mut Vec<Action>) {
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
        if self.workers.is_empty() {
            actions.push(self.exit(ExitCode::Clean, None));
        }
    }

    fn retire(
        &mut self,
        worker: WorkerId,
        reason: RetireReason,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let Some(entry) = self.workers.get_mut(&worker) else {
            return;
        };
        if let Ok(state) = entry.state.advance(Transition::Retire(reason)) {
            entry.state = state;
            entry.retired_at = Some(now);
            info!(worker = %worker, pid = entry.pid, reason = %reason, "retiring worker");
            actions.push(Action::Retire { worker, reason });
        }
    }

    /// Spawns workers until `Booting + Serving` (plus back-offs) is the desired count.
    fn fill(&mut self, actions: &mut Vec<Action>) {
        if self.phase != Phase::Running {
            return;
        }
        let have = self.count(WorkerState::counts_toward_capacity) + self.pending_spawns.len();
        for _ in have..self.desired {
            let worker = WorkerId(self.next_id);
            self.next_id += 1;
            self.workers.insert(
                worker,
                Entry {
                    state: WorkerState::Booting,
                    pid: None,
                    retired_at: None,
                    term_sent: false,
                    kill_sent: false,
                },
            );
            actions.push(Action::Spawn { worker });
        }
    }

    fn exit(&mut self, code: ExitCode, message: Option<String>) -> Action {
        self.phase = Phase::Finished;
        Action::Exit { code, message }
    }
}

#[cfg(test)]
mod tests;
