//! The shell around the arbiter: it carries out [`Action`]s on real
//! processes, sockets and the dispatcher, and turns what those report back
//! into [`Event`]s. No decisions are made here.

use std::collections::HashMap;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use super::action::{Action, WorkerSignal};
use super::event::{Event, ExitStatus, WorkerSample};
use super::hook_news::HookNews;
use super::launch::{launch_failed, start_launcher};
use super::reexec::Upgrader;
use super::reload::Reloader;
use crate::config::{MemoryMetric, WorkerClass};
use crate::dispatch::{Dispatcher, WorkerTerms};
use crate::forkserver::Launcher;
use crate::http::server::HttpServer;
use crate::logging::Logging;
use crate::metrics::Metrics;
use crate::protocol::control;
use crate::protocol::frame::Kind;
use crate::worker::boot::handshake;
use crate::worker::memory::RssProbe;
use crate::worker::reap::Reaper;
use crate::worker::spawn::{sockets, LaneLink, SpawnSpec, Transport};
use crate::worker::{cpu, memory, WorkerId};

mod upkeep;

/// How the shell measures workers' memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryProbing {
    /// The figure the limits apply to.
    pub metric: MemoryMetric,
    /// With RSS limits: check after every request, report above this.
    pub rss_threshold: Option<u64>,
}

/// A worker as the shell holds it.
#[derive(Debug)]
struct Handle {
    /// Known once the fork server has answered.
    pid: Option<u32>,
    /// A signal the arbiter sent before the pid was known.
    pending_signal: Option<Signal>,
    /// Closing it tells the worker to stop once idle.
    control: Option<UnixStream>,
    /// Lanes until the worker is admitted to the dispatcher.
    lanes: Vec<LaneLink>,
    /// Its lane rings' shared memory, which its memory readings leave out.
    ring_bytes: u64,
    /// Told to stop: a control socket arriving late is closed at once.
    stopping: bool,
    /// The CPU it is pinned to, while it holds it: a worker told to retire
    /// or stop leaves it to the next.
    cpu: Option<usize>,
}

/// The shell's settings-derived parts.
pub struct ShellParts {
    /// How to start workers.
    pub spawn: SpawnSpec,
    /// Reaps every child of the master.
    pub reaper: Reaper,
    /// Time a worker has to import the app and say READY.
    pub boot_timeout: Duration,
    /// Memory measuring.
    pub memory: MemoryProbing,
    /// Re-reads the config on HUP.
    pub reloader: Reloader,
    /// The Prometheus registry, when `--metrics-bind` is set.
    pub metrics: Option<std::sync::Arc<Metrics>>,
    /// USR2's re-exec and the pid file.
    pub upgrader: Upgrader,
    /// How lanes carry their bytes.
    pub transport: Transport,
    /// The CPUs workers are pinned to, one each (`worker::cpu`); empty: none.
    pub worker_cpus: Vec<usize>,
}

/// What the shell needs to act.
pub struct Shell {
    /// How to start workers.
    pub spawn: SpawnSpec,
    /// Starts workers through the fork server of `spawn`.
    launcher: Launcher,
    reaper: Reaper,
    /// Time a worker has to import the app and say READY.
    pub boot_timeout: Duration,
    /// The lanes' pool.
    pub dispatcher: Dispatcher,
    /// The HTTP front.
    pub http: HttpServer,
    /// Log files.
    pub logging: Logging,
    /// Where spawned tasks report back.
    pub events: mpsc::UnboundedSender<Event>,
    /// Memory measuring.
    pub memory: MemoryProbing,
    /// Re-reads the config on HUP.
    pub reloader: Reloader,
    /// The Prometheus registry, when `--metrics-bind` is set.
    pub metrics: Option<std::sync::Arc<Metrics>>,
    /// What HUP replaced, in case the reloaded app cannot load.
    before_reload: Option<(SpawnSpec, MemoryProbing, Launcher)>,
    workers: HashMap<WorkerId, Handle>,
    /// Control sockets of booted workers, until the boot task hands them over.
    booted: mpsc::UnboundedReceiver<(WorkerId, UnixStream)>,
    booted_tx: mpsc::UnboundedSender<(WorkerId, UnixStream)>,
    /// Pids of launched workers, until the launch task hands them over.
    launched: mpsc::UnboundedReceiver<(WorkerId, u32)>,
    launched_tx: mpsc::UnboundedSender<(WorkerId, u32)>,
    /// What the fork server's hooks were told of the arbiter's counts.
    hook_news: HookNews,
    upgrader: Upgrader,
    transport: Transport,
    worker_cpus: Vec<usize>,
}

