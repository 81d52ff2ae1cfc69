//! Starting workers, for the shell: a launcher (the fork server of a
//! config) per spawn spec, and what a launch that failed means to the
//! arbiter. The shell decides nothing; these translate.

use std::time::Duration;

use tracing::error;

use super::event::{Event, ExitStatus};
use crate::forkserver::{LaunchError, LaunchSpec, Launcher};
use crate::logging::Logging;
use crate::worker::reap::Reaper;
use crate::worker::spawn::SpawnSpec;
use crate::worker::WorkerId;

/// The events for a worker that never started: an app that cannot load
/// is a boot failure the arbiter knows (stop, or call a reload off), an
/// interpreter that cannot run stops the master, and a fork that failed
/// is a worker that died while booting (it is backed off and replaced).
pub(super) fn launch_failed(worker: WorkerId, err: LaunchError) -> Vec<Event> {
    // The worker never ran: exit code 3 as for a worker that could not boot.
    let never_ran = Event::Exited {
        worker,
        status: ExitStatus::Code(crate::exit::ExitCode::WorkerBoot as i32),
    };
    match err {
        LaunchError::AppLoad(text) => vec![
            Event::BootFailed {
                worker,
                app_load: true,
                message: format!("app failed to load: {text}"),
            },
            never_ran,
        ],
        LaunchError::Exec(error) => vec![Event::SpawnFailed { worker, error }],
        // The hooks config: a boot failure that is not the app's (exit 3).
        LaunchError::Config(message) => vec![
            Event::BootFailed {
                worker,
                app_load: false,
                message,
            },
            never_ran,
        ],
        LaunchError::Failed(why) => {
            error!(worker = %worker, "{why}");
            vec![never_ran]
        }
    }
}

pub(super) fn start_launcher(
    spawn: &SpawnSpec,
    boot_timeout: Duration,
    logging: &Logging,
    reaper: &Reaper,
) -> Launcher {
    let log_file = logging.worker_log_file().unwrap_or_else(|err| {
        error!(error = %err, "cannot open the error log for the fork server; it writes to the master's stderr");
        None
    });
    Launcher::start(
        LaunchSpec {
            spawn: spawn.clone(),
            boot_timeout,
            log_file,
        },
        reaper.clone(),
    )
}
