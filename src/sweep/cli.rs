//! `ferrocorn sweep FILE.toml [--out DIR] [--rows a,b] [--dry-run]`: reads
//! the sweep, lists or runs its cells with a progress bar, and writes the
//! reports. Exit codes: 0 done (even with failed cells: they are in the
//! report), 2 bad usage or sweep file, 1 the results could not be written.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Arg, ArgAction, Command};
use indicatif::{ProgressBar, ProgressStyle};

use super::definition::SweepFile;
use super::grid;
use super::model::{CellStatus, SweepResult};
use super::report;
use super::runner::{self, RunContext};

fn command() -> Command {
    Command::new("ferrocorn sweep")
        .bin_name("ferrocorn sweep")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Run a tuning experiment: a grid of server settings under load, with reports")
        .arg(
            Arg::new("file")
                .value_name("FILE.toml")
                .required(true)
                .value_parser(clap::value_parser!(PathBuf))
                .help("The sweep definition (examples in configs/sweeps/)"),
        )
        .arg(
            Arg::new("out")
                .long("out")
                .value_name("DIR")
                .value_parser(clap::value_parser!(PathBuf))
                .help("Results folder [default: sweep-results/NAME-TIMESTAMP]"),
        )
        .arg(
            Arg::new("rows")
                .long("rows")
                .value_name("NAMES")
                .help("Run only these rows (comma-separated names)"),
        )
        .arg(
            Arg::new("dry_run")
                .long("dry-run")
                .action(ArgAction::SetTrue)
                .help("List the cells and exit"),
        )
}

/// Runs the `sweep` subcommand; `args` start with "sweep".
pub fn main(args: Vec<OsString>) -> std::process::ExitCode {
    let matches = match command().try_get_matches_from(args) {
        Ok(matches) => matches,
        Err(err) => {
            let _ = err.print();
            return std::process::ExitCode::from(err.exit_code() as u8);
        }
    };
    let path = matches.get_one::<PathBuf>("file").expect("required");
    let mut file = match SweepFile::load(path) {
        Ok(file) => file,
        Err(err) => return usage_error(err.to_string()),
    };
    let unused = grid::unused_keys(&file);
    if !unused.is_empty() {
        return usage_error(format!(
            "sweep file {}: grid key(s) {} are not ferrocorn settings and no endpoint or command uses them as {{placeholders}}",
            path.display(),
            unused.join(", ")
        ));
    }
    if let Some(only) = matches.get_one::<String>("rows") {
        let wanted: Vec<&str> = only.split(',').map(str::trim).collect();
        let rows: Vec<_> = file
            .rows()
            .into_iter()
            .filter(|r| wanted.contains(&r.name.as_str()))
            .collect();
        if rows.is_empty() {
            return usage_error(format!("--rows {only}: no such row in {}", path.display()));
        }
        file.rows = rows;
    }
    let cells = runner::cells(&file);
    if matches.get_flag("dry_run") {
        for cell in &cells {
            println!("{:3}  {}", cell.index, cell.label());
        }
        return std::process::ExitCode::SUCCESS;
    }
    let started_at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let out = matches
        .get_one::<PathBuf>("out")
        .cloned()
        .unwrap_or_else(|| {
            PathBuf::from("sweep-results").join(format!(
                "{}-{}",
                file.name,
                started_at.replace(':', "")
            ))
        });
    if let Err(err) = std::fs::create_dir_all(out.join("cells")) {
        eprintln!("error: cannot create {}: {err}", out.display());
        return std::process::ExitCode::from(1);
    }
    let ctx = RunContext {
        ferrocorn: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("ferrocorn")),
        out: out.clone(),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return std::process::ExitCode::from(1);
        }
    };
    let per_cell = file.warmup + file.duration + Duration::from_secs(2);
    eprintln!(
        "sweep {}: {} cells, about {} s each; results in {}",
        file.name,
        cells.len(),
        per_cell.as_secs(),
        out.display()
    );
    let bar = ProgressBar::new(cells.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} cells, {elapsed} elapsed, ~{eta} left  {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut result = SweepResult {
        name: file.name.clone(),
        description: file.description.clone(),
        swept: file.grid.keys().cloned().collect(),
        cells: Vec::with_capacity(cells.len()),
        machine: machine(),
        started_at,
    };
    for cell in &cells {
        bar.set_message(cell.label());
        let outcome = runtime.block_on(runner::run_cell(&file, cell, &ctx));
        if let CellStatus::Failed(error) = &outcome.status {
            // Printed even when the bar is hidden (not a terminal).
            bar.suspend(|| eprintln!("cell {} ({}) failed: {error}", cell.index, cell.label()));
        }
        result.cells.push(outcome);
        bar.inc(1);
    }
    bar.finish_and_clear();
    print!("{}", report::markdown(&result));
    match report::write_all(&result, &out) {
        Ok(paths) => {
            eprintln!("wrote {} files to {}", paths.len(), out.display());
            std::process::ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!(
                "error: cannot write the results to {}: {err}",
                out.display()
            );
            std::process::ExitCode::from(1)
        }
    }
}

fn usage_error(message: String) -> std::process::ExitCode {
    eprintln!("error: {message}");
    std::process::ExitCode::from(2)
}

/// Where the sweep ran, for the report.
fn machine() -> std::collections::BTreeMap<String, String> {
    let mut machine = std::collections::BTreeMap::new();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    machine.insert("cores".into(), cores.to_string());
    if let Ok(meminfo) = std::fs::read_to_string("/proc/meminfo") {
        if let Some(total) = meminfo.lines().find(|l| l.starts_with("MemTotal:")) {
            machine.insert(
                "memory".into(),
                total["MemTotal:".len()..].trim().to_string(),
            );
        }
    }
    if let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") {
        machine.insert("kernel".into(), release.trim().to_string());
    }
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        let first: Vec<&str> = load.split_whitespace().take(3).collect();
        machine.insert("load average at start".into(), first.join(" "));
    }
    machine.insert("ferrocorn".into(), env!("CARGO_PKG_VERSION").into());
    machine
}
