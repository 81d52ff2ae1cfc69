//! `--name`: the process title `ps -o args` and /proc/PID/cmdline show,
//! gunicorn's `master [NAME]` with our program's name in front of it, as
//! setproctitle makes gunicorn's read `gunicorn: master [NAME]`:
//! `ferrocorn: master [NAME]` here, `ferrocorn: forkserver [NAME]` and
//! `ferrocorn: worker [NAME]` in the Python processes (the worker program
//! does the same there). NAME defaults to the app spec, as gunicorn's
//! `default_proc_name`. The comm (`ps -o comm`, /proc/PID/comm) is left
//! alone: `ferrocorn`, `fc-forkserver`, `fc-worker`.
//!
//! Like setproctitle on Linux, this rewrites the memory the kernel reads
//! cmdline from: the argument area (`arg_start..arg_end` of
//! /proc/self/stat), and, as a short command line (`ferrocorn app:app`)
//! leaves little room, the environment strings right behind it, once
//! [`claim_area`] has copied every variable out of them (`setenv` gives
//! each a fresh string): the kernel reads a title past `arg_end` when the
//! area's last byte is not NUL. A title longer than both is cut. The
//! environment as /proc/PID/environ shows it is overwritten too, as with
//! setproctitle; the process's own variables (`std::env`) are intact.
//! Invariant: the process has read its arguments (`std::env::args_os`)
//! before the title is set; the config reload re-parses the copy kept in
//! `Loaded::args`. On HUP a new name rewrites the same area.

use std::io;
use std::sync::OnceLock;

/// The title of a process in `role` (`master`, `forkserver`, `worker`).
pub fn title(role: &str, name: &str) -> String {
    format!("ferrocorn: {role} [{name}]")
}

/// Field `n` (1-based, as in proc(5)) of a /proc/PID/stat line, a number.
fn stat_field(stat: &str, n: usize) -> Option<usize> {
    // comm (field 2) may hold spaces and parentheses: count after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    // `rest` starts at field 3.
    rest.split_whitespace().nth(n.checked_sub(3)?)?.parse().ok()
}

/// `arg_start` and `arg_end` (fields 48 and 49) of a /proc/PID/stat line.
pub fn arg_area(stat: &str) -> Option<(usize, usize)> {
    let (start, end) = (stat_field(stat, 48)?, stat_field(stat, 49)?);
    (end > start).then_some((start, end))
}

/// The area a title may fill: the argument area, and the environment
/// strings too when they follow it at once (`env_start`, `env_end`: fields
/// 50 and 51) and `env_moved` says no variable points into them any more.
pub fn title_area(stat: &str, env_moved: bool) -> Option<(usize, usize)> {
    let (start, end) = arg_area(stat)?;
    match (stat_field(stat, 50), stat_field(stat, 51)) {
        (Some(env_start), Some(env_end)) if env_moved && env_start == end && env_end > end => {
            Some((start, env_end))
        }
        _ => Some((start, end)),
    }
}

/// The area [`set`] writes, fixed by [`claim_area`].
static AREA: OnceLock<(usize, usize)> = OnceLock::new();

/// Makes room for a long title: copies every environment variable out of
/// the strings behind the arguments, then fixes the area [`set`] writes.
/// Call once, while the process has one thread (`setenv` is not
/// thread-safe); without it, [`set`] uses the argument area alone.
///
/// # Errors
/// /proc/self/stat cannot be read or has no argument area.
pub fn claim_area() -> io::Result<()> {
    // A variable setenv cannot take (an empty name) would stay in place.
    let vars: Vec<_> = std::env::vars_os().collect();
    let movable = vars
        .iter()
        .all(|(key, _)| !key.is_empty() && !key.as_encoded_bytes().contains(&b'='));
    if movable {
        for (key, value) in &vars {
            std::env::set_var(key, value);
        }
    }
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let area = title_area(&stat, movable)
        .ok_or_else(|| io::Error::other("no argument area in /proc/self/stat"))?;
    let _ = AREA.set(area);
    Ok(())
}

/// The bytes that replace an area of `len` bytes: the title, cut to leave
/// a final NUL, then NULs.
pub fn area_bytes(title: &str, len: usize) -> Vec<u8> {
    let mut bytes: Vec<u8> = title.bytes().take(len.saturating_sub(1)).collect();
    bytes.resize(len, 0);
    bytes
}

/// Sets this process's title (see the module doc).
///
/// # Errors
/// /proc/self/stat cannot be read or has no argument area.
pub fn set(title: &str) -> io::Result<()> {
    let (start, end) = match AREA.get() {
        Some(&area) => area,
        None => {
            let stat = std::fs::read_to_string("/proc/self/stat")?;
            arg_area(&stat)
                .ok_or_else(|| io::Error::other("no argument area in /proc/self/stat"))?
        }
    };
    let bytes = area_bytes(title, end - start);
    // SAFETY: [start, end) is this process's argument area (and, after
    // claim_area, the environment strings no variable points into any
    // more), mapped and writable for the process's whole life at the top
    // of its initial stack; nothing reads it (the module doc's invariant).
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), start as *mut u8, bytes.len()) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A /proc/PID/stat line with these argument and environment areas.
    fn stat(arg: (usize, usize), env: (usize, usize)) -> String {
        let mut fields: Vec<String> = (3..=52).map(|n| n.to_string()).collect();
        fields[48 - 3] = arg.0.to_string();
        fields[49 - 3] = arg.1.to_string();
        fields[50 - 3] = env.0.to_string();
        fields[51 - 3] = env.1.to_string();
        format!("42 (a) b (c)) {}", fields.join(" "))
    }

    #[test]
    fn titles_read_as_gunicorns_with_our_name() {
        assert_eq!(title("master", "app:app"), "ferrocorn: master [app:app]");
        assert_eq!(title("worker", "shop"), "ferrocorn: worker [shop]");
    }

    #[test]
    fn the_argument_area_is_found_after_a_comm_with_spaces_and_parens() {
        assert_eq!(
            arg_area(&stat((1000, 1040), (1040, 1400))),
            Some((1000, 1040))
        );
        assert_eq!(arg_area("42 (x) S 1"), None);
        let here = std::fs::read_to_string("/proc/self/stat").expect("linux");
        assert!(arg_area(&here).is_some(), "{here}");
    }

    #[test]
    fn the_environment_joins_the_area_only_when_moved_and_right_behind() {
        let behind = stat((1000, 1040), (1040, 1400));
        assert_eq!(title_area(&behind, true), Some((1000, 1400)));
        assert_eq!(title_area(&behind, false), Some((1000, 1040)));
        let elsewhere = stat((1000, 1040), (2000, 2400));
        assert_eq!(title_area(&elsewhere, true), Some((1000, 1040)));
    }

    #[test]
    fn a_title_is_padded_with_nuls_or_cut_to_leave_one() {
        assert_eq!(area_bytes("abc", 6), b"abc\0\0\0");
        assert_eq!(area_bytes("abcdef", 4), b"abc\0");
        assert_eq!(area_bytes("abc", 0), b"");
    }
}
