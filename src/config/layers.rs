//! The raw layers: defaults < TOML file < `FERROCORN_*` env < command line.
//!
//! A layer only collects strings (a TOML number becomes its decimal text, a
//! TOML array a list of strings, a TOML boolean `true` or `false`) and
//! remembers where each value came from; it never converts to a typed value,
//! so every source goes through the same parser in `validate.rs`. It only
//! checks the TOML shape: no tables, no list for a single value, and only a
//! TOML boolean for a switch (a `bool` setting: `preload_app = "no"` or `= 1`
//! is refused, so a quoted value cannot pass for a boolean). The command-line
//! layer is filled by `cli.rs` through [`Layer::set`]. [`merge`] picks, per
//! setting, the highest layer that has a value.

use super::table::Kind;
use super::table::TomlKind;
use super::table::{SettingSpec, SETTINGS};
use super::ConfigError;
use std::fmt;
use std::path::{Path, PathBuf};

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The built-in default.
    Default,
    /// The TOML file given with `-c`.
    File(PathBuf),
    /// An environment variable (its name).
    Env(String),
    /// An option in `GUNICORN_CMD_ARGS`.
    CmdArgsEnv,
    /// The command line.
    Cli,
}

impl Origin {
    /// Where a value of `spec` came from, as a user would spell it:
    /// `default`, `ferrocorn.toml`, `FERROCORN_WORKERS` or `--workers`.
    pub fn describe(&self, spec: &SettingSpec) -> String {
        match self {
            Origin::Default => "default".to_string(),
            Origin::File(path) => path.display().to_string(),
            Origin::Env(var) => var.clone(),
            Origin::CmdArgsEnv => match spec.long {
                Some(long) => format!("--{long} in GUNICORN_CMD_ARGS"),
                None => "GUNICORN_CMD_ARGS".to_string(),
            },
            Origin::Cli => match (spec.long, spec.positional) {
                (Some(long), _) => format!("--{long}"),
                (None, Some(positional)) => format!("argument {positional}"),
                (None, None) => "command line".to_string(),
            },
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File(path) => write!(f, "file {}", path.display()),
            Origin::Env(var) => write!(f, "env {var}"),
            Origin::CmdArgsEnv => f.write_str("env GUNICORN_CMD_ARGS"),
            Origin::Cli => f.write_str("command line"),
        }
    }
}

/// The strings given for one setting in one layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawValue {
    /// One string for single values; any number for lists.
    pub values: Vec<String>,
    /// Where they came from.
    pub origin: Origin,
}

/// One source of settings, indexed like [`SETTINGS`]; `None` means "not given here".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    values: Vec<Option<RawValue>>,
}

impl Default for Layer {
    fn default() -> Self {
        Layer {
            values: vec![None; SETTINGS.len()],
        }
    }
}

impl Layer {
    /// Records the strings given for setting `index` of [`SETTINGS`], splitting
    /// comma-separated lists and keeping only the last of repeated single values.
    pub fn set(&mut self, index: usize, given: Vec<String>, origin: Origin) {
        let values = match SETTINGS[index].kind {
            Kind::List { comma_separated } => split_list(given, comma_separated),
            Kind::One | Kind::Optional => given.into_iter().last().into_iter().collect(),
        };
        self.values[index] = Some(RawValue { values, origin });
    }

    /// The value given for setting `index`, if any.
    pub fn get(&self, index: usize) -> Option<&RawValue> {
        self.values[index].as_ref()
    }

