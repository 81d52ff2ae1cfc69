//! Runs a sweep: for each cell (combination x row x repetition) start the
//! server, wait until it is ready, warm up, drive the measured load while
//! sampling the server every second, read its restarts, stop it. A cell
//! that fails is recorded with its reason and the sweep goes on.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::definition::{LoadSpec, RowSpec, SweepFile};
use super::grid::{self, Combo};
use super::model::{CellResult, CellStatus, Endpoint, LoadModel, LoadPlan, LoadResult, Stage};
use super::target::{self, Target};
use super::{launch, load, sample};

/// Time a stopping server gets before KILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// One cell to run.
#[derive(Debug, Clone)]
pub struct Cell {
    /// Its number, from 1, in run order.
    pub index: usize,
    /// The server.
    pub row: RowSpec,
    /// The swept values.
    pub combo: Combo,
    /// 1-based repetition.
    pub repetition: u32,
}

impl Cell {
    /// A short label for progress lines.
    pub fn label(&self) -> String {
        let params: Vec<String> = self
            .combo
            .iter()
            .map(|(k, v)| format!("{k}={}", grid::display(v)))
            .collect();
        format!(
            "{} {} #{}",
            self.row.name,
            params.join(" "),
            self.repetition
        )
    }
}

/// Every cell of the sweep, in run order.
pub fn cells(file: &SweepFile) -> Vec<Cell> {
    let mut out = Vec::new();
    for combo in grid::combos(&file.grid) {
        for row in file.rows() {
            for repetition in 1..=file.repetitions {
                out.push(Cell {
                    index: out.len() + 1,
                    row: row.clone(),
                    combo: combo.clone(),
                    repetition,
                });
            }
        }
    }
    out
}

/// What every cell shares.
#[derive(Debug, Clone)]
pub struct RunContext {
    /// The ferrocorn binary for ferrocorn rows.
    pub ferrocorn: PathBuf,
    /// The results folder; cell configs and server logs go in `cells/`.
    pub out: PathBuf,
}

/// Runs one cell to its result; never fails the sweep.
pub async fn run_cell(file: &SweepFile, cell: &Cell, ctx: &RunContext) -> CellResult {
    let mut result = CellResult {
        row: cell.row.name.clone(),
        params: grid::params(&cell.combo),
        repetition: cell.repetition,
        command: String::new(),
        status: CellStatus::Ok,
        load: None,
        server: None,
    };
    if let Err(error) = measure(file, cell, ctx, &mut result).await {
        result.status = CellStatus::Failed(error);
    }
    result
}

async fn measure(
    file: &SweepFile,
    cell: &Cell,
    ctx: &RunContext,
    result: &mut CellResult,
) -> Result<(), String> {
    let bind: SocketAddr = format!("127.0.0.1:{}", port()?).parse().expect("valid");
    let mut values = result.params.clone();
    values.insert("bind".into(), bind.to_string());
    values.insert("host".into(), bind.ip().to_string());
    values.insert("port".into(), bind.port().to_string());
    values.insert("app".into(), file.app.clone());
    let plan = load_plan(file, bind, &values)?;
    let launch = match &cell.row.command {
        None => launch::ferrocorn_launch(file, cell, ctx, bind)?,
        Some(command) => launch::command_launch(file, cell, ctx, bind, command, &values)?,
    };
    result.command = launch.shown();
    let mut target = Target::start(launch)?;
    let outcome = drive(file, &plan, &mut target, result).await;
    let died = !target.running();
    target.stop(STOP_GRACE).await;
    outcome?;
    if died {
        return Err("the server exited during the run".into());
    }
    Ok(())
}

