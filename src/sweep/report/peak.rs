//! The peak report: on a grid over simultaneous users (`load.users`, each
//! sending one request, or any closed load), the most users each server
//! took with no error at all, as the seed's peak test asks ("raise the
//! users until errors appear"). A count is clean when every repetition of
//! its cell was measured and had no failed and no dropped request; the peak
//! is the largest count below the first unclean one, so a lucky count past
//! a failure does not raise it.

use std::collections::BTreeMap;

use crate::sweep::model::{CellResult, CellStatus, SweepResult};

/// The grid key the peak is taken over.
pub(crate) const USERS_KEY: &str = "load.users";

/// One server's peak, for one combination of the other swept values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Peak {
    /// The row.
    pub row: String,
    /// The other swept values, as written.
    pub others: BTreeMap<String, String>,
    /// The largest clean user count with every smaller count clean (None:
    /// the smallest already failed).
    pub peak: Option<u64>,
    /// The first count with errors, and how many requests failed there
    /// (over its repetitions); None: every count was clean.
    pub first_failure: Option<(u64, u64)>,
}

/// A row and the other swept values: one peak each.
type GroupKey = (String, BTreeMap<String, String>);

/// At one user count: clean in every repetition so far, and the requests
/// that failed there.
type Count = (bool, u64);

/// The peaks, in the order rows first appear; empty unless the sweep
/// swept `load.users`.
pub(crate) fn peaks(result: &SweepResult) -> Vec<Peak> {
    if !result.swept.iter().any(|k| k == USERS_KEY) {
        return Vec::new();
    }
    let mut groups: Vec<(GroupKey, BTreeMap<u64, Count>)> = Vec::new();
    for cell in &result.cells {
        let Some(users) = cell
            .params
            .get(USERS_KEY)
            .and_then(|u| u.parse::<u64>().ok())
        else {
            continue;
        };
        let mut others = cell.params.clone();
        others.remove(USERS_KEY);
        let key = (cell.row.clone(), others);
        let at = match groups.iter().position(|(k, _)| *k == key) {
            Some(at) => at,
            None => {
                groups.push((key, BTreeMap::new()));
                groups.len() - 1
            }
        };
        let (clean, failures) = verdict(cell);
        let entry = groups[at].1.entry(users).or_insert((true, 0));
        entry.0 &= clean;
        entry.1 += failures;
    }
    groups
        .into_iter()
        .map(|((row, others), by_users)| {
            let mut peak = None;
            let mut first_failure = None;
            for (users, (clean, failures)) in by_users {
                if !clean {
                    first_failure = Some((users, failures));
                    break;
                }
                peak = Some(users);
            }
            Peak {
                row,
                others,
                peak,
                first_failure,
            }
        })
        .collect()
}

/// Whether a cell had no error at all, and how many requests failed or
/// were dropped in it (a cell that could not be measured is not clean).
fn verdict(cell: &CellResult) -> (bool, u64) {
    match (&cell.status, &cell.load) {
        (CellStatus::Ok, Some(load)) => {
            let bad = load.failed_total() + load.dropped;
            (bad == 0 && load.sent > 0, bad)
        }
        _ => (false, 0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sweep::report::fixture;

    /// A cell of `row` at `users` (and `workers`) whose load failed `failed`
    /// requests; `None`: the cell itself failed.
    fn cell(row: &str, users: u64, workers: u64, failed: Option<u64>) -> CellResult {
        let mut cell = fixture::measured(row, workers, 1);
        cell.params.insert(USERS_KEY.into(), users.to_string());
        match failed {
            Some(n) => {
                let load = cell.load.as_mut().unwrap();
                load.failed_by_status = BTreeMap::from([(503, n)]);
                load.failed_by_transport.clear();
                load.dropped = 0;
            }
            None => {
                cell.status = CellStatus::Failed("did not start".into());
                cell.load = None;
            }
        }
        cell
    }

    fn sweep(cells: Vec<CellResult>) -> SweepResult {
        SweepResult {
            swept: vec![USERS_KEY.into(), "workers".into()],
            cells,
            ..SweepResult::default()
        }
    }

    #[test]
    fn the_peak_is_the_most_users_before_the_first_errors_per_server() {
        let result = sweep(vec![
            cell("dev-server", 100, 1, Some(0)),
            cell("dev-server", 200, 1, Some(7)),
            cell("dev-server", 300, 1, Some(0)),
            cell("gunicorn", 100, 1, Some(0)),
            cell("gunicorn", 300, 1, Some(0)),
            cell("gunicorn", 200, 1, Some(0)),
            cell("ferrocorn", 100, 1, None),
        ]);
        let found: Vec<_> = peaks(&result)
            .into_iter()
            .map(|p| (p.row, p.peak, p.first_failure))
            .collect();
        assert_eq!(
            found,
            [
                // 300 was clean again by luck: the peak stays below 200.
                ("dev-server".to_string(), Some(100), Some((200, 7))),
                // Counts are taken in order, whatever order the cells ran in.
                ("gunicorn".to_string(), Some(300), None),
                // A cell that failed to run is no clean count.
                ("ferrocorn".to_string(), None, Some((100, 0))),
            ]
        );
    }

    #[test]
    fn other_swept_values_get_their_own_peak_and_a_repetition_with_errors_spoils_its_count() {
        let mut second = cell("gunicorn", 200, 2, Some(1));
        second.repetition = 2;
        let result = sweep(vec![
            cell("gunicorn", 100, 1, Some(0)),
            cell("gunicorn", 200, 1, Some(0)),
            cell("gunicorn", 100, 2, Some(0)),
            cell("gunicorn", 200, 2, Some(0)),
            second,
        ]);
        let found: Vec<(String, Option<u64>)> = peaks(&result)
            .into_iter()
            .map(|p| (p.others["workers"].clone(), p.peak))
            .collect();
        assert_eq!(found, [("1".into(), Some(200)), ("2".into(), Some(100))]);
        let nothing = SweepResult {
            swept: vec!["workers".into()],
            ..sweep(Vec::new())
        };
        assert!(peaks(&nothing).is_empty(), "no load.users, no peak");
    }
}
