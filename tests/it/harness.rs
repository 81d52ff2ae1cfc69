//! The test harness: starts the real `ferrocorn` binary with an app from
//! `examples/` and the project venv's Python on 127.0.0.1:0, waits for it to
//! serve (against a deadline, never a fixed sleep), speaks raw HTTP/1.1 to
//! it, and on drop sends TERM, then KILL, to its own pid only.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Generous: CI has 2 cores and a worker imports Flask.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's Python, which has Flask. Fails with setup instructions if missing.
pub fn python() -> PathBuf {
    let python = std::env::var_os("FERROCORN_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv/bin/python"));
    let has_flask = Command::new(&python)
        .args(["-c", "import flask"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        has_flask,
        "{} with Flask is needed: run `make test` (it creates .venv with Flask), \
         or set FERROCORN_TEST_PYTHON to a Python that has Flask",
        python.display()
    );
    python
}

/// A Python with gevent and Flask, for `-k gevent`: `make test` creates
/// `.venv-gevent` (gevent is the user's dependency, never ferrocorn's).
pub fn gevent_python() -> PathBuf {
    let python = std::env::var_os("FERROCORN_TEST_GEVENT_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv-gevent/bin/python"));
    let has_gevent = Command::new(&python)
        .args(["-c", "import gevent, flask"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        has_gevent,
        "{} with gevent and Flask is needed: run `make test` (it creates .venv-gevent), \
         or set FERROCORN_TEST_GEVENT_PYTHON to a Python that has both",
        python.display()
    );
    python
}

/// A `python` in `dir` that refuses to be a fork server, and only that:
/// workers then start as fresh interpreters.
pub fn python_refusing_to_be_a_fork_server(dir: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let wrapper = dir.join("python");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nfor arg in \"$@\"; do [ \"$arg\" = ferrocorn-forkserver ] && exit 1; done\nexec {:?} \"$@\"\n",
            python()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    wrapper
}

