//! Python config files, read as gunicorn reads them: `-c gunicorn.conf.py`,
//! `-c python:module`, or `./gunicorn.conf.py` when no `-c` is given. The
//! file is run by the workers' interpreter (a short standard-library program,
//! [`READER`]), which prints every name the file defines as JSON; this module
//! turns those names into a [`Layer`], as `layers.rs` does for TOML.
//!
//! Names follow gunicorn (`config::gunicorn`): a gunicorn setting ferrocorn
//! supports sets the ferrocorn setting behind it (`keepalive` sets
//! `keep_alive`), a server hook must be a callable (the fork server and the
//! workers run the file again and call it; see docs/hooks.md), and a gunicorn
//! setting ferrocorn does not support is refused by name, unless its value
//! asks for nothing (`keyfile = None`, `certfile = None`). ferrocorn's
//! own settings are read by their names too (`max_memory = "512MiB"`). Any
//! other name is the file's own business (imports, helper variables) and is
//! ignored, as gunicorn ignores it.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::gunicorn::{self, Support};
use super::layers::{Layer, Origin};
use super::table::{Kind, TomlKind, SETTINGS};
use super::ConfigError;

/// The config file gunicorn reads from the working directory when no `-c`
/// is given.
pub const DEFAULT_FILE: &str = "gunicorn.conf.py";

/// Prints `{name: [type, value]}` for what the config file defines. A file
/// that raises prints its traceback to stderr and exits 1.
const READER: &str = r#"
import importlib, json, sys, types
spec = sys.argv[1]
if spec.startswith("python:"):
    namespace = vars(importlib.import_module(spec[len("python:"):]))
else:
    namespace = {"__file__": spec, "__name__": "__config__"}
    with open(spec, "rb") as f:
        source = f.read()
    exec(compile(source, spec, "exec"), namespace)
def plain(v):
    return isinstance(v, (str, int, float)) and not isinstance(v, bool)
out = {}
for name, value in namespace.items():
    if name.startswith("__") or isinstance(value, types.ModuleType):
        continue
    if value is None:
        out[name] = ["none", None]
    elif isinstance(value, bool):
        out[name] = ["bool", value]
    elif plain(value):
        out[name] = ["scalar", value]
    elif isinstance(value, (list, tuple)) and all(plain(v) for v in value):
        out[name] = ["list", list(value)]
    elif isinstance(value, dict) and value and all(
            isinstance(k, str) and plain(v) for k, v in value.items()):
        out[name] = ["dict", {k: v for k, v in value.items()}]
    elif callable(value):
        out[name] = ["callable", getattr(value, "__qualname__", type(value).__name__)]
    elif isinstance(value, (dict, list, tuple, set)) and not value:
        out[name] = ["empty", None]
    else:
        out[name] = ["other", type(value).__name__]
sys.stdout.write(json.dumps(out))
"#;

/// Where a Python config comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PythonConfig {
    /// A file, as an absolute path.
    File(PathBuf),
    /// `python:module`: a module on the interpreter's path.
    Module(String),
}

impl PythonConfig {
    /// How the workers are told where the config is (`FERROCORN_HOOKS_FROM`):
    /// the absolute path, or `python:module`.
    pub fn spec(&self) -> String {
        match self {
            PythonConfig::File(path) => path.display().to_string(),
            PythonConfig::Module(module) => format!("python:{module}"),
        }
    }
}

/// Whether `-c` names a Python config (anything but a `.toml` file, as
/// gunicorn takes any file), and which; `full` is the path made absolute.
pub fn python_config(given: &Path, full: &Path) -> Option<PythonConfig> {
    let text = given.to_string_lossy();
    if let Some(module) = text.strip_prefix("python:") {
        return Some(PythonConfig::Module(module.to_string()));
    }
    let toml = given
        .extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("toml"));
    (!toml).then(|| PythonConfig::File(full.to_path_buf()))
}

