//! `cells.csv` (one row per cell, every figure in the model's own units) and
//! `series.csv` (one row per cell and second, load and server side by
//! side). Quoting is the `csv` crate's (RFC 4180); maps become one column
//! per key over the union of keys (`restarts_<reason>`, `param_<name>`).

use std::collections::{BTreeMap, BTreeSet};

use super::figures;
use crate::sweep::model::{CellResult, CellStatus, Latency, LoadSecond, ServerSecond, SweepResult};

/// The per-cell table.
pub(crate) fn cells(result: &SweepResult) -> Result<String, ::csv::Error> {
    let names = figures::param_names(result);
    let statuses = union(result, |c| {
        c.load
            .iter()
            .flat_map(|l| l.failed_by_status.keys().map(u16::to_string))
            .collect()
    });
    let transports = union(result, |c| {
        c.load
            .iter()
            .flat_map(|l| l.failed_by_transport.keys().cloned())
            .collect()
    });
    let reasons = union(result, |c| {
        c.server
            .iter()
            .flat_map(|s| s.restarts.keys().cloned())
            .collect()
    });

    let mut header: Vec<String> = ["cell", "row"].map(String::from).to_vec();
    header.extend(names.iter().map(|n| format!("param_{n}")));
    header.extend(["repetition", "command", "status", "error"].map(String::from));
    header.extend(LOAD_COLUMNS.map(String::from));
    header.extend(statuses.iter().map(|s| format!("failed_status_{s}")));
    header.extend(transports.iter().map(|t| format!("failed_transport_{t}")));
    header.extend(SERVER_COLUMNS.map(String::from));
    header.extend(reasons.iter().map(|r| format!("restarts_{r}")));

    let mut writer = ::csv::Writer::from_writer(Vec::new());
    writer.write_record(&header)?;
    for (index, cell) in result.cells.iter().enumerate() {
        let mut record = vec![index.to_string(), cell.row.clone()];
        record.extend(
            names
                .iter()
                .map(|n| cell.params.get(n).cloned().unwrap_or_default()),
        );
        let (status, error) = match &cell.status {
            CellStatus::Ok => ("ok", String::new()),
            CellStatus::Failed(e) => ("failed", e.clone()),
        };
        record.extend([
            cell.repetition.to_string(),
            cell.command.clone(),
            status.into(),
            error,
        ]);
        match &cell.load {
            Some(l) => {
                record.extend([
                    l.scheduled.to_string(),
                    l.sent.to_string(),
                    l.completed.to_string(),
                    l.failed_total().to_string(),
                    l.dropped.to_string(),
                    (l.drop_rate() * 100.0).to_string(),
                    (l.error_rate() * 100.0).to_string(),
                    l.elapsed.as_secs_f64().to_string(),
                    l.throughput.to_string(),
                ]);
                record.extend(latency_fields(&l.latency));
                record.extend(statuses.iter().map(|s| {
                    let n = s
                        .parse::<u16>()
                        .ok()
                        .and_then(|s| l.failed_by_status.get(&s));
                    n.copied().unwrap_or(0).to_string()
                }));
                record.extend(transports.iter().map(|t| {
                    l.failed_by_transport
                        .get(t)
                        .copied()
                        .unwrap_or(0)
                        .to_string()
                }));
            }
            None => record.extend(blanks(
                LOAD_COLUMNS.len() + statuses.len() + transports.len(),
            )),
        }
        match &cell.server {
            Some(s) => {
                record.extend([
                    s.cpu_server_pct.to_string(),
                    s.cpu_host_pct.to_string(),
                    s.rss.start.to_string(),
                    s.rss.end.to_string(),
                    s.rss.peak.to_string(),
                    s.pss.start.to_string(),
                    s.pss.end.to_string(),
                    s.pss.peak.to_string(),
                    s.restarts.values().sum::<u64>().to_string(),
                ]);
                record.extend(
                    reasons
                        .iter()
                        .map(|r| s.restarts.get(r).copied().unwrap_or(0).to_string()),
                );
            }
            None => record.extend(blanks(SERVER_COLUMNS.len() + reasons.len())),
        }
        writer.write_record(&record)?;
    }
    finish(writer)
}

const LOAD_COLUMNS: [&str; 15] = [
    "scheduled",
    "sent",
    "completed",
    "failed",
    "dropped",
    "drop_rate_pct",
    "error_rate_pct",
    "elapsed_s",
    "throughput_rps",
    "p50_us",
    "p90_us",
    "p95_us",
    "p99_us",
    "max_us",
    "mean_us",
];

