//! The states a worker moves through and the moves that are legal:
//!
//! ```text
//!  Booting --ready--> Serving --retire--> Retiring --exit--> Stopped
//!     |                  |                   |
//!     +------------------+-------crash-------+--> Dead
//! ```
//!
//! The arbiter changes states only through [`WorkerState::advance`], which
//! refuses illegal moves instead of corrupting the table.

use std::fmt;

/// Why a worker is leaving; shown unchanged in logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RetireReason {
    /// The server is stopping.
    Shutdown,
    /// It served its `--max-requests` (plus jitter).
    MaxRequests,
    /// It stayed above `--max-memory`.
    Memory,
    /// It went above `--max-memory-hard`: killed at once.
    MemoryHard,
    /// All workers together stayed above `--max-memory-total`; it was the largest.
    MemoryTotal,
    /// SIGHUP: every worker is rolled onto the re-read config.
    Reload,
    /// A request ran past `--timeout`.
    Timeout,
    /// It broke the protocol.
    ProtocolError,
    /// One worker less (TTOU).
    ScaleDown,
}

impl RetireReason {
    /// The snake_case name used in logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            RetireReason::Shutdown => "shutdown",
            RetireReason::MaxRequests => "max_requests",
            RetireReason::Memory => "memory",
            RetireReason::MemoryHard => "memory_hard",
            RetireReason::MemoryTotal => "memory_total",
            RetireReason::Reload => "reload",
            RetireReason::Timeout => "timeout",
            RetireReason::ProtocolError => "protocol_error",
            RetireReason::ScaleDown => "scale_down",
        }
    }
}

impl fmt::Display for RetireReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a worker was replaced, as the restart metric counts it: the reason
/// it retired for, or a crash. One enum, so a label can never be misspelt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RestartReason {
    /// It retired (and was replaced) for this reason.
    Retired(RetireReason),
    /// It died without being asked to.
    Crash,
}

impl RestartReason {
    /// Every reason a worker is replaced for (a shutdown replaces nobody).
    pub const ALL: [RestartReason; 9] = [
        RestartReason::Retired(RetireReason::MaxRequests),
        RestartReason::Retired(RetireReason::Memory),
        RestartReason::Retired(RetireReason::MemoryHard),
        RestartReason::Retired(RetireReason::MemoryTotal),
        RestartReason::Retired(RetireReason::Timeout),
        RestartReason::Retired(RetireReason::Reload),
        RestartReason::Retired(RetireReason::ScaleDown),
        RestartReason::Crash,
        RestartReason::Retired(RetireReason::ProtocolError),
    ];

    /// The metric label: the retire reason's name, or `crash`.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartReason::Retired(reason) => reason.as_str(),
            RestartReason::Crash => "crash",
        }
    }
}

/// Where a worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// Started; importing the app.
    Booting,
    /// Ready and taking requests.
    Serving,
    /// Taking no new requests; finishing its own.
    Retiring(RetireReason),
    /// Exited after retiring.
    Stopped,
    /// Exited without being asked to.
    Dead,
}

/// What can happen to a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Handshake done.
    Ready,
    /// The arbiter decided it should go.
    Retire(RetireReason),
    /// The process exited.
    Exit,
}

/// A move the state machine does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("worker cannot go from {from:?} by {by:?}")]
pub struct IllegalMove {
    /// The state it was in.
    pub from: WorkerState,
    /// What was attempted.
    pub by: Transition,
}

impl WorkerState {
    /// The state after `by`, or an error if the move is illegal.
    pub fn advance(self, by: Transition) -> Result<WorkerState, IllegalMove> {
        use Transition as T;
        use WorkerState as S;
        match (self, by) {
            (S::Booting, T::Ready) => Ok(S::Serving),
            (S::Booting | S::Serving, T::Retire(reason)) => Ok(S::Retiring(reason)),
            (S::Retiring(_), T::Exit) => Ok(S::Stopped),
            (S::Booting | S::Serving, T::Exit) => Ok(S::Dead),
            (from, by) => Err(IllegalMove { from, by }),
        }
    }

    /// Whether it counts towards the desired number of workers.
    pub fn counts_toward_capacity(self) -> bool {
        matches!(self, WorkerState::Booting | WorkerState::Serving)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legal_lives() {
        let s = WorkerState::Booting;
        let s = s.advance(Transition::Ready).unwrap();
        let s = s
            .advance(Transition::Retire(RetireReason::Timeout))
            .unwrap();
        assert_eq!(s.advance(Transition::Exit), Ok(WorkerState::Stopped));
        assert_eq!(
            WorkerState::Serving.advance(Transition::Exit),
            Ok(WorkerState::Dead)
        );
    }

    #[test]
    fn illegal_moves_are_refused() {
        assert!(WorkerState::Serving.advance(Transition::Ready).is_err());
        assert!(WorkerState::Dead.advance(Transition::Exit).is_err());
        let retiring = WorkerState::Retiring(RetireReason::Shutdown);
        assert!(retiring.advance(Transition::Ready).is_err());
        assert!(retiring
            .advance(Transition::Retire(RetireReason::Timeout))
            .is_err());
    }
}
