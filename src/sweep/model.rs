//! The sweep's data: what a load run is asked to do ([`LoadPlan`]) and what
//! every cell produced ([`CellResult`]). Plain data with serde, shared by the
//! load generator (`load`), the runner and the reports (`report`), so JSON
//! output is these types as they are.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One request the load sends, picked by weight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Short name for reports; defaults to the path.
    pub name: String,
    /// HTTP method, e.g. GET or POST.
    pub method: String,
    /// Path and query, e.g. `/cpu?level=5`.
    pub path: String,
    /// Request body, if any (sent with a Content-Length).
    pub body: Option<String>,
    /// Or a body of this many bytes (`x`), made once for the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_size: Option<u64>,
    /// Relative weight in the mix; at least 1.
    pub weight: u32,
}

/// A step of a ramping closed model: from `at` on, `users` users run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stage {
    /// Time since the start of the measured run.
    #[serde(with = "secs")]
    pub at: Duration,
    /// Users from then on.
    pub users: usize,
}

/// How load is generated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "model", rename_all = "snake_case")]
pub enum LoadModel {
    /// k6's constant-arrival-rate: `rate` requests per second for the run's
    /// duration, at most `max_in_flight` at once; a request that cannot
    /// start on time is dropped (counted, never sent late).
    Open {
        /// Requests per second.
        rate: f64,
        /// Requests in flight at most (k6's maxVUs).
        max_in_flight: usize,
    },
    /// JMeter's thread group: each user sends a request, waits for its
    /// answer, and goes on, for `loops` requests each (if set) or until the
    /// run's duration ends. `stages` ramp the number of users.
    Closed {
        /// Users at the start.
        users: usize,
        /// Requests per user, if bounded.
        loops: Option<u64>,
        /// Later user counts (ramping up or down), sorted by `at`.
        stages: Vec<Stage>,
        /// Each user starts a request every `pace` (none: back to back);
        /// users' first requests are spread over the first `pace`.
        #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_secs")]
        pace: Option<Duration>,
    },
}

/// A load run, fully specified.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadPlan {
    /// Where to send it (loopback only).
    pub target: SocketAddr,
    /// The mix.
    pub endpoints: Vec<Endpoint>,
    /// The arrival model.
    pub model: LoadModel,
    /// Measured duration (closed model with loops: an upper bound).
    #[serde(with = "secs")]
    pub duration: Duration,
    /// A request with no complete response within this is a transport
    /// failure ("timeout").
    #[serde(with = "secs")]
    pub request_timeout: Duration,
}

/// Latency percentiles of completed and failed-by-status requests, in
/// microseconds (from an HDR histogram, 3 significant digits).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 95th percentile.
    pub p95_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// Largest.
    pub max_us: u64,
    /// Mean.
    pub mean_us: f64,
}

/// One second of a load run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadSecond {
    /// Seconds since the start of the measured run (0 = the first second).
    pub t: u32,
    /// Requests sent in this second.
    pub sent: u64,
    /// Responses with status < 400 that ended in this second.
    pub completed: u64,
    /// Failures (status >= 400 or transport) that ended in this second.
    pub failed: u64,
    /// Requests dropped in this second (open model).
    pub dropped: u64,
    /// Latency of the requests that ended in this second.
    pub latency: Latency,
    /// Users running (closed model) or requests in flight at the end of the second.
    pub concurrency: u64,
}

/// What a load run measured. Every request sent is exactly one of
/// completed, failed by status, or failed by transport; dropped requests
/// were never sent. So `sent == completed + failed_total()`, and in the
/// open model `scheduled == sent + dropped`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadResult {
    /// Requests the model asked for (open model: arrivals; closed: sent).
    pub scheduled: u64,
    /// Requests sent.
    pub sent: u64,
    /// Responses with status < 400.
    pub completed: u64,
    /// Responses with status >= 400, by status.
    pub failed_by_status: BTreeMap<u16, u64>,
    /// Requests without a response, by kind (connect, reset, timeout, ...).
    pub failed_by_transport: BTreeMap<String, u64>,
    /// Requests that could not start on time (open model).
    pub dropped: u64,
    /// Measured wall time.
    #[serde(with = "secs")]
    pub elapsed: Duration,
    /// Completed requests per second of `elapsed`.
    pub throughput: f64,
    /// Latency over the whole run.
    pub latency: Latency,
    /// Per-second series.
    pub series: Vec<LoadSecond>,
    /// The same figures per endpoint of the mix, in its order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub by_endpoint: Vec<EndpointFigures>,
}

