//! What each chart shows, as plain numbers: the x axis from the first swept
//! parameter (numeric when every value parses as a number, else one
//! position per value in grid order), and one line per row + the other
//! swept parameters, with the mean over measured repetitions at each x.
//! Failed cells and cells without the figure are left out. Drawing is
//! `charts`'s job.

use std::collections::BTreeMap;

use super::figures::{self, Figures};
use crate::sweep::model::{CellResult, SweepResult};

/// The x axis of the charts against the swept setting.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct XAxis {
    /// The axis title: the parameter's name.
    pub title: String,
    /// The parameter, if anything was swept.
    pub param: Option<String>,
    /// Positions with their labels, ascending.
    pub ticks: Vec<(f64, String)>,
    /// True when positions are the values themselves.
    pub numeric: bool,
}

impl XAxis {
    /// The axis for `result`: its first swept parameter.
    pub fn of(result: &SweepResult) -> XAxis {
        let Some(param) = result.swept.first() else {
            return XAxis {
                title: "(nothing swept)".to_string(),
                param: None,
                ticks: vec![(0.0, "all".to_string())],
                numeric: false,
            };
        };
        let mut values: Vec<&str> = Vec::new();
        for cell in &result.cells {
            if let Some(v) = cell.params.get(param) {
                if !values.contains(&v.as_str()) {
                    values.push(v);
                }
            }
        }
        let parsed: Option<Vec<f64>> = values.iter().map(|v| parse_number(v)).collect();
        let (ticks, numeric) = match parsed {
            Some(numbers) if !numbers.is_empty() => {
                let mut ticks: Vec<(f64, String)> = numbers
                    .into_iter()
                    .zip(values.iter().map(|v| v.to_string()))
                    .collect();
                ticks.sort_by(|a, b| a.0.total_cmp(&b.0));
                ticks.dedup_by(|a, b| a.0 == b.0);
                (ticks, true)
            }
            _ => {
                let ticks = values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (i as f64, v.to_string()))
                    .collect();
                (ticks, false)
            }
        };
        XAxis {
            title: param.clone(),
            param: Some(param.clone()),
            ticks,
            numeric,
        }
    }

    /// Where `cell` sits on the axis, `None` if it lacks the parameter.
    pub fn position(&self, cell: &CellResult) -> Option<f64> {
        let Some(param) = &self.param else {
            return Some(0.0);
        };
        let value = cell.params.get(param)?;
        if self.numeric {
            return parse_number(value);
        }
        self.ticks
            .iter()
            .find(|(_, label)| label == value)
            .map(|(x, _)| *x)
    }

    /// The label at `x`, or the number itself between ticks.
    pub fn label(&self, x: f64) -> String {
        match self.ticks.iter().find(|(at, _)| (at - x).abs() < 1e-9) {
            Some((_, label)) => label.clone(),
            None if self.numeric => format!("{x}"),
            None => String::new(),
        }
    }

    /// The drawn range, padded so the end points are not on the frame.
    pub fn range(&self) -> (f64, f64) {
        let first = self.ticks.first().map_or(0.0, |t| t.0);
        let last = self.ticks.last().map_or(0.0, |t| t.0);
        if !self.numeric {
            return (first - 0.5, last + 0.5);
        }
        let pad = if last > first {
            (last - first) * 0.05
        } else {
            1.0
        };
        (first - pad, last + pad)
    }
}

fn parse_number(text: &str) -> Option<f64> {
    text.trim().parse::<f64>().ok().filter(|x| x.is_finite())
}

/// One line of a chart: a label and points sorted by x.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Line {
    /// The legend text.
    pub label: String,
    /// (x, y), ascending x.
    pub points: Vec<(f64, f64)>,
}

/// The values of one line at each x, keyed by x's bits (exact, ordered
/// only for grouping; points are sorted by x afterwards).
type ValuesAtX = BTreeMap<u64, (f64, Vec<f64>)>;

/// One line per row + other params, y = the mean of `metric` over the
/// measured cells at each x. Lines without any point are left out.
pub(crate) fn lines(
    result: &SweepResult,
    axis: &XAxis,
    metric: impl Fn(&Figures) -> Option<f64>,
) -> Vec<Line> {
    let names = figures::param_names(result);
    let mut by_line: Vec<(String, ValuesAtX)> = Vec::new();
    for cell in &result.cells {
        let (Some(figures), Some(x)) = (Figures::of(cell), axis.position(cell)) else {
            continue;
        };
        let Some(y) = metric(&figures).filter(|y| y.is_finite()) else {
            continue;
        };
        let label = line_label(cell, &names, axis.param.as_deref());
        let index = match by_line.iter().position(|(l, _)| *l == label) {
            Some(i) => i,
            None => {
                by_line.push((label, BTreeMap::new()));
                by_line.len() - 1
            }
        };
        let entry = by_line[index]
            .1
            .entry(x.to_bits())
            .or_insert((x, Vec::new()));
        entry.1.push(y);
    }
    by_line
        .into_iter()
        .map(|(label, at)| {
            let mut points: Vec<(f64, f64)> = at
                .into_values()
                .map(|(x, ys)| (x, ys.iter().sum::<f64>() / ys.len() as f64))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            Line { label, points }
        })
        .filter(|line| !line.points.is_empty())
        .collect()
}