/// Runs `config` with `python` (in `cwd`) and reads what it defines.
/// `shown` is the config as the user named it, for messages and origins.
///
/// # Errors
/// [`ConfigError::PythonConfig`] if it cannot run or raises, or a name error.
pub fn read(
    python: &Path,
    config: &PythonConfig,
    shown: &Path,
    cwd: Option<&Path>,
) -> Result<Layer, ConfigError> {
    let fail = |problem: String| ConfigError::PythonConfig {
        path: shown.to_path_buf(),
        problem,
    };
    if let PythonConfig::File(path) = config {
        if !path.is_file() {
            return Err(ConfigError::ConfigFile {
                path: shown.to_path_buf(),
                problem: "file not found".to_string(),
            });
        }
    }
    let mut command = Command::new(python);
    command.arg("-c").arg(READER).arg(config.spec());
    if let Some(cwd) = cwd {
        command.current_dir(cwd);
    }
    // A master of several threads reaps on another thread meanwhile.
    let _own_child = crate::worker::reap::ForeignWait::begin();
    let output = command.output().map_err(|err| {
        fail(format!(
            "cannot run the interpreter {} to read it: {err}; set --python",
            python.display()
        ))
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(fail(format!("it raised an error:\n{}", stderr.trim_end())));
    }
    let names: serde_json::Map<String, Value> = serde_json::from_slice(&output.stdout)
        .map_err(|err| fail(format!("its names could not be read: {err}")))?;
    layer_from_names(names, shown)
}

/// The settings among the names a Python config defines.
fn layer_from_names(
    names: serde_json::Map<String, Value>,
    path: &Path,
) -> Result<Layer, ConfigError> {
    let mut layer = Layer::default();
    for (name, typed) in names {
        let (kind, value) = match typed.as_array().map(Vec::as_slice) {
            Some([Value::String(kind), value]) => (kind.as_str(), value),
            _ => continue,
        };
        let ours = match gunicorn::by_name(&name).map(|setting| setting.support) {
            Some(Support::Setting(ours)) => ours,
            Some(Support::Hook) if kind == "callable" => continue,
            Some(Support::Hook) if kind == "none" => continue,
            Some(Support::Hook) => {
                return Err(ConfigError::PythonName {
                    path: path.to_path_buf(),
                    name,
                    problem: "is a server hook and must be a function".to_string(),
                })
            }
            Some(Support::Command) => {
                return Err(ConfigError::PythonName {
                    path: path.to_path_buf(),
                    name,
                    problem: "can only be given on the command line".to_string(),
                })
            }
            // Turned off, it asks for nothing ferrocorn lacks.
            Some(Support::No) if asks_for_nothing(kind, value) => continue,
            Some(Support::No) => {
                return Err(ConfigError::PythonName {
                    path: path.to_path_buf(),
                    name,
                    problem: "is a gunicorn setting ferrocorn does not support yet".to_string(),
                })
            }
            None => match SETTINGS.iter().find(|spec| spec.name == name) {
                Some(spec) => spec.name,
                None => continue, // the file's own name, as gunicorn ignores it
            },
        };
        let index = SETTINGS
            .iter()
            .position(|spec| spec.name == ours)
            .expect("gunicorn.rs maps to settings that exist (tested there)");
        let spec = &SETTINGS[index];
        let wrong = |problem: &str| ConfigError::PythonName {
            path: path.to_path_buf(),
            name: name.clone(),
            problem: problem.to_string(),
        };
        let given = match (kind, value) {
            ("none", _) if spec.kind == Kind::Optional => continue,
            // gunicorn's `sendfile = None`, its default ("when possible").
            ("none", _) if spec.is_switch() && spec.default == ["true"] => continue,
            ("none", _) => return Err(wrong("is None, and this setting needs a value")),
            ("bool", Value::Bool(b)) if spec.toml == TomlKind::Boolean => vec![b.to_string()],
            (_, _) if spec.toml == TomlKind::Boolean => return Err(wrong("must be True or False")),
            ("scalar", value) => vec![scalar(value)],
            ("list", Value::Array(items)) if matches!(spec.kind, Kind::List { .. }) => {
                items.iter().map(scalar).collect()
            }
            ("list", _) => return Err(wrong("must be a single value, not a list")),
            ("dict", Value::Object(pairs)) if spec.takes_pairs() => pairs
                .iter()
                .map(|(key, value)| format!("{key}={}", scalar(value)))
                .collect(),
            ("dict", _) => return Err(wrong("must be a string or a number, not a dict")),
            ("empty", _) if matches!(spec.kind, Kind::List { .. }) => Vec::new(),
            // `proxy_protocol = True`: gunicorn's validator takes a bool for
            // the options whose flag may stand alone.
            ("bool", Value::Bool(b)) if spec.bare.is_some() => vec![b.to_string()],
            ("bool", _) => return Err(wrong("must be a string or a number, not True/False")),
            (other, value) => {
                let what = value.as_str().unwrap_or(other);
                return Err(wrong(&format!(
                    "must be a string or a number (or a list of them), not {what}"
                )));
            }
        };
        layer.set(index, given, Origin::File(path.to_path_buf()));
    }
    Ok(layer)
}

/// `False`, `None`, `0`, `""` or an empty collection: an unsupported
/// gunicorn setting given so asks for nothing (its gunicorn default, mostly).
fn asks_for_nothing(kind: &str, value: &Value) -> bool {
    match (kind, value) {
        ("none" | "empty", _) | ("bool", Value::Bool(false)) => true,
        ("scalar", Value::String(s)) => s.is_empty(),
        ("scalar", Value::Number(n)) => n.as_f64() == Some(0.0),
        ("list", Value::Array(items)) => items.is_empty(),
        _ => false,
    }
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::layers::RawValue;

    fn python() -> PathBuf {
        std::env::var_os("FERROCORN_TEST_PYTHON")
            .map_or_else(|| PathBuf::from("python3"), PathBuf::from)
    }

    fn read_text(text: &str) -> Result<Layer, ConfigError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("gunicorn.conf.py");
        std::fs::write(&path, text).unwrap();
        let config = python_config(&path, &path).unwrap();
        read(
            &python(),
            &config,
            Path::new("gunicorn.conf.py"),
            Some(dir.path()),
        )
    }

    fn value(layer: &Layer, name: &str) -> Option<Vec<String>> {
        let index = SETTINGS.iter().position(|spec| spec.name == name).unwrap();
        layer
            .get(index)
            .map(|RawValue { values, .. }| values.clone())
    }

    fn strings(items: &[&str]) -> Option<Vec<String>> {
        Some(items.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn gunicorn_names_set_the_settings_behind_them() {
        let layer = read_text(
            r#"
import multiprocessing, os
bind = "0.0.0.0:9000"
workers = 2 * 2 + 1
threads = 4
worker_class = "gthread"
timeout = 30
keepalive = 2.5
accesslog = "-"
errorlog = "-"
loglevel = "debug"
max_requests = 1000
max_requests_jitter = 50
preload_app = True
raw_env = ["A=1", "B=2"]
limit_request_line = 0
max_memory = "512MiB"
daemon = False
sendfile = None
statsd_host = None
def post_fork(server, worker):
    pass
def helper():
    pass
some_local = {"a": 1}
"#,
        )
        .unwrap();
        assert_eq!(value(&layer, "bind"), strings(&["0.0.0.0:9000"]));
        assert_eq!(value(&layer, "workers"), strings(&["5"]));
        assert_eq!(value(&layer, "worker_class"), strings(&["gthread"]));
        assert_eq!(value(&layer, "keep_alive"), strings(&["2.5"]));
        assert_eq!(value(&layer, "access_logfile"), strings(&["-"]));
        assert_eq!(value(&layer, "log_level"), strings(&["debug"]));
        assert_eq!(value(&layer, "preload_app"), strings(&["true"]));
        assert_eq!(value(&layer, "raw_env"), strings(&["A=1", "B=2"]));
        assert_eq!(value(&layer, "max_memory"), strings(&["512MiB"]));
        assert_eq!(value(&layer, "pidfile"), None);
        assert_eq!(value(&layer, "daemon"), strings(&["false"]));
        assert_eq!(value(&layer, "sendfile"), None);
    }

    #[test]
    fn secure_scheme_headers_is_a_dict_as_in_gunicorn() {
        let layer = read_text(
            r#"
secure_scheme_headers = {"X-FORWARDED-PROTO": "https", "X-SCHEME": "on"}
forwarded_allow_ips = "10.0.0.0/8, 127.0.0.1"
forwarder_headers = "SCRIPT_NAME,REMOTE_USER"
proxy_protocol = True
proxy_allow_ips = "*"
"#,
        )
        .unwrap();
        let mut headers = value(&layer, "secure_scheme_headers").unwrap();
        headers.sort();
        assert_eq!(headers, ["X-FORWARDED-PROTO=https", "X-SCHEME=on"]);
        assert_eq!(
            value(&layer, "forwarded_allow_ips"),
            strings(&["10.0.0.0/8", "127.0.0.1"])
        );
        assert_eq!(
            value(&layer, "forwarder_headers"),
            strings(&["SCRIPT_NAME", "REMOTE_USER"])
        );
        assert_eq!(value(&layer, "proxy_protocol"), strings(&["true"]));
        assert_eq!(value(&layer, "proxy_allow_ips"), strings(&["*"]));
        let empty = read_text("secure_scheme_headers = {}\n").unwrap();
        assert_eq!(value(&empty, "secure_scheme_headers"), strings(&[]));
        let err = read_text("workers = {\"a\": 1}\n").unwrap_err().to_string();
        assert!(
            err.contains("`workers`") && err.contains("not a dict"),
            "{err}"
        );
    }

    #[test]
    fn unsupported_names_bad_values_and_raising_files_are_named() {
        let cases = [
            ("keyfile = \"k.pem\"\n", "`keyfile`", "does not support"),
            ("post_fork = 3\n", "`post_fork`", "must be a function"),
            ("workers = [1, 2]\n", "`workers`", "not a list"),
            ("preload_app = 'yes'\n", "`preload_app`", "True or False"),
            ("workers = None\n", "`workers`", "needs a value"),
            ("check_config = True\n", "`check_config`", "command line"),
            (
                "import nonexistent_module_x\n",
                "raised",
                "nonexistent_module_x",
            ),
        ];
        for (text, name, problem) in cases {
            let err = read_text(text).expect_err(text).to_string();
            assert!(err.contains("gunicorn.conf.py"), "{err}");
            assert!(err.contains(name) && err.contains(problem), "{text}: {err}");
        }
    }

    #[test]
    fn toml_files_stay_toml_and_modules_are_python() {
        let toml = Path::new("ferrocorn.toml");
        assert_eq!(python_config(toml, toml), None);
        let module = Path::new("python:myapp.gconf");
        assert_eq!(
            python_config(module, module),
            Some(PythonConfig::Module("myapp.gconf".into()))
        );
        let conf = Path::new("/etc/app/gunicorn.conf");
        assert_eq!(
            python_config(conf, conf),
            Some(PythonConfig::File(conf.into()))
        );
    }
}
