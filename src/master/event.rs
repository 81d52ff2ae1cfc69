//! What the arbiter hears: signals, worker news and the clock. Plain data, so
//! tests can feed any sequence of them.

use super::arbiter::ArbiterConfig;
use crate::dispatch::PoolNews;
use crate::worker::WorkerId;

/// A process signal with gunicorn's meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sig {
    /// Graceful stop.
    Term,
    /// Quick stop.
    Int,
    /// Quick stop.
    Quit,
    /// Re-read the config and roll every worker.
    Hup,
    /// One worker more.
    Ttin,
    /// One worker less.
    Ttou,
    /// Reopen log files.
    Usr1,
    /// gunicorn's binary upgrade: start a new master on the same sockets.
    Usr2,
    /// Stop the workers gracefully, keeping the master (after a USR2).
    Winch,
}

impl Sig {
    /// The name gunicorn logs it by (`Handling signal: term`).
    pub fn name(self) -> &'static str {
        match self {
            Sig::Term => "term",
            Sig::Int => "int",
            Sig::Quit => "quit",
            Sig::Hup => "hup",
            Sig::Ttin => "ttin",
            Sig::Ttou => "ttou",
            Sig::Usr1 => "usr1",
            Sig::Usr2 => "usr2",
            Sig::Winch => "winch",
        }
    }
}

pub use crate::worker::ExitStatus;

/// What the sampler saw of one worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerSample {
    /// Which worker.
    pub worker: WorkerId,
    /// Requests served so far, if the dispatcher still holds its lanes.
    pub served: Option<u64>,
    /// Bytes of the configured memory metric, if it could be read.
    pub memory: Option<u64>,
}

/// Something the arbiter must react to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The master is up: listeners bound, nothing spawned yet.
    Start,
    /// A signal arrived.
    Signal(Sig),
    /// A worker process was started.
    Spawned {
        /// Which worker.
        worker: WorkerId,
        /// Its pid.
        pid: u32,
    },
    /// A worker process could not even be started.
    SpawnFailed {
        /// Which worker.
        worker: WorkerId,
        /// Why, ready to print.
        error: String,
    },
    /// A worker finished its handshake and imported the app.
    Ready {
        /// Which worker.
        worker: WorkerId,
    },
    /// A worker's boot failed.
    BootFailed {
        /// Which worker.
        worker: WorkerId,
        /// The app could not be loaded (exit 4), not the worker itself (exit 3).
        app_load: bool,
        /// Why, ready to print.
        message: String,
    },
    /// A worker process ended.
    Exited {
        /// Which worker.
        worker: WorkerId,
        /// How.
        status: ExitStatus,
    },
    /// What the dispatcher saw: a worker drained, a request limit
    /// reached, an RSS reading after a request.
    Pool(PoolNews),
    /// The periodic sample of every live worker.
    Sample(Vec<WorkerSample>),
    /// SIGHUP re-read the config: these are the arbiter's new parameters.
    Reloaded(ArbiterConfig),
    /// SIGHUP could not re-read the config: the running one stays.
    ReloadRefused,
    /// A request on this worker ran past `--timeout`.
    RequestTimeout {
        /// Which worker.
        worker: WorkerId,
    },
    /// A worker broke the protocol on a lane.
    ProtocolError {
        /// Which worker.
        worker: WorkerId,
    },
    /// Every client connection has closed after listeners stopped.
    ConnectionsClosed,
    /// Accepting is paused and every connection open then has closed.
    Quiesced,
    /// USR2's new master was started.
    Reexeced {
        /// Its pid.
        pid: u32,
    },
    /// USR2's new master could not be started.
    ReexecFailed {
        /// Why, ready to print.
        error: String,
    },
    /// The new master (our child) exited.
    ChildMasterExited {
        /// Its pid.
        pid: u32,
        /// How.
        status: ExitStatus,
    },
    /// This is a USR2 child master and the old master is gone.
    ParentMasterGone,
    /// Time passed.
    Tick,
}
