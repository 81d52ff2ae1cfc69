//! The arbiter's parameters, derived from settings at start and on SIGHUP.

use std::time::Duration;

use crate::master::policy::memory::{MemoryLimits, DEFAULT_CONSECUTIVE};

/// The arbiter's parameters; SIGHUP may replace them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArbiterConfig {
    /// Workers to keep serving.
    pub workers: usize,
    /// Time a stopping server or a retiring worker gets to finish requests.
    pub graceful_timeout: Duration,
    /// `--max-requests`; 0 disables.
    pub max_requests: u64,
    /// `--max-requests-jitter`.
    pub max_requests_jitter: u64,
    /// `--max-concurrent-retirements`; `None` is a quarter of the workers.
    pub max_concurrent_retirements: Option<usize>,
    /// `--max-memory`, `--max-memory-hard`, `--max-memory-total`.
    pub memory: MemoryLimits,
}

impl ArbiterConfig {
    /// A config with `workers` workers and no recycling, for tests and defaults.
    pub fn basic(workers: usize, graceful_timeout: Duration) -> ArbiterConfig {
        ArbiterConfig {
            workers,
            graceful_timeout,
            max_requests: 0,
            max_requests_jitter: 0,
            max_concurrent_retirements: None,
            memory: MemoryLimits {
                soft: None,
                hard: None,
                total: None,
                consecutive: DEFAULT_CONSECUTIVE,
            },
        }
    }
}
