//! gunicorn's process and development settings end to end: `-D/--daemon`
//! (with `--pid`), `--capture-output`, `--reload`, `-n/--name` and
//! `--reuse-port`. Each waits on the server answering or on a file's
//! content, never on a sleep.

use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::harness::{
    command, free_port, http_get, metric, proc_state, wait_until, TestServer, DEADLINE,
};

/// `/` answers the module's VERSION; `/print` print()s a marker first.
fn app_source(version: &str) -> String {
    format!(
        r#"
VERSION = "{version}"

def app(environ, start_response):
    if environ["PATH_INFO"] == "/print":
        print("printed-by-the-app")
    body = VERSION.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"#
    )
}

/// A server started on a fixed port (its log may not be on stderr), stopped
/// on drop even when an assertion fails first.
struct Server {
    child: Child,
    addr: String,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut all = vec!["-b", &addr];
        all.extend_from_slice(args);
        let child = command(&all).stderr(Stdio::null()).spawn().unwrap();
        let server = Server { child, addr };
        server.wait_for_body(|_| true);
        server
    }

    /// Waits until `/` answers 200 with a body `accept` takes; returns it.
    fn wait_for_body(&self, accept: impl Fn(&str) -> bool) -> String {
        wait_until("the server to answer", DEADLINE, || {
            match http_get(&self.addr, "/") {
                Ok(resp) if resp.status == 200 && accept(&resp.text()) => Ok(resp.text()),
                other => Err(format!("{:?}", other.map(|r| (r.status, r.text())))),
            }
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let start = std::time::Instant::now();
        while start.elapsed() < DEADLINE {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_gone(pid: u32) -> bool {
    // Reparented to init (or a subreaper), it may linger as a zombie.
    proc_state(format!("/proc/{pid}/stat")).is_none_or(|state| state == 'Z')
}

/// The title a process shows in `ps -o args`: its cmdline up to the first NUL.
/// A daemon, sent TERM when dropped: stopped at the end even if an
/// assertion fails first.
struct Term(u32);

impl Drop for Term {
    fn drop(&mut self) {
        if !is_gone(self.0) {
            let _ = Command::new("kill")
                .args(["-TERM", &self.0.to_string()])
                .status();
        }
    }
}

/// Waits for `launcher` (`ferrocorn --daemon`) to exit 0 and for the
/// daemon's pid in `pidfile`.
fn launched_daemon(launcher: &mut Child, pidfile: &Path) -> Term {
    let status = wait_until("the launcher to exit", DEADLINE, || {
        launcher
            .try_wait()
            .ok()
            .flatten()
            .ok_or("running".to_string())
    });
    assert_eq!(status.code(), Some(0));
    let pid: u32 = wait_until("the pid file", DEADLINE, || {
        let text = std::fs::read_to_string(pidfile).unwrap_or_default();
        text.trim().parse().map_err(|_| format!("{text:?}"))
    });
    Term(pid)
}

fn title(pid: u32) -> String {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let first = cmdline.split(|&b| b == 0).next().unwrap_or_default();
    String::from_utf8_lossy(first).into_owned()
}

#[test]
fn daemon_detaches_writes_its_own_pid_and_stops_on_term() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("daemon_app.py"), app_source("v1")).unwrap();
    let pidfile = dir.path().join("server.pid");
    let log = dir.path().join("error.log");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut launcher = command(&[
        "-D",
        "-b",
        &addr,
        "--pid",
        pidfile.to_str().unwrap(),
        "--error-logfile",
        log.to_str().unwrap(),
        "--pythonpath",
        dir.path().to_str().unwrap(),
        "daemon_app:app",
    ])
    .spawn()
    .unwrap();
    let launcher_pid = launcher.id();
    let daemon = launched_daemon(&mut launcher, &pidfile);
    let pid = daemon.0;
    assert_ne!(pid, launcher_pid);
    assert!(!is_gone(pid), "the daemon {pid} is not running");
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until("the daemon to serve", DEADLINE, || {
        match http_get(&addr, "/") {
            Ok(resp) if resp.status == 200 => Ok(()),
            other => Err(format!("{:?}\n{}", other.map(|r| r.status), read_log())),
        }
    });
    // A new session: the daemon leads none (the second fork), so no terminal can come back.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let (session, own_pid) = (fields[3], pid.to_string());
    assert_ne!(session, own_pid, "the daemon is a session leader");
    let stdin = std::fs::read_link(format!("/proc/{pid}/fd/0")).unwrap();
    assert_eq!(stdin, Path::new("/dev/null"));
    let stdout = std::fs::read_link(format!("/proc/{pid}/fd/1")).unwrap();
    assert_eq!(stdout, Path::new("/dev/null"));

    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    wait_until("the daemon to exit", DEADLINE, || {
        if is_gone(pid) {
            Ok(())
        } else {
            Err(format!("{pid} still runs"))
        }
    });
    drop(daemon);
    assert!(!pidfile.exists(), "pid file left behind");
}

#[test]
fn capture_output_sends_the_apps_print_to_the_error_log_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("print_app.py"), app_source("v1")).unwrap();
    let log = dir.path().join("error.log");
    let server = Server::start(&[
        "--capture-output",
        "--error-logfile",
        log.to_str().unwrap(),
        "--pythonpath",
        dir.path().to_str().unwrap(),
        "print_app:app",
    ]);
    assert_eq!(http_get(&server.addr, "/print").unwrap().status, 200);
    wait_until("the print in the error log", DEADLINE, || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.lines().any(|line| line == "printed-by-the-app") {
            Ok(())
        } else {
            Err(text)
        }
    });
}

