//! The sweep file: what to serve, which settings to sweep, which load to
//! drive and which servers to compare. Read from TOML with unknown keys
//! refused, because a typo in an experiment must not silently change it.
//!
//! ```toml
//! name = "cpu-levels"
//! app = "examples.flask_app:app"
//! duration = "30s"
//! warmup = "3s"
//!
//! [load]
//! model = "open"          # or "closed"
//! rate = 50
//! max_in_flight = 200
//!
//! [[endpoints]]
//! path = "/cpu?level={level}"
//!
//! [grid]                  # every combination is one cell
//! workers = [1, 2]
//! level = [1, 3, 5, 10, 25]
//!
//! [server]                # ferrocorn settings common to every cell
//! timeout = "60s"
//!
//! [[rows]]                # default: one row, ferrocorn
//! name = "gunicorn-sync"
//! command = ".venv-bench/bin/gunicorn -w {workers} -k sync -b {bind} {app}"
//! ```
//!
//! Grid keys that name a ferrocorn setting configure ferrocorn rows; every
//! grid key is also a `{placeholder}` in endpoint paths and bodies and in
//! row commands, with `{bind}`, `{host}`, `{port}` and `{app}`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::types::parse_duration;

/// Why a sweep file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum DefinitionError {
    /// The file could not be read.
    #[error("cannot read sweep file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown or mistyped keys.
    #[error("sweep file {path}: {message}")]
    Toml {
        /// The file.
        path: PathBuf,
        /// toml's message, which names the key and line.
        message: String,
    },
    /// A value that parses but makes no sense.
    #[error("sweep file {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// A parsed sweep file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepFile {
    /// Name of the sweep; names the results folder.
    pub name: String,
    /// Free text for the report.
    #[serde(default)]
    pub description: String,
    /// The WSGI app, as ferrocorn and gunicorn take it (`module:attr`).
    pub app: String,
    /// Directory the servers start in (ferrocorn's `--chdir`, the
    /// command rows' working directory); default: the current directory.
    #[serde(default)]
    pub chdir: Option<PathBuf>,
    /// Python for ferrocorn's workers; default: ferrocorn's own rule.
    #[serde(default)]
    pub python: Option<PathBuf>,
    /// Measured time per cell.
    #[serde(deserialize_with = "duration")]
    pub duration: Duration,
    /// Load before measuring, not counted.
    #[serde(default = "default_warmup", deserialize_with = "duration")]
    pub warmup: Duration,
    /// A request without a whole response by then is a failure.
    #[serde(default = "default_request_timeout", deserialize_with = "duration")]
    pub request_timeout: Duration,
    /// Time a server gets to become ready.
    #[serde(default = "default_ready_timeout", deserialize_with = "duration")]
    pub ready_timeout: Duration,
    /// How often every cell is measured.
    #[serde(default = "one")]
    pub repetitions: u32,
    /// The load model.
    pub load: LoadSpec,
    /// The request mix.
    pub endpoints: Vec<EndpointSpec>,
    /// Swept values, in file order (the first is the charts' x axis):
    /// every combination is a cell.
    #[serde(default)]
    pub grid: toml::Table,
    /// ferrocorn settings shared by every cell.
    #[serde(default)]
    pub server: toml::Table,
    /// The servers compared, after the default ferrocorn row.
    #[serde(default)]
    pub rows: Vec<RowSpec>,
    /// Whether the default row (this ferrocorn binary with the cell's
    /// settings, named `ferrocorn`) runs first when `rows` has none of its
    /// own; `false` runs only the rows given.
    #[serde(default = "yes")]
    pub ferrocorn_row: bool,
}

/// The load section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, tag = "model", rename_all = "snake_case")]
pub enum LoadSpec {
    /// Constant arrival rate.
    Open {
        /// Requests per second.
        rate: f64,
        /// Requests in flight at most.
        #[serde(default = "default_max_in_flight")]
        max_in_flight: usize,
    },
    /// Users x loops, optionally ramping.
    Closed {
        /// Users at the start.
        users: usize,
        /// Requests per user, if bounded.
        #[serde(default)]
        loops: Option<u64>,
        /// Every `every`, `add` more users (negative: fewer).
        #[serde(default)]
        ramp: Option<RampSpec>,
        /// Each user starts a request every `pace` (JMeter's constant
        /// timer, k6's sleep): 130 users at 10 s are 13 requests/s. A
        /// request slower than that is followed at once. Default: back to back.
        #[serde(default, deserialize_with = "optional_duration")]
        pace: Option<Duration>,
    },
}

