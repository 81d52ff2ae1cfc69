//! The figures of a measured cell in report units (ms, %, MiB), the mean of
//! several repetitions, and the grouping of cells by (row, params). Shared
//! by the Markdown tables and the charts so both show the same numbers; the
//! CSV keeps the model's raw units instead.

use std::collections::BTreeMap;

use crate::sweep::model::{CellResult, CellStatus, LoadResult, ServerFigures, SweepResult};

const MIB: f64 = 1024.0 * 1024.0;

/// What the load measured, in report units.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct LoadFigures {
    pub sent: f64,
    pub completed: f64,
    pub failed: f64,
    /// Failures by kind: a status code (`503`) or a transport kind (`timeout`).
    pub failed_by_kind: BTreeMap<String, f64>,
    pub drop_pct: f64,
    pub throughput: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// What the server used, in report units.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ServerUse {
    pub cpu_server_pct: f64,
    pub cpu_host_pct: f64,
    pub rss_start_mib: f64,
    pub rss_end_mib: f64,
    pub rss_peak_mib: f64,
    pub pss_peak_mib: f64,
    pub restarts: BTreeMap<String, f64>,
}

/// The figures of one measured cell, or the mean over repetitions.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Figures {
    pub load: Option<LoadFigures>,
    pub server: Option<ServerUse>,
}

impl Figures {
    /// The figures of `cell`, or `None` when it failed (its partial figures
    /// are not comparable with measured ones).
    pub fn of(cell: &CellResult) -> Option<Figures> {
        if !is_measured(cell) {
            return None;
        }
        Some(Figures {
            load: cell.load.as_ref().map(load_figures),
            server: cell.server.as_ref().map(server_use),
        })
    }

    /// The field-wise mean of `all`; each part averages over the entries
    /// that have it. `None` when `all` is empty.
    pub fn mean(all: &[Figures]) -> Option<Figures> {
        if all.is_empty() {
            return None;
        }
        let loads: Vec<&LoadFigures> = all.iter().filter_map(|f| f.load.as_ref()).collect();
        let servers: Vec<&ServerUse> = all.iter().filter_map(|f| f.server.as_ref()).collect();
        Some(Figures {
            load: mean_load(&loads),
            server: mean_server(&servers),
        })
    }
}

/// True when the cell was measured (its figures count).
pub(crate) fn is_measured(cell: &CellResult) -> bool {
    cell.status == CellStatus::Ok
}

fn load_figures(load: &LoadResult) -> LoadFigures {
    let mut failed_by_kind: BTreeMap<String, f64> = BTreeMap::new();
    for (status, n) in &load.failed_by_status {
        *failed_by_kind.entry(status.to_string()).or_default() += *n as f64;
    }
    for (kind, n) in &load.failed_by_transport {
        *failed_by_kind.entry(kind.clone()).or_default() += *n as f64;
    }
    LoadFigures {
        sent: load.sent as f64,
        completed: load.completed as f64,
        failed: load.failed_total() as f64,
        failed_by_kind,
        drop_pct: load.drop_rate() * 100.0,
        throughput: load.throughput,
        p50_ms: ms(load.latency.p50_us),
        p95_ms: ms(load.latency.p95_us),
        p99_ms: ms(load.latency.p99_us),
        max_ms: ms(load.latency.max_us),
    }
}

fn server_use(server: &ServerFigures) -> ServerUse {
    ServerUse {
        cpu_server_pct: server.cpu_server_pct,
        cpu_host_pct: server.cpu_host_pct,
        rss_start_mib: mib(server.rss.start),
        rss_end_mib: mib(server.rss.end),
        rss_peak_mib: mib(server.rss.peak),
        pss_peak_mib: mib(server.pss.peak),
        restarts: server
            .restarts
            .iter()
            .map(|(reason, n)| (reason.clone(), *n as f64))
            .collect(),
    }
}

