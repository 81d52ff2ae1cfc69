//! Counting for one stretch of load: what was sent, how each request ended,
//! what was dropped, latency in HDR histograms (overall and per second) and
//! the per-second series. Sans-IO: every record takes the time since the
//! start of the run as an argument; the async side ([`super::phase`]) owns the
//! clock and the lock.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::sweep::model::{EndpointFigures, Latency, LoadResult, LoadSecond};

/// Largest latency the histograms resolve, in microseconds (one hour);
/// longer ones are recorded as this value.
const HIGHEST_US: u64 = 3_600_000_000;
/// 3 significant digits, as the model promises.
const SIGNIFICANT_DIGITS: u8 = 3;

/// How a request without a response failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// The TCP connection (or the HTTP/1.1 handshake on it) could not be made.
    Connect,
    /// The connection closed or was reset before the response ended.
    Reset,
    /// No complete response within the request timeout.
    Timeout,
    /// The server's bytes were not a valid HTTP/1.1 response.
    BadResponse,
    /// Any other I/O error.
    Io,
}

impl Transport {
    /// The snake_case kind used as key in `failed_by_transport`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Transport::Connect => "connect",
            Transport::Reset => "reset",
            Transport::Timeout => "timeout",
            Transport::BadResponse => "bad_response",
            Transport::Io => "io",
        }
    }
}

/// How a sent request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A complete response with this status, after this latency.
    Status(u16, Duration),
    /// No (complete) response.
    Transport(Transport),
}

/// The counters of one run; see the module doc.
pub(crate) struct Tally {
    sent: u64,
    ended: u64,
    completed: u64,
    dropped: u64,
    failed_by_status: BTreeMap<u16, u64>,
    failed_by_transport: BTreeMap<&'static str, u64>,
    overall: Histogram<u64>,
    /// Latency of the second `open_second`; summarised into the series when a
    /// later second gets its first latency, then reset and reused, so a long
    /// run holds two histograms, not one per second.
    second: Histogram<u64>,
    open_second: u32,
    series: Vec<LoadSecond>,
    /// The same counts per endpoint of the mix (by its index), grown as
    /// endpoints are first seen.
    by_endpoint: Vec<EndpointTally>,
    /// Set by [`Tally::finish`]: later records are ignored, so the figures
    /// handed out stay consistent (`sent == completed + failed`).
    finished: bool,
}

impl Tally {
    /// An empty tally.
    pub(crate) fn new() -> Tally {
        Tally {
            sent: 0,
            ended: 0,
            completed: 0,
            dropped: 0,
            failed_by_status: BTreeMap::new(),
            failed_by_transport: BTreeMap::new(),
            overall: histogram(),
            second: histogram(),
            open_second: 0,
            series: Vec::new(),
            by_endpoint: Vec::new(),
            finished: false,
        }
    }

    fn endpoint(&mut self, index: usize) -> &mut EndpointTally {
        if self.by_endpoint.len() <= index {
            self.by_endpoint.resize_with(index + 1, EndpointTally::new);
        }
        &mut self.by_endpoint[index]
    }

    /// A request to endpoint number `endpoint` was sent (handed to the client) at `at`.
    pub(crate) fn sent(&mut self, at: Duration, endpoint: usize) {
        if self.finished {
            return;
        }
        self.sent += 1;
        self.endpoint(endpoint).sent += 1;
        self.second_mut(at).sent += 1;
    }

    /// An arrival at `at` could not start (open model).
    pub(crate) fn dropped(&mut self, at: Duration) {
        if self.finished {
            return;
        }
        self.dropped += 1;
        self.second_mut(at).dropped += 1;
    }

    /// A sent request to endpoint number `endpoint` ended at `at` with `outcome`.
    pub(crate) fn ended(&mut self, at: Duration, endpoint: usize, outcome: Outcome) {
        if self.finished {
            return;
        }
        self.ended += 1;
        self.endpoint(endpoint).ended(outcome);
        match outcome {
            Outcome::Status(status, latency) => {
                if status < 400 {
                    self.completed += 1;
                    self.second_mut(at).completed += 1;
                } else {
                    *self.failed_by_status.entry(status).or_default() += 1;
                    self.second_mut(at).failed += 1;
                }
                self.record_latency(at, latency);
            }
            Outcome::Transport(kind) => self.failed_transport(at, kind, 1),
        }
    }

