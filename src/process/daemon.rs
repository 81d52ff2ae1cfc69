//! `--daemon`: detach from the terminal as gunicorn's `util.daemonize` does:
//! fork (the launcher exits 0), `setsid`, fork again (never a session
//! leader, so no controlling terminal comes back), umask 022, stdin to
//! /dev/null and, unless `enable_stdio_inheritance`, stdout and stderr too
//! (with it, only those that are a terminal). No `chdir("/")`, as in
//! gunicorn: relative paths in the settings keep their meaning.
//!
//! Must run while the process has one thread: before the tokio runtime,
//! the logging writers and any worker start (`main.rs` calls it first).

use std::io;

use nix::libc;

/// Detaches this process; returns in the daemon (the grandchild), and the
/// two processes above it exit 0 at once.
///
/// # Errors
/// A failed fork or setsid, or /dev/null that cannot be opened.
pub fn daemonize(inherit_stdio: bool) -> io::Result<()> {
    detach_once()?;
    // SAFETY: plain syscall; we are the first child, not a group leader.
    if unsafe { libc::setsid() } < 0 {
        return Err(io::Error::last_os_error());
    }
    detach_once()?;
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(0o022) };
    redirect_stdio(inherit_stdio)
}

/// Forks; the parent exits 0 at once without running destructors (as
/// gunicorn's `os._exit(0)`), the child returns.
fn detach_once() -> io::Result<()> {
    // SAFETY: the process has one thread (the caller's contract), so the
    // child may run anything; the parent only calls _exit.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(()),
        // SAFETY: _exit is always safe to call.
        _ => unsafe { libc::_exit(0) },
    }
}

/// Which of stdout (1) and stderr (2) go to /dev/null: all of them, or with
/// inheritance only those connected to a terminal (so `ferrocorn -D -R >
/// out.log 2>&1` keeps writing to out.log).
pub fn to_dev_null(inherit_stdio: bool, is_tty: impl Fn(i32) -> bool) -> Vec<i32> {
    [1, 2]
        .into_iter()
        .filter(|&fd| !inherit_stdio || is_tty(fd))
        .collect()
}

fn redirect_stdio(inherit_stdio: bool) -> io::Result<()> {
    // SAFETY: a valid NUL-terminated path; plain syscalls on our own fds.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null < 0 {
            return Err(io::Error::last_os_error());
        }
        let targets = to_dev_null(inherit_stdio, |fd| libc::isatty(fd) == 1);
        for fd in std::iter::once(0).chain(targets) {
            if fd != null && libc::dup2(null, fd) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        if null > 2 {
            libc::close(null);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_inheritance_stdout_and_stderr_go_to_dev_null() {
        assert_eq!(to_dev_null(false, |_| false), [1, 2]);
        assert_eq!(to_dev_null(false, |_| true), [1, 2]);
    }

    #[test]
    fn with_inheritance_only_a_terminal_is_replaced() {
        assert_eq!(to_dev_null(true, |_| false), Vec::<i32>::new());
        assert_eq!(to_dev_null(true, |fd| fd == 2), [2]);
    }
}