/// Polls `check` until it returns `Some` or the deadline passes; the panic
/// message says what was last observed.
pub fn wait_until<T>(
    what: &str,
    deadline: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let start = Instant::now();
    loop {
        match check() {
            Ok(value) => return value,
            Err(seen) if start.elapsed() > deadline => {
                panic!("timed out after {deadline:?} waiting for {what}; last seen: {seen}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// What precedes the bound address in the master's log (gunicorn's words).
/// [`TestServer::start_binding`] learns the port of `-b 127.0.0.1:0` from
/// this line; every other start hands the server a socket the test bound.
pub const LISTENING_AT: &str = "Listening at: http://";

/// A running ferrocorn.
pub struct TestServer {
    child: Option<Child>,
    /// Everything the server and its workers wrote to stderr so far.
    pub stderr: Arc<Mutex<String>>,
    /// `127.0.0.1:PORT`
    pub addr: String,
}

/// Builds the command line for a server run.
pub fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferrocorn"));
    cmd.current_dir(root())
        .arg("--python")
        .arg(python())
        .args(args)
        .env_remove("VIRTUAL_ENV")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, _) in std::env::vars() {
        if key.starts_with("FERROCORN_") && !key.starts_with("FERROCORN_TEST_") {
            cmd.env_remove(key);
        }
    }
    // FERROCORN_TEST_LANE_TRANSPORT=socket runs every test on socket lanes.
    if let Ok(transport) = std::env::var("FERROCORN_TEST_LANE_TRANSPORT") {
        cmd.env("FERROCORN_LANE_TRANSPORT", transport);
    }
    // FERROCORN_TEST_MASTER_THREADS=N runs every test on a master of N threads.
    if let Ok(threads) = std::env::var("FERROCORN_TEST_MASTER_THREADS") {
        cmd.env("FERROCORN_MASTER_THREADS", threads);
    }
    // gunicorn's variables change defaults: no test gets them by accident.
    // SCRIPT_NAME would move every path under it.
    for key in [
        "GUNICORN_CMD_ARGS",
        "PORT",
        "WEB_CONCURRENCY",
        "FORWARDED_ALLOW_IPS",
        "SCRIPT_NAME",
    ] {
        cmd.env_remove(key);
    }
    cmd
}

/// As [`command`], run as `sh -c SCRIPT ferrocorn ARGS..`: the script sees
/// the binary as `$0` and ends with `exec "$0" "$@"`, so it can set what
/// only the server's own pid can say (`LISTEN_PID=$$`, as systemd sets it
/// between fork and exec).
pub fn command_via_sh(script: &str, args: &[&str]) -> Command {
    let template = command(args);
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(script)
        .arg(template.get_program())
        .args(template.get_args())
        .current_dir(root())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (key, value) in template.get_envs() {
        match value {
            Some(value) => cmd.env(key, value),
            None => cmd.env_remove(key),
        };
    }
    cmd
}

impl TestServer {
    /// Starts `ferrocorn -b fd://3 ARGS` on a socket bound here, and waits
    /// until `/` answers.
    pub fn start(args: &[&str]) -> TestServer {
        let server = Self::spawn(args);
        server.wait_until_answering();
        server
    }

    /// As [`TestServer::start`], but the server binds `127.0.0.1:0` itself
    /// (for tests of binding: more `-b` addresses, socket options); the
    /// harness learns the port from gunicorn's `Listening at:` line.
    pub fn start_binding(args: &[&str]) -> TestServer {
        Self::start_with(command(&[]), args)
    }

    /// Starts the server and returns once the master runs, without waiting
    /// for workers.
    pub fn spawn(args: &[&str]) -> TestServer {
        Self::spawn_listening(command(&[]), args)
    }

    /// [`TestServer::start`] in the working directory `dir`, with `env` added.
    pub fn start_in(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> TestServer {
        let mut cmd = command(&[]);
        cmd.current_dir(dir).envs(env.iter().copied());
        let server = Self::spawn_listening(cmd, args);
        server.wait_until_answering();
        server
    }

    /// Spawns `cmd ARGS` serving on a socket the test binds itself and
    /// hands over as `-b fd://3` (as systemd would): the address is known
    /// before the server starts, and nothing waits on a log line.
    fn spawn_listening(mut cmd: Command, args: &[&str]) -> TestServer {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let addr = listener.local_addr().expect("bound").to_string();
        let fd = listener.as_raw_fd();
        // SAFETY: between fork and exec only dup2 and fcntl, which are
        // async-signal-safe; dup2 leaves the copy without FD_CLOEXEC.
        unsafe {
            cmd.pre_exec(move || {
                let moved = if fd == 3 {
                    nix::libc::fcntl(3, nix::libc::F_SETFD, 0)
                } else {
                    nix::libc::dup2(fd, 3)
                };
                if moved < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .args(["-b", "fd://3"])
            .args(args)
            .spawn()
            .expect("the ferrocorn binary starts");
        drop(listener); // the server holds its own copy
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().expect("stderr is piped");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut all = sink.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        });
        let mut server = TestServer {
            child: Some(child),
            stderr,
            addr,
        };
        server.wait_until_running();
        server
    }

    /// Until the master has started its first child (the fork server, or a
    /// worker), by when it handles signals; or until it has exited.
    fn wait_until_running(&mut self) {
        let pid = self.pid();
        wait_until("the master to start its children", DEADLINE, || {
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if exited.is_some() || !children_of(pid).is_empty() {
                Ok(())
            } else {
                Err(format!("no child yet; stderr so far:\n{}", self.stderr()))
            }
        });
    }

    fn wait_until_answering(&self) {
        wait_until("the server to answer", DEADLINE, || {
            // An exited master is a zombie until dropped: say why at once.
            if proc_state(format!("/proc/{}/stat", self.pid())) == Some('Z') {
                panic!(
                    "the server exited before it answered; stderr:\n{}",
                    self.stderr()
                );
            }
            match try_request(
                &self.addr,
                "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            ) {
                Ok(resp) if resp.status != 503 => Ok(()),
                // 503 until a worker is ready: if none ever is, its boot says why.
                Ok(resp) => Err(format!(
                    "status {}; stderr so far:\n{}",
                    resp.status,
                    self.stderr()
                )),
                Err(err) => Err(format!("{err}; stderr so far:\n{}", self.stderr())),
            }
        });
    }

    /// [`TestServer::spawn_with`], then waits until `/` answers.
    pub fn start_with(cmd: Command, args: &[&str]) -> TestServer {
        let server = Self::spawn_with(cmd, args);
        server.wait_until_answering();
        server
    }

    /// Spawns `cmd` (from [`command`]) with `-b 127.0.0.1:0 ARGS`; returns
    /// once it has bound, without waiting for workers.
    pub fn spawn_with(mut cmd: Command, args: &[&str]) -> TestServer {
        let mut child = cmd
            .args(["-b", "127.0.0.1:0"])
            .args(args)
            .spawn()
            .expect("the ferrocorn binary starts");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let pipe = child.stderr.take().expect("stderr is piped");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                // gunicorn's `Listening at: http://127.0.0.1:PORT (PID)`.
                if let Some(at) = line.find(LISTENING_AT) {
                    let addr = line[at + LISTENING_AT.len()..]
                        .split([' ', ','])
                        .next()
                        .unwrap_or_default()
                        .to_string();
                    let _ = addr_tx.send(addr);
                }
                let mut all = sink.lock().unwrap();
                all.push_str(&line);
                all.push('\n');
            }
        });
        let addr = match addr_rx.recv_timeout(DEADLINE) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "server did not report its address; stderr:\n{}",
                    stderr.lock().unwrap()
                );
            }
        };
        TestServer {
            child: Some(child),
            stderr,
            addr,
        }
    }

    /// The server's stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The master's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// A GET with `Connection: close`.
    pub fn get(&self, path: &str) -> Response {
        self.raw(&format!(
            "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
        ))
    }

    /// A POST of `body` with a Content-Length.
    pub fn post(&self, path: &str, body: &[u8]) -> Response {
        let mut req = format!(
            "POST {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        self.raw_bytes(&req)
    }

    /// Sends raw text and reads one response until the server closes.
    pub fn raw(&self, request: &str) -> Response {
        self.raw_bytes(request.as_bytes())
    }

    /// Sends raw bytes and reads one response until the server closes.
    pub fn raw_bytes(&self, request: &[u8]) -> Response {
        try_request_bytes(&self.addr, request)
            .unwrap_or_else(|e| panic!("request failed: {e}\nstderr:\n{}", self.stderr()))
    }

    /// Sends a signal to the master.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the master to exit and returns its exit code.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<i32> {
        let child = self.child.as_mut().expect("running");
        let status = wait_until("the server to exit", deadline, || match child.try_wait() {
            Ok(Some(status)) => Ok(status),
            _ => Err("still running".into()),
        });
        self.child = None;
        status.code()
    }

    /// Sends `n` GETs of `path` at once; returns their statuses.
    pub fn get_concurrently(&self, n: usize, path: &str) -> Vec<u16> {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..n).map(|_| s.spawn(|| self.get(path).status)).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    }

    /// Waits until `/pid` answers from a worker other than `before`; returns its pid.
    pub fn wait_for_new_worker(&self, before: &str) -> String {
        wait_until("a replacement worker", DEADLINE, || {
            let resp = self.get("/pid");
            match (resp.status, resp.text()) {
                (200, pid) if pid != before => Ok(pid),
                (status, text) => Err(format!("status {status}: {text}")),
            }
        })
    }

    /// Pids of the master's children (the workers), from /proc.
    pub fn worker_pids(&self) -> Vec<u32> {
        children_of(self.pid())
            .into_iter()
            .filter(|&pid| !is_fork_server(pid))
            .collect()
    }

    /// The fork server's pid, if one runs (it names itself fc-forkserver).
    pub fn fork_server_pid(&self) -> Option<u32> {
        children_of(self.pid())
            .into_iter()
            .find(|&pid| is_fork_server(pid))
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id().to_string();
            let _ = Command::new("kill").args(["-TERM", &pid]).status();
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// SIGKILL to one process this test started (a worker or a fork server).
pub fn kill_process(pid: u32) {
    let status = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// The state letter (R, S, T, Z...) in a `/proc/.../stat` file, for a
/// process (`/proc/PID/stat`) or one of its threads
/// (`/proc/PID/task/TID/stat`); None once it is gone. The comm may hold
/// spaces and parentheses, so the state is read after the last ')'.
pub fn proc_state(stat_file: impl AsRef<Path>) -> Option<char> {
    let stat = std::fs::read_to_string(stat_file).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// Waits until every thread of `pid` is stopped (state `T`): `kill -STOP`
/// returns once the signal is queued, and the target may run on, even read
/// a request, until it next handles its signals.
pub fn wait_until_stopped(pid: u32) {
    wait_until("the process stopped", DEADLINE, || {
        let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).map_err(|e| e.to_string())?;
        let states: Vec<Option<char>> = tasks
            .flatten()
            .map(|task| proc_state(task.path().join("stat")))
            .collect();
        if !states.is_empty() && states.iter().all(|s| *s == Some('T')) {
            Ok(())
        } else {
            Err(format!("thread states {states:?}"))
        }
    });
}

/// Whether `pid` is a fork server (its /proc comm is `fc-forkserver`).
pub fn is_fork_server(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "fc-forkserver")
}

/// Children of `pid`, read from /proc.
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut all: Vec<u32> = Vec::new();
    // Children may be listed under any of the master's threads.
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let file = task.path().join("children");
            if let Ok(text) = std::fs::read_to_string(file) {
                all.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
        }
    }
    all.sort_unstable();
    all.dedup();
    all
}

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Header lines, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Response {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A GET to any address (the metrics endpoint, say), `Connection: close`.
pub fn http_get(addr: &str, path: &str) -> Result<Response, String> {
    try_request(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"),
    )
}

/// The value of the `/metrics` sample line that starts with `series` (name
/// and labels, then a space), if the endpoint answers and has it.
pub fn metric(metrics_addr: &str, series: &str) -> Option<f64> {
    let text = http_get(metrics_addr, "/metrics").ok()?.text();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// Waits until `series` on the metrics endpoint reads at least `at_least`.
pub fn wait_for_metric(metrics_addr: &str, series: &str, at_least: f64) {
    wait_until(series, DEADLINE, || match metric(metrics_addr, series) {
        Some(n) if n >= at_least => Ok(()),
        other => Err(format!("{other:?}")),
    });
}

/// A port on 127.0.0.1 that was free a moment ago, for a server to bind
/// itself (`--metrics-bind`, `-b`). It comes from below the kernel's
/// ephemeral range, so no test's client connection and no `bind(:0)` can
/// take it before the server binds it, and from a counter, so no two tests
/// of this run get the same one; the start depends on the pid, so two runs
/// on one machine rarely meet.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (low, high) = ephemeral_port_range();
    let (first, span) = if low > 1024 + PORT_WINDOW {
        (low - PORT_WINDOW, PORT_WINDOW)
    } else if high < 65535 - PORT_WINDOW {
        (high + 1, PORT_WINDOW)
    } else {
        return std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("an ephemeral port")
            .port();
    };
    let start = std::process::id().wrapping_mul(7919) % span;
    for _ in 0..span {
        let offset = (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let port = u16::try_from(first + offset).expect("a port below 65536");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {first}..{}", first + span);
}

/// How many ports [`free_port`] hands out from.
const PORT_WINDOW: u32 = 8000;

/// The kernel's range for ephemeral ports (Linux's default if unreadable).
fn ephemeral_port_range() -> (u32, u32) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut ends = text.split_whitespace().map(str::parse::<u32>);
            Some((ends.next()?.ok()?, ends.next()?.ok()?))
        })
        .unwrap_or((32768, 60999))
}

