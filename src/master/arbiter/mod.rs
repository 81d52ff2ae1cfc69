//! The arbiter: the worker table and the desired worker count. It turns
//! each [`Event`] into [`Action`]s and never awaits, reads a clock or does
//! I/O: `now` is an argument, so every decision is unit-tested with a fake
//! clock (see `tests.rs`). Planned recycling (max-requests, memory, reload)
//! lives in `recycle.rs`; stopping the whole server in `stop.rs`; what each
//! signal means in `signals.rs`; USR2's new master and WINCH in `upgrade.rs`.

mod config;
mod lines;
mod recycle;
mod signals;
mod spare;
mod stop;
mod upgrade;
mod worker_events;

pub use config::ArbiterConfig;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use tracing::{debug, warn};

use super::action::{Action, WorkerSignal};
use super::event::{Event, WorkerSample};
use super::policy::backoff::Steps;
use super::policy::memory::MemoryWatch;
use crate::exit::ExitCode;
use crate::metrics::WorkerView;
use crate::worker::state::{RestartReason, RetireReason, Transition, WorkerState};
use crate::worker::WorkerId;

/// How long a retiring worker has after the graceful timeout before KILL.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// A worker that must go once it has a replacement.
#[derive(Debug, Clone, Copy)]
struct Due {
    reason: RetireReason,
    /// Its turn under the stagger cap came: a replacement is (to be) spawned.
    started: bool,
    /// The spawned replacement, until it is ready.
    replacement: Option<WorkerId>,
}

#[derive(Debug)]
struct Entry {
    state: WorkerState,
    pid: Option<u32>,
    /// Config generation it was spawned with; HUP rolls older ones.
    generation: u64,
    spawned_at: Instant,
    request_limit: Option<u64>,
    served: u64,
    memory: Option<u64>,
    due: Option<Due>,
    /// The due worker this one replaces: retired when this one is ready.
    replaces: Option<WorkerId>,
    /// Booted ahead of need and not admitted: the next due worker's
    /// replacement (see `spare.rs`).
    spare: bool,
    /// When it started retiring: TERM and KILL deadlines count from here.
    retired_at: Option<Instant>,
    term_sent: bool,
    kill_sent: bool,
    /// A request on one of its lanes timed out: abort it once the other
    /// lanes are done.
    abort_when_drained: bool,
}

impl Entry {
    /// What its log lines say about it.
    fn record(&self, worker: WorkerId, now: Instant) -> lines::Record {
        lines::Record {
            worker,
            pid: lines::Pid(self.pid),
            requests: self.served,
            memory: self.memory,
            age_s: now.saturating_duration_since(self.spawned_at).as_secs(),
        }
    }

    /// Booting or Serving, not counting a due worker whose replacement is
    /// under way: the replacement stands in for it.
    fn counts_toward_capacity(&self) -> bool {
        self.state.counts_toward_capacity() && !self.spare && !self.due.is_some_and(|d| d.started)
    }

    /// Ready and admitted: the dispatcher may give it requests.
    fn is_serving(&self) -> bool {
        self.state == WorkerState::Serving && !self.spare
    }
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
    generation: u64,
    phase: Phase,
    /// Rounds of workers dying while booting, in a row.
    boot_steps: Steps,
    /// Rounds of workers dying young (soon after boot, or before serving).
    young_steps: Steps,
    /// Some worker has become ready: a master that served never gives up
    /// on boot failures, it backs off.
    ever_ready: bool,
    /// Replacements waiting out a back-off.
    pending_spawns: Vec<Instant>,
    memory: MemoryWatch,
    rng: StdRng,
    /// The config before the last reload, while its roll is under way.
    before_reload: Option<ArbiterConfig>,
    /// HUP asked for a reload the shell has not answered yet.
    reload_asked: bool,
    /// USR2's new master, this master's parent, WINCH.
    upgrade: upgrade::Upgrade,
}

impl Arbiter {
    /// An arbiter with no workers yet; `Event::Start` spawns them.
    pub fn new(config: ArbiterConfig) -> Arbiter {
        Arbiter::with_rng(config, StdRng::from_os_rng())
    }

    /// As [`Arbiter::new`], with a given random source for the jitter draw.
    pub fn with_rng(config: ArbiterConfig, rng: StdRng) -> Arbiter {
        Arbiter {
            desired: config.workers,
            memory: MemoryWatch::new(config.memory),
            config,
            workers: BTreeMap::new(),
            next_id: 1,
            generation: 0,
            phase: Phase::Running,
            boot_steps: Steps::default(),
            young_steps: Steps::default(),
            ever_ready: false,
            pending_spawns: Vec::new(),
            rng,
            before_reload: None,
            reload_asked: false,
            upgrade: upgrade::Upgrade::default(),
        }
    }

