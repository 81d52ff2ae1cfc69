//! How a cell's server is started: ferrocorn rows get the cell's settings
//! as a TOML file (checked here first, so a bad value fails the cell with
//! ferrocorn's own message) and a metrics address; command rows get their
//! `{placeholders}` filled. Relative paths are the sweep's working directory's.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::definition::SweepFile;
use super::grid;
use super::runner::{port, Cell, RunContext};
use super::target::Launch;
use crate::config::table;
use crate::config::validate::absolute_if_relative_path;

/// ferrocorn with the cell's settings.
pub fn ferrocorn_launch(
    file: &SweepFile,
    cell: &Cell,
    ctx: &RunContext,
    bind: SocketAddr,
) -> Result<Launch, String> {
    let mut settings = file.server.clone();
    for (key, value) in &cell.combo {
        if table::spec(key).is_some() {
            settings.insert(key.clone(), value.clone());
        }
    }
    if let Some(python) = &file.python {
        settings.insert(
            "python".into(),
            absolute_if_relative_path(python.clone())
                .display()
                .to_string()
                .into(),
        );
    }
    if let Some(chdir) = &file.chdir {
        settings.insert(
            "chdir".into(),
            absolute_if_relative_path(chdir.clone())
                .display()
                .to_string()
                .into(),
        );
    }
    let config = ctx
        .out
        .join("cells")
        .join(format!("{:03}.toml", cell.index));
    std::fs::write(
        &config,
        toml::to_string(&settings).map_err(|e| e.to_string())?,
    )
    .map_err(|e| format!("cannot write {}: {e}", config.display()))?;
    let metrics: SocketAddr = format!("127.0.0.1:{}", port()?).parse().expect("valid");
    let argv: Vec<String> = vec![
        ctx.ferrocorn.display().to_string(),
        "-c".into(),
        config.display().to_string(),
        "-b".into(),
        bind.to_string(),
        "--metrics-bind".into(),
        metrics.to_string(),
        file.app.clone(),
    ];
    // A bad setting in this cell stops here with ferrocorn's own message.
    let mut check = argv.clone();
    check.push("--check-config".into());
    crate::config::load(check, &|_| None).map_err(|e| format!("bad cell config: {e}"))?;
    Ok(Launch {
        argv,
        env: Vec::new(),
        cwd: None,
        bind,
        metrics: Some(metrics),
        ready_path: "/".into(),
        log: ctx.out.join("cells").join(format!("{:03}.log", cell.index)),
    })
}

/// A row's own command line.
pub fn command_launch(
    file: &SweepFile,
    cell: &Cell,
    ctx: &RunContext,
    bind: SocketAddr,
    command: &str,
    values: &BTreeMap<String, String>,
) -> Result<Launch, String> {
    let line = grid::fill(command, values)?;
    let argv: Vec<String> = line.split_whitespace().map(str::to_string).collect();
    if argv.is_empty() {
        return Err(format!("row {} has an empty command", cell.row.name));
    }
    Ok(Launch {
        argv,
        env: Vec::new(),
        cwd: file.chdir.clone().map(absolute_if_relative_path),
        bind,
        metrics: None,
        ready_path: grid::fill(&cell.row.ready_path, values)?,
        log: ctx.out.join("cells").join(format!("{:03}.log", cell.index)),
    })
}