fn try_request(addr: &str, request: &str) -> Result<Response, String> {
    try_request_bytes(addr, request.as_bytes())
}

fn try_request_bytes(addr: &str, request: &[u8]) -> Result<Response, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    stream
        .write_all(request)
        .map_err(|e| format!("sending the request: {e}"))?;
    let mut bytes = Vec::new();
    stream
        .read_to_end(&mut bytes)
        .map_err(|e| format!("reading the response (after {} bytes): {e}", bytes.len()))?;
    let (response, _rest) = parse_response(&bytes)?;
    Ok(response)
}

/// Parses one response off the front of `bytes`; returns it and the rest.
pub fn parse_response(bytes: &[u8]) -> Result<(Response, &[u8]), String> {
    let end = find(bytes, b"\r\n\r\n")
        .ok_or_else(|| format!("no complete head in {:?}", String::from_utf8_lossy(bytes)))?;
    let head = std::str::from_utf8(&bytes[..end]).map_err(|e| e.to_string())?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut rest = &bytes[end + 4..];
    let mut response = Response {
        status,
        headers,
        body: Vec::new(),
    };
    if response.header("transfer-encoding") == Some("chunked") {
        loop {
            let line_end = find(rest, b"\r\n").ok_or("truncated chunk size")?;
            let size =
                usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap().trim(), 16)
                    .map_err(|e| e.to_string())?;
            rest = &rest[line_end + 2..];
            if size == 0 {
                rest = &rest[2.min(rest.len())..];
                break;
            }
            response.body.extend_from_slice(&rest[..size]);
            rest = &rest[size + 2..];
        }
    } else if let Some(len) = response
        .header("content-length")
        .and_then(|l| l.parse::<usize>().ok())
    {
        let len = len.min(rest.len());
        response.body.extend_from_slice(&rest[..len]);
        rest = &rest[len..];
    } else {
        response.body.extend_from_slice(rest);
        rest = &[];
    }
    Ok((response, rest))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Sends raw bytes, half-closes, and reads until a whole response head has
/// arrived, the server closes, or `timeout` passes; returns what was read
/// and whether the server closed. For fuzzing: it neither parses nor panics.
pub fn exchange_raw(
    addr: &str,
    request: &[u8],
    timeout: Duration,
) -> std::io::Result<(Vec<u8>, bool)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    // The server may answer and close before it has read everything.
    let _ = stream.write_all(request);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return Ok((bytes, true)),
            Ok(n) => {
                bytes.extend_from_slice(&chunk[..n]);
                if find(&bytes, b"\r\n\r\n").is_some() {
                    return Ok((bytes, false));
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => {
                return Ok((bytes, true))
            }
            Err(err) => return Err(err),
        }
    }
}
