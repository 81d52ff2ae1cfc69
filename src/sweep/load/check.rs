//! Validation of a [`LoadPlan`] before any request: a loopback target and a
//! model whose numbers make sense. The endpoints are checked where they are
//! prepared ([`super::mix`]). Pure; no I/O.

use std::time::Duration;

use super::LoadError;
use crate::sweep::model::{LoadModel, LoadPlan};

/// Checks everything in `plan` except the endpoints.
pub(crate) fn plan(plan: &LoadPlan) -> Result<(), LoadError> {
    if !plan.target.ip().is_loopback() {
        return Err(LoadError::NotLoopback(plan.target));
    }
    let bad = |msg: String| Err(LoadError::BadPlan(msg));
    if plan.duration.is_zero() {
        return bad("duration is 0: give the run a positive duration".into());
    }
    if plan.request_timeout.is_zero() {
        return bad("request_timeout is 0: give requests a positive timeout".into());
    }
    match &plan.model {
        LoadModel::Open {
            rate,
            max_in_flight,
        } => {
            if !rate.is_finite() || *rate <= 0.0 {
                return bad(format!("open model rate is {rate}: it must be a positive number of requests per second"));
            }
            if *max_in_flight == 0 {
                return bad(
                    "open model max_in_flight is 0: allow at least 1 request in flight".into(),
                );
            }
            let max = f64::from(u32::MAX);
            if rate * plan.duration.as_secs_f64() > max {
                return bad(format!(
                    "open model schedules more than {max} requests: lower rate or duration"
                ));
            }
        }
        LoadModel::Closed {
            users,
            loops,
            stages,
            pace,
        } => {
            if pace.is_some_and(|p| p.is_zero()) {
                return bad("closed model pace is 0: leave it out to send back to back".into());
            }
            if *loops == Some(0) {
                return bad(
                    "closed model loops is 0: give each user at least 1 request, or no bound"
                        .into(),
                );
            }
            if *users == 0 && stages.iter().all(|s| s.users == 0) {
                return bad(
                    "closed model has 0 users at every stage: start at least 1 user".into(),
                );
            }
            let mut previous = Duration::ZERO;
            for stage in stages {
                if stage.at < previous {
                    return bad(format!(
                        "closed model stage at {:?} comes after one at {:?}: sort the stages by time",
                        stage.at, previous
                    ));
                }
                previous = stage.at;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::model::Stage;

    fn open(target: &str) -> LoadPlan {
        LoadPlan {
            target: target.parse().unwrap(),
            endpoints: Vec::new(),
            model: LoadModel::Open {
                rate: 10.0,
                max_in_flight: 2,
            },
            duration: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
        }
    }

    fn closed(users: usize, loops: Option<u64>, stages: Vec<Stage>) -> LoadPlan {
        LoadPlan {
            model: LoadModel::Closed {
                users,
                loops,
                stages,
                pace: None,
            },
            ..open("127.0.0.1:1")
        }
    }

    fn message(plan: &LoadPlan) -> String {
        super::plan(plan).unwrap_err().to_string()
    }

    #[test]
    fn loopback_targets_pass_and_others_are_named() {
        for ok in ["127.0.0.1:80", "127.3.4.5:80", "[::1]:80"] {
            assert!(plan(&open(ok)).is_ok(), "{ok}");
        }
        for not in [
            "10.0.0.1:80",
            "0.0.0.0:80",
            "[::]:80",
            "192.168.1.1:8000",
            "[::ffff:10.0.0.1]:80",
        ] {
            let msg = message(&open(not));
            assert!(
                msg.contains(&not.parse::<std::net::SocketAddr>().unwrap().to_string()),
                "{msg}"
            );
            assert!(msg.contains("not a loopback address"), "{msg}");
        }
    }

    #[test]
    fn nonsense_numbers_are_refused_with_the_fix() {
        let mut p = open("127.0.0.1:1");
        p.duration = Duration::ZERO;
        assert!(message(&p).contains("duration is 0"));
        let mut p = open("127.0.0.1:1");
        p.request_timeout = Duration::ZERO;
        assert!(message(&p).contains("request_timeout is 0"));
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let p = LoadPlan {
                model: LoadModel::Open {
                    rate,
                    max_in_flight: 1,
                },
                ..open("127.0.0.1:1")
            };
            assert!(message(&p).contains("rate is"), "{rate}");
        }
        let p = LoadPlan {
            model: LoadModel::Open {
                rate: 1.0,
                max_in_flight: 0,
            },
            ..open("127.0.0.1:1")
        };
        assert!(message(&p).contains("max_in_flight is 0"));
        assert!(message(&closed(1, Some(0), vec![])).contains("loops is 0"));
        assert!(message(&closed(0, None, vec![])).contains("0 users at every stage"));
        let s = |at, users| Stage {
            at: Duration::from_secs(at),
            users,
        };
        assert!(
            plan(&closed(0, None, vec![s(1, 3)])).is_ok(),
            "users may start at a stage"
        );
        assert!(message(&closed(1, None, vec![s(5, 2), s(3, 1)])).contains("sort the stages"));
    }
}