impl Shell {
    /// A shell with no workers.
    pub fn new(
        parts: ShellParts,
        dispatcher: Dispatcher,
        http: HttpServer,
        logging: Logging,
        events: mpsc::UnboundedSender<Event>,
    ) -> Shell {
        let (booted_tx, booted) = mpsc::unbounded_channel();
        let (launched_tx, launched) = mpsc::unbounded_channel();
        let launcher = start_launcher(&parts.spawn, parts.boot_timeout, &logging, &parts.reaper);
        Shell {
            spawn: parts.spawn,
            launcher,
            reaper: parts.reaper,
            boot_timeout: parts.boot_timeout,
            memory: parts.memory,
            reloader: parts.reloader,
            metrics: parts.metrics,
            dispatcher,
            http,
            logging,
            events,
            before_reload: None,
            workers: HashMap::new(),
            booted,
            booted_tx,
            launched,
            launched_tx,
            hook_news: HookNews::default(),
            upgrader: parts.upgrader,
            transport: parts.transport,
            worker_cpus: parts.worker_cpus,
        }
    }

    /// Carries out one action. `Exit` is the loop's business and ignored here.
    pub fn apply(&mut self, action: &Action) {
        self.collect_reports();
        match *action {
            Action::Spawn { worker, replaces } => self.spawn(worker, replaces),
            Action::Admit {
                worker,
                request_limit,
                request_cap,
                replaces,
            } => {
                self.take_over_cpu(worker, replaces);
                if let Some(handle) = self.workers.get_mut(&worker) {
                    let lanes = handle.lanes.drain(..).map(LaneLink::into_lane).collect();
                    let rss_watch = self.memory.rss_threshold.and_then(|threshold| {
                        let rings = handle.ring_bytes;
                        match handle.pid.map(|pid| RssProbe::open(pid).map(|p| p.excluding(rings))) {
                            None => None,
                            Some(probe) => match probe {
                            Ok(probe) => Some((probe, threshold)),
                            Err(err) => {
                                error!(worker = %worker, pid = handle.pid, error = %err, "cannot watch the worker's RSS; the periodic sample still applies");
                                None
                            }
                        }}
                    });
                    let terms = WorkerTerms {
                        request_limit,
                        request_cap,
                        rss_watch,
                    };
                    self.dispatcher.add_worker(worker, lanes, terms);
                }
            }
            Action::SetStanding { worker, standing } => {
                self.dispatcher.set_standing(worker, standing)
            }
            Action::Retire { worker, .. } => {
                self.take_cpu(worker);
                self.dispatcher.retire(worker)
            }
            Action::Stop { worker } => {
                self.take_cpu(worker);
                if let Some(handle) = self.workers.get_mut(&worker) {
                    handle.control = None;
                    handle.lanes.clear();
                    handle.stopping = true;
                }
            }
            Action::Forget { worker } => {
                self.dispatcher.remove(worker);
                if let Some(pid) = self.workers.remove(&worker).and_then(|h| h.pid) {
                    let payload = serde_json::json!({ "worker": worker.0, "pid": pid });
                    self.launcher.hook(Kind::ChildExit, payload);
                }
            }
            Action::Signal { worker, signal } => {
                if let Some(handle) = self.workers.get_mut(&worker) {
                    let signal = match signal {
                        WorkerSignal::Term => Signal::SIGTERM,
                        WorkerSignal::Abort => Signal::SIGABRT,
                        WorkerSignal::Quit => Signal::SIGQUIT,
                        WorkerSignal::Kill => Signal::SIGKILL,
                    };
                    match handle.pid {
                        // It may have exited already; its exit event is on the way.
                        Some(pid) => {
                            let _ = kill(Pid::from_raw(pid as i32), signal);
                        }
                        None => handle.pending_signal = Some(signal),
                    }
                }
            }
            Action::StopAccepting { graceful } => {
                let old = self.before_reload.as_ref().map(|(_, _, launcher)| launcher);
                for launcher in std::iter::once(&self.launcher).chain(old) {
                    launcher.stopping();
                }
                if !graceful {
                    self.dispatcher.close();
                }
                self.http.stop(graceful);
            }
            Action::PauseAccepting => self.http.pause(),
            Action::ResumeAccepting => self.http.resume(),
            Action::Reexec => self
                .upgrader
                .reexec(&self.launcher, &self.reaper, &self.events),
            Action::Promote => self.upgrader.promote(),
            Action::DumpStacks { worker } => {
                self.collect_reports();
                if let Some(control) = self.workers.get(&worker).and_then(|h| h.control.as_ref()) {
                    if let Err(err) = control::send(control, Kind::DumpStacks, None) {
                        error!(worker = %worker, error = %err, "cannot ask the worker for its stacks");
                    }
                }
            }
            Action::ReopenLogs => match self.logging.reopen() {
                Ok(()) => {
                    info!("Log files reopened");
                    self.reopen_worker_logs();
                }
                Err(err) => error!(error = %err, "cannot reopen log files"),
            },
            Action::ReloadConfig => match self.reloader.reload() {
                Ok(reloaded) => {
                    // A new fork server imports the new code (with --preload
                    // too); the old one stays until the roll is settled.
                    let launcher = start_launcher(
                        &reloaded.spawn,
                        self.boot_timeout,
                        &self.logging,
                        &self.reaper,
                    );
                    let old_launcher = std::mem::replace(&mut self.launcher, launcher);
                    let spawn = std::mem::replace(&mut self.spawn, reloaded.spawn);
                    self.before_reload = Some((spawn, self.memory, old_launcher));
                    self.memory = reloaded.memory;
                    self.launcher.hook(Kind::OnReload, serde_json::json!({}));
                    let _ = self.events.send(Event::Reloaded(reloaded.arbiter));
                }
                Err(err) => {
                    error!("cannot reload the configuration, keeping the running one: {err}");
                    self.count_reload("refused");
                    let _ = self.events.send(Event::ReloadRefused);
                }
            },
            Action::RevertConfig => {
                self.count_reload("called_off");
                if let Some((spawn, memory, launcher)) = self.before_reload.take() {
                    self.spawn = spawn;
                    self.memory = memory;
                    self.launcher = launcher;
                }
            }
            // No worker of the old config is left: its fork server can go.
            Action::SettleReload => {
                self.count_reload("applied");
                self.before_reload = None;
            }
            Action::CountRestart { reason } => {
                if let Some(metrics) = &self.metrics {
                    metrics.restart(reason);
                }
            }
            Action::Exit { .. } => {}
        }
    }

