//! The process exit codes, defined once (gunicorn's 3 and 4 kept).

/// Why the process exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// Clean stop.
    Clean = 0,
    /// Fatal error while running.
    Runtime = 1,
    /// Bad usage or configuration.
    Usage = 2,
    /// A worker could not boot (gunicorn's WORKER_BOOT_ERROR).
    WorkerBoot = 3,
    /// The app could not be loaded (gunicorn's APP_LOAD_ERROR).
    AppLoad = 4,
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code as u8)
    }
}
