//! The metrics listener: `/metrics`, `/healthz` and `/readyz`, answered by
//! the master itself so probes work while every worker is busy or booting.
//! It has its own socket and its own small hyper server, apart from the
//! application's listeners: a scraper never queues behind app requests and
//! never counts in the app's request metrics.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use nix::errno::Errno;
use tokio::net::{TcpListener, TcpSocket};
use tracing::{debug, warn};

use super::Metrics;
use crate::http::graceful::GracefulShutdown;

/// The content type prometheus-client's examples serve its text encoding with.
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

const TEXT_CONTENT_TYPE: &str = "text/plain; charset=utf-8";

/// A scraper that opens a connection and sends nothing is dropped after this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a stop waits for answers already being written. Scrapers keep
/// connections alive, so the wait must end even if one never closes.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves GET /metrics (text exposition), GET /healthz (200 "ok" while the
/// master runs) and GET /readyz (200 when enough workers are ready, else 503
/// with a one-line reason); any other path is 404, another method on these
/// paths 405. HEAD works wherever GET does. Returns once `shutdown`
/// resolves and open answers are written (at most 2 s later).
///
/// # Errors
///
/// An accept error that will not go away by waiting (the listener itself is
/// broken). Running out of file descriptors or an aborted connection is
/// logged and retried.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    tokio::pin!(shutdown);
    let result = loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break Ok(()),
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _peer)) => {
                let metrics = metrics.clone();
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let response = respond(&metrics, req.method(), req.uri().path());
                    async move { Ok::<_, Infallible>(response) }
                });
                let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    if let Err(err) = conn.await {
                        debug!(error = %err, "metrics connection ended with an error");
                    }
                });
            }
            Err(err) if is_transient(&err) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(error = %err, "metrics listener: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => break Err(err),
        }
    };
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        debug!("metrics connections still open at stop; dropping them");
    }
    result
}

fn is_transient(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::OutOfMemory
    ) || err.raw_os_error().is_some_and(|code| {
        [Errno::EMFILE, Errno::ENFILE, Errno::ENOBUFS, Errno::ENOMEM]
            .iter()
            .any(|errno| *errno as i32 == code)
    })
}

/// The answer to one request; no I/O, so routing is tested without a socket.
fn respond(metrics: &Metrics, method: &Method, path: &str) -> Response<Full<Bytes>> {
    let route = match path {
        "/metrics" | "/healthz" | "/readyz" => path,
        _ => {
            return text(
                StatusCode::NOT_FOUND,
                "not found: try /metrics, /healthz or /readyz\n",
            )
        }
    };
    if method != Method::GET && method != Method::HEAD {
        let mut response = text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed: use GET\n",
        );
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match route {
        "/metrics" => {
            let mut response = Response::new(Full::new(Bytes::from(metrics.render())));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(METRICS_CONTENT_TYPE));
            no_store(response)
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        _ => match metrics.readiness().not_ready_reason() {
            None => text(StatusCode::OK, "ready\n"),
            Some(reason) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
        },
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(TEXT_CONTENT_TYPE));
    no_store(response)
}

/// Probes and scrapes must see the live state, never a cached copy.
fn no_store(mut response: Response<Full<Bytes>>) -> Response<Full<Bytes>> {
    response
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Binds `HOST:PORT` (`127.0.0.1:9100`, `[::1]:9100`, `localhost:9100`).
///
/// # Errors
///
/// One line naming the address and the problem, e.g.
/// `cannot listen for metrics on 127.0.0.1:80: Permission denied (os error 13)`;
/// the error kind is the underlying one (`InvalidInput` for a malformed address).
pub async fn bind(addr: &str) -> Result<TcpListener, io::Error> {
    let fail = |err: io::Error| {
        io::Error::new(
            err.kind(),
            format!("cannot listen for metrics on {addr}: {err}"),
        )
    };
    let (host, port) = split_host_port(addr)
        .map_err(|reason| fail(io::Error::new(io::ErrorKind::InvalidInput, reason)))?;
    let mut last_error = io::Error::new(io::ErrorKind::NotFound, "the host name has no address");
    for resolved in tokio::net::lookup_host((host, port)).await.map_err(fail)? {
        match listen(resolved) {
            Ok(listener) => return Ok(listener),
            Err(err) => last_error = err,
        }
    }
    Err(fail(last_error))
}

fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    // A restarted master must not wait out TIME_WAIT on its metrics port.
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(128)
}

