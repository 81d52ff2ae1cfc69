//! What the master tells the metrics about its workers: one [`WorkerView`]
//! per live worker and the [`Readiness`] figures `/readyz` answers from.
//! Plain data, so the arbiter can build them without knowing Prometheus.

use std::time::Duration;

/// One live worker, as the master's arbiter sees it.
#[derive(Debug, Clone, Default)]
pub struct WorkerView {
    /// The arbiter's worker id.
    pub id: u64,
    /// Its process id, once spawned.
    pub pid: Option<u32>,
    /// `"booting"`, `"serving"` or `"retiring"`.
    pub state: &'static str,
    /// Requests served so far.
    pub requests: u64,
    /// Last memory sample (the configured metric: rss/uss/pss), if any yet.
    pub memory_bytes: Option<u64>,
    /// Time since it was spawned.
    pub age: Duration,
}

/// What `/readyz` decides on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Readiness {
    /// Workers that finished booting and take requests.
    pub ready_workers: usize,
    /// Workers the arbiter aims for.
    pub desired_workers: usize,
    /// The master is stopping.
    pub stopping: bool,
}

impl Readiness {
    /// Why the server is not ready, in one line; `None` when it is.
    pub fn not_ready_reason(&self) -> Option<String> {
        let counts = format!(
            "{} of {} workers ready",
            self.ready_workers, self.desired_workers
        );
        if self.stopping {
            Some(format!("not ready: stopping ({counts})"))
        } else if self.desired_workers == 0 {
            Some(format!("not ready: no workers desired yet ({counts})"))
        } else if self.ready_workers < self.desired_workers {
            Some(format!("not ready: {counts}"))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_reasons_name_the_counts() {
        let ready = |ready_workers, desired_workers, stopping| Readiness {
            ready_workers,
            desired_workers,
            stopping,
        };
        assert_eq!(ready(2, 2, false).not_ready_reason(), None);
        assert_eq!(ready(3, 2, false).not_ready_reason(), None);
        assert_eq!(
            ready(1, 2, false).not_ready_reason().as_deref(),
            Some("not ready: 1 of 2 workers ready")
        );
        assert_eq!(
            ready(0, 0, false).not_ready_reason().as_deref(),
            Some("not ready: no workers desired yet (0 of 0 workers ready)")
        );
        assert_eq!(
            ready(2, 2, true).not_ready_reason().as_deref(),
            Some("not ready: stopping (2 of 2 workers ready)")
        );
    }
}
