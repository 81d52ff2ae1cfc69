//! Python worker processes: their sockets and how a fresh interpreter is
//! started ([`spawn`]; the fork server in `forkserver` starts most), how one
//! proves it is ready ([`boot`]), how its exit is reaped ([`reap`]), which
//! states it moves through ([`state`]), how much memory it uses
//! ([`memory`]), and the embedded worker program ([`script`]).

pub mod boot;
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
