//! Under systemd (issue 12 item 3): sd_notify messages read from a datagram
//! socket the test binds, socket activation (LISTEN_FDS/LISTEN_PID) and
//! `-b fd://N` with a listener the test binds and passes as fd 3. Every
//! wait is a receive timeout or a deadline, never a sleep.

use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Instant;

use crate::harness::{command, command_via_sh, TestServer, DEADLINE};

const APP: &str = "examples.flask_app:app";

/// systemd's side: the messages, one datagram each.
struct Systemd(UnixDatagram);

impl Systemd {
    fn at_path(path: &std::path::Path) -> Systemd {
        Systemd::ready(UnixDatagram::bind(path).unwrap())
    }

    fn abstract_named(name: &str) -> Systemd {
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        Systemd::ready(UnixDatagram::bind_addr(&addr).unwrap())
    }

    fn ready(socket: UnixDatagram) -> Systemd {
        socket.set_read_timeout(Some(DEADLINE)).unwrap();
        Systemd(socket)
    }

    /// Receives until a message has the line `line`; returns that message.
    /// Panics with what came before it when none arrives in time.
    fn until(&self, line: &str, server: &TestServer) -> String {
        let start = Instant::now();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while start.elapsed() < DEADLINE {
            match self.0.recv(&mut buf) {
                Ok(n) => {
                    let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                    if message.lines().any(|l| l == line) {
                        return message;
                    }
                    seen.push(message);
                }
                Err(err) => seen.push(format!("<{err}>")),
            }
        }
        panic!(
            "no {line:?} from ferrocorn; got {seen:?}\nstderr:\n{}",
            server.stderr()
        );
    }
}

fn value<'a>(message: &'a str, key: &str) -> Option<&'a str> {
    message
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

