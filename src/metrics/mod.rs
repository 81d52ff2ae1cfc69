//! Prometheus metrics of the master: every metric name is defined here, once.
//!
//! [`Metrics`] owns a prometheus-client registry and its families. The master
//! feeds it: the arbiter's worker table through [`Metrics::set_workers`],
//! restarts through [`Metrics::restart`], the HTTP front through
//! [`Metrics::observe_request`] and [`Metrics::observe_queue_wait`], and the
//! dispatcher's live load through [`Metrics::set_load_source`], which is
//! read at scrape time. [`endpoint`] serves the text, `/healthz` and `/readyz`.
//! [`statsd`] sends gunicorn's statsd metrics instead, or as well.
//! This module decides nothing about workers; it only reports.

pub mod endpoint;
pub mod statsd;
mod view;

pub use view::{Readiness, WorkerView};

use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Metric, Registry, Unit};
use tracing::warn;

use crate::worker::state::RestartReason;

/// Memory of each live worker, as sampled (RSS, USS or PSS, as configured).
pub const WORKER_MEMORY_BYTES: &str = "ferrocorn_worker_memory_bytes";
/// Requests each live worker has served so far.
pub const WORKER_REQUESTS_SERVED: &str = "ferrocorn_worker_requests_served";
/// Age of each live worker.
pub const WORKER_AGE_SECONDS: &str = "ferrocorn_worker_age_seconds";
/// Live workers by state.
pub const WORKERS: &str = "ferrocorn_workers";
/// The number of workers the arbiter aims for.
pub const WORKERS_DESIRED: &str = "ferrocorn_workers_desired";
/// Workers replaced, by reason.
pub const WORKER_RESTARTS_TOTAL: &str = "ferrocorn_worker_restarts_total";
/// Requests being served by a worker right now.
pub const REQUESTS_IN_FLIGHT: &str = "ferrocorn_requests_in_flight";
/// Requests waiting for a free worker lane.
pub const QUEUE_LENGTH: &str = "ferrocorn_queue_length";
/// How long queued requests waited for a lane.
pub const QUEUE_WAIT_SECONDS: &str = "ferrocorn_queue_wait_seconds";
/// Time from the request head to the response head (time to first byte).
pub const REQUEST_DURATION_SECONDS: &str = "ferrocorn_request_duration_seconds";
/// Responses by status class.
pub const RESPONSES_TOTAL: &str = "ferrocorn_responses_total";
/// Requests that waited in a busy lane behind the running one.
pub const WAITED_IN_LANE_TOTAL: &str = "ferrocorn_requests_waited_in_lane_total";
/// Requests served by another worker because theirs died before they started.
pub const REDISPATCHED_TOTAL: &str = "ferrocorn_requests_redispatched_total";

/// HUPs by what came of them (see [`RELOAD_OUTCOMES`]).
pub const RELOADS_TOTAL: &str = "ferrocorn_reloads_total";
/// Lost doorbells on ring lanes, by the side that slept through one.
pub const LOST_WAKEUPS_TOTAL: &str = "ferrocorn_lost_wakeups_total";

/// What a HUP came to: the new configuration rolled out to every worker,
/// called off (its first new worker could not load the app; the old ones
/// serve on), or refused (the configuration could not be read).
pub const RELOAD_OUTCOMES: [&str; 3] = ["applied", "called_off", "refused"];

/// Every exposed family name, for tests and docs.
pub const ALL_NAMES: [&str; 15] = [
    WORKER_MEMORY_BYTES,
    WORKER_REQUESTS_SERVED,
    WORKER_AGE_SECONDS,
    WORKERS,
    WORKERS_DESIRED,
    WORKER_RESTARTS_TOTAL,
    REQUESTS_IN_FLIGHT,
    QUEUE_LENGTH,
    QUEUE_WAIT_SECONDS,
    REQUEST_DURATION_SECONDS,
    RESPONSES_TOTAL,
    WAITED_IN_LANE_TOTAL,
    REDISPATCHED_TOTAL,
    RELOADS_TOTAL,
    LOST_WAKEUPS_TOTAL,
];

/// Worker states shown even when no worker is in them.
pub const WORKER_STATES: [&str; 3] = ["booting", "serving", "retiring"];

