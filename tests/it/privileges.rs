//! `--umask`, `--user`, `--group` and `--initgroups` (issue 12, item 2), as
//! gunicorn 27 has them: a Unix socket is `0777 & !umask` (gunicorn's umask
//! defaults to 0, so nginx as www-data can connect), the master keeps root
//! while the fork server and the workers switch before any app code runs,
//! and a user name that does not exist stops the server with exit 2.
//! Switching users needs root: those tests say so and skip otherwise.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;

use crate::harness::{
    command, parse_response, python_refusing_to_be_a_fork_server, wait_until, Response, TestServer,
    DEADLINE,
};

/// Records who imported it; `/who` answers `UID GID` of the worker and of
/// the import, `/write?PATH` tries to append to PATH.
const APP: &str = r#"
import os

IMPORTED_AS = "%d %d" % (os.getuid(), os.getgid())

def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/who":
        body = "%d %d %s" % (os.getuid(), os.getgid(), IMPORTED_AS)
    elif path == "/write":
        try:
            with open(environ["QUERY_STRING"], "a") as f:
                f.write("app was here\n")
            body = "wrote"
        except PermissionError:
            body = "denied"
    else:
        body = "ok"
    body = body.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"#;

/// A directory any user can read (tempdir makes 0700 ones) holding the app.
fn app_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.path().join("owned_app.py"), APP).unwrap();
    dir
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn unix_get(sock: &Path, path: &str) -> Response {
    let mut unix = UnixStream::connect(sock).unwrap_or_else(|e| panic!("connect {sock:?}: {e}"));
    unix.set_read_timeout(Some(DEADLINE)).unwrap();
    write!(
        unix,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    unix.read_to_end(&mut out).unwrap();
    parse_response(&out).unwrap().0
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// `Uid:`, `Gid:` (real, effective, saved, fs) and `Groups:` of a process.
fn credentials(pid: u32) -> (String, String, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    (field("Uid:"), field("Gid:"), field("Groups:"))
}

fn umask_of(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn start_on_socket(dir: &Path, sock: &Path, extra: &[&str]) -> TestServer {
    let bind = format!("unix:{}", sock.display());
    let chdir = dir.to_str().unwrap();
    let mut args = vec!["-b", &bind, "--chdir", chdir];
    args.extend_from_slice(extra);
    args.push("owned_app:app");
    TestServer::start_binding(&args)
}

/// gunicorn's default umask is 0: the socket is srwxrwxrwx, whatever the
/// master's own umask; `--umask 0o077` gives srwx------. The workers' own
/// umask stays the master's, as gunicorn never sets the process umask.
#[test]
fn a_unix_socket_is_0777_less_the_umask_and_serves() {
    let dir = app_dir();
    let sock = dir.path().join("s.sock");
    let server = start_on_socket(dir.path(), &sock, &[]);
    assert_eq!(mode(&sock), 0o777, "srwxrwxrwx");
    assert_eq!(unix_get(&sock, "/").status, 200);
    drop(server);

    let server = start_on_socket(dir.path(), &sock, &["--umask", "0o077"]);
    assert_eq!(mode(&sock), 0o700, "srwx------");
    let response = unix_get(&sock, "/");
    assert_eq!((response.status, response.text()), (200, "ok".to_string()));
    let master = umask_of(server.pid());
    for pid in server.worker_pids() {
        assert_eq!(
            umask_of(pid),
            master,
            "worker {pid} keeps the master's umask"
        );
    }
}

/// The fork server drops before it imports the app (here with `--preload`),
/// so the app never runs as root and the forked workers inherit it; the
/// master stays root. The socket and the log files belong to the user, the
/// pid file stays root's, -rw-r--r--.
#[test]
fn workers_and_the_fork_server_run_as_the_user_and_the_master_stays_root() {
    if !is_root() {
        eprintln!(
            "skipped: switching to another user needs root, and this test runs as uid {}",
            nix::unistd::geteuid()
        );
        return;
    }
    run_as_nobody(&["--preload"], true);
}

/// A worker started as a fresh interpreter (no fork server) switches
/// itself, before the app import, as gunicorn's workers do after the fork.
#[test]
fn a_fresh_interpreter_worker_switches_before_importing_the_app() {
    if !is_root() {
        eprintln!(
            "skipped: switching to another user needs root, and this test runs as uid {}",
            nix::unistd::geteuid()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let wrapper = python_refusing_to_be_a_fork_server(dir.path());
    run_as_nobody(&["--python", wrapper.to_str().unwrap()], false);
}

fn run_as_nobody(extra: &[&str], fork_server: bool) {
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("a user nobody");
    let group = nix::unistd::Group::from_gid(nobody.gid)
        .unwrap()
        .expect("nobody's primary group has a name");
    let (uid, gid) = (nobody.uid.as_raw(), nobody.gid.as_raw());
    let dir = app_dir();
    let sock = dir.path().join("s.sock");
    // The harness reads the error log on stderr: the access log is the file.
    let log = dir.path().join("access.log");
    let pid_file = dir.path().join("server.pid");
    let root_only = dir.path().join("root-only");
    std::fs::write(&root_only, "").unwrap();
    std::fs::set_permissions(&root_only, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut args = vec![
        "--user",
        "nobody",
        "--group",
        &group.name,
        "-w",
        "2",
        "--access-logfile",
        log.to_str().unwrap(),
        "--pid",
        pid_file.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let server = start_on_socket(dir.path(), &sock, &args);
    let log_text = || server.stderr();
    let workers = wait_until("2 workers", DEADLINE, || match server.worker_pids() {
        pids if pids.len() == 2 => Ok(pids),
        pids => Err(format!("{pids:?}; log:\n{}", log_text())),
    });
    let user = (
        format!("{uid} {uid} {uid} {uid}"),
        format!("{gid} {gid} {gid} {gid}"),
    );
    for pid in &workers {
        // A fresh interpreter is root until it switches, early in its boot
        // (the server answers once one worker is ready; this one may not be).
        let groups = wait_until(
            &format!("worker {pid} as {user:?}"),
            DEADLINE,
            || match credentials(*pid) {
                (uids, gids, groups) if (&uids, &gids) == (&user.0, &user.1) => Ok(groups),
                seen => Err(format!("{seen:?}")),
            },
        );
        // Without --initgroups none of root's supplementary groups are kept.
        assert_eq!(groups, "", "worker {pid}");
    }
    match server.fork_server_pid() {
        Some(pid) if fork_server => {
            let (uids, gids, _) = credentials(pid);
            assert_eq!((uids, gids), user, "fork server {pid}");
        }
        None if !fork_server => {}
        other => panic!("fork server {other:?}; log:\n{}", log_text()),
    }
    let (master_uid, _, _) = credentials(server.pid());
    assert_eq!(master_uid, "0 0 0 0", "the master keeps root");

    // Served, over both sockets, by an app that was imported as the user too.
    assert_eq!(server.get("/").status, 200);
    let who = unix_get(&sock, "/who");
    assert_eq!(who.status, 200);
    assert_eq!(who.text(), format!("{uid} {gid} {uid} {gid}"));
    let query = format!("/write?{}", root_only.display());
    assert_eq!(unix_get(&sock, &query).text(), "denied");
    assert_eq!(std::fs::read_to_string(&root_only).unwrap(), "");

    // gunicorn chowns the socket and the log files to user and group.
    let owner = |path: &Path| {
        let meta = std::fs::metadata(path).unwrap();
        (meta.uid(), meta.gid())
    };
    assert_eq!(owner(&sock), (uid, gid), "socket");
    assert_eq!(mode(&sock), 0o777);
    assert_eq!(owner(&log), (uid, gid), "access log");
    assert_eq!(
        (owner(&pid_file), mode(&pid_file)),
        ((0, 0), 0o644),
        "pid file"
    );
}

/// With --initgroups the workers get the user's groups from the group
/// database plus --group (nobody is in none: just the group).
#[test]
fn initgroups_gives_the_workers_the_users_groups() {
    if !is_root() {
        eprintln!(
            "skipped: switching to another user needs root, and this test runs as uid {}",
            nix::unistd::geteuid()
        );
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("a user nobody");
    let gid = nobody.gid.as_raw().to_string();
    let dir = app_dir();
    let sock = dir.path().join("s.sock");
    let server = start_on_socket(
        dir.path(),
        &sock,
        &["-u", "nobody", "-g", &gid, "--initgroups"],
    );
    let workers = wait_until("a worker", DEADLINE, || match server.worker_pids() {
        pids if !pids.is_empty() => Ok(pids),
        pids => Err(format!("{pids:?}")),
    });
    let (_, gids, groups) = credentials(workers[0]);
    assert_eq!(gids, format!("{gid} {gid} {gid} {gid}"));
    let expected =
        nix::unistd::getgrouplist(&std::ffi::CString::new("nobody").unwrap(), nobody.gid)
            .unwrap()
            .iter()
            .map(|g| g.as_raw().to_string())
            .collect::<Vec<_>>();
    let mut got: Vec<String> = groups.split_whitespace().map(str::to_string).collect();
    let mut expected = expected;
    got.sort();
    expected.sort();
    expected.dedup();
    assert_eq!(got, expected);
    assert_eq!(server.get("/").status, 200);
}

/// gunicorn's `ConfigError("No such user: ...")`: the server does not
/// start, and says which setting and value.
#[test]
fn an_unknown_user_or_group_stops_the_server_with_exit_2() {
    for (flag, name, what) in [
        ("--user", "no-such-user", "no such user"),
        ("-g", "no-such-group", "no such group"),
    ] {
        let out = command(&[flag, name, "examples.wsgi_hello:app"])
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(what) && stderr.contains(name) && stderr.contains(flag),
            "{stderr}"
        );
    }
}
