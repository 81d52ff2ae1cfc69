//! The worker program, embedded at build time so the binary is all a user
//! installs. It is written to the interpreter's stdin, and [`BOOTSTRAP`]
//! (`python -c BOOTSTRAP ...`) runs it under its own file name.

/// The source of python/ferrocorn_worker.py.
pub const WORKER_PROGRAM: &str = include_str!("../../python/ferrocorn_worker.py");

/// The file name the worker program runs under: tracebacks and stack dumps
/// name it (`File "ferrocorn_worker.py", line 650, in run`) instead of
/// `<stdin>`.
pub const PROGRAM_NAME: &str = "ferrocorn_worker.py";

/// What `python -c` runs: the program read from stdin, compiled under
/// [`PROGRAM_NAME`], run as `__main__` (and with `sys.path[0] == ""`, the
/// working directory, as `python -` had it).
pub const BOOTSTRAP: &str =
    "import sys;exec(compile(sys.stdin.read(),'ferrocorn_worker.py','exec'))";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bootstrap_names_the_program() {
        assert!(BOOTSTRAP.contains(&format!("'{PROGRAM_NAME}'")));
    }

    #[test]
    fn the_worker_exits_with_the_masters_reload_code() {
        let line = format!("\nEXIT_RELOAD = {}\n", crate::worker::EXIT_RELOAD);
        assert!(WORKER_PROGRAM.contains(&line), "{line:?}");
    }

    /// The handshake checks MAX_PAYLOAD; the BODY frame limit has no
    /// message of its own, so the two copies are compared here.
    #[test]
    fn the_worker_splits_bodies_at_the_masters_limit() {
        let limit = crate::protocol::frame::MAX_BODY_PAYLOAD / 1024;
        let line = format!("\nBODY_FRAME = {limit} * 1024 ");
        assert!(WORKER_PROGRAM.contains(&line), "{line:?}");
    }
}
