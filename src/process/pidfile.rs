//! `--pid FILE`, as gunicorn's `Pidfile`: written at start, renamed when
//! a binary upgrade's new master is promoted, removed at exit only while it
//! still holds this process's pid (so an old master that exits after its
//! successor took the name leaves the successor's file alone).
//!
//! A new master started by USR2 (gunicorn 19.6 and later) writes
//! `FILE.2` while its parent, the old master, keeps `FILE`; once the old
//! master is gone the new one renames `FILE.2` to `FILE`.

use std::path::{Path, PathBuf};

/// The pid file a USR2 child master writes while its parent runs: `FILE.2`.
pub fn upgrade_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".2");
    PathBuf::from(name)
}

/// A written pid file.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    pid: u32,
}

impl PidFile {
    /// Writes this process's pid to `path` (through a temporary file and a
    /// rename, so a reader never sees it half written).
    ///
    /// # Errors
    /// The file cannot be written, with its path and the reason.
    pub fn create(path: &Path) -> Result<PidFile, String> {
        let pid = std::process::id();
        write(path, pid).map_err(|e| format!("cannot write pid file {}: {e}", path.display()))?;
        Ok(PidFile {
            path: path.to_path_buf(),
            pid,
        })
    }

    /// Where it is now.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves it to `path`, as gunicorn's `Pidfile.rename`: the old name is
    /// removed (if it still holds our pid) and the new one written.
    ///
    /// # Errors
    /// The new file cannot be written; the old name is gone by then.
    pub fn rename(&mut self, path: &Path) -> Result<(), String> {
        self.unlink();
        write(path, self.pid)
            .map_err(|e| format!("cannot write pid file {}: {e}", path.display()))?;
        self.path = path.to_path_buf();
        Ok(())
    }

    fn unlink(&self) {
        let ours = std::fs::read_to_string(&self.path)
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok())
            == Some(self.pid);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn write(path: &Path, pid: u32) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_os_string();
    tmp.push(format!(".{pid}.tmp"));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, format!("{pid}\n"))?;
    // -rw-r--r--, as gunicorn's, whatever the umask.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644))?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

impl Drop for PidFile {
    fn drop(&mut self) {
        self.unlink();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upgrade_name_appends_dot_two_as_gunicorn() {
        assert_eq!(
            upgrade_path(Path::new("/run/app.pid")),
            PathBuf::from("/run/app.pid.2")
        );
    }

    #[test]
    fn written_renamed_and_removed_only_while_it_holds_our_pid() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("app.pid");
        let mut file = PidFile::create(&upgrade_path(&first)).unwrap();
        let me = format!("{}\n", std::process::id());
        assert_eq!(std::fs::read_to_string(upgrade_path(&first)).unwrap(), me);
        file.rename(&first).unwrap();
        assert!(!upgrade_path(&first).exists());
        assert_eq!(std::fs::read_to_string(&first).unwrap(), me);
        // Another master took the name: its file stays.
        std::fs::write(&first, "1\n").unwrap();
        drop(file);
        assert_eq!(std::fs::read_to_string(&first).unwrap(), "1\n");
    }
}