/// One endpoint's figures in a load run: the seed experiments report each
/// API separately.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointFigures {
    /// The endpoint's name (its path unless named).
    pub name: String,
    /// Requests sent to it.
    pub sent: u64,
    /// Responses with status < 400.
    pub completed: u64,
    /// Failures: status >= 400, or no response (timeouts included).
    pub failed: u64,
    /// Latency of its responses.
    pub latency: Latency,
}

impl LoadResult {
    /// Failed requests of every kind.
    pub fn failed_total(&self) -> u64 {
        self.failed_by_status.values().sum::<u64>() + self.failed_by_transport.values().sum::<u64>()
    }

    /// Failed over sent, 0 when nothing was sent.
    pub fn error_rate(&self) -> f64 {
        ratio(self.failed_total(), self.sent)
    }

    /// Dropped over scheduled, 0 when nothing was scheduled.
    pub fn drop_rate(&self) -> f64 {
        ratio(self.dropped, self.scheduled)
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64
    }
}

/// One second of the server's resources.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerSecond {
    /// Seconds since the start of the measured run.
    pub t: u32,
    /// The server's processes (master + workers), % of all cores.
    pub cpu_server_pct: f64,
    /// The whole host, % of all cores.
    pub cpu_host_pct: f64,
    /// Total RSS of the server's processes, bytes.
    pub rss_bytes: u64,
    /// Total PSS of the server's processes, bytes.
    pub pss_bytes: u64,
    /// Processes in the server's tree.
    pub processes: u32,
}

/// Start, end and peak of a memory figure, bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryFigure {
    /// When the measured run started.
    pub start: u64,
    /// When it ended.
    pub end: u64,
    /// Largest sample.
    pub peak: u64,
}

/// What the server used during the measured run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerFigures {
    /// Mean CPU of the server's processes, % of all cores.
    pub cpu_server_pct: f64,
    /// Mean CPU of the host, % of all cores.
    pub cpu_host_pct: f64,
    /// Total RSS of master + workers.
    pub rss: MemoryFigure,
    /// Total PSS of master + workers.
    pub pss: MemoryFigure,
    /// Worker restarts during the run by reason (ferrocorn's metrics; other
    /// servers: by process count, reason "unknown").
    pub restarts: BTreeMap<String, u64>,
    /// Per-second series.
    pub series: Vec<ServerSecond>,
}

/// How a cell ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", content = "error", rename_all = "snake_case")]
pub enum CellStatus {
    /// Measured.
    Ok,
    /// The cell could not be measured; the sweep went on.
    Failed(String),
}

/// One cell of the grid, one repetition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellResult {
    /// The row (server) label, e.g. `ferrocorn` or `gunicorn-sync`.
    pub row: String,
    /// The swept parameters of this cell, name -> value as written.
    pub params: BTreeMap<String, String>,
    /// 1-based repetition.
    pub repetition: u32,
    /// The server command that ran.
    pub command: String,
    /// Measured or failed.
    pub status: CellStatus,
    /// The load's figures (absent if the cell failed before the load).
    pub load: Option<LoadResult>,
    /// The server's figures.
    pub server: Option<ServerFigures>,
}

/// A whole sweep.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SweepResult {
    /// The sweep's name (from its file).
    pub name: String,
    /// Free text from the sweep file.
    pub description: String,
    /// Names of the swept parameters, in grid order.
    pub swept: Vec<String>,
    /// Every cell, in run order.
    pub cells: Vec<CellResult>,
    /// Where it ran: cores, memory, kernel, versions.
    pub machine: BTreeMap<String, String>,
    /// When it started, RFC 3339.
    pub started_at: String,
}

/// Optional durations as seconds (f64) in JSON, absent when none.
mod opt_secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<f64>::deserialize(d)?
            .map(|secs| Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// Durations as seconds (f64) in JSON.
mod secs {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        Duration::try_from_secs_f64(secs).map_err(serde::de::Error::custom)
    }
}
