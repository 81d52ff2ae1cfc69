//! USR2's binary upgrade, gunicorn's dance (issue 12, item 4): USR2 starts
//! a new master from the program's path on the same sockets (pid file
//! `FILE.2`), WINCH stops the old master's workers, TERM ends the old
//! master and the new one takes `FILE`; under a steady load of keep-alive
//! and fresh-connection requests, none fails. And a new master that cannot
//! start leaves the old one serving, ready for the next USR2.
//!
//! The program runs from a copy in a temporary directory, so the test can
//! replace it there as an upgrade does. The new master is a child of the
//! old one, then an orphan: the tests find it in /proc and stop it by pid.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::harness::{self, children_of, is_fork_server, wait_until, TestServer, DEADLINE};

/// [`harness::command`], running the program at `program` instead.
fn command_at(program: &Path) -> Command {
    let template = harness::command(&[]);
    let mut cmd = Command::new(program);
    cmd.args(template.get_args())
        .current_dir(harness::root())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    for (key, value) in template.get_envs() {
        match value {
            Some(value) => cmd.env(key, value),
            None => cmd.env_remove(key),
        };
    }
    cmd
}

/// Puts the real binary at `path`, as a deploy does: a new file renamed
/// over the old name (the running master keeps its unlinked one).
fn install_binary(path: &Path) {
    let tmp = path.with_extension("new");
    std::fs::copy(env!("CARGO_BIN_EXE_ferrocorn"), &tmp).expect("copy the binary");
    std::fs::rename(&tmp, path).expect("install the binary");
}

fn install_script(path: &Path, script: &str) {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, script).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn read_pid(path: &Path) -> Result<u32, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.trim()
        .parse()
        .map_err(|_| format!("{}: {text:?}", path.display()))
}

fn pid_file_2(pidfile: &Path) -> PathBuf {
    let mut name = pidfile.as_os_str().to_os_string();
    name.push(".2");
    PathBuf::from(name)
}

/// Whether `pid` runs (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn workers_of(master: u32) -> Vec<u32> {
    children_of(master)
        .into_iter()
        .filter(|&pid| !is_fork_server(pid) && alive(pid))
        .collect()
}

/// TERM, then KILL, to a master a test started (through its parent) and
/// is not the parent of: on drop, so a failing test cleans up too.
pub(crate) struct Stray(pub(crate) u32);

impl Drop for Stray {
    fn drop(&mut self) {
        if !alive(self.0) {
            return;
        }
        let pid = self.0.to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let gone = (0..250).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            !alive(self.0)
        });
        if !gone {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
    }
}

/// Which worker answered `GET /pid` on a fresh connection.
fn answering_pid(addr: &str) -> Result<u32, String> {
    let resp = harness::http_get(addr, "/pid")?;
    if resp.status != 200 {
        return Err(format!("status {}", resp.status));
    }
    resp.text().trim().parse().map_err(|_| resp.text())
}

/// The load's tallies.
#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    failed: AtomicU64,
    /// A kept-alive connection the server closed between requests: the
    /// request is sent again on a new connection, as HTTP clients do for
    /// idempotent requests (RFC 9112, 9.3.1). Not a failure.
    retried: AtomicU64,
    errors: std::sync::Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, why: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut errors = self.errors.lock().unwrap();
        if errors.len() < 10 {
            errors.push(why);
        }
    }
}

/// Reads one response with a Content-Length body; `Ok(None)` when the
/// server closed the connection before sending a byte of it.
fn read_response(stream: &mut TcpStream) -> Result<Option<(u16, bool)>, String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let status: u16 = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("bad head {head:?}"))?;
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| format!("no content-length in {head:?}"))?;
            let close = head.contains("connection: close");
            while buf.len() < end + 4 + len {
                let n = stream.read(&mut chunk).map_err(|e| e.to_string())?;
                if n == 0 {
                    return Err("closed inside a body".into());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Ok(Some((status, close)));
        }
        match stream.read(&mut chunk) {
            Ok(0) if buf.is_empty() => return Ok(None),
            Err(e) if buf.is_empty() && e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Ok(None)
            }
            Ok(0) => return Err("closed inside a head".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(e.to_string()),
        }
    }
}

const KEEP_ALIVE_GET: &[u8] = b"GET /pid HTTP/1.1\r\nHost: t\r\n\r\n";
const CLOSE_GET: &[u8] = b"GET /pid HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";

fn connect(addr: &str) -> Result<TcpStream, String> {
    let stream = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    Ok(stream)
}