const SERVER_COLUMNS: [&str; 9] = [
    "cpu_server_pct",
    "cpu_host_pct",
    "rss_start_bytes",
    "rss_end_bytes",
    "rss_peak_bytes",
    "pss_start_bytes",
    "pss_end_bytes",
    "pss_peak_bytes",
    "restarts_total",
];

const SERIES_LOAD_COLUMNS: [&str; 11] = [
    "sent",
    "completed",
    "failed",
    "dropped",
    "p50_us",
    "p90_us",
    "p95_us",
    "p99_us",
    "max_us",
    "mean_us",
    "concurrency",
];

const SERIES_SERVER_COLUMNS: [&str; 5] = [
    "cpu_server_pct",
    "cpu_host_pct",
    "rss_bytes",
    "pss_bytes",
    "processes",
];

/// The per-second table: for each cell, one row per second that either
/// side recorded; a side without that second leaves its columns empty.
pub(crate) fn series(result: &SweepResult) -> Result<String, ::csv::Error> {
    let names = figures::param_names(result);
    let mut header: Vec<&str> = vec!["cell", "row", "params", "repetition", "status", "t"];
    header.extend(SERIES_LOAD_COLUMNS);
    header.extend(SERIES_SERVER_COLUMNS);

    let mut writer = ::csv::Writer::from_writer(Vec::new());
    writer.write_record(&header)?;
    for (index, cell) in result.cells.iter().enumerate() {
        let load: BTreeMap<u32, &LoadSecond> = cell
            .load
            .iter()
            .flat_map(|l| l.series.iter().map(|s| (s.t, s)))
            .collect();
        let server: BTreeMap<u32, &ServerSecond> = cell
            .server
            .iter()
            .flat_map(|s| s.series.iter().map(|s| (s.t, s)))
            .collect();
        let seconds: BTreeSet<u32> = load.keys().chain(server.keys()).copied().collect();
        let status = match cell.status {
            CellStatus::Ok => "ok",
            CellStatus::Failed(_) => "failed",
        };
        for t in seconds {
            let mut record = vec![
                index.to_string(),
                cell.row.clone(),
                figures::params_label(&cell.params, &names, None, ";"),
                cell.repetition.to_string(),
                status.to_string(),
                t.to_string(),
            ];
            match load.get(&t) {
                Some(s) => {
                    record.extend([
                        s.sent.to_string(),
                        s.completed.to_string(),
                        s.failed.to_string(),
                        s.dropped.to_string(),
                    ]);
                    record.extend(latency_fields(&s.latency));
                    record.push(s.concurrency.to_string());
                }
                None => record.extend(blanks(SERIES_LOAD_COLUMNS.len())),
            }
            match server.get(&t) {
                Some(s) => record.extend([
                    s.cpu_server_pct.to_string(),
                    s.cpu_host_pct.to_string(),
                    s.rss_bytes.to_string(),
                    s.pss_bytes.to_string(),
                    s.processes.to_string(),
                ]),
                None => record.extend(blanks(SERIES_SERVER_COLUMNS.len())),
            }
            writer.write_record(&record)?;
        }
    }
    finish(writer)
}

/// The sorted union over all cells of the keys `keys` picks from each.
fn union(result: &SweepResult, keys: impl Fn(&CellResult) -> Vec<String>) -> Vec<String> {
    let all: BTreeSet<String> = result.cells.iter().flat_map(keys).collect();
    all.into_iter().collect()
}

fn blanks(n: usize) -> impl Iterator<Item = String> {
    std::iter::repeat_n(String::new(), n)
}

fn finish(writer: ::csv::Writer<Vec<u8>>) -> Result<String, ::csv::Error> {
    let bytes = writer
        .into_inner()
        .map_err(|e| ::csv::Error::from(e.into_error()))?;
    // Every field written came from a Rust `String`, so the bytes are UTF-8.
    Ok(String::from_utf8(bytes).expect("csv output is made of UTF-8 strings"))
}