    fn count_reload(&self, outcome: &'static str) {
        if let Some(metrics) = &self.metrics {
            metrics.reload(outcome);
        }
    }

    /// After each event: tells the fork server's hooks what changed in the
    /// arbiter's counts ([`HookNews`]: `nworkers_changed`, `when_ready`).
    pub fn observe_counts(&mut self, serving: usize, desired: usize, stopping: bool) {
        for (kind, payload) in self.hook_news.observe(serving, desired, stopping) {
            self.launcher.hook(kind, payload);
        }
    }

    /// The master is exiting: the fork server runs `on_exit`; waits for it
    /// at most `wait`.
    pub async fn run_exit_hook(&self, wait: Duration) {
        self.launcher.exit(wait).await;
    }

    /// Takes what the launch and boot tasks report: pids (delivering a
    /// signal the arbiter sent before the pid was known) and control sockets.
    pub(super) fn collect_reports(&mut self) {
        while let Ok((worker, pid)) = self.launched.try_recv() {
            if let Some(handle) = self.workers.get_mut(&worker) {
                handle.pid = Some(pid);
                if let Some(signal) = handle.pending_signal.take() {
                    let _ = kill(Pid::from_raw(pid as i32), signal);
                }
            }
        }
        while let Ok((worker, control)) = self.booted.try_recv() {
            match self.workers.get_mut(&worker) {
                Some(handle) if !handle.stopping => handle.control = Some(control),
                _ => {}
            }
        }
    }

