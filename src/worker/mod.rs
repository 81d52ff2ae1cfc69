//! Python worker processes: how one is started ([`spawn`]), how it proves it
//! is ready ([`boot`]), which states it moves through ([`state`]), how much
//! memory it uses ([`memory`]), and the embedded worker program ([`script`]).

pub mod boot;
pub mod memory;
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