#[test]
fn reload_restarts_a_worker_on_fresh_code_when_the_app_file_changes() {
    let dir = tempfile::tempdir().unwrap();
    let module = dir.path().join("reload_app.py");
    std::fs::write(&module, app_source("v1")).unwrap();
    let metrics = format!("127.0.0.1:{}", free_port());
    let server = Server::start(&[
        "--reload",
        "--metrics-bind",
        &metrics,
        "--pythonpath",
        dir.path().to_str().unwrap(),
        "reload_app:app",
    ]);
    assert_eq!(server.wait_for_body(|_| true), "v1");
    // Another length too, so a .pyc written in the same second cannot pass for fresh.
    std::fs::write(&module, app_source("version-two")).unwrap();
    server.wait_for_body(|body| body == "version-two");
    // gunicorn's reloader serves a SyntaxError as 500 and waits for the fix.
    std::fs::write(&module, "def app(:\n").unwrap();
    wait_until("the SyntaxError served", DEADLINE, || {
        match http_get(&server.addr, "/") {
            Ok(resp) if resp.status == 500 && resp.text().contains("SyntaxError") => Ok(()),
            other => Err(format!("{:?}", other.map(|r| (r.status, r.text())))),
        }
    });
    std::fs::write(&module, app_source("the third")).unwrap();
    server.wait_for_body(|body| body == "the third");
    // Replaced as a reload, not as a crash.
    let series = |reason: &str| format!(r#"ferrocorn_worker_restarts_total{{reason="{reason}"}}"#);
    crate::harness::wait_for_metric(&metrics, &series("reload"), 2.0);
    assert_eq!(metric(&metrics, &series("crash")), Some(0.0));
}

#[test]
fn name_sets_the_titles_of_master_fork_server_and_workers_and_keeps_their_comm() {
    let server = TestServer::start(&["-n", "shop", "examples.wsgi_hello:app"]);
    assert_eq!(title(server.pid()), "ferrocorn: master [shop]");
    let workers = server.worker_pids();
    assert!(!workers.is_empty());
    for pid in workers {
        assert_eq!(title(pid), "ferrocorn: worker [shop]");
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
        assert_eq!(comm.trim(), "fc-worker");
    }
    if let Some(pid) = server.fork_server_pid() {
        assert_eq!(title(pid), "ferrocorn: forkserver [shop]");
    }
    drop(server);
    // gunicorn's default_proc_name: the app spec.
    let server = TestServer::start(&["examples.wsgi_hello:app"]);
    assert_eq!(
        title(server.pid()),
        "ferrocorn: master [examples.wsgi_hello:app]"
    );
}

#[test]
fn reuse_port_lets_another_socket_bind_the_servers_port() {
    let server = TestServer::start_binding(&["--reuse-port", "examples.wsgi_hello:app"]);
    let addr: std::net::SocketAddr = server.addr.parse().unwrap();
    let other = tokio::net::TcpSocket::new_v4().unwrap();
    other.set_reuseport(true).unwrap();
    other.bind(addr).expect("SO_REUSEPORT shares the port");
    assert_eq!(server.get("/").status, 200);
    drop(server);
    let server = TestServer::start(&["examples.wsgi_hello:app"]);
    let addr: std::net::SocketAddr = server.addr.parse().unwrap();
    let other = tokio::net::TcpSocket::new_v4().unwrap();
    other.set_reuseport(true).unwrap();
    assert!(
        other.bind(addr).is_err(),
        "the port is shared without --reuse-port"
    );
}

#[test]
fn a_new_name_applies_on_hup_to_the_master_and_the_new_workers() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ferrocorn.toml");
    std::fs::write(&config, "proc_name = \"before\"\n").unwrap();
    let server = TestServer::start(&["-c", config.to_str().unwrap(), "examples.wsgi_hello:app"]);
    assert_eq!(title(server.pid()), "ferrocorn: master [before]");
    std::fs::write(&config, "proc_name = \"after\"\n").unwrap();
    server.signal("HUP");
    wait_until("the titles to follow", DEADLINE, || {
        let workers: Vec<String> = server.worker_pids().into_iter().map(title).collect();
        let master = title(server.pid());
        let all_after =
            !workers.is_empty() && workers.iter().all(|t| t == "ferrocorn: worker [after]");
        if master == "ferrocorn: master [after]" && all_after {
            Ok(())
        } else {
            Err(format!("{master:?} {workers:?}"))
        }
    });
}

