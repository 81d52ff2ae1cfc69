//! `ferrocorn sweep FILE.toml`: tuning experiments in one command. For each
//! cell of a grid over server settings it starts the server, waits until it
//! is ready, warms up, drives a load from ferrocorn's own HTTP client,
//! samples the server's CPU and memory, reads its restarts, stops it, and
//! finally writes Markdown, CSV, JSON and SVG reports.
//!
//! - [`cli`]: `ferrocorn sweep FILE.toml`, progress and exit codes
//! - [`definition`]: the sweep file (TOML), checked
//! - [`grid`]: cells from the swept values, `{placeholder}` filling
//! - [`runner`]: one cell: start, ready, warm up, load, sample, stop
//! - [`launch`]: a cell's server command: ferrocorn's cell config, or a row's own command
//! - [`target`]: the server process under test
//! - [`sample`]: CPU and memory of the server's process tree from /proc
//! - [`model`]: the data every part shares (plans and results)
//! - [`report`]: the results folder: Markdown summary, CSV, JSON and SVG charts
//! - [`load`]: the load generator: open and closed models from our own keep-alive HTTP client

pub mod cli;
pub mod definition;
pub mod grid;
pub mod launch;
pub mod load;
pub mod model;
pub mod report;
pub mod runner;
pub mod sample;
pub mod target;