/// A regular ramp of a closed model: JMeter's "+20 users every 3 minutes".
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RampSpec {
    /// Interval between steps.
    #[serde(deserialize_with = "duration")]
    pub every: Duration,
    /// Users added at each step.
    pub add: i64,
}

/// One endpoint of the mix.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointSpec {
    /// Path and query; may hold `{placeholders}`.
    pub path: String,
    /// HTTP method.
    #[serde(default = "default_method")]
    pub method: String,
    /// Request body, for POST and PUT.
    #[serde(default)]
    pub body: Option<String>,
    /// Or a body of this many bytes: a number, a size such as "10KB" or
    /// "1MiB", or a `{placeholder}` the grid fills (`size = [10, 1000]`).
    #[serde(default)]
    pub body_size: Option<SizeSpec>,
    /// Relative weight.
    #[serde(default = "one")]
    pub weight: u32,
    /// Label in reports; default: the path.
    #[serde(default)]
    pub name: Option<String>,
}

/// A size in a sweep file: a number of bytes, or text (units,
/// placeholders) read once the cell's values are known.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum SizeSpec {
    /// Bytes.
    Bytes(u64),
    /// E.g. "10KB", or "{size}".
    Text(String),
}

impl SizeSpec {
    /// The text the grid's placeholders are filled into.
    pub fn template(&self) -> String {
        match self {
            SizeSpec::Bytes(n) => n.to_string(),
            SizeSpec::Text(text) => text.clone(),
        }
    }
}

/// A server to compare.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowSpec {
    /// Label in reports.
    pub name: String,
    /// A command line with `{placeholders}`; none: this ferrocorn binary
    /// with the cell's settings.
    #[serde(default)]
    pub command: Option<String>,
    /// Path polled until it answers, for command rows.
    #[serde(default = "default_ready_path")]
    pub ready_path: String,
}

fn one() -> u32 {
    1
}
fn yes() -> bool {
    true
}
fn default_warmup() -> Duration {
    Duration::from_secs(3)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_ready_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_max_in_flight() -> usize {
    1000
}
fn default_method() -> String {
    "GET".into()
}
fn default_ready_path() -> String {
    "/".into()
}

fn optional_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Seconds(f64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Seconds(s) if s >= 0.0 && s.is_finite() => Ok(Duration::from_secs_f64(s)),
        Raw::Text(text) => parse_duration(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid duration {text:?}: expected e.g. 30, \"500ms\", \"2m\""
            ))
        }),
        Raw::Seconds(s) => Err(serde::de::Error::custom(format!(
            "invalid duration {s}: must be a positive number of seconds"
        ))),
    }
}