    /// `value` was the concurrency at the end of `second`.
    pub(crate) fn concurrency(&mut self, second: u32, value: u64) {
        if self.finished {
            return;
        }
        self.second_at(second).concurrency = value;
    }

    /// Closes the tally at `elapsed`: requests sent but not ended count as
    /// transport "timeout" failures in the last second, and later records are
    /// ignored.
    pub(crate) fn finish(&mut self, elapsed: Duration) -> LoadResult {
        if !self.finished {
            let open = self.sent - self.ended;
            if open > 0 {
                self.failed_transport(elapsed, Transport::Timeout, open);
                self.ended += open;
            }
            for endpoint in &mut self.by_endpoint {
                // Its own requests still open are its timeouts.
                endpoint.failed += endpoint.sent - endpoint.completed - endpoint.failed;
            }
            self.flush_second();
            self.finished = true;
        }
        let secs = elapsed.as_secs_f64();
        LoadResult {
            scheduled: self.sent + self.dropped,
            sent: self.sent,
            completed: self.completed,
            failed_by_status: self.failed_by_status.clone(),
            failed_by_transport: self
                .failed_by_transport
                .iter()
                .map(|(kind, n)| (kind.to_string(), *n))
                .collect(),
            dropped: self.dropped,
            elapsed,
            throughput: if secs > 0.0 {
                self.completed as f64 / secs
            } else {
                0.0
            },
            latency: summary(&self.overall),
            series: self.series.clone(),
            by_endpoint: self
                .by_endpoint
                .iter()
                .map(|e| EndpointFigures {
                    name: String::new(),
                    sent: e.sent,
                    completed: e.completed,
                    failed: e.failed,
                    latency: summary(&e.latency),
                })
                .collect(),
        }
    }

    fn failed_transport(&mut self, at: Duration, kind: Transport, n: u64) {
        *self.failed_by_transport.entry(kind.as_str()).or_default() += n;
        self.second_mut(at).failed += n;
    }

    fn record_latency(&mut self, at: Duration, latency: Duration) {
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .clamp(1, HIGHEST_US);
        self.overall.saturating_record(us);
        let second = second_of(at);
        if second > self.open_second {
            self.flush_second();
            self.open_second = second;
        }
        // A record for an earlier second (two tasks racing for the lock across
        // a second boundary) lands in the open second: counts stay exact, one
        // latency moves by microseconds.
        self.second.saturating_record(us);
    }

    fn flush_second(&mut self) {
        if !self.second.is_empty() {
            let latency = summary(&self.second);
            self.second_at(self.open_second).latency = latency;
            self.second.reset();
        }
    }

    fn second_mut(&mut self, at: Duration) -> &mut LoadSecond {
        self.second_at(second_of(at))
    }

    fn second_at(&mut self, second: u32) -> &mut LoadSecond {
        let index = second as usize;
        while self.series.len() <= index {
            let t = self.series.len() as u32;
            self.series.push(LoadSecond {
                t,
                ..LoadSecond::default()
            });
        }
        &mut self.series[index]
    }
}

fn second_of(at: Duration) -> u32 {
    u32::try_from(at.as_secs()).unwrap_or(u32::MAX)
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_US, SIGNIFICANT_DIGITS).expect(
        "invariant: constant histogram bounds are valid (1 <= low, high >= 2 * low, digits <= 5)",
    )
}

fn summary(h: &Histogram<u64>) -> Latency {
    if h.is_empty() {
        return Latency::default();
    }
    Latency {
        p50_us: h.value_at_quantile(0.50),
        p90_us: h.value_at_quantile(0.90),
        p95_us: h.value_at_quantile(0.95),
        p99_us: h.value_at_quantile(0.99),
        max_us: h.max(),
        mean_us: h.mean(),
    }
}

/// One endpoint's share of the counts.
struct EndpointTally {
    sent: u64,
    completed: u64,
    /// By status >= 400 or transport, timeouts included once finished.
    failed: u64,
    /// Latency of its responses (any status).
    latency: Histogram<u64>,
}

impl EndpointTally {
    fn new() -> EndpointTally {
        EndpointTally {
            sent: 0,
            completed: 0,
            failed: 0,
            latency: histogram(),
        }
    }

