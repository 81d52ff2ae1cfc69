//! What the master hands to `--user` and `--group` besides the workers
//! themselves: gunicorn chowns its error and access log files to them when
//! it opens them ("make sure the user can reopen the file"), ignoring a
//! file it cannot chown (`/dev/null`). The Unix sockets get theirs in
//! `http/listener.rs`; the pid file stays the master's, as gunicorn's does.

use crate::config::Settings;

/// Chowns the error and access log files (not `-`, a standard stream) to
/// `user` and `group`, best effort; nothing when neither is set.
pub fn give_log_files(settings: &Settings) {
    let (uid, gid) = settings.owner();
    if uid.is_none() && gid.is_none() {
        return;
    }
    let files = [
        Some(&settings.error_logfile),
        settings.access_logfile.as_ref(),
    ];
    for file in files.into_iter().flatten().filter(|file| *file != "-") {
        if let Err(err) = nix::unistd::chown(file.as_str(), uid, gid) {
            tracing::debug!(file, %err, "cannot chown the log file to --user/--group");
        }
    }
}
