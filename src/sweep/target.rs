//! The server under test: started in its own process group on a free
//! loopback port, polled until ready, and stopped with TERM to its group,
//! then KILL. ferrocorn rows get the cell's settings as a TOML file and a
//! metrics address (readiness from `/readyz`, restarts from `/metrics`);
//! command rows get their `{placeholders}` filled and are polled on their
//! ready path.

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How to start one cell's server.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The program and its arguments.
    pub argv: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub cwd: Option<PathBuf>,
    /// Where the server's HTTP listener will be.
    pub bind: SocketAddr,
    /// ferrocorn's metrics address, if it is ferrocorn.
    pub metrics: Option<SocketAddr>,
    /// Path polled for readiness when there are no metrics.
    pub ready_path: String,
    /// File for the server's stdout and stderr.
    pub log: PathBuf,
}

impl Launch {
    /// The command as a shell would show it.
    pub fn shown(&self) -> String {
        self.argv
            .iter()
            .map(|a| {
                if a.contains(' ') {
                    format!("'{a}'")
                } else {
                    a.clone()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// A running server.
#[derive(Debug)]
pub struct Target {
    child: Child,
    launch: Launch,
}

impl Target {
    /// Starts the server in a new process group.
    pub fn start(launch: Launch) -> Result<Target, String> {
        let log = std::fs::File::create(&launch.log)
            .map_err(|e| format!("cannot create {}: {e}", launch.log.display()))?;
        let err = log
            .try_clone()
            .map_err(|e| format!("cannot open {}: {e}", launch.log.display()))?;
        let (program, args) = launch
            .argv
            .split_first()
            .ok_or_else(|| "empty command".to_string())?;
        let mut command = Command::new(program);
        command
            .args(args)
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0);
        if let Some(cwd) = &launch.cwd {
            command.current_dir(cwd);
        }
        // The sweep's own FERROCORN_* settings must not leak into a cell.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("FERROCORN_") {
                command.env_remove(key);
            }
        }
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {program}: {e}"))?;
        Ok(Target { child, launch })
    }

    /// The server's pid (its process group's id too).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The HTTP address the load goes to.
    pub fn bind(&self) -> SocketAddr {
        self.launch.bind
    }

    /// The metrics address of a ferrocorn row.
    pub fn metrics(&self) -> Option<SocketAddr> {
        self.launch.metrics
    }

    /// Waits until the server is ready: all workers ready (ferrocorn), or
    /// the ready path answering below 500 (others). A server that exits
    /// first fails with the end of its log.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let (addr, path) = match self.launch.metrics {
            Some(metrics) => (metrics, "/readyz"),
            None => (self.launch.bind, self.launch.ready_path.as_str()),
        };
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "the server exited ({status}) before it was ready: {}",
                    log_tail(&self.launch.log)
                ));
            }
            match http_get(addr, path).await {
                Ok((status, _)) if self.launch.metrics.is_some() && status == 200 => return Ok(()),
                Ok((status, _)) if self.launch.metrics.is_none() && status < 500 => return Ok(()),
                _ => {}
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the server was not ready within {timeout:?}: {}",
                    log_tail(&self.launch.log)
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// TERM to the group, up to `grace` to exit, then KILL to the group.
    pub async fn stop(mut self, grace: Duration) {
        let group = nix::unistd::Pid::from_raw(-(self.child.id() as i32));
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Also any worker left behind in the group.
        let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// The last lines of a server's log, for error messages.
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(5).collect();
    let tail: Vec<&str> = lines.into_iter().rev().collect();
    if tail.is_empty() {
        format!("its log {} is empty", path.display())
    } else {
        format!("last lines of {}:\n{}", path.display(), tail.join("\n"))
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A one-off GET with `Connection: close`: (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let io = async {
        let mut stream = TcpStream::connect(addr).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(5), io)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in 5 s"))??;
    let text = String::from_utf8_lossy(&response);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "no status line"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Restarts by reason from ferrocorn's `/metrics` text.
pub fn parse_restarts(metrics: &str) -> std::collections::BTreeMap<String, u64> {
    let prefix = format!("{}{{reason=\"", crate::metrics::WORKER_RESTARTS_TOTAL);
    metrics
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(&prefix)?;
            let (reason, value) = rest.split_once("\"}")?;
            let value: f64 = value.trim().parse().ok()?;
            Some((reason.to_string(), value as u64))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_are_read_by_reason() {
        let text = "# TYPE ferrocorn_worker_restarts counter\n\
            ferrocorn_worker_restarts_total{reason=\"memory\"} 3\n\
            ferrocorn_worker_restarts_total{reason=\"crash\"} 0\n\
            ferrocorn_workers{state=\"serving\"} 2\n";
        let restarts = parse_restarts(text);
        assert_eq!(restarts.get("memory"), Some(&3));
        assert_eq!(restarts.get("crash"), Some(&0));
        assert_eq!(restarts.len(), 2);
    }

    #[tokio::test]
    async fn a_server_that_exits_at_once_fails_readiness_with_its_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("server.log");
        let mut target = Target::start(Launch {
            argv: vec![
                "sh".into(),
                "-c".into(),
                "echo no such app >&2; exit 4".into(),
            ],
            env: vec![],
            cwd: None,
            bind: format!("127.0.0.1:{}", free_port().unwrap())
                .parse()
                .unwrap(),
            metrics: None,
            ready_path: "/".into(),
            log,
        })
        .unwrap();
        let err = target
            .wait_ready(Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(err.contains("no such app"), "{err}");
        target.stop(Duration::from_secs(1)).await;
    }
}