/// Upper bounds (seconds) for request duration and queue wait: 100 us to 60 s
/// in 1-2.5-5 steps, so a bucket edge sits near any latency target people set.
pub const LATENCY_BUCKETS: [f64; 19] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 20.0, 30.0, 60.0,
];

/// Status-class label values; the last one takes any status outside 100..=599.
const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "other"];

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct WorkerLabels {
    worker: u64,
    pid: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct SideLabels {
    side: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StatusLabels {
    class: &'static str,
}

type LoadSource = Box<dyn Fn() -> Load + Send + Sync>;

/// The dispatcher's figures, read at scrape time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    /// Requests being served by a worker lane.
    pub in_flight: usize,
    /// Requests waiting in the queue.
    pub queued: usize,
    /// Requests that waited in a busy lane, since the start.
    pub waited_in_lane_total: u64,
    /// Requests served elsewhere after their worker died before they started, since the start.
    pub redispatched_total: u64,
    /// Lost doorbells on ring lanes since the start: the master's, and the
    /// workers' (each woke by its sleep's time bound and found work).
    pub lost_wakeups_total: (u64, u64),
}

/// The master's metrics: a registry plus handles to its families.
/// Shared as `Arc<Metrics>`; every method takes `&self`.
pub struct Metrics {
    registry: Registry,
    worker_memory: Family<WorkerLabels, Gauge<u64, std::sync::atomic::AtomicU64>>,
    worker_requests: Family<WorkerLabels, Gauge<u64, std::sync::atomic::AtomicU64>>,
    worker_age: Family<WorkerLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    workers: Family<StateLabels, Gauge>,
    workers_desired: Gauge,
    restarts: Family<ReasonLabels, Counter>,
    reloads: Family<OutcomeLabels, Counter>,
    in_flight: Gauge,
    queue_length: Gauge,
    waited_in_lane: Counter,
    redispatched: Counter,
    lost_wakeups: [Counter; 2],
    queue_wait: Histogram,
    request_duration: Histogram,
    /// Pre-created so the hot path builds no label set.
    responses: [Counter; STATUS_CLASSES.len()],
    load: RwLock<Option<LoadSource>>,
    /// Held while the per-worker families are rebuilt and while they are
    /// encoded, so a scrape never sees a half-replaced worker table.
    view: Mutex<Readiness>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("readiness", &self.readiness())
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// A registry with every family registered, counters at zero.
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::default();
        let worker_memory = Family::default();
        register(
            &mut registry,
            WORKER_MEMORY_BYTES,
            "Last memory sample of each live worker (rss, uss or pss, as configured)",
            worker_memory.clone(),
        );
        let worker_requests = Family::default();
        register(
            &mut registry,
            WORKER_REQUESTS_SERVED,
            "Requests each live worker has served so far",
            worker_requests.clone(),
        );
        let worker_age = Family::default();
        register(
            &mut registry,
            WORKER_AGE_SECONDS,
            "Time since each live worker was spawned",
            worker_age.clone(),
        );
        let workers = Family::default();
        register(
            &mut registry,
            WORKERS,
            "Live workers by state",
            workers.clone(),
        );
        let workers_desired = Gauge::default();
        register(
            &mut registry,
            WORKERS_DESIRED,
            "Workers the arbiter aims to keep booting or serving",
            workers_desired.clone(),
        );
        let restarts = Family::<ReasonLabels, Counter>::default();
        for reason in RestartReason::ALL {
            let _zero = restarts.get_or_create_owned(&ReasonLabels {
                reason: reason.as_str().to_string(),
            });
        }
        register(
            &mut registry,
            WORKER_RESTARTS_TOTAL,
            "Workers replaced, by reason",
            restarts.clone(),
        );
        let reloads = Family::<OutcomeLabels, Counter>::default();
        for outcome in RELOAD_OUTCOMES {
            let _zero = reloads.get_or_create_owned(&OutcomeLabels { outcome });
        }
        register(
            &mut registry,
            RELOADS_TOTAL,
            "HUPs by outcome: applied, called_off (the new app could not load), refused (the configuration could not be read)",
            reloads.clone(),
        );
        let in_flight = Gauge::default();
        register(
            &mut registry,
            REQUESTS_IN_FLIGHT,
            "Requests being served by a worker lane right now",
            in_flight.clone(),
        );
        let queue_length = Gauge::default();
        register(
            &mut registry,
            QUEUE_LENGTH,
            "Requests waiting for a free worker lane",
            queue_length.clone(),
        );
        let waited_in_lane = Counter::default();
        register(
            &mut registry,
            WAITED_IN_LANE_TOTAL,
            "Requests that waited in a busy worker lane, written behind the running request",
            waited_in_lane.clone(),
        );
        let redispatched = Counter::default();
        register(
            &mut registry,
            REDISPATCHED_TOTAL,
            "Requests that waited in a lane whose worker died before they started, and were served by another",
            redispatched.clone(),
        );
        let lost_family = Family::<SideLabels, Counter>::default();
        let lost_wakeups =
            ["master", "worker"].map(|side| lost_family.get_or_create_owned(&SideLabels { side }));
        register(
            &mut registry,
            LOST_WAKEUPS_TOTAL,
            "Doorbells lost on ring lanes, by the side that slept through one (each cost at most 2 ms)",
            lost_family,
        );
        let queue_wait = Histogram::new(LATENCY_BUCKETS);
        register(
            &mut registry,
            QUEUE_WAIT_SECONDS,
            "Time queued requests waited for a worker lane",
            queue_wait.clone(),
        );
        let request_duration = Histogram::new(LATENCY_BUCKETS);
        register(
            &mut registry,
            REQUEST_DURATION_SECONDS,
            "Time from the request head to the response head (time to first byte)",
            request_duration.clone(),
        );
        let responses_family = Family::<StatusLabels, Counter>::default();
        let responses = STATUS_CLASSES
            .map(|class| responses_family.get_or_create_owned(&StatusLabels { class }));
        register(
            &mut registry,
            RESPONSES_TOTAL,
            "Responses sent, by status class",
            responses_family,
        );
        let metrics = Metrics {
            registry,
            worker_memory,
            worker_requests,
            worker_age,
            workers,
            workers_desired,
            restarts,
            reloads,
            in_flight,
            queue_length,
            waited_in_lane,
            redispatched,
            lost_wakeups,
            queue_wait,
            request_duration,
            responses,
            load: RwLock::new(None),
            view: Mutex::new(Readiness::default()),
        };
        metrics.set_workers(Vec::new(), Readiness::default());
        Arc::new(metrics)
    }

    /// Replaces the per-worker view (the master calls it after events that
    /// change workers, and on a 100 ms tick). Workers missing from `workers`
    /// lose their series.
    pub fn set_workers(&self, workers: Vec<WorkerView>, readiness: Readiness) {
        let mut view = self.view();
        self.worker_memory.clear();
        self.worker_requests.clear();
        self.worker_age.clear();
        self.workers.clear();
        for state in WORKER_STATES {
            self.workers.get_or_create(&StateLabels { state }).set(0);
        }
        for worker in &workers {
            let labels = WorkerLabels {
                worker: worker.id,
                pid: worker.pid,
            };
            // No sample yet is left out rather than shown as 0 bytes.
            if let Some(bytes) = worker.memory_bytes {
                self.worker_memory.get_or_create(&labels).set(bytes);
            }
            self.worker_requests
                .get_or_create(&labels)
                .set(worker.requests);
            self.worker_age
                .get_or_create(&labels)
                .set(worker.age.as_secs_f64());
            self.workers
                .get_or_create(&StateLabels {
                    state: worker.state,
                })
                .inc();
        }
        self.workers_desired
            .set(i64::try_from(readiness.desired_workers).unwrap_or(i64::MAX));
        *view = readiness;
    }

    /// Live dispatcher figures read at scrape time: a closure returning
    /// [`Load`]. It runs inside [`Metrics::render`], so it must not call
    /// back into this `Metrics`.
    pub fn set_load_source(&self, f: Box<dyn Fn() -> Load + Send + Sync>) {
        *self.load.write().unwrap_or_else(PoisonError::into_inner) = Some(f);
    }

    /// Counts one HUP's outcome, one of [`RELOAD_OUTCOMES`].
    pub fn reload(&self, outcome: &'static str) {
        debug_assert!(RELOAD_OUTCOMES.contains(&outcome));
        self.reloads.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// Counts one worker replacement.
    pub fn restart(&self, reason: RestartReason) {
        self.restarts
            .get_or_create(&ReasonLabels {
                reason: reason.as_str().to_string(),
            })
            .inc();
    }

    /// Records one finished request. Hot path: one histogram observation and
    /// one counter increment, no allocation, no label lookup.
    #[inline]
    pub fn observe_request(&self, latency: Duration, status: u16) {
        self.request_duration.observe(latency.as_secs_f64());
        self.responses[status_class(status)].inc();
    }

    /// Records how long a request waited in the queue (only requests that queued).
    #[inline]
    pub fn observe_queue_wait(&self, wait: Duration) {
        self.queue_wait.observe(wait.as_secs_f64());
    }

    /// The OpenMetrics text exposition of every family, ending in `# EOF`.
    pub fn render(&self) -> String {
        let load = self.load.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(source) = load.as_ref() {
            let load = source();
            self.in_flight
                .set(i64::try_from(load.in_flight).unwrap_or(i64::MAX));
            self.queue_length
                .set(i64::try_from(load.queued).unwrap_or(i64::MAX));
            // The dispatcher keeps the totals; the counters catch up.
            for (counter, total) in [
                (&self.waited_in_lane, load.waited_in_lane_total),
                (&self.redispatched, load.redispatched_total),
                (&self.lost_wakeups[0], load.lost_wakeups_total.0),
                (&self.lost_wakeups[1], load.lost_wakeups_total.1),
            ] {
                counter.inc_by(total.saturating_sub(counter.get()));
            }
        }
        drop(load);
        let _view = self.view();
        let mut text = String::with_capacity(8 * 1024);
        if let Err(err) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            // Only a label encoder can fail and ours are plain numbers and
            // strings; serve what was written rather than nothing.
            warn!(error = %err, "metrics encoding failed part way");
        }
        text
    }

    /// The readiness figures last given to [`Metrics::set_workers`].
    pub fn readiness(&self) -> Readiness {
        *self.view()
    }

    fn view(&self) -> MutexGuard<'_, Readiness> {
        // The guarded data is a plain copy type, valid whatever a panicking
        // holder left behind.
        self.view.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Index into [`STATUS_CLASSES`].
#[inline]
fn status_class(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status / 100 - 1),
        _ => STATUS_CLASSES.len() - 1,
    }
}

