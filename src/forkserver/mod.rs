//! The fork server: the master's Python half. One process of the user's
//! interpreter gets a worker ready up to the fork (the worker program
//! imported; with `--preload` the app too, then frozen for copy-on-write)
//! and forks a worker whenever the master asks, so a replacement costs
//! milliseconds instead of an interpreter start and an import.
//!
//! [`Launcher`] is the master's handle: a task owns the fork server
//! ([`process`]) and answers launch requests one at a time. If the fork
//! server dies, running workers are not affected; the task starts a new one,
//! backing off while it keeps failing, and past the back-off's limit it
//! starts workers the old way, as fresh interpreters, and says so in the
//! log. It decides nothing else: which worker to start and when is the
//! arbiter's business.

pub mod process;

use std::fs::File;
use std::process::Stdio;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use crate::master::policy::backoff::{self, Verdict};
use crate::protocol::frame::Kind;
use crate::worker::reap::Reaper;
use crate::worker::spawn::{start_worker, SpawnSpec, WorkerEnds};
use crate::worker::WorkerId;
use process::{ForkError, ForkServer, StartError};

/// Why a worker was not started.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LaunchError {
    /// `--preload`: the app could not be imported in the fork server; the
    /// text holds the Python error. The next try would fail the same way.
    #[error("app failed to load: {0}")]
    AppLoad(String),
    /// The interpreter could not be executed at all.
    #[error("{0}")]
    Exec(String),
    /// The server hooks config failed in the fork server (exit 3 class, not
    /// the app's fault); the next try would fail the same way.
    #[error("{0}")]
    Config(String),
    /// This worker did not start (the fork failed, or the fork server died
    /// while forking it); the next one may.
    #[error("{0}")]
    Failed(String),
}

/// How the launcher starts workers.
#[derive(Debug)]
pub struct LaunchSpec {
    /// Interpreter, app, environment and `--preload`.
    pub spawn: SpawnSpec,
    /// Time the fork server has to get ready.
    pub boot_timeout: Duration,
    /// The error log file the Python side writes to; `None` is the master's stderr.
    pub log_file: Option<File>,
}

/// `--check-config`: imports the app as a worker would, in a fork server of
/// the configured interpreter with `--preload`, then lets it go. Returns the
/// start error (its traceback is on stderr already).
pub async fn check_app(spawn: &SpawnSpec, timeout: Duration) -> Result<(), StartError> {
    let reaper = Reaper::start().map_err(|e| StartError::Failed(e.to_string()))?;
    let mut spec = spawn.clone();
    spec.preload = true;
    process::skip_on_starting();
    let server = ForkServer::start(&spec, timeout, Stdio::inherit(), &reaper).await?;
    drop(server); // its socket closes: it exits
    Ok(())
}

enum Request {
    Launch {
        worker: WorkerId,
        ends: WorkerEnds,
        reply: oneshot::Sender<Result<u32, LaunchError>>,
    },
    ReopenLog(Option<File>),
    Stopping,
    /// Run a server hook in the fork server (docs/hooks.md).
    Hook(Kind, serde_json::Value),
    /// Run `on_exit`, and answer once the fork server has exited or `wait` passed.
    Exit {
        wait: Duration,
        done: oneshot::Sender<()>,
    },
    /// Run `pre_exec`, and answer once it ran or `wait` passed.
    PreExec {
        wait: Duration,
        done: oneshot::Sender<()>,
    },
}

/// Starts workers through the fork server. Dropping every clone stops the
/// fork server (its control socket closes); its workers serve on.
#[derive(Debug, Clone)]
pub struct Launcher {
    requests: mpsc::UnboundedSender<Request>,
}

impl Launcher {
    /// Starts the fork server in the background; launches wait for it.
    pub fn start(spec: LaunchSpec, reaper: Reaper) -> Launcher {
        let (requests, rx) = mpsc::unbounded_channel();
        let task = Task {
            spec,
            reaper,
            state: State::Down { failures: 0 },
        };
        tokio::spawn(task.run(rx));
        Launcher { requests }
    }

    /// Starts worker `worker` on `ends`; returns its pid, which is a child
    /// of the master either way.
    pub async fn launch(&self, worker: WorkerId, ends: WorkerEnds) -> Result<u32, LaunchError> {
        let (reply, answer) = oneshot::channel();
        let gone = || LaunchError::Failed("the master is stopping".into());
        self.requests
            .send(Request::Launch {
                worker,
                ends,
                reply,
            })
            .map_err(|_| gone())?;
        answer.await.unwrap_or_else(|_| Err(gone()))
    }

