//! The SVG charts, drawn with plotters' SVG backend into strings (writing
//! files is `report::write_all`'s job). Against the swept setting: latency
//! (p50, p95, p99 panels), throughput, drop rate, server CPU and peak RSS;
//! against time: RSS of every measured cell. A chart with no point to show
//! is not produced, so a sweep whose cells all failed yields none.

use std::error::Error;
use std::ops::Range;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::figures::Figures;
use super::plot_data::{self, Line, XAxis};
use crate::sweep::model::SweepResult;

const WIDTH: u32 = 960;
const PANEL_HEIGHT: u32 = 360;
const LEGEND_ROW: u32 = 22;
const FONT: &str = "sans-serif";

/// One rendered chart.
#[derive(Debug, Clone)]
pub(crate) struct Chart {
    /// File name inside `charts/`, e.g. `latency.svg`.
    pub file_name: &'static str,
    /// The SVG document.
    pub svg: String,
}

/// A chart could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("cannot draw chart {chart}: {message}")]
pub struct ChartError {
    /// The chart's file name.
    pub chart: &'static str,
    /// What plotters reported.
    pub message: String,
}

/// A panel: a caption, a y axis title and its lines.
struct Panel {
    caption: String,
    y_title: &'static str,
    lines: Vec<Line>,
}

/// Every chart that has something to show.
pub(crate) fn render(result: &SweepResult) -> Result<Vec<Chart>, ChartError> {
    let axis = XAxis::of(result);
    let panel = |caption: &str, y_title: &'static str, metric: fn(&Figures) -> Option<f64>| Panel {
        caption: caption.to_string(),
        y_title,
        lines: plot_data::lines(result, &axis, metric),
    };
    let against_setting: [(&'static str, Vec<Panel>); 5] = [
        (
            "latency.svg",
            vec![
                panel("p50 latency", "ms", |f| f.load.as_ref().map(|l| l.p50_ms)),
                panel("p95 latency", "ms", |f| f.load.as_ref().map(|l| l.p95_ms)),
                panel("p99 latency", "ms", |f| f.load.as_ref().map(|l| l.p99_ms)),
            ],
        ),
        (
            "throughput.svg",
            vec![panel("Throughput", "req/s", |f| {
                f.load.as_ref().map(|l| l.throughput)
            })],
        ),
        (
            "drop_rate.svg",
            vec![panel("Drop rate", "dropped %", |f| {
                f.load.as_ref().map(|l| l.drop_pct)
            })],
        ),
        (
            "cpu.svg",
            vec![panel("Server CPU", "CPU % of all cores", |f| {
                f.server.as_ref().map(|s| s.cpu_server_pct)
            })],
        ),
        (
            "memory.svg",
            vec![panel("Peak RSS (master + workers)", "MiB", |f| {
                f.server.as_ref().map(|s| s.rss_peak_mib)
            })],
        ),
    ];

    let mut charts = Vec::new();
    for (file_name, panels) in against_setting {
        if panels.iter().any(|p| !p.lines.is_empty()) {
            charts.push(draw(file_name, &axis, &panels)?);
        }
    }
    let over_time = plot_data::memory_over_time(result);
    if !over_time.is_empty() {
        let axis = time_axis(&over_time);
        let panels = [Panel {
            caption: "RSS over time (master + workers)".to_string(),
            y_title: "MiB",
            lines: over_time,
        }];
        charts.push(draw("memory_over_time.svg", &axis, &panels)?);
    }
    Ok(charts)
}

/// A numeric axis of whole seconds with at most about ten ticks.
fn time_axis(lines: &[Line]) -> XAxis {
    let last = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.0))
        .fold(0.0, f64::max)
        .ceil() as u64;
    let step = last.div_ceil(10).max(1);
    let ticks = (0..=last)
        .step_by(step as usize)
        .map(|t| (t as f64, t.to_string()))
        .collect();
    XAxis {
        title: "t (s)".to_string(),
        param: None,
        ticks,
        numeric: true,
    }
}

