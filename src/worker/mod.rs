//! Python worker processes: their sockets and how a fresh interpreter is
//! started ([`spawn`]; the fork server in `forkserver` starts most), how one
//! proves it is ready ([`boot`]), which CPU it is pinned to ([`cpu`]), how
//! its exit is reaped ([`reap`]), which states it moves through
//! ([`state`]), how much memory it uses ([`memory`]), and the embedded
//! worker program ([`script`]).

pub mod boot;
pub mod cpu;
pub mod memory;
pub mod reap;
pub mod script;
pub mod spawn;
pub mod state;

use std::fmt;

/// A worker's id: 1, 2, ... in spawn order; a replacement gets a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WorkerId(pub u64);

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The exit code of a worker that stopped because `--reload` saw a file of
/// its code change (Python: `EXIT_RELOAD`); the master replaces it as a
/// reload, not a crash. Codes 3 and 4 are gunicorn's boot failures.
pub const EXIT_RELOAD: i32 = 5;

/// How a worker (or the fork server) process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(code) => write!(f, "exit code {code}"),
            ExitStatus::Signal(sig) => {
                let name = nix::sys::signal::Signal::try_from(*sig)
                    .map(|s| s.as_str())
                    .unwrap_or("unknown signal");
                write!(f, "signal {sig} ({name})")
            }
        }
    }
}
