//! The Markdown summary: title, description, machine, one table with a row
//! per cell and, when cells were repeated, a table of means per (row,
//! params). Figures come from `figures`, formatted for
//! people (1 decimal for ms, %, MiB; thousands separators for counts).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::figures::{self, Figures, LoadFigures, ServerUse};
use super::peak;
use crate::sweep::model::{CellStatus, SweepResult};

const DASH: &str = "-";

/// Columns after the row, param and repetition/status columns.
const FIGURE_HEADERS: [&str; 16] = [
    "sent",
    "completed",
    "failed",
    "dropped %",
    "req/s",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "max ms",
    "server CPU %",
    "host CPU %",
    "RSS start MiB",
    "RSS end MiB",
    "RSS peak MiB",
    "PSS peak MiB",
    "restarts",
];

/// The whole summary.
pub(crate) fn render(result: &SweepResult) -> String {
    let mut out = String::new();
    let title = if result.name.is_empty() {
        "sweep"
    } else {
        &result.name
    };
    let _ = writeln!(out, "# Sweep: {title}\n");
    if !result.description.trim().is_empty() {
        let _ = writeln!(out, "{}\n", result.description.trim());
    }
    if !result.started_at.is_empty() {
        let _ = writeln!(out, "Started: {}\n", result.started_at);
    }
    if !result.machine.is_empty() {
        let _ = writeln!(out, "Machine:\n");
        for (key, value) in &result.machine {
            let _ = writeln!(out, "- {key}: {value}");
        }
        out.push('\n');
    }
    let names = figures::param_names(result);
    out.push_str("## Cells\n\n");
    out.push_str(&cells_table(result, &names));
    if result.cells.iter().any(|c| c.repetition > 1) {
        out.push_str("\n## Means over repetitions\n\n");
        out.push_str(&means_table(result, &names));
    }
    if result
        .cells
        .iter()
        .any(|c| c.load.as_ref().is_some_and(|l| l.by_endpoint.len() > 1))
    {
        out.push_str("\n## Per endpoint\n\n");
        out.push_str(&endpoints_table(result, &names));
    }
    let peaks = peak::peaks(result);
    if !peaks.is_empty() {
        out.push_str("\n## Peak\n\n");
        out.push_str(&peak_table(&peaks, &names));
    }
    out
}

/// Per server (and other swept values): the most simultaneous users with
/// no error at all, and where errors began.
fn peak_table(peaks: &[peak::Peak], names: &[String]) -> String {
    let others: Vec<&String> = names.iter().filter(|n| *n != peak::USERS_KEY).collect();
    let mut cols = vec!["row".to_string()];
    cols.extend(others.iter().map(|n| escape(n)));
    let text_columns = cols.len();
    cols.extend(["peak users", "errors from users", "failed there"].map(String::from));
    let align: Vec<String> = (0..cols.len())
        .map(|i| if i < text_columns { "---" } else { "---:" }.to_string())
        .collect();
    let mut out = format!("{}{}", line(&cols), line(&align));
    for p in peaks {
        let mut cols = vec![escape(&p.row)];
        cols.extend(others.iter().map(|n| param_value(&p.others, n)));
        cols.push(
            p.peak
                .map_or_else(|| "none".to_string(), |n| count(n as f64)),
        );
        match p.first_failure {
            Some((users, failed)) => {
                cols.push(count(users as f64));
                cols.push(count(failed as f64));
            }
            None => cols.extend([DASH.to_string(), DASH.to_string()]),
        }
        out.push_str(&line(&cols));
    }
    out
}