fn split_host_port(addr: &str) -> Result<(&str, u16), &'static str> {
    let (host, port) = if let Some(rest) = addr.strip_prefix('[') {
        let (host, rest) = rest
            .split_once(']')
            .ok_or("an IPv6 address needs a closing bracket, e.g. [::1]:9100")?;
        let port = rest
            .strip_prefix(':')
            .ok_or("give a port after the address, e.g. [::1]:9100")?;
        (host, port)
    } else {
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or("give HOST:PORT, e.g. 127.0.0.1:9100")?;
        if host.contains(':') {
            return Err("put an IPv6 address in brackets, e.g. [::1]:9100");
        }
        (host, port)
    };
    if host.is_empty() {
        return Err("give a host, e.g. 127.0.0.1:9100 or 0.0.0.0:9100");
    }
    let port = port
        .parse()
        .map_err(|_| "the port must be a number from 0 to 65535")?;
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Readiness, ALL_NAMES};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    struct Running {
        addr: SocketAddr,
        metrics: Arc<Metrics>,
        stop: Option<oneshot::Sender<()>>,
        task: JoinHandle<io::Result<()>>,
    }

    async fn start() -> Running {
        let listener = bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local addr");
        let metrics = Metrics::new();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, metrics.clone(), async move {
            let _ = stopped.await;
        }));
        Running {
            addr,
            metrics,
            stop: Some(stop),
            task,
        }
    }

    struct Answer {
        status: u16,
        head: String,
        body: String,
    }

    impl Answer {
        fn header(&self, name: &str) -> Option<&str> {
            self.head.lines().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                key.eq_ignore_ascii_case(name).then(|| value.trim())
            })
        }
    }

    /// One request over a fresh connection, read to the server's close.
    async fn request(addr: SocketAddr, method: &str, path: &str) -> Answer {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let head = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).await.expect("write");
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
            .await
            .expect("answer within 10 s")
            .expect("read");
        let raw = String::from_utf8(raw).expect("utf-8 answer");
        let (head, body) = raw.split_once("\r\n\r\n").expect("a complete head");
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no status in {head:?}"));
        Answer {
            status,
            head: head.to_string(),
            body: body.to_string(),
        }
    }

    #[tokio::test]
    async fn healthz_is_ok_while_running() {
        let server = start().await;
        let answer = request(server.addr, "GET", "/healthz").await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, "ok\n");
        assert_eq!(answer.header("cache-control"), Some("no-store"));
    }

    #[tokio::test]
    async fn readyz_follows_set_workers() {
        let server = start().await;
        let answer = request(server.addr, "GET", "/readyz").await;
        assert_eq!(answer.status, 503, "nothing desired yet: {}", answer.body);

        let mut readiness = Readiness {
            ready_workers: 1,
            desired_workers: 2,
            stopping: false,
        };
        server.metrics.set_workers(Vec::new(), readiness);
        let answer = request(server.addr, "GET", "/readyz").await;
        assert_eq!(answer.status, 503);
        assert_eq!(answer.body, "not ready: 1 of 2 workers ready\n");

        readiness.ready_workers = 2;
        server.metrics.set_workers(Vec::new(), readiness);
        let answer = request(server.addr, "GET", "/readyz").await;
        assert_eq!(answer.status, 200, "{}", answer.body);

        readiness.stopping = true;
        server.metrics.set_workers(Vec::new(), readiness);
        let answer = request(server.addr, "GET", "/readyz").await;
        assert_eq!(answer.status, 503);
        assert!(answer.body.contains("stopping"), "{}", answer.body);
    }

    #[tokio::test]
    async fn metrics_serves_the_exposition() {
        let server = start().await;
        server
            .metrics
            .restart(crate::worker::state::RestartReason::Retired(
                crate::worker::state::RetireReason::Timeout,
            ));
        // Families without series are left out, so give the per-worker ones one.
        let worker = crate::metrics::WorkerView {
            id: 7,
            pid: Some(70),
            state: "serving",
            memory_bytes: Some(1),
            ..Default::default()
        };
        server
            .metrics
            .set_workers(vec![worker], Readiness::default());
        let answer = request(server.addr, "GET", "/metrics").await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.header("content-type"), Some(METRICS_CONTENT_TYPE));
        for name in ALL_NAMES {
            assert!(answer.body.contains(name), "{name} missing from /metrics");
        }
        assert!(answer
            .body
            .contains(r#"ferrocorn_worker_restarts_total{reason="timeout"} 1"#));
        assert!(answer.body.ends_with("# EOF\n"));

        let head = request(server.addr, "HEAD", "/metrics").await;
        assert_eq!(head.status, 200);
        assert_eq!(head.body, "");
    }

    #[tokio::test]
    async fn other_paths_and_methods_are_refused() {
        let server = start().await;
        for path in ["/", "/metric", "/metrics/x", "/favicon.ico"] {
            let answer = request(server.addr, "GET", path).await;
            assert_eq!(answer.status, 404, "{path}");
        }
        let answer = request(server.addr, "GET", "/healthz?verbose=1").await;
        assert_eq!(
            answer.status, 200,
            "a query string does not change the route"
        );
        let answer = request(server.addr, "POST", "/metrics").await;
        assert_eq!(answer.status, 405);
        assert_eq!(answer.header("allow"), Some("GET, HEAD"));
    }

    #[tokio::test]
    async fn shutdown_closes_the_listener_and_returns() {
        let mut server = start().await;
        // An idle kept-alive scraper must not hold the stop up.
        let _idle = TcpStream::connect(server.addr).await.expect("connect");
        assert_eq!(request(server.addr, "GET", "/healthz").await.status, 200);
        let _ = server.stop.take().expect("not stopped yet").send(());
        let result = tokio::time::timeout(Duration::from_secs(10), &mut server.task)
            .await
            .expect("serve returns within 10 s of the stop")
            .expect("serve did not panic");
        assert!(result.is_ok(), "{result:?}");
        assert!(TcpStream::connect(server.addr).await.is_err());
    }

    #[tokio::test]
    async fn bind_errors_name_the_address() {
        for (addr, hint) in [
            ("nonsense", "HOST:PORT"),
            ("::1:9100", "brackets"),
            ("[::1:9100", "closing bracket"),
            (":9100", "give a host"),
            ("127.0.0.1:http", "port must be a number"),
            ("127.0.0.1:70000", "port must be a number"),
        ] {
            let err = bind(addr).await.expect_err(addr);
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{addr}");
            let message = err.to_string();
            assert!(
                message.starts_with(&format!("cannot listen for metrics on {addr}: ")),
                "{message}"
            );
            assert!(message.contains(hint), "{addr}: {message}");
        }

        let taken = bind("127.0.0.1:0").await.expect("bind");
        let addr = taken.local_addr().expect("local addr").to_string();
        let err = bind(&addr).await.expect_err("the port is taken");
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        assert!(err.to_string().contains(&addr), "{err}");
    }

    #[test]
    fn host_and_port_are_split() {
        assert_eq!(split_host_port("127.0.0.1:9100"), Ok(("127.0.0.1", 9100)));
        assert_eq!(split_host_port("[::1]:9100"), Ok(("::1", 9100)));
        assert_eq!(split_host_port("localhost:0"), Ok(("localhost", 0)));
        assert!(split_host_port("[::1]").is_err());
    }
}