    fn ended(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Status(status, latency) => {
                if status < 400 {
                    self.completed += 1;
                } else {
                    self.failed += 1;
                }
                let us = u64::try_from(latency.as_micros())
                    .unwrap_or(u64::MAX)
                    .clamp(1, HIGHEST_US);
                self.latency.saturating_record(us);
            }
            Outcome::Transport(_) => self.failed += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn every_outcome_lands_in_one_bucket_and_one_second() {
        let mut t = Tally::new();
        for _ in 0..3 {
            t.sent(ms(100), 0);
        }
        t.dropped(ms(200));
        t.ended(ms(150), 0, Outcome::Status(200, ms(50)));
        t.ended(ms(1100), 0, Outcome::Status(503, ms(1000)));
        t.ended(ms(1200), 0, Outcome::Transport(Transport::Reset));
        let r = t.finish(ms(2000));
        assert_eq!((r.scheduled, r.sent, r.completed, r.dropped), (4, 3, 1, 1));
        assert_eq!(r.failed_by_status, BTreeMap::from([(503, 1)]));
        assert_eq!(
            r.failed_by_transport,
            BTreeMap::from([("reset".to_string(), 1)])
        );
        assert_eq!(r.sent, r.completed + r.failed_total());
        assert_eq!(r.series.len(), 2);
        assert_eq!(
            (r.series[0].sent, r.series[0].completed, r.series[0].dropped),
            (3, 1, 1)
        );
        assert_eq!((r.series[1].t, r.series[1].failed), (1, 2));
        assert_eq!(r.throughput, 0.5);
    }

    #[test]
    fn requests_still_open_at_finish_are_timeouts_and_late_records_are_ignored() {
        let mut t = Tally::new();
        t.sent(ms(10), 0);
        t.sent(ms(20), 0);
        t.ended(ms(30), 0, Outcome::Status(200, ms(20)));
        let r = t.finish(ms(3500));
        assert_eq!(
            r.failed_by_transport,
            BTreeMap::from([("timeout".to_string(), 1)])
        );
        assert_eq!(r.series[3].failed, 1, "the timeout ends in the last second");
        t.ended(ms(3600), 0, Outcome::Status(200, ms(3590)));
        t.sent(ms(3600), 0);
        assert_eq!(t.finish(ms(3700)).completed, 1);
        assert_eq!(t.finish(ms(3700)).sent, 2);
    }

    #[test]
    fn latency_is_per_second_and_overall() {
        let mut t = Tally::new();
        for i in 1..=100 {
            t.sent(ms(0), 0);
            t.ended(
                ms(500),
                0,
                Outcome::Status(200, Duration::from_micros(i * 1000)),
            );
        }
        t.sent(ms(1000), 0);
        t.ended(ms(1500), 0, Outcome::Status(404, ms(7)));
        let r = t.finish(ms(2000));
        let s0 = r.series[0].latency;
        assert!((49_000..=51_000).contains(&s0.p50_us), "{s0:?}");
        assert!((98_000..=100_100).contains(&s0.p99_us), "{s0:?}");
        assert!((99_900..=100_100).contains(&s0.max_us), "{s0:?}");
        let s1 = r.series[1].latency;
        assert!((6_990..=7_010).contains(&s1.p50_us), "{s1:?}");
        assert!(
            (99_900..=100_100).contains(&r.latency.max_us),
            "{:?}",
            r.latency
        );
        assert!(r.latency.mean_us > 40_000.0 && r.latency.mean_us < 60_000.0);
    }

    #[test]
    fn transport_failures_have_no_latency() {
        let mut t = Tally::new();
        t.sent(ms(0), 0);
        t.ended(ms(1), 0, Outcome::Transport(Transport::Connect));
        let r = t.finish(ms(10));
        assert_eq!(r.latency, Latency::default());
        assert_eq!(
            r.failed_by_transport,
            BTreeMap::from([("connect".to_string(), 1)])
        );
    }

    #[test]
    fn concurrency_fills_its_second() {
        let mut t = Tally::new();
        t.concurrency(2, 7);
        let r = t.finish(ms(3000));
        assert_eq!(
            r.series.iter().map(|s| s.concurrency).collect::<Vec<_>>(),
            [0, 0, 7]
        );
        assert_eq!(r.series.iter().map(|s| s.t).collect::<Vec<_>>(), [0, 1, 2]);
    }
}