async fn drive(
    file: &SweepFile,
    plan: &LoadPlan,
    target: &mut Target,
    result: &mut CellResult,
) -> Result<(), String> {
    target.wait_ready(file.ready_timeout).await?;
    if !file.warmup.is_zero() {
        let warmup = LoadPlan {
            duration: file.warmup,
            ..plan.clone()
        };
        load::run(&warmup, Duration::ZERO)
            .await
            .map_err(|e| format!("warm-up: {e}"))?;
    }
    let restarts_before = restarts(target).await;
    let sampling = sample::SamplingThread::start(target.pid());
    let measured = load::run(plan, Duration::ZERO).await;
    let (series, extra_processes) = sampling.finish();
    let restarts_after = restarts(target).await;
    let load: LoadResult = measured.map_err(|e| format!("load: {e}"))?;
    let restarts = match (restarts_before, restarts_after) {
        (Some(before), Some(after)) => after
            .into_iter()
            .map(|(reason, n)| {
                let was = before.get(&reason).copied().unwrap_or(0);
                (reason, n.saturating_sub(was))
            })
            .filter(|&(_, n)| n > 0)
            .collect(),
        // Not ferrocorn: processes that appeared during the run replaced others.
        _ if extra_processes > 0 => [("unknown".to_string(), extra_processes as u64)].into(),
        _ => BTreeMap::new(),
    };
    result.server = Some(sample::server_figures(series, restarts));
    result.load = Some(load);
    Ok(())
}

async fn restarts(target: &Target) -> Option<BTreeMap<String, u64>> {
    let (status, body) = target::http_get(target.metrics()?, "/metrics").await.ok()?;
    (status == 200).then(|| target::parse_restarts(&body))
}

/// A free loopback port, or the reason there is none.
pub fn port() -> Result<u16, String> {
    target::free_port().map_err(|e| format!("no free port on 127.0.0.1: {e}"))
}