fn draw(file_name: &'static str, axis: &XAxis, panels: &[Panel]) -> Result<Chart, ChartError> {
    let fail = |e: Box<dyn Error>| ChartError {
        chart: file_name,
        message: e.to_string(),
    };
    let panel_height = panels
        .iter()
        .map(|p| PANEL_HEIGHT.max(LEGEND_ROW * p.lines.len() as u32 + 80))
        .max()
        .unwrap_or(PANEL_HEIGHT);
    let size = (WIDTH, panel_height * panels.len() as u32);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| fail(e.into()))?;
        let areas = root.split_evenly((panels.len(), 1));
        for (area, panel) in areas.iter().zip(panels) {
            draw_panel(area, axis, panel).map_err(fail)?;
        }
        root.present().map_err(|e| fail(e.into()))?;
    }
    Ok(Chart { file_name, svg })
}

fn draw_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    axis: &XAxis,
    panel: &Panel,
) -> Result<(), Box<dyn Error>> {
    let longest = panel.lines.iter().map(|l| l.label.chars().count()).max();
    let legend_width = (longest.unwrap_or(0) as u32 * 8 + 60).clamp(140, 420);
    let (plot_area, legend_area) = area.split_horizontally(WIDTH - legend_width);

    let (x0, x1) = axis.range();
    let y_max = panel
        .lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .fold(0.0, f64::max);
    let y_top = if y_max > 0.0 { y_max * 1.1 } else { 1.0 };
    let key_points: Vec<f64> = axis.ticks.iter().map(|t| t.0).collect();
    let mut chart = ChartBuilder::on(&plot_area)
        .caption(&panel.caption, (FONT, 20))
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(
            TickedAxis {
                inner: (x0..x1).into(),
                ticks: key_points,
            },
            0.0..y_top,
        )?;
    chart
        .configure_mesh()
        .x_desc(&axis.title)
        .y_desc(panel.y_title)
        .x_label_formatter(&|x| axis.label(*x))
        .y_label_formatter(&|y| y_label(*y, y_top))
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 15))
        .light_line_style(TRANSPARENT)
        .draw()?;
    for (i, line) in panel.lines.iter().enumerate() {
        let color = color(i);
        chart.draw_series(LineSeries::new(
            line.points.iter().copied(),
            color.stroke_width(2),
        ))?;
        chart.draw_series(
            line.points
                .iter()
                .map(|&p| Circle::new(p, 3, color.filled())),
        )?;
    }

    // The legend gets its own column so it never hides a line.
    for (i, line) in panel.lines.iter().enumerate() {
        let y = 48 + (i as u32 * LEGEND_ROW) as i32;
        let color = color(i);
        legend_area.draw(&PathElement::new(
            vec![(4, y), (28, y)],
            color.stroke_width(2),
        ))?;
        legend_area.draw(&Circle::new((16, y), 3, color.filled()))?;
        let style = TextStyle::from((FONT, 14).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
        legend_area.draw(&Text::new(line.label.clone(), (34, y), style))?;
    }
    Ok(())
}

/// An f64 axis with ticks exactly at the swept values. plotters'
/// `with_key_points` would do, but it drops the value formatter that
/// `configure_mesh` needs for f64.
struct TickedAxis {
    inner: RangedCoordf64,
    ticks: Vec<f64>,
}

impl Ranged for TickedAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.inner.map(value, limit)
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.inner.range()
    }
}

fn color(index: usize) -> RGBAColor {
    Palette99::pick(index).to_rgba()
}

