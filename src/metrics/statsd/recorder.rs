//! What the request path writes and the flush reads: atomic counters and a
//! bounded window of durations. Recording is a few relaxed atomic adds, no
//! lock, no allocation, no syscall; [`Recorder::take`] empties it.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::*};
use std::time::Duration;

use super::format::Snapshot;

/// Durations kept per flush; past this, the rest of the flush's requests
/// are counted but not timed, and the kept ones are sent with `|@rate`.
/// 1000 timer lines are ~35 datagrams a second.
pub const SAMPLE_CAP: usize = 1000;

/// Status codes counted one by one: 100..=999 (hyper's whole range).
const FIRST_STATUS: u16 = 100;
const STATUS_SLOTS: usize = 900;

/// The figures gathered since the last flush. Shared as `Arc<Recorder>`.
pub struct Recorder {
    requests: AtomicU64,
    statuses: Box<[AtomicU64; STATUS_SLOTS]>,
    /// Microseconds + 1 (0 marks a slot not written yet).
    durations: Box<[AtomicU32; SAMPLE_CAP]>,
    /// Durations offered since the last flush; the first SAMPLE_CAP are kept.
    offered: AtomicUsize,
    workers: AtomicU64,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("requests", &self.requests.load(Relaxed))
            .finish_non_exhaustive()
    }
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            requests: AtomicU64::new(0),
            statuses: Box::new(std::array::from_fn(|_| AtomicU64::new(0))),
            durations: Box::new(std::array::from_fn(|_| AtomicU32::new(0))),
            offered: AtomicUsize::new(0),
            workers: AtomicU64::new(0),
        }
    }
}

impl Recorder {
    /// Records one finished request (the HTTP front calls it).
    #[inline]
    pub fn observe_request(&self, latency: Duration, status: u16) {
        self.requests.fetch_add(1, Relaxed);
        if let Some(slot) = status
            .checked_sub(FIRST_STATUS)
            .and_then(|i| self.statuses.get(usize::from(i)))
        {
            slot.fetch_add(1, Relaxed);
        }
        let i = self.offered.fetch_add(1, Relaxed);
        if let Some(slot) = self.durations.get(i) {
            let us = u32::try_from(latency.as_micros().min(u128::from(u32::MAX - 1)))
                .unwrap_or(u32::MAX - 1);
            slot.store(us + 1, Release);
        }
    }

    /// The workers gauge (the master's loop sets it after each event).
    pub fn set_workers(&self, workers: usize) {
        self.workers
            .store(u64::try_from(workers).unwrap_or(u64::MAX), Relaxed);
    }

    /// Everything since the last call, which starts a new window. A request
    /// that took its duration slot just before and writes it just after is
    /// lost to the timer (still counted): rare, and cheaper than a lock.
    pub fn take(&self) -> Snapshot {
        let offered = self.offered.swap(0, AcqRel);
        let mut durations_us = Vec::with_capacity(offered.min(SAMPLE_CAP));
        for slot in &self.durations[..offered.min(SAMPLE_CAP)] {
            match slot.swap(0, Acquire) {
                0 => {}
                v => durations_us.push(v - 1),
            }
        }
        let statuses = self
            .statuses
            .iter()
            .zip(FIRST_STATUS..)
            .filter_map(|(slot, status)| match slot.swap(0, Relaxed) {
                0 => None,
                n => Some((status, n)),
            })
            .collect();
        Snapshot {
            requests: self.requests.swap(0, Relaxed),
            statuses,
            durations_offered: offered.max(durations_us.len()) as u64,
            durations_us,
            workers: self.workers.load(Relaxed),
            log_lines: Vec::new(),
            backlog: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_durations_come_out_once() {
        let recorder = Recorder::default();
        recorder.set_workers(3);
        recorder.observe_request(Duration::from_micros(1500), 200);
        recorder.observe_request(Duration::from_micros(0), 200);
        recorder.observe_request(Duration::from_millis(7), 404);
        recorder.observe_request(Duration::from_millis(1), 999);
        let first = recorder.take();
        assert_eq!(first.requests, 4);
        assert_eq!(first.statuses, [(200, 2), (404, 1), (999, 1)]);
        assert_eq!(first.durations_us, [1500, 0, 7000, 1000]);
        assert_eq!(first.durations_offered, 4);
        assert_eq!(first.workers, 3);
        let second = recorder.take();
        assert_eq!(second.requests, 0);
        assert!(second.statuses.is_empty() && second.durations_us.is_empty());
        assert_eq!(second.workers, 3, "a gauge keeps its value");
    }

    #[test]
    fn durations_past_the_cap_are_counted_not_kept() {
        let recorder = Recorder::default();
        let n = SAMPLE_CAP * 3;
        for _ in 0..n {
            recorder.observe_request(Duration::from_millis(2), 200);
        }
        let snapshot = recorder.take();
        assert_eq!(snapshot.requests, n as u64);
        assert_eq!(snapshot.durations_us.len(), SAMPLE_CAP);
        assert_eq!(snapshot.durations_offered, n as u64);
        // The next window starts empty and keeps again.
        recorder.observe_request(Duration::from_millis(2), 200);
        assert_eq!(recorder.take().durations_us, [2000]);
    }

    /// Prints the cost of the hot path; asserts nothing about speed.
    /// `cargo test --release --lib statsd_observe_request_cost -- --nocapture`
    #[test]
    fn statsd_observe_request_cost() {
        let recorder = Recorder::default();
        let calls: u32 = 1_000_000;
        let started = std::time::Instant::now();
        for i in 0..calls {
            let latency = Duration::from_micros(u64::from(i % 50_000));
            let status = if i % 97 == 0 { 404 } else { 200 };
            recorder.observe_request(std::hint::black_box(latency), std::hint::black_box(status));
            if i % 100_000 == 0 {
                let _ = recorder.take();
            }
        }
        let elapsed = started.elapsed();
        println!(
            "statsd observe_request: {:.1} ns/call over {calls} calls ({} build)",
            elapsed.as_nanos() as f64 / f64::from(calls),
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
        );
    }

    #[test]
    fn statuses_outside_hypers_range_count_as_requests_only() {
        let recorder = Recorder::default();
        recorder.observe_request(Duration::ZERO, 42);
        let snapshot = recorder.take();
        assert_eq!(snapshot.requests, 1);
        assert!(snapshot.statuses.is_empty());
    }
}