    /// The error log was reopened (USR1): workers forked from now on write
    /// to `file`.
    pub fn reopen_log(&self, file: Option<File>) {
        let _ = self.requests.send(Request::ReopenLog(file));
    }

    /// The master is stopping: the fork server is not replaced if it goes
    /// (a TERM to the whole process group reaches it too), and no more
    /// workers are started.
    pub fn stopping(&self) {
        let _ = self.requests.send(Request::Stopping);
    }

    /// Asks the fork server to run a master-side server hook (`kind` is one
    /// of WHEN_READY, CHILD_EXIT, NWORKERS_CHANGED, ON_RELOAD); dropped when
    /// no fork server runs (fresh interpreters run no master-side hooks).
    pub fn hook(&self, kind: Kind, payload: serde_json::Value) {
        let _ = self.requests.send(Request::Hook(kind, payload));
    }

    /// USR2 is about to start a new master: the fork server runs
    /// `pre_exec`. Returns once it has, or after `wait` at most (at once
    /// when no fork server runs).
    pub async fn pre_exec(&self, wait: Duration) {
        let (done, finished) = oneshot::channel();
        if self.requests.send(Request::PreExec { wait, done }).is_ok() {
            let _ = tokio::time::timeout(wait, finished).await;
        }
    }

    /// The master is exiting: the fork server runs `on_exit` and exits.
    /// Returns once it has, or after `wait` at most.
    pub async fn exit(&self, wait: Duration) {
        let (done, finished) = oneshot::channel();
        if self.requests.send(Request::Exit { wait, done }).is_ok() {
            let _ = tokio::time::timeout(wait, finished).await;
        }
    }
}

enum State {
    Up(ForkServer),
    /// No fork server: the next launch starts one (`failures` in a row so far).
    Down {
        failures: u32,
    },
    /// The app cannot be imported: every launch fails the same way.
    Broken(LaunchError),
    /// The fork server kept failing: workers start as fresh interpreters.
    Fallback,
    /// The master is stopping: no more workers. The fork server, if one
    /// runs, stays for the hooks until the master exits (`on_exit`).
    Stopped(Option<ForkServer>),
}

struct Task {
    spec: LaunchSpec,
    reaper: Reaper,
    state: State,
}

impl Task {
    async fn run(mut self, mut requests: mpsc::UnboundedReceiver<Request>) {
        // Boot it now, so the first workers do not wait for an interpreter.
        self.ensure_up().await;
        loop {
            let request = match &mut self.state {
                State::Up(server) => {
                    let pid = server.pid;
                    tokio::select! {
                        request = requests.recv() => request,
                        status = server.exited() => {
                            error!(pid, %status, "Fork server (pid:{pid}) died ({status}); starting a new one (running workers are not affected)");
                            self.state = State::Down { failures: 0 };
                            self.ensure_up().await;
                            continue;
                        }
                    }
                }
                _ => requests.recv().await,
            };
            match request {
                None => return,
                Some(Request::Launch {
                    worker,
                    ends,
                    reply,
                }) => {
                    let _ = reply.send(self.launch(worker, ends).await);
                }
                Some(Request::ReopenLog(file)) => self.reopen_log(file).await,
                Some(Request::Stopping) => {
                    // Kept for child_exit and on_exit; dropping it (when the
                    // master exits) closes its socket and it exits on its own.
                    self.state = match std::mem::replace(&mut self.state, State::Stopped(None)) {
                        State::Up(server) | State::Stopped(Some(server)) => {
                            State::Stopped(Some(server))
                        }
                        _ => State::Stopped(None),
                    };
                }
                Some(Request::Hook(kind, payload)) => {
                    if let State::Up(server) | State::Stopped(Some(server)) = &mut self.state {
                        if let Err(err) = server.notify(kind, &payload).await {
                            warn!(pid = server.pid, error = %err, "cannot ask the fork server to run a server hook");
                        }
                    }
                }
                Some(Request::Exit { wait, done }) => {
                    if let State::Up(server) | State::Stopped(Some(server)) = &mut self.state {
                        let json = serde_json::json!({});
                        if server.notify(Kind::OnExit, &json).await.is_ok() {
                            // on_exit runs there; it exits right after.
                            let _ = tokio::time::timeout(wait, server.exited()).await;
                        }
                    }
                    self.state = State::Stopped(None);
                    let _ = done.send(());
                }
                Some(Request::PreExec { wait, done }) => {
                    if let State::Up(server) = &mut self.state {
                        if let Err(err) = server.pre_exec(wait).await {
                            warn!(pid = server.pid, error = %err, "the pre_exec server hook did not answer; the new master starts anyway");
                        }
                    }
                    let _ = done.send(());
                }
            }
        }
    }