/// `ferrocorn threads=2`: the row and every parameter but the x axis's.
fn line_label(cell: &CellResult, names: &[String], x_param: Option<&str>) -> String {
    let params = figures::params_label(&cell.params, names, x_param, " ");
    if params.is_empty() {
        cell.row.clone()
    } else {
        format!("{} {params}", cell.row)
    }
}

/// RSS (MiB) against t (s), one line per measured cell with a server series.
pub(crate) fn memory_over_time(result: &SweepResult) -> Vec<Line> {
    let names = figures::param_names(result);
    let repeated = result.cells.iter().any(|c| c.repetition > 1);
    result
        .cells
        .iter()
        .filter(|c| figures::is_measured(c))
        .filter_map(|cell| {
            let server = cell.server.as_ref()?;
            if server.series.is_empty() {
                return None;
            }
            let mut label = line_label(cell, &names, None);
            if repeated {
                label.push_str(&format!(" rep {}", cell.repetition));
            }
            let mut points: Vec<(f64, f64)> = server
                .series
                .iter()
                .map(|s| (f64::from(s.t), figures::mib(s.rss_bytes)))
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            Some(Line { label, points })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::report::fixture;

    fn throughput(f: &Figures) -> Option<f64> {
        f.load.as_ref().map(|l| l.throughput)
    }

    #[test]
    fn numbers_give_a_numeric_axis_at_their_values() {
        let axis = XAxis::of(&fixture::sweep());
        assert!(axis.numeric);
        assert_eq!(axis.title, "workers");
        assert_eq!(
            axis.ticks,
            vec![(1.0, "1".into()), (2.0, "2".into()), (4.0, "4".into())]
        );
        assert_eq!(axis.label(4.0), "4");
        let (lo, hi) = axis.range();
        assert!(lo < 1.0 && hi > 4.0, "{lo}..{hi}");
    }

    #[test]
    fn words_give_one_position_per_value_in_grid_order() {
        let mut result = fixture::sweep();
        for (cell, class) in result
            .cells
            .iter_mut()
            .zip(["sync", "gthread", "sync"].iter().cycle())
        {
            cell.params.insert("workers".into(), class.to_string());
        }
        let axis = XAxis::of(&result);
        assert!(!axis.numeric);
        assert_eq!(
            axis.ticks,
            vec![(0.0, "sync".into()), (1.0, "gthread".into())]
        );
        assert_eq!(axis.position(&result.cells[1]), Some(1.0));
        assert_eq!(axis.label(0.5), "");
        assert_eq!(axis.range(), (-0.5, 1.5));
    }

    #[test]
    fn one_line_per_row_skipping_failed_cells() {
        let result = fixture::sweep();
        let lines = lines(&result, &XAxis::of(&result), throughput);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].label, "ferrocorn");
        assert_eq!(
            lines[0].points,
            vec![(1.0, 199.4), (2.0, 398.8), (4.0, 797.6)]
        );
        assert_eq!(lines[1].label, "gunicorn-sync");
        assert_eq!(lines[1].points, vec![(1.0, 199.4), (2.0, 398.8)]);
    }

    #[test]
    fn other_swept_params_split_lines_and_repetitions_average() {
        let mut result = fixture::sweep();
        result.swept.push("threads".into());
        for cell in &mut result.cells {
            cell.params.insert("threads".into(), "2".into());
        }
        let mut again = fixture::measured("ferrocorn", 1, 2);
        again.params.insert("threads".into(), "2".into());
        if let Some(load) = again.load.as_mut() {
            load.throughput = 100.6;
        }
        result.cells.push(again);
        let lines = lines(&result, &XAxis::of(&result), throughput);
        assert_eq!(lines[0].label, "ferrocorn threads=2");
        assert_eq!(lines[0].points[0], (1.0, 150.0));
    }

    #[test]
    fn nothing_swept_puts_every_cell_at_one_position() {
        let mut result = fixture::sweep();
        result.swept.clear();
        for cell in &mut result.cells {
            cell.params.clear();
        }
        let axis = XAxis::of(&result);
        let lines = lines(&result, &axis, throughput);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].points.len(), 1, "three cells averaged at x = 0");
    }

    #[test]
    fn memory_over_time_has_a_line_per_measured_cell() {
        let lines = memory_over_time(&fixture::sweep());
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[1].label, "ferrocorn workers=2");
        assert_eq!(lines[1].points.len(), 5);
        assert_eq!(lines[1].points[4], (4.0, 116.0));
        assert!(memory_over_time(&fixture::all_failed()).is_empty());
    }
}
