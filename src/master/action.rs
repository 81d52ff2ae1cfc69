//! What the arbiter asks the shell to do. Plain data: tests assert on it.

use crate::dispatch::Standing;
use crate::exit::ExitCode;
use crate::worker::state::{RestartReason, RetireReason};
use crate::worker::WorkerId;

/// A signal the master sends a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerSignal {
    /// Finish in-flight requests, then exit.
    Term,
    /// Dump every thread's stack, then die (timeout).
    Abort,
    /// Exit at once.
    Quit,
    /// Die now.
    Kill,
}

/// One step for the shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start a new worker process.
    Spawn {
        /// Its new id.
        worker: WorkerId,
        /// The worker it will replace once ready, if any (its CPU passes on).
        replaces: Option<WorkerId>,
    },
    /// Hand the ready worker's lanes to the dispatcher.
    Admit {
        /// Which worker.
        worker: WorkerId,
        /// Its own max-requests limit (with jitter), if any.
        request_limit: Option<u64>,
        /// Requests it may be given at most, even while its replacement
        /// boots (`max_requests + max_requests_jitter`).
        request_cap: Option<u64>,
        /// The worker it takes over from, if any: a spare started before
        /// anyone knew whom it would replace moves to that one's CPU.
        replaces: Option<WorkerId>,
    },
    /// How much the worker may serve: Reserve or Excluded while its
    /// replacement boots, Normal again if its replacement is called off.
    SetStanding {
        /// Which worker.
        worker: WorkerId,
        /// Its new standing.
        standing: Standing,
    },
    /// Give the worker no new requests; it finishes what it has.
    Retire {
        /// Which worker.
        worker: WorkerId,
        /// Why.
        reason: RetireReason,
    },
    /// Close the worker's control socket: it exits once idle.
    Stop {
        /// Which worker.
        worker: WorkerId,
    },
    /// Forget a dead worker's lanes.
    Forget {
        /// Which worker.
        worker: WorkerId,
    },
    /// Send the worker a signal.
    Signal {
        /// Which worker.
        worker: WorkerId,
        /// Which signal.
        signal: WorkerSignal,
    },
    /// Close the listeners; with `graceful`, let open connections finish
    /// their requests (the shell reports `ConnectionsClosed`).
    StopAccepting {
        /// Drain connections rather than drop them.
        graceful: bool,
    },
    /// Stop accepting but keep the listeners open; let open connections
    /// finish their requests and close (the shell reports `Quiesced`).
    PauseAccepting,
    /// Accept again on the listeners kept open.
    ResumeAccepting,
    /// USR2: start a new master from the program's path on the same
    /// listeners (the shell reports `Reexeced` or `ReexecFailed`, then
    /// `ChildMasterExited`).
    Reexec,
    /// The old master is gone: take the pid file's name (`FILE.2` to `FILE`).
    Promote,
    /// Ask the worker to log which lane runs what and every thread's
    /// stack (a request on it timed out; it serves its other lanes on).
    DumpStacks {
        /// Which worker.
        worker: WorkerId,
    },
    /// Reopen log files (USR1).
    ReopenLogs,
    /// Re-read the config file and environment (HUP); the shell answers
    /// with `Event::Reloaded`, or logs why it keeps the old config.
    ReloadConfig,
    /// The reloaded app cannot load: go back to the config before it.
    RevertConfig,
    /// The last worker of the config before a reload is gone: what only it
    /// needed (its fork server) can go.
    SettleReload,
    /// Count one worker replacement, by reason (crash included), for metrics.
    CountRestart {
        /// Why.
        reason: RestartReason,
    },
    /// Leave the loop and exit the process.
    Exit {
        /// The exit code.
        code: ExitCode,
        /// A fatal message to print, if any.
        message: Option<String>,
    },
}