    async fn launch(&mut self, worker: WorkerId, ends: WorkerEnds) -> Result<u32, LaunchError> {
        loop {
            self.ensure_up().await;
            match &mut self.state {
                State::Up(server) => match server.fork(worker, &ends).await {
                    Ok(pid) => return Ok(pid),
                    Err(ForkError::Refused(why)) => {
                        return Err(LaunchError::Failed(format!(
                            "the fork server could not fork worker {worker}: {why}"
                        )))
                    }
                    // It never got the request: the next fork server may.
                    Err(ForkError::NotSent) => self.lost(None),
                    Err(err @ ForkError::Lost(_)) => {
                        // A worker may exist on these sockets: they are not
                        // reused; dropping ours stops such a worker.
                        let message = err.to_string();
                        self.lost(Some(&message));
                        return Err(LaunchError::Failed(message));
                    }
                },
                // ensure_up never leaves it Down; go round again if it did.
                State::Down { .. } => continue,
                State::Broken(err) => return Err(err.clone()),
                State::Stopped(_) => {
                    return Err(LaunchError::Failed("the master is stopping".into()))
                }
                State::Fallback => {
                    return start_worker(worker, &self.spec.spawn, &ends, self.stderr())
                        .map_err(|e| LaunchError::Exec(e.to_string()))
                }
            }
        }
    }

    fn lost(&mut self, why: Option<&str>) {
        if let State::Up(server) = &self.state {
            server.kill();
            error!(
                pid = server.pid,
                "Fork server (pid:{}) lost{}; starting a new one",
                server.pid,
                why.map(|w| format!(": {w}")).unwrap_or_default()
            );
        }
        self.state = State::Down { failures: 0 };
    }

    /// Starts fork servers until one is ready, backing off between tries;
    /// gives up on them (fresh interpreters from then on) past the limit.
    async fn ensure_up(&mut self) {
        while let State::Down { failures } = self.state {
            let started = ForkServer::start(
                &self.spec.spawn,
                self.spec.boot_timeout,
                self.stderr(),
                &self.reaper,
            )
            .await;
            self.state = match started {
                Ok(server) => {
                    info!(
                        pid = server.pid,
                        preload = self.spec.spawn.preload,
                        "Fork server (pid:{}) is ready",
                        server.pid
                    );
                    State::Up(server)
                }
                Err(StartError::AppLoad(text)) => State::Broken(LaunchError::AppLoad(text)),
                Err(StartError::Exec(err)) => State::Broken(LaunchError::Exec(err.to_string())),
                Err(StartError::Config(text)) => State::Broken(LaunchError::Config(text)),
                Err(StartError::Failed(why)) => {
                    let failures = failures + 1;
                    match backoff::after_failures(failures) {
                        Verdict::RetryAfter(delay) => {
                            warn!(
                                failures,
                                delay_ms = delay.as_millis() as u64,
                                "Fork server failed to start: {why}; trying again"
                            );
                            tokio::time::sleep(delay).await;
                            State::Down { failures }
                        }
                        Verdict::GiveUp => {
                            error!(failures, "Fork server failed to start: {why}; workers start as fresh interpreters from now on (slower boots, no shared memory)");
                            State::Fallback
                        }
                    }
                }
            };
        }
    }

    async fn reopen_log(&mut self, file: Option<File>) {
        if let (State::Up(server), Some(file)) = (&mut self.state, &file) {
            if let Err(err) = server.reopen_log(file).await {
                error!(pid = server.pid, error = %err, "Cannot hand the reopened error log to the fork server (pid:{})", server.pid);
            }
        }
        self.spec.log_file = file;
    }

    /// The Python side's stderr: the error log file, or the master's stderr.
    fn stderr(&self) -> Stdio {
        match self.spec.log_file.as_ref().map(File::try_clone) {
            Some(Ok(file)) => Stdio::from(file),
            _ => Stdio::inherit(),
        }
    }
}
