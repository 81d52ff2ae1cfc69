//! ferrocorn: a gunicorn-style WSGI server. A Rust master owns the sockets,
//! speaks HTTP and balances requests over pre-forked Python workers.
//!
//! Module map:
//! - [`cli`]: the command line, built from the settings table
//! - [`config`]: the settings table, layers (defaults < TOML < env < CLI), validation, rendering
//! - [`master`]: the event loop, the arbiter (worker lifecycle), policies, signals, USR2's re-exec
//! - [`forkserver`]: the Python fork server that forks workers from a loaded interpreter, and its fallback
//! - [`worker`]: spawning a Python worker, its boot handshake, its states, the embedded program
//! - [`dispatch`]: idle lanes, least-loaded pick, the bounded wait queue
//! - [`http`]: listeners, hyper connections, the peer's trust and PROXY header, the request service, the trip to a worker, status mapping
//! - [`protocol`]: master <-> worker frames, handshake, environ encoding (with what a trusted proxy may say), lane sockets
//! - [`logging`]: error log (gunicorn's line) and access log
//! - [`metrics`]: Prometheus metrics (every name defined once) and the /metrics, /healthz, /readyz endpoint; gunicorn's statsd metrics (`metrics::statsd`)
//! - [`sweep`]: tuning experiments: grid, load generator, server sampling, reports
//! - [`exit`]: process exit codes
//! - [`process`]: the master process itself: `--daemon`, its process title (`--name`), the log files it gives to `--user`
//! - [`systemd`]: socket activation and sd_notify (READY, RELOADING, STOPPING, STATUS, WATCHDOG)

#![warn(missing_docs)]

pub mod cli;
pub mod config;
pub mod dispatch;
pub mod exit;
pub mod forkserver;
pub mod http;
pub mod logging;
pub mod master;
pub mod metrics;
pub mod process;
pub mod protocol;
pub mod sweep;
pub mod systemd;
pub mod worker;

/// The layers the architecture draws: the settings, the wire protocol and
/// the HTTP front know nothing of the master that uses them.
#[cfg(test)]
mod layering {
    use std::path::Path;

    fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("src is readable").flatten() {
            let path = entry.path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    #[test]
    fn config_protocol_and_http_do_not_use_the_master() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut offenders = Vec::new();
        for part in ["src/config", "src/protocol", "src/http"] {
            let mut files = Vec::new();
            rust_files(&root.join(part), &mut files);
            for file in files {
                let text = std::fs::read_to_string(&file).unwrap();
                let name = file
                    .strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                if text.contains("crate::master") {
                    offenders.push(name);
                }
            }
        }
        assert!(
            offenders.is_empty(),
            "these use crate::master: {offenders:?}"
        );
    }
}
