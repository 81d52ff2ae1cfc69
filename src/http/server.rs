//! Accepting connections and serving them with hyper's HTTP/1 engine:
//! keep-alive, pipelining, chunked bodies, `Expect: 100-continue`, header
//! limits and timeouts. A stop closes the listeners at once; a graceful stop
//! lets open connections finish their requests first (hyper-util's
//! graceful watcher) and then says so.

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info, warn};

use super::framing::Verdicts;
use super::guarded::Guarded;
use super::listener::Listener;
use super::scanner::MAX_HEAD;
use super::service::{handle, ServiceCtx};
use super::timer::KeepAliveTimer;
use crate::protocol::environ::ConnInfo;

/// Connection-level HTTP settings.
#[derive(Debug, Clone, Copy)]
pub struct ConnOptions {
    /// Idle wait for the next request on a kept-alive connection; zero turns keep-alive off.
    pub keep_alive: Duration,
    /// Time a new connection gets to send its first request head.
    pub header_timeout: Duration,
    /// Most header fields in a request (`--limit-request-fields`).
    pub max_headers: usize,
    /// Most client connections open at once (`--worker-connections` per
    /// worker); at the bound the listeners stop accepting, and the kernel's
    /// backlog holds the next ones. This is what bounds the master's memory
    /// for clients that hold connections open (each costs up to a head's
    /// worth of buffer: `scanner::MAX_HEAD`).
    pub max_connections: usize,
}

/// Handle to the running HTTP front.
#[derive(Debug)]
pub struct HttpServer {
    stop: Option<oneshot::Sender<bool>>,
}

impl HttpServer {
    /// Closes the listeners; with `graceful`, open connections finish
    /// their requests and `closed` runs when the last one is gone.
    pub fn stop(&mut self, graceful: bool) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(graceful);
        }
    }
}

enum Accepted {
    Tcp(TcpStream, ConnInfo),
    Unix(UnixStream, ConnInfo),
}

/// Starts accepting on every listener.
pub fn start(
    listeners: Vec<Listener>,
    ctx: Arc<ServiceCtx>,
    options: ConnOptions,
    closed: impl FnOnce() + Send + 'static,
) -> HttpServer {
    let (stop_tx, mut stop_rx) = oneshot::channel::<bool>();
    let (conn_tx, mut conn_rx) = mpsc::channel::<(Accepted, OwnedSemaphorePermit)>(256);
    let slots = Arc::new(Semaphore::new(
        options.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    let accepting: Vec<_> = listeners
        .into_iter()
        .map(|listener| tokio::spawn(accept_loop(listener, conn_tx.clone(), slots.clone())))
        .collect();
    drop(conn_tx);
    tokio::spawn(async move {
        let graceful = GracefulShutdown::new();
        let mut builder = http1::Builder::new();
        builder
            .keep_alive(!options.keep_alive.is_zero())
            .header_read_timeout(options.header_timeout)
            .max_headers(options.max_headers.max(1))
            .max_buf_size(MAX_HEAD)
            // Not pipeline_flush: with it hyper 1.x drops the automatic 400
            // for an unparsable request and closes silently.
            //
            // A client may shut down its sending side once its request is
            // out (`nc -N`, `shutdown(SHUT_WR)`) and still read the response,
            // as gunicorn allows. The cost: a client that goes away while the
            // app runs is noticed when its response is written, not at its
            // FIN (gunicorn's sync worker notices it no sooner).
            .half_close(true);
        loop {
            tokio::select! {
                accepted = conn_rx.recv() => match accepted {
                    Some((Accepted::Tcp(io, info), slot)) => serve(&graceful, &builder, io, info, &ctx, options, slot),
                    Some((Accepted::Unix(io, info), slot)) => serve(&graceful, &builder, io, info, &ctx, options, slot),
                    None => break,
                },
                how = &mut stop_rx => {
                    for task in &accepting {
                        task.abort(); // drops (closes) the listener
                    }
                    if how.unwrap_or(false) {
                        let connections = graceful.count();
                        info!(connections, "Listeners closed; waiting for {connections} open connections");
                        graceful.shutdown().await;
                    }
                    closed();
                    return;
                }
            }
        }
    });
    HttpServer {
        stop: Some(stop_tx),
    }
}

fn serve<I>(
    graceful: &GracefulShutdown,
    builder: &http1::Builder,
    io: I,
    info: ConnInfo,
    ctx: &Arc<ServiceCtx>,
    options: ConnOptions,
    slot: OwnedSemaphorePermit,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let info = Arc::new(info);
    let ctx = ctx.clone();
    let verdicts = Arc::new(Verdicts::default());
    let io = Guarded::new(io, verdicts.clone());
    let service = service_fn(move |req| handle(ctx.clone(), info.clone(), verdicts.clone(), req));
    let mut builder = builder.clone();
    builder.timer(KeepAliveTimer::new(options.keep_alive));
    let conn = graceful.watch(builder.serve_connection(TokioIo::new(io), service));
    tokio::spawn(async move {
        if let Err(err) = conn.await {
            debug!(error = %err, "connection ended with an error");
        }
        drop(slot);
    });
}

async fn accept_loop(
    listener: Listener,
    out: mpsc::Sender<(Accepted, OwnedSemaphorePermit)>,
    slots: Arc<Semaphore>,
) {
    loop {
        // At the bound, wait for a connection to end before accepting.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let accepted = match &listener {
            Listener::Tcp(tcp) => tcp.accept().await.map(|(stream, peer)| {
                let _ = stream.set_nodelay(true);
                let local = stream.local_addr().ok();
                let info = ConnInfo {
                    remote_addr: peer.ip().to_string(),
                    remote_port: peer.port().to_string(),
                    server_name: local.map_or_else(String::new, |a| a.ip().to_string()),
                    server_port: local.map_or_else(String::new, |a| a.port().to_string()),
                    scheme: "http",
                };
                Accepted::Tcp(stream, info)
            }),
            Listener::Unix(unix, path) => unix.accept().await.map(|(stream, _)| {
                let info = ConnInfo {
                    remote_addr: String::new(),
                    remote_port: String::new(),
                    server_name: path.display().to_string(),
                    server_port: String::new(),
                    scheme: "http",
                };
                Accepted::Unix(stream, info)
            }),
        };
        match accepted {
            Ok(conn) => {
                if out.send((conn, slot)).await.is_err() {
                    return;
                }
            }
            Err(err) => {
                // EMFILE and friends: back off briefly instead of spinning.
                warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
