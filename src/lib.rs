//! ferrocorn: a gunicorn-style WSGI server. A Rust master owns the sockets,
//! speaks HTTP and balances requests over pre-forked Python workers.
//!
//! Module map:
//! - [`cli`]: the command line, built from the settings table
//! - [`config`]: the settings table, layers (defaults < TOML < env < CLI), validation, rendering
//! - [`master`]: the event loop, the arbiter (worker lifecycle), policies, signals
//! - [`forkserver`]: the Python fork server that forks workers from a loaded interpreter, and its fallback
//! - [`worker`]: spawning a Python worker, its boot handshake, its states, the embedded program
//! - [`dispatch`]: idle lanes, least-loaded pick, the bounded wait queue
//! - [`http`]: listeners, hyper connections, the request service, the trip to a worker, status mapping
//! - [`protocol`]: master <-> worker frames, handshake, environ encoding, lane sockets
//! - [`logging`]: error log and access log
//! - [`metrics`]: Prometheus metrics (every name defined once) and the /metrics, /healthz, /readyz endpoint
//! - [`sweep`]: tuning experiments: grid, load generator, server sampling, reports
//! - [`exit`]: process exit codes

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
pub mod protocol;
pub mod sweep;
pub mod worker;