impl SweepFile {
    /// Reads and checks a sweep file.
    pub fn load(path: &Path) -> Result<SweepFile, DefinitionError> {
        let text = std::fs::read_to_string(path).map_err(|source| DefinitionError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        SweepFile::parse(&text, path)
    }

    /// Parses and checks sweep-file text; `path` is for messages.
    pub fn parse(text: &str, path: &Path) -> Result<SweepFile, DefinitionError> {
        let file: SweepFile = toml::from_str(text).map_err(|e| DefinitionError::Toml {
            path: path.to_path_buf(),
            message: e.to_string().trim().to_string(),
        })?;
        file.check().map_err(|message| DefinitionError::Invalid {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(file)
    }

    fn check(&self) -> Result<(), String> {
        if self.endpoints.is_empty() {
            return Err("no [[endpoints]]: add at least one, e.g. path = \"/hello\"".into());
        }
        if self.duration.is_zero() {
            return Err("duration must be more than 0".into());
        }
        if self.repetitions == 0 {
            return Err("repetitions must be at least 1".into());
        }
        for (key, values) in &self.grid {
            match values.as_array() {
                Some(values) if !values.is_empty() => {}
                Some(_) => return Err(format!("grid.{key} has no values")),
                None => {
                    return Err(format!(
                        "grid.{key} must be a list of values, e.g. {key} = [1, 2]"
                    ))
                }
            }
        }
        match self.load {
            LoadSpec::Open { rate, .. } if !(rate > 0.0 && rate.is_finite()) => {
                return Err(format!("load.rate must be more than 0, not {rate}"))
            }
            LoadSpec::Open {
                max_in_flight: 0, ..
            } => return Err("load.max_in_flight must be at least 1".into()),
            LoadSpec::Closed { users: 0, .. } => return Err("load.users must be at least 1".into()),
            _ => {}
        }
        if !self.ferrocorn_row && self.rows.is_empty() {
            return Err(
                "ferrocorn_row = false and no [[rows]]: nothing to run; add a row or drop ferrocorn_row"
                    .into(),
            );
        }
        let mut names = std::collections::HashSet::new();
        for row in &self.rows {
            if !names.insert(&row.name) {
                return Err(format!("two rows are named {:?}", row.name));
            }
        }
        for endpoint in &self.endpoints {
            if endpoint.body.is_some() && endpoint.body_size.is_some() {
                return Err(format!(
                    "endpoint {:?} has both body and body_size: give one",
                    endpoint.path
                ));
            }
            if !endpoint.path.starts_with('/') {
                return Err(format!(
                    "endpoint path {:?} must start with /",
                    endpoint.path
                ));
            }
        }
        Ok(())
    }

    /// The rows: the default ferrocorn row first, unless the file says
    /// `ferrocorn_row = false` or has a ferrocorn row of its own (one
    /// without a command, or named `ferrocorn`), then the file's.
    pub fn rows(&self) -> Vec<RowSpec> {
        let own = self
            .rows
            .iter()
            .any(|row| row.command.is_none() || row.name == "ferrocorn");
        let default = (self.ferrocorn_row && !own).then(|| RowSpec {
            name: "ferrocorn".into(),
            command: None,
            ready_path: default_ready_path(),
        });
        default
            .into_iter()
            .chain(self.rows.iter().cloned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SweepFile, DefinitionError> {
        SweepFile::parse(text, Path::new("t.toml"))
    }

    const MINIMAL: &str = r#"
name = "t"
app = "examples.flask_app:app"
duration = "2s"
[load]
model = "closed"
users = 4
[[endpoints]]
path = "/hello"
"#;

    #[test]
    fn a_minimal_file_gets_defaults() {
        let file = parse(MINIMAL).unwrap();
        assert_eq!(file.duration, Duration::from_secs(2));
        assert_eq!(file.warmup, Duration::from_secs(3));
        assert_eq!(file.repetitions, 1);
        assert_eq!(file.rows()[0].name, "ferrocorn");
        assert_eq!(file.endpoints[0].method, "GET");
        assert_eq!(
            file.load,
            LoadSpec::Closed {
                users: 4,
                loops: None,
                ramp: None,
                pace: None
            }
        );
    }

    #[test]
    fn an_unknown_key_is_refused_by_name() {
        let err = parse(&format!("{MINIMAL}\nworkerz = 3\n")).unwrap_err();
        assert!(err.to_string().contains("workerz"), "{err}");
        let err = parse(&MINIMAL.replace("users = 4", "users = 4\nuzers = 5")).unwrap_err();
        assert!(err.to_string().contains("uzers"), "{err}");
    }

    #[test]
    fn bad_values_name_the_problem() {
        let err = parse(&MINIMAL.replace("\"2s\"", "\"2 fortnights\"")).unwrap_err();
        assert!(err.to_string().contains("invalid duration"), "{err}");
        let err = parse(&MINIMAL.replace("users = 4", "users = 0")).unwrap_err();
        assert!(err.to_string().contains("load.users"), "{err}");
        let err = parse(&MINIMAL.replace("path = \"/hello\"", "path = \"hello\"")).unwrap_err();
        assert!(err.to_string().contains("must start with /"), "{err}");
        let err = parse(&format!("{MINIMAL}\n[grid]\nworkers = []\n")).unwrap_err();
        assert!(err.to_string().contains("grid.workers"), "{err}");
    }

    #[test]
    fn a_file_with_peer_rows_keeps_the_ferrocorn_row_unless_it_says_otherwise() {
        let peer = "[[rows]]\nname = \"gunicorn\"\ncommand = \"gunicorn -b {bind} {app}\"\n";
        let names = |text: &str| -> Vec<String> {
            parse(text)
                .unwrap()
                .rows()
                .into_iter()
                .map(|r| r.name)
                .collect()
        };
        assert_eq!(names(MINIMAL), ["ferrocorn"]);
        assert_eq!(
            names(&format!("{MINIMAL}{peer}")),
            ["ferrocorn", "gunicorn"]
        );
        let own = "[[rows]]\nname = \"tuned\"\n";
        assert_eq!(
            names(&format!("{MINIMAL}{own}{peer}")),
            ["tuned", "gunicorn"]
        );
        let without = format!("ferrocorn_row = false\n{MINIMAL}{peer}");
        assert_eq!(names(&without), ["gunicorn"]);
        let nothing = parse(&format!("ferrocorn_row = false\n{MINIMAL}")).unwrap_err();
        assert!(nothing.to_string().contains("nothing to run"), "{nothing}");
    }

    #[test]
    fn open_model_rows_grid_and_ramp() {
        let file = parse(
            r#"
name = "t"
app = "a:b"
duration = 30
[load]
model = "open"
rate = 50
[[endpoints]]
path = "/cpu?level={level}"
weight = 3
[grid]
workers = [1, 2]
level = [1, 25]
[server]
timeout = "60s"
[[rows]]
name = "ferrocorn"
[[rows]]
name = "gunicorn"
command = "gunicorn -w {workers} -b {bind} {app}"
ready_path = "/hello"
"#,
        )
        .unwrap();
        assert_eq!(
            file.load,
            LoadSpec::Open {
                rate: 50.0,
                max_in_flight: 1000
            }
        );
        assert_eq!(file.grid["level"].as_array().unwrap().len(), 2);
        assert_eq!(file.grid.keys().next().unwrap(), "workers", "file order");
        assert_eq!(file.rows().len(), 2);
        assert_eq!(file.server["timeout"].as_str(), Some("60s"));
        let ramp = parse(&MINIMAL.replace(
            "users = 4",
            "users = 50\nramp = { every = \"3m\", add = 20 }",
        ))
        .unwrap();
        assert!(matches!(
            ramp.load,
            LoadSpec::Closed {
                ramp: Some(RampSpec { add: 20, .. }),
                ..
            }
        ));
        let both = parse(&MINIMAL.replace(
            "path = \"/hello\"",
            "path = \"/echo\"\nbody = \"x\"\nbody_size = 10",
        ))
        .unwrap_err();
        assert!(
            both.to_string().contains("both body and body_size"),
            "{both}"
        );
        let sized =
            parse(&MINIMAL.replace("path = \"/hello\"", "path = \"/echo\"\nbody_size = \"1KB\""))
                .unwrap();
        assert_eq!(
            sized.endpoints[0].body_size,
            Some(SizeSpec::Text("1KB".into()))
        );
        let paced = parse(&MINIMAL.replace("users = 4", "users = 130\npace = \"10s\"")).unwrap();
        assert!(matches!(
            paced.load,
            LoadSpec::Closed { pace: Some(p), .. } if p == Duration::from_secs(10)
        ));
    }

    #[test]
    fn the_shipped_sweeps_parse_and_use_every_grid_key() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/sweeps");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let file = SweepFile::load(&path).unwrap_or_else(|e| panic!("{e}"));
                let unused = crate::sweep::grid::unused_keys(&file);
                assert!(unused.is_empty(), "{}: {unused:?}", path.display());
                seen += 1;
            }
        }
        assert!(seen >= 4, "{seen} sweep files");
    }
}
