//! What the master hands to `--user` and `--group` besides the workers
//! themselves: gunicorn chowns its error and access log files to them when
//! it opens them ("make sure the user can reopen the file"), ignoring a
//! file it cannot chown (`/dev/null`). The Unix sockets get theirs in
//! `http/listener.rs`; the pid file stays the master's, as gunicorn's does.

use nix::unistd::{Gid, Uid};

/// Chowns the log files among `files` (`-` is a standard stream, skipped)
/// to `owner`, best effort; nothing when neither part is set.
pub fn give_log_files(files: &[&str], owner: (Option<Uid>, Option<Gid>)) {
    if owner.0.is_none() && owner.1.is_none() {
        return;
    }
    for file in files.iter().filter(|file| **file != "-") {
        if let Err(err) = nix::unistd::chown(*file, owner.0, owner.1) {
            tracing::debug!(file, %err, "cannot chown the log file to --user/--group");
        }
    }
}
