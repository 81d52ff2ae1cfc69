//! The reports of a sweep, written into one results folder: `summary.md`
//! (a table with a row per cell), `cells.csv` and `series.csv` (every
//! figure, machine-readable), `results.json` (the [`SweepResult`] as is)
//! and `charts/*.svg`. Every renderer turns the result into a string; only
//! [`write_all`] touches the file system. The runner hands us a finished
//! [`SweepResult`] and decides nothing about what is reported.
//!
//! - `figures`: a cell's figures in report units, means over repetitions
//! - `markdown`: the summary tables
//! - `peak`: the most simultaneous users each server took without an error
//! - `csv`: `cells.csv` and `series.csv`
//! - `json`: `results.json`
//! - `html`: `summary.html`, the tables and every chart on one page
//! - `plot_data`: the x axis and the lines of each chart, as numbers
//! - `charts`: drawing those lines as SVG

mod charts;
mod csv;
mod figures;
mod html;
mod json;
mod markdown;
mod peak;
mod plot_data;

use std::path::{Path, PathBuf};

pub use charts::ChartError;

use crate::sweep::model::SweepResult;

/// The Markdown summary's file name.
pub const SUMMARY_FILE: &str = "summary.md";
/// The one-page HTML summary's file name: tables and charts.
pub const HTML_FILE: &str = "summary.html";
/// The per-cell CSV's file name.
pub const CELLS_FILE: &str = "cells.csv";
/// The per-second CSV's file name.
pub const SERIES_FILE: &str = "series.csv";
/// The JSON file's name.
pub const JSON_FILE: &str = "results.json";
/// The folder of the SVG charts.
pub const CHARTS_DIR: &str = "charts";

/// Why the reports could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A file or folder could not be created or written.
    #[error("cannot write {}: {source} (check that the results folder is writable and the disk has room)", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A CSV table could not be built.
    #[error("cannot build {file}: {source}")]
    Csv {
        /// The CSV file's name.
        file: &'static str,
        /// What the csv crate said.
        source: ::csv::Error,
    },
    /// The result could not be serialized.
    #[error("cannot serialize the sweep to JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A chart could not be drawn.
    #[error(transparent)]
    Chart(#[from] ChartError),
}

/// Writes every output for `result` into `dir` (created if missing):
/// summary.md, cells.csv, series.csv (per-second rows of every cell, load
/// and server), results.json (the SweepResult as is, pretty), summary.html
/// (the tables and every chart on one page), charts/*.svg.
/// Returns the paths written. Charts with nothing to show (e.g. every cell
/// failed) are skipped, and `charts/` is only created when one is drawn.
///
/// # Errors
/// When a file cannot be written or a chart cannot be drawn; the files
/// written before stay in place.
pub fn write_all(result: &SweepResult, dir: &Path) -> Result<Vec<PathBuf>, ReportError> {
    create_dir(dir)?;
    let csv_error = |file| move |source| ReportError::Csv { file, source };
    let summary = markdown(result);
    let charts = charts::render(result)?;
    let files = [
        (SUMMARY_FILE, summary.clone()),
        (
            CELLS_FILE,
            csv::cells(result).map_err(csv_error(CELLS_FILE))?,
        ),
        (
            SERIES_FILE,
            csv::series(result).map_err(csv_error(SERIES_FILE))?,
        ),
        (JSON_FILE, json::render(result)?),
        (HTML_FILE, html::render(&result.name, &summary, &charts)),
    ];
    let mut written = Vec::new();
    for (name, text) in files {
        written.push(write(&dir.join(name), &text)?);
    }
    if !charts.is_empty() {
        let charts_dir = dir.join(CHARTS_DIR);
        create_dir(&charts_dir)?;
        for chart in charts {
            written.push(write(&charts_dir.join(chart.file_name), &chart.svg)?);
        }
    }
    Ok(written)
}

/// The Markdown summary alone (also printed to the terminal at the end of a sweep).
pub fn markdown(result: &SweepResult) -> String {
    markdown::render(result)
}

fn create_dir(dir: &Path) -> Result<(), ReportError> {
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

fn write(path: &Path, text: &str) -> Result<PathBuf, ReportError> {
    std::fs::write(path, text).map_err(|source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod fixture;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_all_writes_every_file_into_a_new_folder() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("results").join("workers");
        let result = fixture::sweep();
        let written = write_all(&result, &dir).expect("written");
        let expected: Vec<PathBuf> = [
            "summary.md",
            "cells.csv",
            "series.csv",
            "results.json",
            "summary.html",
            "charts/latency.svg",
            "charts/throughput.svg",
            "charts/drop_rate.svg",
            "charts/cpu.svg",
            "charts/memory.svg",
            "charts/memory_over_time.svg",
        ]
        .iter()
        .map(|name| dir.join(name))
        .collect();
        assert_eq!(written, expected);
        for path in &written {
            let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            assert!(len > 0, "{} is missing or empty", path.display());
        }
        let json = std::fs::read_to_string(dir.join(JSON_FILE)).expect("json");
        let back: SweepResult = serde_json::from_str(&json).expect("parses");
        assert_eq!(back, result);
        let summary = std::fs::read_to_string(dir.join(SUMMARY_FILE)).expect("md");
        assert_eq!(summary, markdown(&result));
    }

    #[test]
    fn no_measured_cell_writes_the_tables_and_no_chart() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let written = write_all(&fixture::all_failed(), tmp.path()).expect("written");
        assert_eq!(written.len(), 5, "{written:?}");
        assert!(!tmp.path().join(CHARTS_DIR).exists());
        let summary = std::fs::read_to_string(tmp.path().join(SUMMARY_FILE)).expect("md");
        assert_eq!(
            summary.matches("failed: cannot bind 127.0.0.1:0").count(),
            6
        );
    }

    #[test]
    fn an_unwritable_folder_names_the_path() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("taken");
        std::fs::write(&file, "").expect("file");
        let error = write_all(&fixture::sweep(), &file).expect_err("a file is no folder");
        assert!(matches!(error, ReportError::Io { .. }), "{error:?}");
        assert!(error.to_string().contains("taken"), "{error}");
    }
}
