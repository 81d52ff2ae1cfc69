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
    /// `--spare-workers`: booted ahead while recycling is on.
    pub spare_workers: usize,
    /// Lanes per worker (`--threads`): a timeout on one lane of several
    /// lets the others finish.
    pub lanes: usize,
    /// `--max-memory`, `--max-memory-hard`, `--max-memory-total`.
    pub memory: MemoryLimits,
}

impl ArbiterConfig {
    /// The most requests any worker may be given: its own limit is drawn
    /// in `max_requests..=max_requests + jitter`, and past its limit it
    /// serves on only while its replacement boots, never past this.
    pub fn request_cap(&self) -> Option<u64> {
        (self.max_requests > 0).then(|| self.max_requests.saturating_add(self.max_requests_jitter))
    }

    /// Spares to keep booted: `--spare-workers` when workers are recycled
    /// by plan (max-requests or a memory limit), so a worker due to go is
    /// replaced at once instead of after a boot; none otherwise.
    pub fn spares(&self) -> usize {
        let recycling =
            self.max_requests > 0 || self.memory.soft.is_some() || self.memory.total.is_some();
        if recycling {
            self.spare_workers
        } else {
            0
        }
    }

    /// A config with `workers` workers, no recycling and no spares, for tests and defaults.
    pub fn basic(workers: usize, graceful_timeout: Duration) -> ArbiterConfig {
        ArbiterConfig {
            workers,
            graceful_timeout,
            max_requests: 0,
            max_requests_jitter: 0,
            max_concurrent_retirements: None,
            spare_workers: 0,
            lanes: 1,
            memory: MemoryLimits {
                soft: None,
                hard: None,
                total: None,
                consecutive: DEFAULT_CONSECUTIVE,
            },
        }
    }
}