/// A line per endpoint of every measured cell with more than one.
fn endpoints_table(result: &SweepResult, names: &[String]) -> String {
    let mut cols = vec!["row".to_string()];
    cols.extend(names.iter().map(|n| escape(n)));
    cols.extend(["rep", "endpoint"].map(String::from));
    let text_columns = cols.len();
    cols.extend(
        [
            "sent",
            "completed",
            "failed",
            "error %",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "max ms",
        ]
        .map(String::from),
    );
    let align: Vec<String> = (0..cols.len())
        .map(|i| if i < text_columns { "---" } else { "---:" }.to_string())
        .collect();
    let mut out = format!("{}{}", line(&cols), line(&align));
    for cell in &result.cells {
        let Some(load) = cell.load.as_ref().filter(|l| l.by_endpoint.len() > 1) else {
            continue;
        };
        for endpoint in &load.by_endpoint {
            let mut cols = vec![escape(&cell.row)];
            cols.extend(names.iter().map(|n| param_value(&cell.params, n)));
            cols.push(cell.repetition.to_string());
            cols.push(escape(&endpoint.name));
            let ms = |us: u64| one_decimal(us as f64 / 1000.0);
            let error_pct = if endpoint.sent == 0 {
                DASH.to_string()
            } else {
                format!(
                    "{:.2}",
                    100.0 * endpoint.failed as f64 / endpoint.sent as f64
                )
            };
            cols.extend([
                count(endpoint.sent as f64),
                count(endpoint.completed as f64),
                count(endpoint.failed as f64),
                error_pct,
                ms(endpoint.latency.p50_us),
                ms(endpoint.latency.p95_us),
                ms(endpoint.latency.p99_us),
                ms(endpoint.latency.max_us),
            ]);
            out.push_str(&line(&cols));
        }
    }
    out
}

fn cells_table(result: &SweepResult, names: &[String]) -> String {
    let mut headers = vec!["row".to_string()];
    headers.extend(names.iter().cloned());
    headers.extend(["rep".to_string(), "status".to_string()]);
    let mut out = header(&headers, 1 + names.len() + 2);
    for cell in &result.cells {
        let mut cols = vec![escape(&cell.row)];
        cols.extend(names.iter().map(|n| param_value(&cell.params, n)));
        cols.push(cell.repetition.to_string());
        match &cell.status {
            CellStatus::Ok => cols.push("ok".to_string()),
            CellStatus::Failed(error) => cols.push(format!("failed: {}", escape(error))),
        }
        cols.extend(figure_columns(Figures::of(cell).as_ref()));
        out.push_str(&line(&cols));
    }
    out
}

fn means_table(result: &SweepResult, names: &[String]) -> String {
    let mut headers = vec!["row".to_string()];
    headers.extend(names.iter().cloned());
    headers.push("measured reps".to_string());
    let mut out = header(&headers, 1 + names.len() + 1);
    for group in figures::groups(result) {
        let mut cols = vec![escape(group.row)];
        cols.extend(names.iter().map(|n| param_value(group.params, n)));
        cols.push(format!("{}/{}", group.measured(), group.cells.len()));
        cols.extend(figure_columns(group.mean().as_ref()));
        out.push_str(&line(&cols));
    }
    out
}

/// The header and the alignment line: the first `text_columns` columns
/// left-aligned, the figures right-aligned.
fn header(leading: &[String], text_columns: usize) -> String {
    let mut cols: Vec<String> = leading.iter().map(|h| escape(h)).collect();
    cols.extend(FIGURE_HEADERS.iter().map(|h| h.to_string()));
    let align: Vec<String> = (0..cols.len())
        .map(|i| if i < text_columns { "---" } else { "---:" }.to_string())
        .collect();
    format!("{}{}", line(&cols), line(&align))
}

fn line(cols: &[String]) -> String {
    format!("| {} |\n", cols.join(" | "))
}

fn param_value(params: &BTreeMap<String, String>, name: &str) -> String {
    params
        .get(name)
        .map_or_else(|| DASH.to_string(), |v| escape(v))
}

/// The figure columns, dashes where a part is missing.
fn figure_columns(figures: Option<&Figures>) -> Vec<String> {
    let mut cols = load_columns(figures.and_then(|f| f.load.as_ref()));
    cols.extend(server_columns(figures.and_then(|f| f.server.as_ref())));
    cols
}

fn load_columns(load: Option<&LoadFigures>) -> Vec<String> {
    let Some(l) = load else {
        return vec![DASH.to_string(); 9];
    };
    let failed = match top_kind(&l.failed_by_kind) {
        Some(kind) => format!("{} ({})", count(l.failed), escape(kind)),
        None => count(l.failed),
    };
    vec![
        count(l.sent),
        count(l.completed),
        failed,
        one_decimal(l.drop_pct),
        one_decimal(l.throughput),
        one_decimal(l.p50_ms),
        one_decimal(l.p95_ms),
        one_decimal(l.p99_ms),
        one_decimal(l.max_ms),
    ]
}