/// Tick labels with as many decimals as the axis's scale needs, the same
/// for every tick.
fn y_label(y: f64, top: f64) -> String {
    if top >= 20.0 {
        format!("{y:.0}")
    } else if top >= 2.0 {
        format!("{y:.1}")
    } else {
        format!("{y:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::report::fixture;

    /// The text of every `<text>` element, trimmed.
    fn texts(svg: &str) -> Vec<&str> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| {
                let body = &t[t.find('>')? + 1..];
                Some(body[..body.find("</text>")?].trim())
            })
            .collect()
    }

    fn has_text(svg: &str, text: &str) -> bool {
        texts(svg).contains(&text)
    }

    fn names(charts: &[Chart]) -> Vec<&str> {
        charts.iter().map(|c| c.file_name).collect()
    }

    fn chart<'a>(charts: &'a [Chart], name: &str) -> &'a str {
        &charts
            .iter()
            .find(|c| c.file_name == name)
            .unwrap_or_else(|| panic!("{name} missing"))
            .svg
    }

    #[test]
    fn every_chart_is_drawn_with_legend_and_axis_titles() {
        let charts = render(&fixture::sweep()).expect("charts");
        assert_eq!(
            names(&charts),
            [
                "latency.svg",
                "throughput.svg",
                "drop_rate.svg",
                "cpu.svg",
                "memory.svg",
                "memory_over_time.svg"
            ]
        );
        for chart in &charts {
            let svg = chart.svg.trim_start();
            assert!(
                svg.starts_with("<svg") || svg.starts_with("<?xml"),
                "{}",
                chart.file_name
            );
            assert!(svg.trim_end().ends_with("</svg>"), "{}", chart.file_name);
            for row in ["ferrocorn", "gunicorn-sync"] {
                let in_legend = texts(svg).iter().any(|t| t.starts_with(row));
                assert!(in_legend, "{} has no legend for {row}", chart.file_name);
            }
        }
        let latency = chart(&charts, "latency.svg");
        for text in ["p50 latency", "p95 latency", "p99 latency", "ms", "workers"] {
            assert!(has_text(latency, text), "latency.svg lacks {text}");
        }
        assert!(has_text(chart(&charts, "throughput.svg"), "req/s"));
        assert!(has_text(chart(&charts, "drop_rate.svg"), "dropped %"));
        assert!(has_text(chart(&charts, "cpu.svg"), "Server CPU"));
        assert!(has_text(chart(&charts, "cpu.svg"), "CPU % of all cores"));
        assert!(has_text(
            chart(&charts, "memory.svg"),
            "Peak RSS (master + workers)"
        ));
        let over_time = chart(&charts, "memory_over_time.svg");
        assert!(has_text(over_time, "t (s)"));
        assert!(has_text(over_time, "ferrocorn workers=4"));
        assert!(
            !has_text(over_time, "gunicorn-sync workers=4"),
            "failed cell drawn"
        );
    }

    #[test]
    fn a_categorical_axis_labels_its_values() {
        let mut result = fixture::sweep();
        result.swept = vec!["worker_class".into()];
        for (cell, class) in result
            .cells
            .iter_mut()
            .zip(["sync", "gthread", "gevent"].iter().cycle())
        {
            cell.params = [("worker_class".to_string(), class.to_string())].into();
        }
        let charts = render(&result).expect("charts");
        let throughput = chart(&charts, "throughput.svg");
        for text in ["sync", "gthread", "gevent", "worker_class"] {
            assert!(has_text(throughput, text), "throughput.svg lacks {text}");
        }
    }

    #[test]
    fn a_single_cell_still_charts() {
        let mut result = fixture::sweep();
        result.cells.truncate(1);
        let charts = render(&result).expect("charts");
        assert_eq!(charts.len(), 6);
        assert!(has_text(chart(&charts, "memory.svg"), "ferrocorn"));
    }

    #[test]
    fn no_measured_cell_means_no_chart() {
        assert!(render(&fixture::all_failed()).expect("charts").is_empty());
    }

    #[test]
    fn time_ticks_are_whole_seconds() {
        let line = Line {
            label: "x".into(),
            points: vec![(0.0, 1.0), (59.0, 1.0)],
        };
        let axis = time_axis(&[line]);
        assert_eq!(axis.ticks.first().map(|t| t.0), Some(0.0));
        assert_eq!(axis.ticks.len(), 10, "{:?}", axis.ticks);
        assert_eq!(axis.ticks[1].1, "6");
    }
}