/// A latency's columns, in the order of the `*_COLUMNS` headers.
fn latency_fields(l: &Latency) -> [String; 6] {
    [
        l.p50_us.to_string(),
        l.p90_us.to_string(),
        l.p95_us.to_string(),
        l.p99_us.to_string(),
        l.max_us.to_string(),
        l.mean_us.to_string(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::report::fixture;

    type Table = (Vec<String>, Vec<Vec<String>>);

    fn parse(text: &str) -> Table {
        let mut reader = ::csv::Reader::from_reader(text.as_bytes());
        let header = reader
            .headers()
            .expect("header")
            .iter()
            .map(String::from)
            .collect();
        let rows = reader
            .records()
            .map(|r| {
                r.expect("every record has the header's width")
                    .iter()
                    .map(String::from)
                    .collect()
            })
            .collect();
        (header, rows)
    }

    fn field<'a>(table: &'a Table, row: usize, column: &str) -> &'a str {
        let index = table
            .0
            .iter()
            .position(|h| h == column)
            .unwrap_or_else(|| panic!("no column {column} in {:?}", table.0));
        &table.1[row][index]
    }

    #[test]
    fn cells_has_a_row_per_cell_and_every_figure() {
        let table = parse(&cells(&fixture::sweep()).expect("csv"));
        assert_eq!(table.1.len(), 6);
        for column in [
            "cell",
            "row",
            "param_workers",
            "repetition",
            "command",
            "status",
            "error",
            "sent",
            "p99_us",
            "failed_status_503",
            "failed_transport_timeout",
            "rss_peak_bytes",
            "restarts_total",
            "restarts_max_requests",
            "restarts_memory",
        ] {
            assert!(
                table.0.iter().any(|h| h == column),
                "{column} missing: {:?}",
                table.0
            );
        }
        assert_eq!(field(&table, 1, "row"), "ferrocorn");
        assert_eq!(field(&table, 1, "param_workers"), "2");
        assert_eq!(field(&table, 1, "sent"), "2000");
        assert_eq!(field(&table, 1, "failed"), "6");
        assert_eq!(field(&table, 1, "failed_status_503"), "4");
        assert_eq!(field(&table, 1, "p50_us"), "3000");
        assert_eq!(field(&table, 1, "throughput_rps"), "398.8");
        assert_eq!(
            field(&table, 1, "rss_peak_bytes"),
            (128 * fixture::MIB).to_string()
        );
        assert_eq!(field(&table, 1, "restarts_memory"), "0");
        assert_eq!(field(&table, 2, "restarts_memory"), "1");
        assert_eq!(field(&table, 2, "restarts_total"), "5");
    }

    #[test]
    fn fields_with_commas_and_quotes_survive_the_round_trip() {
        let text = cells(&fixture::sweep()).expect("csv");
        let table = parse(&text);
        assert_eq!(field(&table, 5, "status"), "failed");
        assert_eq!(field(&table, 5, "error"), fixture::FAILED_ERROR);
        assert_eq!(
            field(&table, 5, "sent"),
            "",
            "a failed cell has no load figures"
        );
        assert_eq!(
            field(&table, 0, "command"),
            "ferrocorn -w 1 -b 127.0.0.1:0 \"app:create(a, b)\""
        );
        // RFC 4180: the field is quoted and its quotes doubled.
        assert!(
            text.contains(
                r#""server exited before ready: exit code 3, ""worker boot failed"" | see stderr""#
            ),
            "{text}"
        );
    }

    #[test]
    fn series_has_a_row_per_cell_and_second() {
        let table = parse(&series(&fixture::sweep()).expect("csv"));
        // 5 measured cells x 5 s, plus the failed cell's 2 server seconds.
        assert_eq!(table.1.len(), 27);
        let mut header = vec!["cell", "row", "params", "repetition", "status", "t"];
        header.extend(SERIES_LOAD_COLUMNS);
        header.extend(SERIES_SERVER_COLUMNS);
        assert_eq!(table.0, header);
        // cell 1 = ferrocorn, 2 workers; its third second.
        assert_eq!(field(&table, 7, "cell"), "1");
        assert_eq!(field(&table, 7, "params"), "workers=2");
        assert_eq!(field(&table, 7, "t"), "2");
        assert_eq!(field(&table, 7, "sent"), "400");
        assert_eq!(field(&table, 7, "concurrency"), "8");
        assert_eq!(
            field(&table, 7, "rss_bytes"),
            (108 * fixture::MIB).to_string()
        );
        let failed = table.1.len() - 1;
        assert_eq!(field(&table, failed, "status"), "failed");
        assert_eq!(field(&table, failed, "sent"), "");
        assert_eq!(field(&table, failed, "processes"), "5");
    }

    #[test]
    fn a_sweep_without_figures_still_has_its_cells() {
        let result = fixture::all_failed();
        let table = parse(&cells(&result).expect("csv"));
        assert_eq!(table.1.len(), 6);
        assert!(table.1.iter().all(|r| r.len() == table.0.len()));
        assert_eq!(parse(&series(&result).expect("csv")).1.len(), 0);
    }
}