    /// Ends `worker`'s claim on its CPU, which it leaves to the next worker
    /// (it retires, stops or is being replaced); the CPU, if it held one.
    fn take_cpu(&mut self, worker: WorkerId) -> Option<usize> {
        self.workers.get_mut(&worker).and_then(|h| h.cpu.take())
    }

    /// A worker that takes over from `replaces` moves to its CPU, if it has
    /// one and they differ: a spare was placed when it started, before
    /// anyone knew whom it would replace. It is booted and idle, so its
    /// threads are pinned from here (`cpu::pin_threads`).
    fn take_over_cpu(&mut self, worker: WorkerId, replaces: Option<WorkerId>) {
        let Some(cpu) = replaces.and_then(|old| self.take_cpu(old)) else {
            return;
        };
        let Some(handle) = self.workers.get_mut(&worker) else {
            return;
        };
        if handle.cpu == Some(cpu) {
            return;
        }
        handle.cpu = Some(cpu);
        if let Some(pid) = handle.pid {
            if let Err(err) = cpu::pin_threads(pid, cpu) {
                warn!(worker = %worker, pid, cpu, error = %err, "cannot move the worker to the CPU of the one it replaces");
            }
        }
    }

    fn spawn(&mut self, worker: WorkerId, replaces: Option<WorkerId>) {
        let muxed = self.spawn.worker_class == WorkerClass::Gevent;
        let (ours, mut ends) = match sockets(self.spawn.lanes, &self.transport, muxed) {
            Ok(pair) => pair,
            Err(err) => {
                let _ = self.events.send(Event::SpawnFailed {
                    worker,
                    error: err.to_string(),
                });
                return;
            }
        };
        // The predecessor's CPU passes on: it leaves once this one is ready.
        let replaced = replaces.and_then(|old| self.take_cpu(old));
        let held: Vec<usize> = self.workers.values().filter_map(|h| h.cpu).collect();
        ends.cpu = cpu::place(&self.worker_cpus, &held, replaced);
        self.workers.insert(
            worker,
            Handle {
                pid: None,
                pending_signal: None,
                control: None,
                ring_bytes: ours
                    .lanes
                    .iter()
                    .filter_map(LaneLink::ring)
                    .map(|ring| ring.mapped_bytes() as u64)
                    .sum(),
                lanes: ours.lanes,
                stopping: false,
                cpu: ends.cpu,
            },
        );
        let launcher = self.launcher.clone();
        let reaper = self.reaper.clone();
        let events = self.events.clone();
        let launched = self.launched_tx.clone();
        let booted = self.booted_tx.clone();
        let (lanes, timeout) = (self.spawn.lanes, self.boot_timeout);
        let control = ours.control;
        tokio::spawn(async move {
            let pid = match launcher.launch(worker, ends).await {
                Ok(pid) => pid,
                Err(err) => {
                    for event in launch_failed(worker, err) {
                        let _ = events.send(event);
                    }
                    return;
                }
            };
            info!(worker = %worker, pid, "Booting worker with pid: {pid}");
            let _ = launched.send((worker, pid));
            let _ = events.send(Event::Spawned { worker, pid });
            let exited = reaper.watch(pid);
            let exit_events = events.clone();
            tokio::spawn(async move {
                let status = exited.await.unwrap_or(ExitStatus::Code(-1));
                let _ = exit_events.send(Event::Exited { worker, status });
            });
            let (control, result) = handshake(control, lanes, timeout).await;
            let _ = booted.send((worker, control));
            let event = match result {
                Ok(hello) => {
                    debug!(worker = %worker, pid = hello.pid, python = %hello.python, class = %hello.worker_class, "worker said hello");
                    Event::Ready { worker }
                }
                Err(err) => Event::BootFailed {
                    worker,
                    app_load: err.is_app_load(),
                    message: err.to_string(),
                },
            };
            let _ = events.send(event);
        });
    }
}