    /// Whether the master should leave its loop.
    pub fn finished(&self) -> bool {
        self.phase == Phase::Finished
    }

    /// Workers that are ready and accept requests.
    pub fn serving(&self) -> usize {
        self.workers.values().filter(|e| e.is_serving()).count()
    }

    /// The worker count the arbiter aims for.
    pub fn desired(&self) -> usize {
        self.desired
    }

    /// Whether a stop has begun.
    pub fn stopping(&self) -> bool {
        self.phase != Phase::Running
    }

    /// Whether a HUP is under way: the config is being re-read, or workers
    /// of the config before it are still there (systemd's RELOADING).
    pub fn reloading(&self) -> bool {
        self.reload_asked || self.before_reload.is_some()
    }

    /// Every live worker, as metrics show it.
    pub fn facts(&self, now: Instant) -> Vec<WorkerView> {
        self.workers
            .iter()
            .map(|(&worker, e)| WorkerView {
                id: worker.0,
                pid: e.pid,
                state: match e.state {
                    _ if e.spare && e.state.counts_toward_capacity() => "spare",
                    WorkerState::Booting => "booting",
                    WorkerState::Serving => "serving",
                    _ => "retiring",
                },
                requests: e.served,
                memory_bytes: e.memory,
                age: now.saturating_duration_since(e.spawned_at),
            })
            .collect()
    }

    /// Reacts to one event.
    pub fn on_event(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        match event {
            Event::Start => self.fill(now, &mut actions),
            Event::Signal(sig) => self.on_signal(sig, now, &mut actions),
            Event::Spawned { worker, pid } => {
                if let Some(entry) = self.workers.get_mut(&worker) {
                    entry.pid = Some(pid);
                }
            }
            Event::SpawnFailed { error, .. } => {
                actions.push(self.exit(ExitCode::WorkerBoot, Some(error)));
            }
            Event::Ready { worker } => {
                self.on_ready(worker, now, &mut actions);
                self.resume_when_serving(&mut actions);
            }
            Event::BootFailed {
                worker,
                app_load,
                message,
            } => self.on_boot_failed(worker, app_load, message, now, &mut actions),
            Event::Exited { worker, status } => self.on_exit(worker, status, now, &mut actions),
            Event::Pool(news) => self.on_pool(news, now, &mut actions),
            Event::Sample(samples) => self.on_sample(&samples, now, &mut actions),
            Event::Reloaded(config) => {
                self.reload_asked = false;
                self.on_reloaded(config, now, &mut actions)
            }
            Event::ReloadRefused => {
                self.reload_asked = false;
                self.restore_count_after_winch(now, &mut actions);
            }
            Event::RequestTimeout { worker } => self.on_timeout(worker, now, &mut actions),
            Event::ProtocolError { worker } => {
                self.retire(worker, RetireReason::ProtocolError, now, &mut actions);
                self.fill(now, &mut actions);
            }
            Event::ConnectionsClosed => self.reap(now, &mut actions),
            Event::Quiesced => self.on_quiesced(now, &mut actions),
            Event::Reexeced { pid } => self.on_reexeced(pid),
            Event::ReexecFailed { error } => self.on_reexec_failed(&error),
            Event::ChildMasterExited { pid, status } => self.on_child_master_exit(pid, status),
            Event::ParentMasterGone => self.on_parent_gone(&mut actions),
            Event::Tick => self.on_tick(now, &mut actions),
        }
        actions
    }

    fn on_tick(&mut self, now: Instant, actions: &mut Vec<Action>) {
        // A worker that has served and lived past the young age: workers
        // no longer die young, the back-off starts again from the bottom.
        if self.young_steps.step() > 0
            && self.workers.values().any(|e| {
                e.is_serving()
                    && e.served > 0
                    && now.saturating_duration_since(e.spawned_at) >= worker_events::YOUNG
            })
        {
            self.young_steps.reset();
        }
        if self.phase == Phase::Running {
            let due = self.pending_spawns.iter().filter(|&&t| t <= now).count();
            if due > 0 {
                self.pending_spawns.retain(|&t| t > now);
                self.fill(now, actions);
            }
        }
        self.stop_deadlines(now, actions);
        self.winch_deadline(now, actions);
        // Retiring workers that overstay the graceful timeout.
        let graceful = self.config.graceful_timeout;
        for (&worker, entry) in self.workers.iter_mut() {
            let Some(since) = entry.retired_at else {
                continue;
            };
            if !entry.term_sent && now >= since + graceful {
                entry.term_sent = true;
                let pid = lines::Pid(entry.pid);
                warn!(worker = %worker, pid = entry.pid, "Worker (pid:{pid}) is still retiring after the graceful timeout, sending TERM");
                actions.push(Action::Signal {
                    worker,
                    signal: WorkerSignal::Term,
                });
            } else if !entry.kill_sent && now >= since + graceful + KILL_GRACE {
                entry.kill_sent = true;
                let pid = lines::Pid(entry.pid);
                warn!(worker = %worker, pid = entry.pid, "Worker (pid:{pid}) ignored TERM, sending SIGKILL");
                actions.push(Action::Signal {
                    worker,
                    signal: WorkerSignal::Kill,
                });
            }
        }
    }

