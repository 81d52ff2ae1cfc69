//! The shell around the arbiter: it carries out [`Action`]s on real
//! processes, sockets and the dispatcher, and turns what those report back
//! into [`Event`]s. No decisions are made here.

use std::collections::HashMap;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tracing::{error, info};

use super::action::{Action, WorkerSignal};
use super::event::{Event, ExitStatus, WorkerSample};
use super::reload::Reloader;
use crate::config::MemoryMetric;
use crate::dispatch::{Dispatcher, WorkerTerms};
use crate::http::server::HttpServer;
use crate::logging::Logging;
use crate::metrics::Metrics;
use crate::protocol::lane::Lane;
use crate::worker::boot::handshake;
use crate::worker::memory::RssProbe;
use crate::worker::spawn::{spawn, SpawnSpec};
use crate::worker::{memory, WorkerId};

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
    pid: u32,
    /// Closing it tells the worker to stop once idle.
    control: Option<UnixStream>,
    /// Lanes until the worker is admitted to the dispatcher.
    lanes: Vec<UnixStream>,
    /// Told to stop: a control socket arriving late is closed at once.
    stopping: bool,
}

/// The shell's settings-derived parts.
pub struct ShellParts {
    /// How to start workers.
    pub spawn: SpawnSpec,
    /// Time a worker has to import the app and say READY.
    pub boot_timeout: Duration,
    /// Memory measuring.
    pub memory: MemoryProbing,
    /// Re-reads the config on HUP.
    pub reloader: Reloader,
    /// The Prometheus registry, when `--metrics-bind` is set.
    pub metrics: Option<std::sync::Arc<Metrics>>,
}

