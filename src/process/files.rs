//! The master's open-file limit. Every client connection is a descriptor of
//! the master's, and `--workers` x `--worker-connections` of them may be
//! open at once (with gevent, 1,000 per worker by default), besides each
//! worker's sockets. A soft limit below that makes `accept` fail with
//! EMFILE under load, so the master raises its soft limit up to the hard
//! one at start, and says so when even the hard limit is too low.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Descriptors the master keeps besides connections and workers: listeners,
/// log files, the runtime's epoll and eventfds, the metrics endpoint,
/// the fork server, a worker being replaced.
const SPARE: u64 = 64;

/// Descriptors the master may need at once: `connections` client
/// connections, and `per_worker` for each of `workers` (twice: a worker
/// being replaced overlaps its successor).
pub fn needed(connections: usize, workers: usize, per_worker: usize) -> u64 {
    (connections as u64)
        .saturating_add(
            (workers as u64)
                .saturating_mul(per_worker as u64)
                .saturating_mul(2),
        )
        .saturating_add(SPARE)
}

/// What to do about the soft limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// It is high enough already.
    Keep,
    /// Raise it to this (at most the hard limit).
    Raise(u64),
    /// Even the hard limit is below what is needed: raise to the hard limit
    /// and warn.
    Short {
        /// The hard limit.
        hard: u64,
    },
}

/// The plan for a `soft`/`hard` limit pair when `needed` descriptors may be open.
pub fn plan(soft: u64, hard: u64, needed: u64) -> Plan {
    if soft >= needed {
        Plan::Keep
    } else if hard >= needed {
        Plan::Raise(needed)
    } else {
        Plan::Short { hard }
    }
}

/// What happened to the limit, for the start's log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It was enough.
    Enough,
    /// Raised from the first to the second.
    Raised(u64, u64),
    /// It stays below what is needed (at `limit`).
    Short {
        /// The soft limit now.
        limit: u64,
    },
}

/// Raises the soft open-file limit towards `needed` as far as the hard limit allows.
pub fn raise_to(needed: u64) -> nix::Result<Outcome> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    match plan(soft, hard, needed) {
        Plan::Keep => Ok(Outcome::Enough),
        Plan::Raise(to) => {
            setrlimit(Resource::RLIMIT_NOFILE, to, hard)?;
            Ok(Outcome::Raised(soft, to))
        }
        Plan::Short { hard } => {
            if hard > soft {
                setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
            }
            Ok(Outcome::Short {
                limit: hard.max(soft),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_is_kept_raised_or_found_short() {
        let need = needed(4 * 1000, 4, 2);
        assert_eq!(need, 4000 + 16 + SPARE);
        assert_eq!(plan(1 << 20, 1 << 20, need), Plan::Keep);
        assert_eq!(plan(1024, 1 << 20, need), Plan::Raise(need));
        assert_eq!(plan(1024, 2048, need), Plan::Short { hard: 2048 });
        assert_eq!(needed(usize::MAX, 2, 2), u64::MAX);
    }
}
