//! The sweep's load generator: runs a [`LoadPlan`] against a loopback
//! target from ferrocorn's own keep-alive HTTP/1.1 client and returns its
//! figures as a [`LoadResult`]. It runs in the sweep's process, never in the
//! server's; it starts no server and samples nothing but its own requests.
//!
//! - [`run`]: the entry point (checks, warm-up, measured run)
//! - `check`: plan validation (loopback only, sane numbers)
//! - `mix`: prepared requests per endpoint and the weighted pick
//! - `client`: keep-alive connections, the idle pool, one request exchange
//! - `open` / `closed`: the two load models
//! - `phase`: one stretch of load (clock, shared tally, concurrency sampler)
//! - `tally`: counting and HDR histograms, sans-IO

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::sweep::model::{LoadModel, LoadPlan, LoadResult};

mod check;
mod client;
mod closed;
mod mix;
mod open;
mod phase;
mod tally;
#[cfg(test)]
mod tests;

/// Scheduling slack on top of the request timeout when waiting for the
/// requests in flight at the end of a stretch.
const DRAIN_MARGIN: Duration = Duration::from_millis(250);

/// Why a load plan cannot run.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The target is not on this machine.
    #[error("target {0} is not a loopback address: the load generator only sends to 127.0.0.0/8 or [::1]")]
    NotLoopback(SocketAddr),
    /// No endpoints to send to.
    #[error("the load plan has no endpoints: add at least one endpoint to the mix")]
    EmptyMix,
    /// An endpoint cannot be turned into a request.
    #[error("endpoint {name:?}: {reason}")]
    BadEndpoint {
        /// The endpoint's name.
        name: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The model's numbers do not make sense.
    #[error("bad load plan: {0}")]
    BadPlan(String),
}

/// What every request of a run shares.
#[derive(Debug)]
struct Setup {
    mix: mix::Mix,
    pool: client::Pool,
    request_timeout: Duration,
    /// The endpoints' names, in the mix's order.
    names: Vec<String>,
}

/// Runs `plan` to the end and returns its figures. `warmup`: time to send
/// load first that is not counted (same model), 0 for none.
///
/// The warm-up runs the plan's model without its loop bound and stages
/// (open: same rate and limit; closed: the starting users, or the
/// first stage's if it starts with none), and its
/// keep-alive connections carry over into the measured run. Requests still
/// in flight when the warm-up ends are waited for, then the measured run
/// starts with a fresh tally.
///
/// # Errors
/// A [`LoadError`] if the plan is refused; once load starts, failures are
/// figures in the result, never errors.
pub async fn run(plan: &LoadPlan, warmup: Duration) -> Result<LoadResult, LoadError> {
    check::plan(plan)?;
    let setup = Arc::new(Setup {
        mix: mix::Mix::new(&plan.endpoints, plan.target)?,
        pool: client::Pool::new(plan.target),
        request_timeout: plan.request_timeout,
        names: plan.endpoints.iter().map(|e| e.name.clone()).collect(),
    });
    if !warmup.is_zero() {
        let model = match &plan.model {
            LoadModel::Open { .. } => plan.model.clone(),
            LoadModel::Closed {
                users,
                stages,
                pace,
                ..
            } => LoadModel::Closed {
                // A plan may start with 0 users and ramp up at its first stage.
                users: if *users > 0 {
                    *users
                } else {
                    stages.first().map_or(0, |s| s.users)
                },
                loops: None,
                stages: Vec::new(),
                pace: *pace,
            },
        };
        stretch(&setup, &model, warmup).await;
    }
    Ok(stretch(&setup, &plan.model, plan.duration).await)
}

/// Runs `model` for `duration` and returns what it measured.
async fn stretch(setup: &Arc<Setup>, model: &LoadModel, duration: Duration) -> LoadResult {
    let phase = phase::Phase::start();
    let sampler = phase.spawn_sampler();
    match model {
        LoadModel::Open {
            rate,
            max_in_flight,
        } => {
            open::drive(setup, &phase, *rate, *max_in_flight, duration).await;
        }
        LoadModel::Closed {
            users,
            loops,
            stages,
            pace,
        } => {
            let crew = closed::Crew {
                users: *users,
                loops: *loops,
                stages,
                pace: *pace,
            };
            closed::drive(setup, &phase, crew, duration).await;
        }
    }
    sampler.abort();
    let mut result = phase.finish();
    // Every endpoint gets its row, by name, even one never picked.
    result
        .by_endpoint
        .resize_with(setup.names.len(), Default::default);
    for (figures, name) in result.by_endpoint.iter_mut().zip(&setup.names) {
        figures.name.clone_from(name);
    }
    result
}