/// What the shell needs to act.
pub struct Shell {
    /// How to start workers.
    pub spawn: SpawnSpec,
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
    before_reload: Option<(SpawnSpec, MemoryProbing)>,
    workers: HashMap<WorkerId, Handle>,
    /// Control sockets of booted workers, until the boot task hands them over.
    booted: mpsc::UnboundedReceiver<(WorkerId, UnixStream)>,
    booted_tx: mpsc::UnboundedSender<(WorkerId, UnixStream)>,
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
        Shell {
            spawn: parts.spawn,
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
        }
    }

    /// Carries out one action. `Exit` is the loop's business and ignored here.
    pub fn apply(&mut self, action: &Action) {
        self.collect_control_sockets();
        match *action {
            Action::Spawn { worker } => self.spawn(worker),
            Action::Admit {
                worker,
                request_limit,
            } => {
                if let Some(handle) = self.workers.get_mut(&worker) {
                    let lanes = handle.lanes.drain(..).map(Lane::new).collect();
                    let rss_watch = self.memory.rss_threshold.and_then(|threshold| {
                        match RssProbe::open(handle.pid) {
                            Ok(probe) => Some((probe, threshold)),
                            Err(err) => {
                                error!(worker = %worker, pid = handle.pid, error = %err, "cannot watch the worker's RSS; the periodic sample still applies");
                                None
                            }
                        }
                    });
                    let terms = WorkerTerms {
                        request_limit,
                        rss_watch,
                    };
                    self.dispatcher.add_worker(worker, lanes, terms);
                }
            }
            Action::SetStanding { worker, standing } => {
                self.dispatcher.set_standing(worker, standing)
            }
            Action::Retire { worker, .. } => self.dispatcher.retire(worker),
            Action::Stop { worker } => {
                if let Some(handle) = self.workers.get_mut(&worker) {
                    handle.control = None;
                    handle.lanes.clear();
                    handle.stopping = true;
                }
            }
            Action::Forget { worker } => {
                self.dispatcher.remove(worker);
                self.workers.remove(&worker);
            }
            Action::Signal { worker, signal } => {
                if let Some(handle) = self.workers.get(&worker) {
                    let signal = match signal {
                        WorkerSignal::Term => Signal::SIGTERM,
                        WorkerSignal::Abort => Signal::SIGABRT,
                        WorkerSignal::Quit => Signal::SIGQUIT,
                        WorkerSignal::Kill => Signal::SIGKILL,
                    };
                    // It may have exited already; its exit event is on the way.
                    let _ = kill(Pid::from_raw(handle.pid as i32), signal);
                }
            }
            Action::StopAccepting { graceful } => {
                if !graceful {
                    self.dispatcher.close();
                }
                self.http.stop(graceful);
            }
            Action::ReopenLogs => match self.logging.reopen() {
                Ok(()) => {
                    info!("log files reopened");
                    self.reopen_worker_logs();
                }
                Err(err) => error!(error = %err, "cannot reopen log files"),
            },
            Action::ReloadConfig => match self.reloader.reload() {
                Ok(reloaded) => {
                    let spawn = std::mem::replace(&mut self.spawn, reloaded.spawn);
                    self.before_reload = Some((spawn, self.memory));
                    self.memory = reloaded.memory;
                    let _ = self.events.send(Event::Reloaded(reloaded.arbiter));
                }
                Err(err) => {
                    error!("cannot reload the configuration, keeping the running one: {err}")
                }
            },
            Action::RevertConfig => {
                if let Some((spawn, memory)) = self.before_reload.take() {
                    self.spawn = spawn;
                    self.memory = memory;
                }
            }
            Action::CountRestart { reason } => {
                if let Some(metrics) = &self.metrics {
                    metrics.restart(reason);
                }
            }
            Action::Exit { .. } => {}
        }
    }

    /// Reads every live worker's request count and memory off the async
    /// thread (PSS and USS walk page tables: milliseconds for a big worker)
    /// and reports them as `Event::Sample`.
    pub fn start_sample(&self) {
        let served = self.dispatcher.served();
        let workers: Vec<(WorkerId, u32)> = self
            .workers
            .iter()
            .map(|(&worker, handle)| (worker, handle.pid))
            .collect();
        let (metric, events) = (self.memory.metric, self.events.clone());
        tokio::task::spawn_blocking(move || {
            let samples = workers
                .into_iter()
                .map(|(worker, pid)| WorkerSample {
                    worker,
                    served: served.iter().find(|(w, _)| *w == worker).map(|&(_, n)| n),
                    memory: memory::read(pid, metric).ok(),
                })
                .collect();
            let _ = events.send(Event::Sample(samples));
        });
    }

    /// Hands every running worker the reopened error log: a REOPEN_LOG
    /// frame on its control socket with the file's descriptor attached.
    fn reopen_worker_logs(&mut self) {
        self.collect_control_sockets();
        for (&worker, handle) in &self.workers {
            let Some(control) = &handle.control else {
                continue; // booting or stopping: a new worker gets the new file anyway
            };
            let sent = match self.logging.worker_log_file() {
                Ok(Some(file)) => send_reopen_log(control, &file),
                Ok(None) => return, // stderr: nothing moved
                Err(err) => Err(err),
            };
            if let Err(err) = sent {
                error!(worker = %worker, pid = handle.pid, error = %err, "cannot hand the reopened error log to a worker");
            }
        }
    }

    fn collect_control_sockets(&mut self) {
        while let Ok((worker, control)) = self.booted.try_recv() {
            match self.workers.get_mut(&worker) {
                Some(handle) if !handle.stopping => handle.control = Some(control),
                _ => {}
            }
        }
    }

    fn spawn(&mut self, worker: WorkerId) {
        let stderr = match self.logging.worker_stderr() {
            Ok(stderr) => stderr,
            Err(err) => {
                let _ = self.events.send(Event::SpawnFailed {
                    worker,
                    error: format!("cannot open the error log for a worker: {err}"),
                });
                return;
            }
        };
        let spawned = match spawn(worker, &self.spawn, stderr) {
            Ok(spawned) => spawned,
            Err(err) => {
                let _ = self.events.send(Event::SpawnFailed {
                    worker,
                    error: err.to_string(),
                });
                return;
            }
        };
        let pid = spawned.pid;
        info!(worker = %worker, pid, "booting worker");
        let _ = self.events.send(Event::Spawned { worker, pid });
        self.workers.insert(
            worker,
            Handle {
                pid,
                control: None,
                lanes: spawned.lanes,
                stopping: false,
            },
        );
        let mut child = spawned.child;
        let events = self.events.clone();
        tokio::spawn(async move {
            let status = match child.wait().await {
                Ok(status) => match (status.code(), status.signal()) {
                    (Some(code), _) => ExitStatus::Code(code),
                    (None, Some(sig)) => ExitStatus::Signal(sig),
                    (None, None) => ExitStatus::Code(-1),
                },
                Err(_) => ExitStatus::Code(-1),
            };
            let _ = events.send(Event::Exited { worker, status });
        });
        let events = self.events.clone();
        let booted = self.booted_tx.clone();
        let (lanes, timeout) = (self.spawn.lanes, self.boot_timeout);
        tokio::spawn(async move {
            let (control, result) = handshake(spawned.control, lanes, timeout).await;
            let _ = booted.send((worker, control));
            let event = match result {
                Ok(hello) => {
                    info!(worker = %worker, pid = hello.pid, python = %hello.python, class = %hello.worker_class, "worker booted");
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

/// One REOPEN_LOG frame with `file`'s descriptor (SCM_RIGHTS). The control
/// socket carries nothing else from the master, so its buffer has room.
fn send_reopen_log(control: &UnixStream, file: &std::fs::File) -> std::io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    use std::os::fd::AsRawFd;
    let mut frame = bytes::BytesMut::new();
    crate::protocol::frame::put_header(&mut frame, crate::protocol::frame::Kind::ReopenLog, 0, 0);
    let fds = [file.as_raw_fd()];
    sendmsg::<()>(
        control.as_raw_fd(),
        &[std::io::IoSlice::new(&frame)],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::MSG_DONTWAIT,
        None,
    )?;
    Ok(())
}
