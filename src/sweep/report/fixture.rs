//! A sweep result for the report tests: rows `ferrocorn` and
//! `gunicorn-sync` over `workers` = 1, 2, 4, five seconds of series each;
//! gunicorn-sync with 4 workers failed (its error has a comma, quotes and a
//! pipe, and it left a partial server series that reports must skip).
//!
//! Figures of a measured cell with `w` workers (row offset `o` = 0 for
//! ferrocorn, 250 us for gunicorn-sync):
//! sent 1000w, scheduled 1000w + 10 (10 dropped), failed 503 x 2w and
//! timeout x w, throughput (sent - 3w) / 5, p50 1500w + o us, p95 4000w + o,
//! p99 8000w + o, max 20000w + o; CPU 10w % (host 12.5w %), RSS start / end /
//! peak 50w / 60w / 64w MiB, PSS peak 40w MiB, restarts max_requests w (and
//! memory 1 when w = 4).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::sweep::model::{
    CellResult, CellStatus, EndpointFigures, Latency, LoadResult, LoadSecond, MemoryFigure,
    ServerFigures, ServerSecond, SweepResult,
};

pub(crate) const MIB: u64 = 1024 * 1024;

/// The failed cell's error.
pub(crate) const FAILED_ERROR: &str =
    "server exited before ready: exit code 3, \"worker boot failed\" | see stderr";

/// The fixture: 6 cells, the last one failed.
pub(crate) fn sweep() -> SweepResult {
    let mut cells = Vec::new();
    for row in ["ferrocorn", "gunicorn-sync"] {
        for workers in [1, 2, 4] {
            cells.push(measured(row, workers, 1));
        }
    }
    let failed = cells.last_mut().expect("six cells were pushed");
    failed.status = CellStatus::Failed(FAILED_ERROR.to_string());
    failed.load = None;
    if let Some(server) = failed.server.as_mut() {
        server.series.truncate(2);
    }
    SweepResult {
        name: "workers-vs-gunicorn".to_string(),
        description: "How throughput scales with workers.".to_string(),
        swept: vec!["workers".to_string()],
        cells,
        machine: BTreeMap::from([
            ("cores".to_string(), "2".to_string()),
            ("kernel".to_string(), "6.1.0".to_string()),
        ]),
        started_at: "2026-11-30T05:00:00Z".to_string(),
    }
}

/// A measured cell with the figures in the module doc.
pub(crate) fn measured(row: &str, workers: u64, repetition: u32) -> CellResult {
    let w = workers;
    let offset = if row == "ferrocorn" { 0 } else { 250 };
    let latency = Latency {
        p50_us: 1500 * w + offset,
        p90_us: 3000 * w + offset,
        p95_us: 4000 * w + offset,
        p99_us: 8000 * w + offset,
        max_us: 20000 * w + offset,
        mean_us: 1800.5 * w as f64,
    };
    let sent = 1000 * w;
    let load = LoadResult {
        scheduled: sent + 10,
        sent,
        completed: sent - 3 * w,
        failed_by_status: BTreeMap::from([(503, 2 * w)]),
        failed_by_transport: BTreeMap::from([("timeout".to_string(), w)]),
        dropped: 10,
        elapsed: Duration::from_secs(5),
        throughput: (sent - 3 * w) as f64 / 5.0,
        latency,
        series: (0..5)
            .map(|t| LoadSecond {
                t,
                sent: 200 * w,
                completed: 200 * w - 1,
                failed: 1,
                dropped: 2,
                latency,
                concurrency: 4 * w,
            })
            .collect(),
        by_endpoint: vec![
            EndpointFigures {
                name: "/hello".into(),
                sent: sent - 100,
                completed: sent - 100 - w,
                failed: w,
                latency,
            },
            EndpointFigures {
                name: "/leak".into(),
                sent: 100,
                completed: 100 - 2 * w,
                failed: 2 * w,
                latency: Latency {
                    p95_us: 9000 * w + offset,
                    ..latency
                },
            },
        ],
    };
    let mut restarts = BTreeMap::from([("max_requests".to_string(), w)]);
    if w == 4 {
        restarts.insert("memory".to_string(), 1);
    }
    let server = ServerFigures {
        cpu_server_pct: 10.0 * w as f64,
        cpu_host_pct: 12.5 * w as f64,
        rss: MemoryFigure {
            start: 50 * w * MIB,
            end: 60 * w * MIB,
            peak: 64 * w * MIB,
        },
        pss: MemoryFigure {
            start: 30 * w * MIB,
            end: 35 * w * MIB,
            peak: 40 * w * MIB,
        },
        restarts,
        series: (0..5)
            .map(|t| ServerSecond {
                t,
                cpu_server_pct: 10.0 * w as f64,
                cpu_host_pct: 12.5 * w as f64,
                rss_bytes: (50 + 2 * u64::from(t)) * w * MIB,
                pss_bytes: 30 * w * MIB,
                processes: 1 + w as u32,
            })
            .collect(),
    };
    CellResult {
        row: row.to_string(),
        params: BTreeMap::from([("workers".to_string(), w.to_string())]),
        repetition,
        command: format!("{row} -w {w} -b 127.0.0.1:0 \"app:create(a, b)\""),
        status: CellStatus::Ok,
        load: Some(load),
        server: Some(server),
    }
}

/// The fixture with every cell failed before any figure was taken.
pub(crate) fn all_failed() -> SweepResult {
    let mut result = sweep();
    for cell in &mut result.cells {
        cell.status = CellStatus::Failed("cannot bind 127.0.0.1:0".to_string());
        cell.load = None;
        cell.server = None;
    }
    result
}
