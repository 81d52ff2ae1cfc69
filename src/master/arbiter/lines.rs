//! The arbiter's log lines about one worker, worded as gunicorn's arbiter
//! words them where it has the event (`reap_workers`, `murder_workers`) and in
//! the same `Worker (pid:N) ...` sentence form where the event is ferrocorn's
//! own (recycling). Each event gets one line; the fields stay in the event for
//! tests and tooling, and the formatter shows only those the words lack.
//! Which events happen is the arbiter's business; this file only says them.

use std::fmt;

use tracing::{debug, error, info, warn};

use crate::logging::CRITICAL_FIELD;
use crate::master::event::ExitStatus;
use crate::worker::state::RetireReason;
use crate::worker::WorkerId;

/// A worker's pid in a sentence; `?` before the launcher reported it.
#[derive(Clone, Copy, Debug)]
pub(super) struct Pid(pub(super) Option<u32>);

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(pid) => write!(f, "{pid}"),
            None => f.write_str("?"),
        }
    }
}

/// What the worker had done when it went, for the fields of a line.
#[derive(Clone, Copy, Debug)]
pub(super) struct Record {
    pub(super) worker: WorkerId,
    pub(super) pid: Pid,
    pub(super) requests: u64,
    pub(super) memory: Option<u64>,
    pub(super) age_s: u64,
}

/// A worker process ended. gunicorn's reaper: SIGKILL is an error ("Perhaps
/// out of memory?"), TERM is expected, any other signal a warning, a non-zero
/// code an error. A clean exit is gunicorn's `Worker exiting (pid: N)`, which
/// gunicorn's worker writes itself; ferrocorn's master writes it, so it is
/// there even for a worker that could not say it, and exactly once.
/// `why` is the retire reason, `crash`, or `booting`.
pub(super) fn exited(r: Record, status: ExitStatus, why: &str) {
    let Record {
        worker,
        pid,
        requests,
        age_s,
        ..
    } = r;
    match status {
        ExitStatus::Code(0) => {
            info!(worker = %worker, pid = pid.0, reason = why, requests, age_s, "Worker exiting (pid: {pid})");
        }
        ExitStatus::Code(code) => {
            error!(worker = %worker, pid = pid.0, reason = why, requests, age_s, "Worker (pid:{pid}) exited with code {code}.");
        }
        ExitStatus::Signal(sig) if sig == nix::libc::SIGKILL => {
            error!(worker = %worker, pid = pid.0, reason = why, requests, age_s, "Worker (pid:{pid}) was sent SIGKILL! Perhaps out of memory?");
        }
        ExitStatus::Signal(sig) if sig == nix::libc::SIGTERM => {
            info!(worker = %worker, pid = pid.0, reason = why, requests, age_s, "Worker (pid:{pid}) was sent SIGTERM!");
        }
        ExitStatus::Signal(sig) => {
            let name = signal_name(sig);
            warn!(worker = %worker, pid = pid.0, reason = why, requests, age_s, "Worker (pid:{pid}) was sent {name}!");
        }
    }
}

/// Python's `signal.Signals(sig).name`, or gunicorn's `signal N` fallback.
fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map_or_else(|_| format!("signal {sig}"), |s| s.as_str().to_owned())
}

/// A worker leaves the pool at once (not planned ahead). A timeout is
/// gunicorn's `WORKER TIMEOUT (pid:N)`, at its level (CRITICAL). The hard
/// memory limit and a protocol error were logged with their detail where
/// they were found, so their retirement is only a debug line.
pub(super) fn retiring(r: Record, reason: RetireReason) {
    let Record {
        worker,
        pid,
        requests,
        memory,
        age_s,
    } = r;
    let reason_s = reason.as_str();
    match reason {
        RetireReason::Timeout => {
            error!(worker = %worker, pid = pid.0, reason = reason_s, requests, age_s,
                { CRITICAL_FIELD } = true, "WORKER TIMEOUT (pid:{pid})");
        }
        RetireReason::MemoryHard | RetireReason::ProtocolError | RetireReason::Shutdown => {
            debug!(worker = %worker, pid = pid.0, reason = reason_s, requests, memory, age_s, "Worker (pid:{pid}) retiring");
        }
        RetireReason::ScaleDown => {
            info!(worker = %worker, pid = pid.0, reason = reason_s, requests, age_s, "Worker (pid:{pid}) retiring: one worker less");
        }
        RetireReason::Reload => {
            info!(worker = %worker, pid = pid.0, reason = reason_s, requests, age_s, "Worker (pid:{pid}) retiring: the configuration was reloaded");
        }
        RetireReason::MaxRequests | RetireReason::Memory | RetireReason::MemoryTotal => {
            info!(worker = %worker, pid = pid.0, reason = reason_s, requests, memory, age_s, "Worker (pid:{pid}) retiring: {reason_s}");
        }
    }
}

/// A worker is due to retire once its replacement is ready: ferrocorn's
/// recycling, said as gunicorn says its max-requests restart.
pub(super) fn due(r: Record, reason: RetireReason, limit: Option<u64>) {
    let Record {
        worker,
        pid,
        requests,
        memory,
        age_s,
    } = r;
    let reason_s = reason.as_str();
    match reason {
        RetireReason::MaxRequests => {
            let limit = limit.unwrap_or(requests);
            info!(worker = %worker, pid = pid.0, reason = reason_s, requests, limit, age_s,
                "Worker (pid:{pid}) reached max requests ({limit}), restarting");
        }
        RetireReason::Memory => {
            info!(worker = %worker, pid = pid.0, reason = reason_s, requests, memory, limit, age_s,
                "Worker (pid:{pid}) is above the memory limit, restarting");
        }
        RetireReason::MemoryTotal => {
            info!(worker = %worker, pid = pid.0, reason = reason_s, requests, memory, age_s,
                "Worker (pid:{pid}) is the largest while all workers are above the memory budget, restarting");
        }
        RetireReason::Reload => {
            info!(worker = %worker, pid = pid.0, reason = reason_s, requests, age_s,
                "Worker (pid:{pid}) runs the previous configuration, restarting");
        }
        _ => {
            info!(worker = %worker, pid = pid.0, reason = reason_s, requests, memory, age_s,
                "Worker (pid:{pid}) is due to retire ({reason_s}), restarting");
        }
    }
}