fn server_columns(server: Option<&ServerUse>) -> Vec<String> {
    let Some(s) = server else {
        return vec![DASH.to_string(); 7];
    };
    vec![
        one_decimal(s.cpu_server_pct),
        one_decimal(s.cpu_host_pct),
        one_decimal(s.rss_start_mib),
        one_decimal(s.rss_end_mib),
        one_decimal(s.rss_peak_mib),
        one_decimal(s.pss_peak_mib),
        restarts(&s.restarts),
    ]
}

/// The most frequent failure kind with a non-zero count (ties: the first).
fn top_kind(by_kind: &BTreeMap<String, f64>) -> Option<&str> {
    let mut top: Option<(&str, f64)> = None;
    for (kind, n) in by_kind {
        let better = match top {
            Some((_, best)) => *n > best,
            None => *n > 0.0,
        };
        if better {
            top = Some((kind, *n));
        }
    }
    top.map(|(kind, _)| kind)
}

/// `max_requests 4, memory 1`: by count, largest first; `0` when none.
fn restarts(by_reason: &BTreeMap<String, f64>) -> String {
    let mut all: Vec<(&String, f64)> = by_reason
        .iter()
        .filter(|(_, n)| **n > 0.0)
        .map(|(r, n)| (r, *n))
        .collect();
    if all.is_empty() {
        return "0".to_string();
    }
    all.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    all.iter()
        .map(|(reason, n)| format!("{} {}", escape(reason), count(*n)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A count: thousands separators when whole, else one decimal (a mean).
fn count(n: f64) -> String {
    if n.fract() != 0.0 {
        return one_decimal(n);
    }
    let digits = format!("{}", n.abs() as u64);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0.0 {
        out.insert(0, '-');
    }
    out
}

fn one_decimal(x: f64) -> String {
    format!("{x:.1}")
}

/// Text safe inside a table cell: no pipes, no line breaks.
fn escape(text: &str) -> String {
    text.replace('|', "\\|").replace(['\r', '\n'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::report::fixture;

    /// The table lines of the section headed `heading`, header and
    /// alignment line excluded.
    fn table_rows<'a>(md: &'a str, heading: &str) -> Vec<&'a str> {
        let section = md.split(heading).nth(1).expect("section present");
        section
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .skip(2)
            .collect()
    }

    fn columns(line: &str) -> Vec<String> {
        line.replace("\\|", "\u{1}")
            .trim()
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().replace('\u{1}', "|"))
            .collect()
    }

    #[test]
    fn one_row_per_cell_with_the_cells_figures() {
        let md = render(&fixture::sweep());
        let rows = table_rows(&md, "## Cells");
        assert_eq!(rows.len(), 6, "{md}");
        assert_eq!(
            rows[1],
            "| ferrocorn | 2 | 1 | ok | 2,000 | 1,994 | 6 (503) | 0.5 | 398.8 | 3.0 | 8.0 | 16.0 \
             | 40.0 | 20.0 | 25.0 | 100.0 | 120.0 | 128.0 | 80.0 | max_requests 2 |"
        );
        let w4 = columns(rows[2]);
        assert_eq!(w4[0], "ferrocorn");
        assert_eq!(w4[1], "4");
        assert_eq!(
            w4.last().map(String::as_str),
            Some("max_requests 4, memory 1")
        );
    }

    #[test]
    fn every_line_of_a_table_has_as_many_columns_as_its_header() {
        let md = render(&fixture::sweep());
        let cells: Vec<&str> = md
            .split("## Cells")
            .nth(1)
            .unwrap()
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .collect();
        assert_eq!(columns(cells[0]).len(), 1 + 1 + 2 + FIGURE_HEADERS.len());
        // Every table, each with its own header's width.
        let mut width = None;
        for line in md.lines() {
            match (line.starts_with('|'), width) {
                (true, None) => width = Some(columns(line).len()),
                (true, Some(w)) => assert_eq!(columns(line).len(), w, "{line}"),
                (false, _) => width = None,
            }
        }
    }

    #[test]
    fn each_endpoint_of_a_mix_gets_its_own_line_per_cell() {
        let result = fixture::sweep();
        let md = render(&result);
        let rows = table_rows(&md, "## Per endpoint");
        let measured = result.cells.iter().filter(|c| c.load.is_some()).count();
        assert_eq!(rows.len(), 2 * measured, "two per measured cell");
        let section = md.split("## Per endpoint").nth(1).unwrap();
        let header = columns(section.lines().find(|l| l.starts_with('|')).unwrap());
        let at = |name: &str| header.iter().position(|h| h == name).unwrap();
        let leak = columns(rows.iter().find(|r| r.contains("/leak")).unwrap());
        assert_eq!(leak[at("endpoint")], "/leak");
        assert_eq!(leak[at("sent")], "100");
        assert!(leak[at("error %")].parse::<f64>().unwrap() > 0.0);
    }

    #[test]
    fn a_sweep_over_users_gets_a_peak_table() {
        let mut result = fixture::sweep();
        assert!(
            !render(&result).contains("## Peak"),
            "no load.users, no peak"
        );
        // Users swept in place of the workers.
        result.swept = vec!["load.users".into()];
        for (i, cell) in result.cells.iter_mut().enumerate() {
            cell.params = BTreeMap::from([("load.users".into(), (100 * (1 + i % 3)).to_string())]);
        }
        let md = render(&result);
        let rows = table_rows(&md, "## Peak");
        // Every fixture cell has errors: no clean count anywhere.
        assert_eq!(rows.len(), 2, "one line per server: {rows:?}");
        assert!(
            rows.iter()
                .all(|r| columns(r).contains(&"none".to_string())),
            "{rows:?}"
        );
    }

    #[test]
    fn a_failed_cell_shows_its_error_and_dashes() {
        let md = render(&fixture::sweep());
        let rows = table_rows(&md, "## Cells");
        let failed = columns(rows[5]);
        assert_eq!(failed[..3], ["gunicorn-sync", "4", "1"]);
        assert_eq!(failed[3], format!("failed: {}", fixture::FAILED_ERROR));
        assert!(failed[4..].iter().all(|c| c == DASH), "{failed:?}");
        assert!(
            rows[5].contains("\\| see stderr"),
            "the pipe is escaped: {}",
            rows[5]
        );
    }

    #[test]
    fn title_description_and_machine_come_first() {
        let md = render(&fixture::sweep());
        assert!(md.starts_with("# Sweep: workers-vs-gunicorn\n"), "{md}");
        assert!(md.contains("How throughput scales with workers."));
        assert!(md.contains("- cores: 2\n"));
        assert!(!md.contains("## Means"), "no repetitions, no means table");
    }

    #[test]
    fn repetitions_add_a_table_of_means() {
        let mut result = fixture::sweep();
        let mut second = fixture::measured("ferrocorn", 1, 2);
        if let Some(load) = second.load.as_mut() {
            load.sent = 3000;
            load.failed_by_status.clear();
            load.failed_by_transport.clear();
        }
        result.cells.push(second);
        let mut failed_again = result.cells[5].clone();
        failed_again.repetition = 2;
        result.cells.push(failed_again);

        let md = render(&result);
        let means = table_rows(&md, "## Means over repetitions");
        assert_eq!(means.len(), 6, "one row per (row, params): {md}");
        let first = columns(means[0]);
        assert_eq!(first[..3], ["ferrocorn", "1", "2/2"]);
        // sent (1000 + 3000) / 2; failed (3 + 0) / 2 with 503 the top kind.
        assert_eq!(first[3], "2,000");
        assert_eq!(first[5], "1.5 (503)");
        let failed = columns(means[5]);
        assert_eq!(failed[2], "0/2");
        assert!(failed[3..].iter().all(|c| c == DASH), "{failed:?}");
    }

    #[test]
    fn counts_get_thousands_separators_and_means_a_decimal() {
        assert_eq!(count(0.0), "0");
        assert_eq!(count(999.0), "999");
        assert_eq!(count(1000.0), "1,000");
        assert_eq!(count(1234567.0), "1,234,567");
        assert_eq!(count(2.5), "2.5");
    }

    #[test]
    fn restarts_are_compact_and_largest_first() {
        let by_reason = BTreeMap::from([
            ("memory".to_string(), 1.0),
            ("max_requests".to_string(), 4.0),
            ("timeout".to_string(), 0.0),
        ]);
        assert_eq!(restarts(&by_reason), "max_requests 4, memory 1");
        assert_eq!(restarts(&BTreeMap::new()), "0");
    }

    #[test]
    fn the_top_failure_kind_is_the_most_frequent() {
        let kinds = BTreeMap::from([
            ("503".to_string(), 2.0),
            ("reset".to_string(), 5.0),
            ("timeout".to_string(), 5.0),
        ]);
        assert_eq!(top_kind(&kinds), Some("reset"));
        assert_eq!(top_kind(&BTreeMap::from([("503".to_string(), 0.0)])), None);
    }
}