fn environ(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|bytes| {
            bytes
                .split(|&b| b == 0)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The fork server's and workers' environments hold none of systemd's variables.
fn assert_children_do_not_see_systemd(server: &TestServer) {
    let children: Vec<u32> = server
        .worker_pids()
        .into_iter()
        .chain(server.fork_server_pid())
        .collect();
    assert!(!children.is_empty());
    for pid in children {
        let leaked: Vec<String> = environ(pid)
            .into_iter()
            .filter(|v| {
                ferrocorn::systemd::VARIABLES
                    .iter()
                    .any(|name| v.starts_with(&format!("{name}=")))
            })
            .collect();
        assert!(leaked.is_empty(), "child {pid} sees {leaked:?}");
    }
}

fn monotonic_usec() -> u64 {
    let mut now = nix::libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes one timespec to a valid pointer.
    unsafe { nix::libc::clock_gettime(nix::libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000
}

#[test]
fn notify_says_ready_once_workers_serve_then_reloading_and_ready_around_hup_then_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let systemd = Systemd::at_path(&path);
    let mut cmd = command(&[]);
    cmd.env("NOTIFY_SOCKET", &path);
    let mut server = TestServer::spawn_with(cmd, &["-w", "2", APP]);

    let ready = systemd.until("READY=1", &server);
    assert_eq!(
        value(&ready, "MAINPID"),
        Some(server.pid().to_string().as_str())
    );
    assert_eq!(value(&ready, "STATUS"), Some("2 of 2 workers serving"));
    // READY means serving: no wait, no 503.
    assert_eq!(server.get("/").status, 200);
    assert_children_do_not_see_systemd(&server);

    let before = monotonic_usec();
    server.signal("HUP");
    let reloading = systemd.until("RELOADING=1", &server);
    let usec: u64 = value(&reloading, "MONOTONIC_USEC")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {reloading:?}"));
    assert!(
        before <= usec && usec <= monotonic_usec(),
        "MONOTONIC_USEC={usec} is not CLOCK_MONOTONIC at the reload"
    );
    let ready_again = systemd.until("READY=1", &server);
    assert_eq!(value(&ready_again, "MAINPID"), None, "{ready_again:?}");
    assert_eq!(
        value(&ready_again, "STATUS"),
        Some("2 of 2 workers serving")
    );
    assert_eq!(server.get("/").status, 200);

    server.signal("TERM");
    let stopping = systemd.until("STOPPING=1", &server);
    assert_eq!(value(&stopping, "STATUS"), Some("stopping"));
    assert_eq!(server.wait_exit(DEADLINE), Some(0));
}

#[test]
fn the_watchdog_is_fed_at_half_watchdog_usec_through_an_abstract_socket() {
    let name = format!("ferrocorn-it-watchdog-{}", std::process::id());
    let systemd = Systemd::abstract_named(&name);
    let mut cmd = command(&[]);
    cmd.env("NOTIFY_SOCKET", format!("@{name}"))
        .env("WATCHDOG_USEC", "200000");
    let server = TestServer::spawn_with(cmd, &[APP]);
    systemd.until("WATCHDOG=1", &server);
    let first = Instant::now();
    systemd.until("WATCHDOG=1", &server);
    // 100 ms apart; a generous bound for 2 busy cores.
    assert!(first.elapsed() < std::time::Duration::from_secs(5));
    systemd.until("READY=1", &server);
}

/// `cmd` with the test's `listener` as its fd 3, open across exec.
fn with_fd3(cmd: &mut Command, listener: &TcpListener) {
    let fd = listener.as_raw_fd();
    // SAFETY: runs between fork and exec and calls only dup2 and fcntl,
    // which are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            use nix::libc;
            if fd != 3 && libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // dup2 clears FD_CLOEXEC on the copy, but not when fd is 3 already.
            if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// The fd-3 socket is the master's alone: no child holds it.
fn assert_only_the_master_holds_fd3(server: &TestServer) {
    let socket = std::fs::read_link(format!("/proc/{}/fd/3", server.pid())).unwrap();
    assert!(
        socket.to_string_lossy().starts_with("socket:"),
        "{socket:?}"
    );
    for pid in server
        .worker_pids()
        .into_iter()
        .chain(server.fork_server_pid())
    {
        let held = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|link| link == socket));
        assert!(!held, "child {pid} inherited the listening socket");
    }
}

#[test]
fn socket_activation_serves_on_the_inherited_socket_instead_of_binding() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut cmd = command_via_sh(r#"LISTEN_PID=$$ exec "$0" "$@""#, &[]);
    cmd.env("LISTEN_FDS", "1");
    with_fd3(&mut cmd, &listener);
    // The harness's own `-b 127.0.0.1:0` is not bound: the socket replaces it.
    let server = TestServer::start_with(cmd, &[APP]);
    assert_eq!(server.addr, addr);
    assert_eq!(server.get("/").status, 200);
    assert_children_do_not_see_systemd(&server);
    assert_only_the_master_holds_fd3(&server);
}

#[test]
fn sockets_for_another_pid_are_not_taken() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut cmd = command(&[]);
    // LISTEN_PID=1: meant for init, not for us.
    cmd.env("LISTEN_FDS", "1").env("LISTEN_PID", "1");
    with_fd3(&mut cmd, &listener);
    let server = TestServer::start_with(cmd, &[APP]);
    assert_ne!(server.addr, addr, "the server bound its own address");
    assert_eq!(server.get("/").status, 200);
    assert_children_do_not_see_systemd(&server);
}

#[test]
fn bind_fd_serves_on_an_inherited_socket() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let mut cmd = command(&[]);
    with_fd3(&mut cmd, &listener);
    let server = TestServer::start_with(cmd, &["-b", "fd://3", APP]);
    assert_eq!(server.addr, addr);
    assert_eq!(server.get("/").status, 200);
    assert_only_the_master_holds_fd3(&server);
}

#[test]
fn a_bad_inherited_socket_or_listen_fds_stops_the_start_naming_it() {
    let out = command(&["-b", "fd://77", APP]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("fd://77"), "{stderr}");
    let out = command_via_sh(r#"LISTEN_PID=$$ exec "$0" "$@""#, &[APP])
        .env("LISTEN_FDS", "one")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("LISTEN_FDS"), "{stderr}");
}