/// Registers `metric` under its exposed `name`. prometheus-client appends
/// `_total` to counters and the unit to names registered with one, so both
/// are split off here: the constants above stay the names people query.
fn register(registry: &mut Registry, name: &str, help: &str, metric: impl Metric) {
    let name = match EncodeMetric::metric_type(&metric) {
        MetricType::Counter => name
            .strip_suffix("_total")
            .expect("invariant: counter names end in _total"),
        _ => name,
    };
    if let Some(base) = name.strip_suffix("_seconds") {
        registry.register_with_unit(base, help, Unit::Seconds, metric);
    } else if let Some(base) = name.strip_suffix("_bytes") {
        registry.register_with_unit(base, help, Unit::Bytes, metric);
    } else {
        registry.register(name, help, metric);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample line that starts with exactly `series`.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|line| {
            let value = line.strip_prefix(series)?.strip_prefix(' ')?;
            value.split(' ').next()?.parse().ok()
        })
    }

    fn worker(id: u64, state: &'static str) -> WorkerView {
        WorkerView {
            id,
            pid: Some(1000 + id as u32),
            state,
            requests: 10 * id,
            memory_bytes: Some(1_000_000 * id),
            age: Duration::from_millis(1500 * id),
        }
    }

    #[test]
    fn metrics_is_shareable_across_threads() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<Metrics>();
    }

    #[test]
    fn render_names_every_family() {
        let metrics = Metrics::new();
        metrics.set_workers(vec![worker(1, "serving")], Readiness::default());
        metrics.observe_request(Duration::from_millis(3), 200);
        metrics.observe_queue_wait(Duration::from_millis(1));
        metrics.restart(RestartReason::Crash);
        let text = metrics.render();
        for name in ALL_NAMES {
            assert!(name.starts_with("ferrocorn_"), "{name}");
            assert!(
                text.lines().any(|line| line.starts_with(name)),
                "no sample of {name} in:\n{text}"
            );
            assert!(
                text.contains(&format!("# HELP {}", name.trim_end_matches("_total"))),
                "no help for {name} in:\n{text}"
            );
        }
        assert!(text.contains("# UNIT ferrocorn_request_duration_seconds seconds"));
        assert!(text.contains("# UNIT ferrocorn_worker_memory_bytes bytes"));
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn per_worker_series_follow_set_workers() {
        let metrics = Metrics::new();
        let mut second = worker(2, "booting");
        second.memory_bytes = None;
        metrics.set_workers(vec![worker(1, "serving"), second], Readiness::default());
        let text = metrics.render();
        assert_eq!(
            sample(
                &text,
                r#"ferrocorn_worker_memory_bytes{worker="1",pid="1001"}"#
            ),
            Some(1e6)
        );
        assert_eq!(
            sample(
                &text,
                r#"ferrocorn_worker_requests_served{worker="2",pid="1002"}"#
            ),
            Some(20.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"ferrocorn_worker_age_seconds{worker="2",pid="1002"}"#
            ),
            Some(3.0)
        );
        assert!(
            !text.contains(r#"ferrocorn_worker_memory_bytes{worker="2""#),
            "a worker with no sample yet must not show 0 bytes:\n{text}"
        );
        assert_eq!(
            sample(&text, r#"ferrocorn_workers{state="serving"}"#),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, r#"ferrocorn_workers{state="booting"}"#),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, r#"ferrocorn_workers{state="retiring"}"#),
            Some(0.0)
        );

        metrics.set_workers(vec![worker(2, "serving")], Readiness::default());
        let text = metrics.render();
        assert!(!text.contains(r#"worker="1""#), "worker 1 left:\n{text}");
        assert!(text.contains(r#"ferrocorn_worker_requests_served{worker="2",pid="1002"} 20"#));
        assert_eq!(
            sample(&text, r#"ferrocorn_workers{state="serving"}"#),
            Some(1.0)
        );
        assert_eq!(
            sample(&text, r#"ferrocorn_workers{state="booting"}"#),
            Some(0.0)
        );
    }

    #[test]
    fn desired_workers_and_readiness_come_from_set_workers() {
        let metrics = Metrics::new();
        let readiness = Readiness {
            ready_workers: 1,
            desired_workers: 3,
            stopping: false,
        };
        metrics.set_workers(Vec::new(), readiness);
        assert_eq!(metrics.readiness(), readiness);
        assert_eq!(
            sample(&metrics.render(), "ferrocorn_workers_desired"),
            Some(3.0)
        );
    }

    #[test]
    fn restarts_count_by_reason() {
        let metrics = Metrics::new();
        let text = metrics.render();
        for reason in RestartReason::ALL {
            let reason = reason.as_str();
            let series = format!(r#"ferrocorn_worker_restarts_total{{reason="{reason}"}}"#);
            assert_eq!(
                sample(&text, &series),
                Some(0.0),
                "{series} should start at 0"
            );
        }
        metrics.restart(RestartReason::Retired(
            crate::worker::state::RetireReason::Memory,
        ));
        metrics.restart(RestartReason::Retired(
            crate::worker::state::RetireReason::Memory,
        ));
        metrics.restart(RestartReason::Crash);
        let text = metrics.render();
        let count = |reason: &str| {
            sample(
                &text,
                &format!(r#"ferrocorn_worker_restarts_total{{reason="{reason}"}}"#),
            )
        };
        assert_eq!(count("memory"), Some(2.0));
        assert_eq!(count("crash"), Some(1.0));
        assert_eq!(count("timeout"), Some(0.0));
    }

    #[test]
    fn responses_count_by_status_class() {
        let metrics = Metrics::new();
        for status in [200, 204, 302, 404, 499, 502, 503, 504, 101, 700, 0] {
            metrics.observe_request(Duration::from_micros(150), status);
        }
        let text = metrics.render();
        let count = |class: &str| {
            sample(
                &text,
                &format!(r#"ferrocorn_responses_total{{class="{class}"}}"#),
            )
        };
        assert_eq!(count("1xx"), Some(1.0));
        assert_eq!(count("2xx"), Some(2.0));
        assert_eq!(count("3xx"), Some(1.0));
        assert_eq!(count("4xx"), Some(2.0));
        assert_eq!(count("5xx"), Some(3.0));
        assert_eq!(count("other"), Some(2.0));
        assert_eq!(
            sample(&text, "ferrocorn_request_duration_seconds_count"),
            Some(11.0)
        );
        // 150 us lands above the 100 us edge and within the 250 us one.
        assert_eq!(
            sample(
                &text,
                r#"ferrocorn_request_duration_seconds_bucket{le="0.0001"}"#
            ),
            Some(0.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"ferrocorn_request_duration_seconds_bucket{le="0.00025"}"#
            ),
            Some(11.0)
        );
    }

    #[test]
    fn queue_wait_is_its_own_histogram() {
        let metrics = Metrics::new();
        metrics.observe_queue_wait(Duration::from_secs(2));
        let text = metrics.render();
        assert_eq!(
            sample(&text, "ferrocorn_queue_wait_seconds_count"),
            Some(1.0)
        );
        assert_eq!(sample(&text, "ferrocorn_queue_wait_seconds_sum"), Some(2.0));
        assert_eq!(
            sample(&text, "ferrocorn_request_duration_seconds_count"),
            Some(0.0)
        );
    }

    #[test]
    fn load_is_read_at_scrape_time() {
        let metrics = Metrics::new();
        assert_eq!(
            sample(&metrics.render(), "ferrocorn_requests_in_flight"),
            Some(0.0)
        );
        let load = Arc::new(std::sync::atomic::AtomicUsize::new(4));
        let source = load.clone();
        metrics.set_load_source(Box::new(move || {
            let n = source.load(std::sync::atomic::Ordering::Relaxed);
            Load {
                in_flight: n,
                queued: n * 10,
                waited_in_lane_total: n as u64 * 100,
                redispatched_total: n as u64,
                lost_wakeups_total: (n as u64, 2 * n as u64),
            }
        }));
        let text = metrics.render();
        assert_eq!(sample(&text, "ferrocorn_requests_in_flight"), Some(4.0));
        assert_eq!(sample(&text, "ferrocorn_queue_length"), Some(40.0));
        assert_eq!(
            sample(&text, "ferrocorn_requests_waited_in_lane_total"),
            Some(400.0)
        );
        assert_eq!(
            sample(&text, "ferrocorn_requests_redispatched_total"),
            Some(4.0)
        );
        load.store(1, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            sample(&metrics.render(), "ferrocorn_queue_length"),
            Some(10.0)
        );
    }

    #[test]
    fn status_classes() {
        assert_eq!(STATUS_CLASSES[status_class(100)], "1xx");
        assert_eq!(STATUS_CLASSES[status_class(299)], "2xx");
        assert_eq!(STATUS_CLASSES[status_class(500)], "5xx");
        assert_eq!(STATUS_CLASSES[status_class(599)], "5xx");
        assert_eq!(STATUS_CLASSES[status_class(600)], "other");
        assert_eq!(STATUS_CLASSES[status_class(99)], "other");
    }

    /// Prints the cost of the hot path; asserts nothing about speed.
    /// `cargo test --release --lib observe_request_cost -- --nocapture`
    #[test]
    fn observe_request_cost() {
        let metrics = Metrics::new();
        let calls: u32 = 1_000_000;
        let started = std::time::Instant::now();
        for i in 0..calls {
            let latency = Duration::from_micros(u64::from(i % 50_000));
            let status = if i % 97 == 0 { 503 } else { 200 };
            metrics.observe_request(std::hint::black_box(latency), std::hint::black_box(status));
        }
        let elapsed = started.elapsed();
        let text = metrics.render();
        assert_eq!(
            sample(&text, "ferrocorn_request_duration_seconds_count"),
            Some(f64::from(calls))
        );
        println!(
            "observe_request: {:.1} ns/call over {calls} calls ({} build)",
            elapsed.as_nanos() as f64 / f64::from(calls),
            if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
        );
    }
}