/// Requests on one kept-alive connection after another until `stop`.
fn keep_alive_load(addr: String, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    let mut conn: Option<TcpStream> = None;
    while !stop.load(Ordering::Relaxed) {
        let reused = conn.is_some();
        let mut stream = match conn.take().map_or_else(|| connect(&addr), Ok) {
            Ok(stream) => stream,
            Err(e) => {
                tally.fail(format!("connect: {e}"));
                continue;
            }
        };
        let sent = stream.write_all(KEEP_ALIVE_GET).map_err(|e| e.to_string());
        match sent.and_then(|()| read_response(&mut stream)) {
            Ok(Some((200, close))) => {
                tally.ok.fetch_add(1, Ordering::Relaxed);
                if !close {
                    conn = Some(stream);
                }
            }
            Ok(Some((status, _))) => tally.fail(format!("status {status}")),
            Ok(None) if reused => {
                tally.retried.fetch_add(1, Ordering::Relaxed);
            }
            Ok(None) => tally.fail("a fresh connection closed unanswered".into()),
            Err(e) if reused && e.contains("Broken pipe") => {
                tally.retried.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tally.fail(e),
        }
    }
}

/// One fresh connection per request until `stop`.
fn fresh_load(addr: String, stop: Arc<AtomicBool>, tally: Arc<Tally>) {
    while !stop.load(Ordering::Relaxed) {
        let result = connect(&addr).and_then(|mut stream| {
            stream.write_all(CLOSE_GET).map_err(|e| e.to_string())?;
            read_response(&mut stream)
        });
        match result {
            Ok(Some((200, _))) => {
                tally.ok.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Some((status, _))) => tally.fail(format!("status {status}")),
            Ok(None) => tally.fail("closed unanswered".into()),
            Err(e) => tally.fail(e),
        }
        // Bounded load: a few hundred requests a second at most.
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn usr2_winch_term_upgrades_in_place_with_no_failed_request() {
    let dir = tempfile::tempdir().unwrap();
    let program = dir.path().join("ferrocorn");
    install_binary(&program);
    let pidfile = dir.path().join("app.pid");
    let pidfile_arg = pidfile.to_str().unwrap().to_string();
    // The new master takes the metrics socket over too (the old one holds the address).
    let metrics_addr = format!("127.0.0.1:{}", harness::free_port());
    let mut old = TestServer::start_with(
        command_at(&program),
        &[
            "--pid",
            &pidfile_arg,
            "--metrics-bind",
            &metrics_addr,
            "-w",
            "2",
            "examples.flask_app:app",
        ],
    );
    let old_pid = old.pid();
    assert_eq!(read_pid(&pidfile), Ok(old_pid));
    wait_until("the old master's two workers", DEADLINE, || {
        match old.worker_pids().len() {
            2 => Ok(()),
            n => Err(format!("{n} workers")),
        }
    });

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let load: Vec<_> = (0..4)
        .map(|i| {
            let (addr, stop, tally) = (old.addr.clone(), stop.clone(), tally.clone());
            std::thread::spawn(move || {
                if i % 2 == 0 {
                    keep_alive_load(addr, stop, tally)
                } else {
                    fresh_load(addr, stop, tally)
                }
            })
        })
        .collect();
    wait_until("the load to be served", DEADLINE, || {
        match tally.ok.load(Ordering::Relaxed) {
            n if n >= 20 => Ok(()),
            n => Err(format!("{n} served")),
        }
    });

    // A new release at the same path: USR2 runs it, not the old inode.
    install_binary(&program);
    old.signal("USR2");
    let new_pid = wait_until("the new master's pid in FILE.2", DEADLINE, || {
        let pid = read_pid(&pid_file_2(&pidfile))?;
        match parent_of(pid) {
            Some(parent) if parent == old_pid => Ok(pid),
            other => Err(format!("pid {pid}, parent {other:?}")),
        }
    });
    let _cleanup = Stray(new_pid);
    assert_eq!(read_pid(&pidfile), Ok(old_pid), "the old master keeps FILE");
    wait_until("a worker of the new master to answer", DEADLINE, || {
        let pid = answering_pid(&old.addr)?;
        match parent_of(pid) {
            Some(parent) if parent == new_pid => Ok(()),
            other => Err(format!("worker {pid} of {other:?}")),
        }
    });

    old.signal("WINCH");
    wait_until("the old master's workers to be gone", DEADLINE, || {
        // The new master is the old one's child too.
        match workers_of(old_pid).as_slice() {
            [pid] if *pid == new_pid => Ok(()),
            left => Err(format!("{left:?}")),
        }
    });
    assert!(alive(old_pid), "WINCH keeps the old master");
    let served = tally.ok.load(Ordering::Relaxed);
    wait_until(
        "the new master alone to serve the load",
        DEADLINE,
        || match tally.ok.load(Ordering::Relaxed) {
            n if n >= served + 20 => Ok(()),
            n => Err(format!("{} more served", n - served)),
        },
    );

    old.signal("TERM");
    assert_eq!(old.wait_exit(DEADLINE), Some(0));
    wait_until("the promoted master to take FILE", DEADLINE, || {
        match (read_pid(&pidfile), pid_file_2(&pidfile).exists()) {
            (Ok(pid), false) if pid == new_pid => Ok(()),
            seen => Err(format!("{seen:?}")),
        }
    });
    let served = tally.ok.load(Ordering::Relaxed);
    wait_until(
        "the load to go on after the old master left",
        DEADLINE,
        || match tally.ok.load(Ordering::Relaxed) {
            n if n >= served + 20 => Ok(()),
            n => Err(format!("{} more served", n - served)),
        },
    );
    let healthz = harness::http_get(&metrics_addr, "/healthz").map(|r| r.status);
    assert_eq!(healthz, Ok(200), "the promoted master serves metrics");
    stop.store(true, Ordering::Relaxed);
    for thread in load {
        thread.join().unwrap();
    }
    let (ok, failed, retried) = (
        tally.ok.load(Ordering::Relaxed),
        tally.failed.load(Ordering::Relaxed),
        tally.retried.load(Ordering::Relaxed),
    );
    eprintln!(
        "upgrade under load: {ok} served, {failed} failed, {retried} retried on a new connection"
    );
    assert_eq!(
        failed,
        0,
        "{failed} failed requests ({ok} served, {retried} retried): {:?}\nstderr:\n{}",
        tally.errors.lock().unwrap(),
        old.stderr()
    );
    assert!(alive(new_pid), "the new master serves on");
}

#[test]
fn a_new_master_that_cannot_start_leaves_the_old_one_serving() {
    let dir = tempfile::tempdir().unwrap();
    let program = dir.path().join("ferrocorn");
    install_binary(&program);
    let pidfile = dir.path().join("app.pid");
    let pidfile_arg = pidfile.to_str().unwrap().to_string();
    // gunicorn's pre_exec hook, before each new master starts.
    let pre_exec = dir.path().join("pre_exec");
    let config = dir.path().join("hooks.conf.py");
    std::fs::write(
        &config,
        format!(
            "import os\ndef pre_exec(server):\n    with open({:?}, 'a') as f:\n        f.write('%d\\n' % os.getpid())\n",
            pre_exec.display().to_string()
        ),
    )
    .unwrap();
    let config_arg = config.to_str().unwrap().to_string();
    let server = TestServer::start_with(
        command_at(&program),
        &[
            "--pid",
            &pidfile_arg,
            "-c",
            &config_arg,
            "-w",
            "1",
            "examples.flask_app:app",
        ],
    );
    let old_pid = server.pid();
    let worker = wait_until("the worker", DEADLINE, || match server.worker_pids()[..] {
        [pid] => Ok(pid),
        ref seen => Err(format!("{seen:?}")),
    });

    // A broken release: it runs, and exits at once.
    let seen = dir.path().join("seen");
    install_script(
        &program,
        &format!(
            "#!/bin/sh\necho \"$GUNICORN_PID $GUNICORN_FD\" > '{}'\nexit 3\n",
            seen.display()
        ),
    );
    server.signal("USR2");
    let told = wait_until("the broken new master to run", DEADLINE, || {
        std::fs::read_to_string(&seen)
            .ok()
            .filter(|t| t.ends_with('\n'))
            .ok_or_else(|| "not yet".to_string())
    });
    let fork_server = server
        .fork_server_pid()
        .expect("a fork server runs the hooks");
    assert_eq!(
        std::fs::read_to_string(&pre_exec).ok(),
        Some(format!("{fork_server}\n")),
        "pre_exec ran in the fork server before the new master started"
    );
    let (parent, fds) = told.trim().split_once(' ').expect("two values");
    assert_eq!(parent, old_pid.to_string(), "GUNICORN_PID");
    assert!(
        !fds.is_empty() && fds.split(',').all(|fd| fd.parse::<u32>().is_ok()),
        "GUNICORN_FD={fds:?}"
    );
    wait_until(
        "the broken new master to be reaped",
        DEADLINE,
        || match workers_of(old_pid).as_slice() {
            [pid] if *pid == worker => Ok(()),
            seen => Err(format!("{seen:?}")),
        },
    );
    assert_eq!(read_pid(&pidfile), Ok(old_pid));
    assert!(!pid_file_2(&pidfile).exists());
    assert_eq!(
        answering_pid(&server.addr),
        Ok(worker),
        "the old worker serves on"
    );

    // The child is gone: the next USR2 is not ignored.
    install_binary(&program);
    server.signal("USR2");
    let new_pid = wait_until("a working new master", DEADLINE, || {
        let pid = read_pid(&pid_file_2(&pidfile))?;
        match (parent_of(pid), workers_of(pid).len()) {
            (Some(parent), 1) if parent == old_pid => Ok(pid),
            seen => Err(format!("pid {pid}: {seen:?}")),
        }
    });
    let _cleanup = Stray(new_pid);
    assert_eq!(answering_pid(&server.addr).map(|_| ()), Ok(()));
    assert_eq!(read_pid(&pidfile), Ok(old_pid));
}