    /// Reads `FERROCORN_<NAME>` for every setting; lists are comma-separated there.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Layer {
        let mut layer = Layer::default();
        for (index, spec) in SETTINGS.iter().enumerate() {
            let var = spec.env_var();
            if let Some(text) = env(&var) {
                let given = match spec.kind {
                    Kind::List { .. } => split_list(vec![text], true),
                    Kind::One | Kind::Optional => vec![text],
                };
                layer.set(index, given, Origin::Env(var));
            }
        }
        layer
    }

    /// gunicorn's defaults taken from the environment, as Heroku-style
    /// platforms set them: `WEB_CONCURRENCY` is the default worker count,
    /// `PORT` the default bind (`0.0.0.0:$PORT`), and `FORWARDED_ALLOW_IPS`
    /// the default `forwarded_allow_ips`. Any layer above wins.
    pub fn from_platform_env(env: &dyn Fn(&str) -> Option<String>) -> Layer {
        let mut layer = Layer::default();
        let mut put = |name: &str, value: String, var: &str| {
            let index = SETTINGS.iter().position(|spec| spec.name == name);
            if let Some(index) = index {
                layer.set(index, vec![value], Origin::Env(var.to_string()));
            }
        };
        if let Some(workers) = env("WEB_CONCURRENCY") {
            put("workers", workers, "WEB_CONCURRENCY");
        }
        if let Some(port) = env("PORT") {
            put("bind", format!("0.0.0.0:{port}"), "PORT");
        }
        // gunicorn reads it as forwarded_allow_ips's default (config.py).
        if let Some(ips) = env("FORWARDED_ALLOW_IPS") {
            let index = SETTINGS
                .iter()
                .position(|s| s.name == "forwarded_allow_ips");
            if let Some(index) = index {
                let origin = Origin::Env("FORWARDED_ALLOW_IPS".to_string());
                layer.set(index, vec![ips], origin);
            }
        }
        layer
    }

    /// Every value of this layer now says it came from `origin`.
    pub fn relabel(&mut self, origin: Origin) {
        for value in self.values.iter_mut().flatten() {
            value.origin = origin.clone();
        }
    }

    /// Reads and parses the TOML file at `full`; `path` is how the user gave it,
    /// which origins and errors show.
    pub fn from_toml_file(full: &Path, path: &Path) -> Result<Layer, ConfigError> {
        let text = std::fs::read_to_string(full).map_err(|err| ConfigError::ConfigFile {
            path: path.to_path_buf(),
            problem: match err.kind() {
                std::io::ErrorKind::NotFound => "file not found".to_string(),
                std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
                _ => err.to_string().to_lowercase(),
            },
        })?;
        Layer::from_toml(&text, path)
    }

    /// Parses TOML text; `path` is only used to name the source in origins and errors.
    pub fn from_toml(text: &str, path: &Path) -> Result<Layer, ConfigError> {
        let table: toml::Table = text.parse().map_err(|err: toml::de::Error| {
            let line = err
                .span()
                .map(|span| text[..span.start].matches('\n').count() + 1);
            ConfigError::Toml {
                path: path.to_path_buf(),
                line,
                // toml's message may span lines ("invalid string\nexpected ..."); keep one.
                message: err.message().trim().replace('\n', "; "),
            }
        })?;
        let mut layer = Layer::default();
        for (key, value) in table {
            let Some(index) = SETTINGS.iter().position(|spec| spec.name == key) else {
                return Err(ConfigError::UnknownKey {
                    path: path.to_path_buf(),
                    suggestion: closest_name(&key),
                    key,
                });
            };
            let spec = &SETTINGS[index];
            let wrong_type = |what: &str| ConfigError::TomlType {
                path: path.to_path_buf(),
                setting: spec.name,
                problem: what.to_string(),
            };
            let given = match (value, spec.kind) {
                (toml::Value::Boolean(b), _) if spec.toml == TomlKind::Boolean => {
                    vec![b.to_string()]
                }
                (other, _) if spec.toml == TomlKind::Boolean => {
                    return Err(wrong_type(&format!(
                        "expected true or false (a TOML boolean, without quotes), not {other}"
                    )))
                }
                (toml::Value::Array(items), Kind::List { .. }) => items
                    .into_iter()
                    .map(|item| {
                        toml_scalar(item)
                            .ok_or_else(|| wrong_type("a list may only hold strings and numbers"))
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                (toml::Value::Array(_), _) => {
                    return Err(wrong_type("expected a single value, not a list"))
                }
                // `secure_scheme_headers = { X-FORWARDED-PROTO = "https" }`,
                // the shape of gunicorn's dict.
                (toml::Value::Table(pairs), Kind::List { .. }) if spec.takes_pairs() => pairs
                    .into_iter()
                    .map(|(name, value)| {
                        toml_scalar(value)
                            .map(|value| format!("{name}={value}"))
                            .ok_or_else(|| wrong_type("a table may only hold strings and numbers"))
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                (value, _) => vec![toml_scalar(value)
                    .ok_or_else(|| wrong_type("expected a string or a number, not a table"))?],
            };
            layer.set(index, given, Origin::File(path.to_path_buf()));
        }
        Ok(layer)
    }
}

/// The string form of a TOML scalar; `None` for arrays and tables.
fn toml_scalar(value: toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        toml::Value::Datetime(d) => Some(d.to_string()),
        toml::Value::Array(_) | toml::Value::Table(_) => None,
    }
}

fn split_list(given: Vec<String>, comma_separated: bool) -> Vec<String> {
    if !comma_separated {
        return given;
    }
    given
        .iter()
        .flat_map(|text| text.split(','))
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_string)
        .collect()
}

/// For each setting, the value of the highest layer that has one, else its default;
/// `layers` go lowest first (file, env, command line).
pub fn merge(layers: &[&Layer]) -> Vec<RawValue> {
    (0..SETTINGS.len())
        .map(|index| {
            layers
                .iter()
                .rev()
                .find_map(|layer| layer.get(index).cloned())
                .unwrap_or_else(|| RawValue {
                    values: SETTINGS[index]
                        .default
                        .iter()
                        .map(|s| s.to_string())
                        .collect(),
                    origin: Origin::Default,
                })
        })
        .collect()
}

/// The known setting closest to a misspelt `key`, if one is close enough to be a typo.
pub fn closest_name(key: &str) -> Option<&'static str> {
    let key = key.to_ascii_lowercase().replace('-', "_");
    SETTINGS
        .iter()
        .map(|spec| (edit_distance(&key, spec.name), spec.name))
        .filter(|&(distance, name)| distance <= 2.max(name.len() / 3))
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, name)| name)
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, &cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != cb);
            current.push(substitute.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(name: &str) -> usize {
        SETTINGS
            .iter()
            .position(|s| s.name == name)
            .expect("known setting")
    }

    #[test]
    fn toml_values_become_strings_and_arrays_become_lists() {
        let text = "workers = 4\ntimeout = 1.5\nbind = [\"a:1\", \"b:2\"]\npythonpath = \"x, y\"\nraw_env = [\"A=1,2\"]\n";
        let layer = Layer::from_toml(text, Path::new("f.toml")).expect("valid");
        let values = |name| layer.get(index(name)).map(|raw| raw.values.clone());
        assert_eq!(values("workers"), Some(vec!["4".to_string()]));
        assert_eq!(values("timeout"), Some(vec!["1.5".to_string()]));
        assert_eq!(
            values("bind"),
            Some(vec!["a:1".to_string(), "b:2".to_string()])
        );
        assert_eq!(
            values("pythonpath"),
            Some(vec!["x".to_string(), "y".to_string()])
        );
        assert_eq!(
            values("raw_env"),
            Some(vec!["A=1,2".to_string()]),
            "KEY=VALUE items keep their commas"
        );
        assert_eq!(values("backlog"), None);
        assert_eq!(
            layer.get(index("workers")).map(|r| &r.origin),
            Some(&Origin::File("f.toml".into()))
        );
        let err = Layer::from_toml("[server]\nworkers = 1\n", Path::new("f.toml"))
            .expect_err("no tables");
        assert_eq!(
            err.to_string(),
            r#"unknown setting "server" in f.toml: run ferrocorn --print-config to list the settings"#
        );
        let err =
            Layer::from_toml("workers = { a = 1 }\n", Path::new("f.toml")).expect_err("no tables");
        assert_eq!(
            err.to_string(),
            "invalid value for workers in f.toml: expected a string or a number, not a table"
        );
    }

    #[test]
    fn env_lists_are_comma_separated_and_single_values_are_taken_whole() {
        let env = |name: &str| match name {
            "FERROCORN_RAW_ENV" => Some("A=1,B=2".to_string()),
            "FERROCORN_ACCESS_LOG_FORMAT" => Some("%(h)s, %(r)s".to_string()),
            _ => None,
        };
        let layer = Layer::from_env(&env);
        let raw_env = layer.get(index("raw_env")).expect("given");
        assert_eq!(raw_env.values, ["A=1", "B=2"]);
        assert_eq!(raw_env.origin, Origin::Env("FERROCORN_RAW_ENV".into()));
        assert_eq!(
            layer.get(index("access_log_format")).expect("given").values,
            ["%(h)s, %(r)s"]
        );
        assert_eq!(layer.get(index("workers")), None);
    }

    #[test]
    fn merge_takes_the_highest_layer_per_setting() {
        let (mut low, mut high) = (Layer::default(), Layer::default());
        low.set(
            index("workers"),
            vec!["2".into()],
            Origin::File("f.toml".into()),
        );
        low.set(
            index("threads"),
            vec!["2".into()],
            Origin::File("f.toml".into()),
        );
        high.set(index("workers"), vec!["3".into(), "4".into()], Origin::Cli);
        let merged = merge(&[&low, &high]);
        assert_eq!(
            merged[index("workers")],
            RawValue {
                values: vec!["4".into()],
                origin: Origin::Cli
            }
        );
        assert_eq!(
            merged[index("threads")].origin,
            Origin::File("f.toml".into())
        );
        assert_eq!(
            merged[index("backlog")],
            RawValue {
                values: vec!["2048".into()],
                origin: Origin::Default
            }
        );
    }

    #[test]
    fn misspelt_keys_get_the_closest_setting_or_none() {
        assert_eq!(closest_name("worker"), Some("workers"));
        assert_eq!(closest_name("Max-Requests"), Some("max_requests"));
        assert_eq!(closest_name("graceful_timout"), Some("graceful_timeout"));
        assert_eq!(
            closest_name("limit_request_field_sizes"),
            Some("limit_request_field_size")
        );
        assert_eq!(closest_name("syslog"), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn origins_describe_themselves_as_a_user_would_spell_them() {
        let spec = |name| crate::config::table::spec(name).expect("known setting");
        assert_eq!(Origin::Cli.describe(spec("workers")), "--workers");
        assert_eq!(Origin::Cli.describe(spec("wsgi_app")), "argument APP");
        assert_eq!(
            Origin::Env("FERROCORN_WORKERS".into()).describe(spec("workers")),
            "FERROCORN_WORKERS"
        );
        assert_eq!(Origin::File("a/f.toml".into()).to_string(), "file a/f.toml");
        assert_eq!(Origin::Default.describe(spec("workers")), "default");
    }
}
