//! The worker program, embedded at build time so the binary is all a user
//! installs. It is written to the interpreter's stdin (`python - ...`).

/// The source of python/ferrocorn_worker.py.
pub const WORKER_PROGRAM: &str = include_str!("../../python/ferrocorn_worker.py");
