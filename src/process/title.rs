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
//! cmdline from, the argument area between `arg_start` and `arg_end` of
//! /proc/self/stat, padded with NULs. It never grows that area: a title
//! longer than the command line it replaces is cut (setproctitle moves
//! the environment to make room; not worth the risk here). Invariant: the
//! process has read its arguments (`std::env::args_os`) before the title
//! is set; the config reload re-parses the copy kept in `Loaded::args`.

use std::io;

/// The title of a process in `role` (`master`, `forkserver`, `worker`).
pub fn title(role: &str, name: &str) -> String {
    format!("ferrocorn: {role} [{name}]")
}

/// `arg_start` and `arg_end` (fields 48 and 49) of a /proc/PID/stat line.
pub fn arg_area(stat: &str) -> Option<(usize, usize)> {
    // comm (field 2) may hold spaces and parentheses: count after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3.
    let start = fields.get(48 - 3)?.parse().ok()?;
    let end = fields.get(49 - 3)?.parse().ok()?;
    (end > start).then_some((start, end))
}

/// The bytes that replace an argument area of `len` bytes: the title, cut
/// to leave a final NUL, then NULs.
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
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let (start, end) =
        arg_area(&stat).ok_or_else(|| io::Error::other("no argument area in /proc/self/stat"))?;
    let bytes = area_bytes(title, end - start);
    // SAFETY: [arg_start, arg_end) is this process's argument area, mapped
    // and writable for its whole life (it sits at the top of the initial
    // stack); nothing reads it any more (the module doc's invariant).
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), start as *mut u8, bytes.len()) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_read_as_gunicorns_with_our_name() {
        assert_eq!(title("master", "app:app"), "ferrocorn: master [app:app]");
        assert_eq!(title("worker", "shop"), "ferrocorn: worker [shop]");
    }

    #[test]
    fn the_argument_area_is_found_after_a_comm_with_spaces_and_parens() {
        let mut fields: Vec<String> = (3..=52).map(|n| n.to_string()).collect();
        fields[48 - 3] = "1000".into();
        fields[49 - 3] = "1040".into();
        let stat = format!("42 (a) b (c)) {}", fields.join(" "));
        assert_eq!(arg_area(&stat), Some((1000, 1040)));
        assert_eq!(arg_area("42 (x) S 1"), None);
        let here = std::fs::read_to_string("/proc/self/stat").expect("linux");
        assert!(arg_area(&here).is_some(), "{here}");
    }

    #[test]
    fn a_title_is_padded_with_nuls_or_cut_to_leave_one() {
        assert_eq!(area_bytes("abc", 6), b"abc\0\0\0");
        assert_eq!(area_bytes("abcdef", 4), b"abc\0");
        assert_eq!(area_bytes("abc", 0), b"");
    }
}