/// A command line shorter than the title: the title runs on over the
/// environment strings (moved out first), as setproctitle's does, and the
/// workers still get the master's environment.
#[test]
fn a_title_longer_than_the_command_line_is_shown_whole() {
    use std::os::unix::process::CommandExt;
    let addr = format!("127.0.0.1:{}", free_port());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferrocorn"));
    cmd.arg0("fc")
        .arg("examples.wsgi_hello:app")
        .current_dir(crate::harness::root())
        .env("FC_TEST_MARKER", "kept")
        .env_remove("VIRTUAL_ENV")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for (key, _) in std::env::vars() {
        if key.starts_with("FERROCORN_") && key != "FERROCORN_TEST_PYTHON" {
            cmd.env_remove(key);
        }
    }
    cmd.env("FERROCORN_PYTHON", crate::harness::python())
        .env("FERROCORN_BIND", &addr);
    let server = Server {
        child: cmd.spawn().unwrap(),
        addr,
    };
    server.wait_for_body(|_| true);
    let master = server.child.id();
    assert_eq!(title(master), "ferrocorn: master [examples.wsgi_hello:app]");
    let workers: Vec<u32> = crate::harness::children_of(master)
        .into_iter()
        .filter(|&pid| !crate::harness::is_fork_server(pid))
        .collect();
    assert!(!workers.is_empty());
    for pid in workers {
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        assert!(
            environ
                .split(|&b| b == 0)
                .any(|var| var == b"FC_TEST_MARKER=kept"),
            "worker {pid} lost the master's environment"
        );
    }
}

/// `-D -R`: stdin still becomes /dev/null, but a stderr that is not a
/// terminal (here a file, as `2>file` makes it) is kept, error log and all.
#[test]
fn daemon_with_stdio_inheritance_keeps_a_redirected_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("server.pid");
    let stderr_file = dir.path().join("stderr.txt");
    let addr = format!("127.0.0.1:{}", free_port());
    let mut launcher = command(&[
        "-D",
        "-R",
        "-b",
        &addr,
        "--pid",
        pidfile.to_str().unwrap(),
        "examples.wsgi_hello:app",
    ])
    .stderr(std::fs::File::create(&stderr_file).unwrap())
    .spawn()
    .unwrap();
    let daemon = launched_daemon(&mut launcher, &pidfile);
    let pid = daemon.0;
    wait_until("the daemon to serve", DEADLINE, || {
        match http_get(&addr, "/") {
            Ok(resp) if resp.status == 200 => Ok(()),
            other => Err(format!("{:?}", other.map(|r| r.status))),
        }
    });
    let link = |fd: u32| std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap();
    assert_eq!(link(0), Path::new("/dev/null"));
    assert_eq!(link(2), stderr_file);
    let text = std::fs::read_to_string(&stderr_file).unwrap();
    assert!(
        text.contains(&format!("[{pid}]")),
        "the daemon's log is not in the file:\n{text}"
    );
    drop(daemon);
    wait_until("the daemon to exit", DEADLINE, || {
        if is_gone(pid) {
            Ok(())
        } else {
            Err(format!("{pid} still runs"))
        }
    });
}