fn load_plan(
    file: &SweepFile,
    target: SocketAddr,
    values: &BTreeMap<String, String>,
) -> Result<LoadPlan, String> {
    let endpoints = file
        .endpoints
        .iter()
        .map(|e| {
            let path = grid::fill(&e.path, values)?;
            Ok(Endpoint {
                name: e.name.clone().unwrap_or_else(|| path.clone()),
                method: e.method.to_ascii_uppercase(),
                body: e
                    .body
                    .as_deref()
                    .map(|b| grid::fill(b, values))
                    .transpose()?,
                body_size: e
                    .body_size
                    .as_ref()
                    .map(|size| body_size(&grid::fill(&size.template(), values)?))
                    .transpose()?,
                weight: e.weight.max(1),
                path,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let mut model = match &file.load {
        LoadSpec::Open {
            rate,
            max_in_flight,
        } => LoadModel::Open {
            rate: *rate,
            max_in_flight: *max_in_flight,
        },
        LoadSpec::Closed {
            users,
            loops,
            ramp,
            pace,
        } => LoadModel::Closed {
            users: *users,
            loops: *loops,
            stages: stages(*users, ramp.as_ref(), file.duration),
            pace: *pace,
        },
    };
    override_load(&mut model, values)?;
    Ok(LoadPlan {
        target,
        endpoints,
        model,
        duration: file.duration,
        request_timeout: file.request_timeout,
    })
}

/// A body size once its placeholders are filled: bytes, or a size with a unit.
fn body_size(text: &str) -> Result<u64, String> {
    text.parse::<crate::config::types::ByteSize>()
        .map(|size| size.bytes())
        .map_err(|_| format!("body_size {text:?} is not a size: e.g. 100, \"10KB\", \"1MiB\""))
}

/// Applies `load.*` grid keys: the load itself is swept.
fn override_load(model: &mut LoadModel, values: &BTreeMap<String, String>) -> Result<(), String> {
    for key in grid::LOAD_KEYS {
        let Some(text) = values.get(*key) else {
            continue;
        };
        let bad = || format!("{key} = {text:?} is not a number");
        match (&mut *model, *key) {
            (LoadModel::Open { rate, .. }, "load.rate") => {
                *rate = text.parse().map_err(|_| bad())?
            }
            (LoadModel::Open { max_in_flight, .. }, "load.max_in_flight") => {
                *max_in_flight = text.parse().map_err(|_| bad())?
            }
            (LoadModel::Closed { users, .. }, "load.users") => {
                *users = text.parse().map_err(|_| bad())?
            }
            (LoadModel::Closed { loops, .. }, "load.loops") => {
                *loops = Some(text.parse().map_err(|_| bad())?)
            }
            (LoadModel::Closed { pace, .. }, "load.pace") => {
                let parsed = crate::config::types::parse_duration(text)
                    .ok_or_else(|| format!("{key} = {text:?} is not a duration, e.g. \"10s\""))?;
                *pace = (!parsed.is_zero()).then_some(parsed);
            }
            _ => return Err(format!("{key} does not apply to this load model")),
        }
    }
    Ok(())
}

/// A regular ramp as explicit stages within the run.
fn stages(
    users: usize,
    ramp: Option<&super::definition::RampSpec>,
    duration: Duration,
) -> Vec<Stage> {
    let Some(ramp) = ramp.filter(|r| !r.every.is_zero()) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let (mut at, mut now_users) = (ramp.every, users as i64);
    while at < duration {
        now_users = (now_users + ramp.add).max(1);
        out.push(Stage {
            at,
            users: now_users as usize,
        });
        at += ramp.every;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::definition::RampSpec;

    #[test]
    fn a_ramp_becomes_stages_within_the_run() {
        let ramp = RampSpec {
            every: Duration::from_secs(60),
            add: 20,
        };
        let stages = stages(50, Some(&ramp), Duration::from_secs(200));
        let users: Vec<usize> = stages.iter().map(|s| s.users).collect();
        assert_eq!(users, [70, 90, 110]);
        assert_eq!(stages[0].at, Duration::from_secs(60));
        assert!(super::stages(5, None, Duration::from_secs(10)).is_empty());
    }

    #[test]
    fn a_body_size_is_bytes_or_a_size_with_a_unit_after_the_grid_fills_it() {
        assert_eq!(body_size("10"), Ok(10));
        assert_eq!(body_size("1KB"), Ok(1000));
        assert_eq!(body_size("1MiB"), Ok(1 << 20));
        assert!(body_size("{size}").unwrap_err().contains("{size}"));
        let file = crate::sweep::definition::SweepFile::parse(
            "name = \"t\"\napp = \"a:b\"\nduration = 1\n[load]\nmodel = \"open\"\nrate = 100\n\
             [[endpoints]]\npath = \"/echo\"\nmethod = \"post\"\nbody_size = \"{size}\"\n\
             [grid]\nsize = [10, \"1MB\"]\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        let target = "127.0.0.1:1".parse().unwrap();
        let sizes: Vec<Option<u64>> = ["10", "1MB"]
            .iter()
            .map(|size| {
                let values = [("size".to_string(), size.to_string())].into();
                load_plan(&file, target, &values).unwrap().endpoints[0].body_size
            })
            .collect();
        assert_eq!(sizes, [Some(10), Some(1_000_000)]);
    }

    #[test]
    fn load_keys_of_the_grid_set_users_and_pace_and_refuse_what_does_not_apply() {
        let closed = || LoadModel::Closed {
            users: 4,
            loops: None,
            stages: Vec::new(),
            pace: None,
        };
        let values = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let mut model = closed();
        override_load(
            &mut model,
            &values(&[("load.users", "130"), ("load.pace", "10s")]),
        )
        .unwrap();
        assert_eq!(
            model,
            LoadModel::Closed {
                users: 130,
                loops: None,
                stages: Vec::new(),
                pace: Some(Duration::from_secs(10)),
            }
        );
        let err = override_load(&mut closed(), &values(&[("load.pace", "often")])).unwrap_err();
        assert!(err.contains("load.pace") && err.contains("often"), "{err}");
        let mut open = LoadModel::Open {
            rate: 1.0,
            max_in_flight: 1,
        };
        let err = override_load(&mut open, &values(&[("load.pace", "1s")])).unwrap_err();
        assert!(err.contains("does not apply"), "{err}");
    }
}