fn mean_load(all: &[&LoadFigures]) -> Option<LoadFigures> {
    let n = all.len() as f64;
    if all.is_empty() {
        return None;
    }
    let avg = |get: fn(&LoadFigures) -> f64| all.iter().map(|f| get(f)).sum::<f64>() / n;
    Some(LoadFigures {
        sent: avg(|f| f.sent),
        completed: avg(|f| f.completed),
        failed: avg(|f| f.failed),
        failed_by_kind: mean_map(all.iter().map(|f| &f.failed_by_kind), n),
        drop_pct: avg(|f| f.drop_pct),
        throughput: avg(|f| f.throughput),
        p50_ms: avg(|f| f.p50_ms),
        p95_ms: avg(|f| f.p95_ms),
        p99_ms: avg(|f| f.p99_ms),
        max_ms: avg(|f| f.max_ms),
    })
}

fn mean_server(all: &[&ServerUse]) -> Option<ServerUse> {
    let n = all.len() as f64;
    if all.is_empty() {
        return None;
    }
    let avg = |get: fn(&ServerUse) -> f64| all.iter().map(|f| get(f)).sum::<f64>() / n;
    Some(ServerUse {
        cpu_server_pct: avg(|f| f.cpu_server_pct),
        cpu_host_pct: avg(|f| f.cpu_host_pct),
        rss_start_mib: avg(|f| f.rss_start_mib),
        rss_end_mib: avg(|f| f.rss_end_mib),
        rss_peak_mib: avg(|f| f.rss_peak_mib),
        pss_peak_mib: avg(|f| f.pss_peak_mib),
        restarts: mean_map(all.iter().map(|f| &f.restarts), n),
    })
}

/// Per-key sum over `maps` divided by `n` (a key missing from a map counts 0).
fn mean_map<'a>(
    maps: impl Iterator<Item = &'a BTreeMap<String, f64>>,
    n: f64,
) -> BTreeMap<String, f64> {
    let mut sum: BTreeMap<String, f64> = BTreeMap::new();
    for map in maps {
        for (key, value) in map {
            *sum.entry(key.clone()).or_default() += value;
        }
    }
    sum.values_mut().for_each(|v| *v /= n);
    sum
}

/// Microseconds to milliseconds.
pub(crate) fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Bytes to MiB.
pub(crate) fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB
}

/// The parameter names to show: the swept ones in grid order, then any
/// other name a cell carries, sorted.
pub(crate) fn param_names(result: &SweepResult) -> Vec<String> {
    let mut names = result.swept.clone();
    let mut extra: Vec<&String> = result
        .cells
        .iter()
        .flat_map(|c| c.params.keys())
        .filter(|k| !names.contains(k))
        .collect();
    extra.sort();
    extra.dedup();
    names.extend(extra.into_iter().cloned());
    names
}

/// `name=value` pairs in `names` order, skipping `skip`, joined by `sep`.
pub(crate) fn params_label(
    params: &BTreeMap<String, String>,
    names: &[String],
    skip: Option<&str>,
    sep: &str,
) -> String {
    names
        .iter()
        .filter(|name| Some(name.as_str()) != skip)
        .filter_map(|name| params.get(name).map(|v| format!("{name}={v}")))
        .collect::<Vec<_>>()
        .join(sep)
}

/// The cells of one (row, params) combination, all repetitions.
pub(crate) struct Group<'a> {
    pub row: &'a str,
    pub params: &'a BTreeMap<String, String>,
    pub cells: Vec<&'a CellResult>,
}

impl Group<'_> {
    /// Mean figures over the measured repetitions.
    pub fn mean(&self) -> Option<Figures> {
        let all: Vec<Figures> = self.cells.iter().filter_map(|c| Figures::of(c)).collect();
        Figures::mean(&all)
    }

    /// Measured repetitions.
    pub fn measured(&self) -> usize {
        self.cells.iter().filter(|c| is_measured(c)).count()
    }
}

/// Cells grouped by (row, params), in order of first appearance.
pub(crate) fn groups(result: &SweepResult) -> Vec<Group<'_>> {
    let mut groups: Vec<Group<'_>> = Vec::new();
    for cell in &result.cells {
        match groups
            .iter_mut()
            .find(|g| g.row == cell.row && *g.params == cell.params)
        {
            Some(group) => group.cells.push(cell),
            None => groups.push(Group {
                row: &cell.row,
                params: &cell.params,
                cells: vec![cell],
            }),
        }
    }
    groups
}