    fn on_sample(&mut self, samples: &[WorkerSample], now: Instant, actions: &mut Vec<Action>) {
        let mut memory = Vec::with_capacity(samples.len());
        for sample in samples {
            let Some(entry) = self.workers.get_mut(&sample.worker) else {
                continue;
            };
            if let Some(served) = sample.served {
                entry.served = entry.served.max(served);
            }
            if let Some(bytes) = sample.memory {
                memory.push((sample.worker, bytes));
            }
        }
        self.on_memory(&memory, true, now, actions);
    }

    /// Takes the worker out of the pool at once: it finishes what it has.
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
        let Ok(state) = entry.state.advance(Transition::Retire(reason)) else {
            return;
        };
        let was_planned = entry.due.is_some_and(|d| d.started && d.reason == reason);
        entry.state = state;
        entry.retired_at = Some(now);
        if was_planned {
            // Its decision was logged (and counted) when it became due.
            debug!(worker = %worker, pid = entry.pid, reason = %reason, requests = entry.served,
                "replacement ready; the worker takes no new requests");
        } else if reason != RetireReason::Shutdown {
            lines::retiring(entry.record(worker, now), reason);
            actions.push(Action::CountRestart {
                reason: RestartReason::Retired(reason),
            });
        }
        actions.push(Action::Retire { worker, reason });
        let entry = self.workers.remove(&worker).expect("looked up above");
        self.unpair(&entry);
        self.workers.insert(worker, entry);
    }

    /// Spawns workers until `Booting + Serving` (plus back-offs) is the
    /// desired count; each new worker replaces a due worker waiting for one.
    fn fill(&mut self, now: Instant, actions: &mut Vec<Action>) {
        if self.phase != Phase::Running {
            return;
        }
        for old in self.waiting_for_replacement() {
            if !self.use_spare(old, now, actions) {
                break;
            }
        }
        let have = self
            .workers
            .values()
            .filter(|e| e.counts_toward_capacity())
            .count()
            + self.pending_spawns.len();
        for _ in have..self.desired {
            let replaces = self.waiting_for_replacement().first().copied();
            let worker = self.spawn(replaces, false, now, actions);
            if let Some(old) = replaces {
                if let Some(due) = self.workers.get_mut(&old).and_then(|e| e.due.as_mut()) {
                    due.replacement = Some(worker);
                }
            }
        }
        self.keep_spare(now, actions);
        // Started retirements nobody will replace (the count went down):
        // they go now, unless a backed-off spawn is still coming for them.
        let unreplaced = self.waiting_for_replacement();
        for &old in unreplaced.iter().skip(self.pending_spawns.len()) {
            self.replaced(old, now, actions);
        }
    }

    /// A new worker entry (drawing its own request limit) and its Spawn.
    fn spawn(
        &mut self,
        replaces: Option<WorkerId>,
        spare: bool,
        now: Instant,
        actions: &mut Vec<Action>,
    ) -> WorkerId {
        let worker = WorkerId(self.next_id);
        self.next_id += 1;
        let request_limit = super::policy::max_requests::draw_limit(
            self.config.max_requests,
            self.config.max_requests_jitter,
            &mut self.rng,
        );
        self.workers.insert(
            worker,
            Entry {
                state: WorkerState::Booting,
                pid: None,
                generation: self.generation,
                spawned_at: now,
                request_limit,
                served: 0,
                memory: None,
                due: None,
                replaces,
                spare,
                retired_at: None,
                term_sent: false,
                kill_sent: false,
                abort_when_drained: false,
            },
        );
        actions.push(Action::Spawn { worker, replaces });
        worker
    }

    fn exit(&mut self, code: ExitCode, message: Option<String>) -> Action {
        self.phase = Phase::Finished;
        Action::Exit { code, message }
    }
}

#[cfg(test)]
mod tests;
