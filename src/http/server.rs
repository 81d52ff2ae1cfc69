//! Accepting connections and serving them with hyper's HTTP/1 engine:
//! keep-alive, pipelining, chunked bodies, `Expect: 100-continue`, header
//! limits and timeouts. A stop closes the listeners at once; a graceful stop
//! lets open connections finish their requests first (`graceful.rs`) and
//! then says so. A pause (WINCH after a binary
//! upgrade) stops accepting but keeps the listeners open, and lets the open
//! connections finish the same way; a resume accepts again. With `--proxy-protocol`, a
//! connection's PROXY header is read (`peer.rs`) before hyper sees a byte.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::{mpsc, oneshot, watch, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info, warn};

use super::framing::Verdicts;
use super::graceful::{GracefulShutdown, Stoppable};
use super::guarded::Guarded;
use super::listener::Listener;
use super::peer::{read_proxy_header, PeerRules, Rewound};
use super::proxy_protocol::ProxyHeader;
use super::scanner::MAX_HEAD;
use super::service::{handle, ServiceCtx};
use super::timer::KeepAliveTimer;
use crate::config::proxy::ProxyProtocol;
use crate::protocol::environ::{ConnInfo, ProxyInfo};

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
    paused: watch::Sender<bool>,
}

impl HttpServer {
    /// Closes the listeners; with `graceful`, open connections finish
    /// their requests and `closed` runs when the last one is gone.
    pub fn stop(&mut self, graceful: bool) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(graceful);
        }
    }

    /// Stops accepting, keeping the listeners open; open connections
    /// finish their requests and close, then `quiesced` runs.
    pub fn pause(&self) {
        self.paused.send_replace(true);
    }

    /// Accepts again after a pause.
    pub fn resume(&self) {
        self.paused.send_replace(false);
    }
}

/// A new connection, what it says about itself, and its peer's IP (none
/// on a Unix socket).
enum Accepted {
    Tcp(TcpStream, ConnInfo, Option<IpAddr>),
    Unix(UnixStream, ConnInfo, Option<IpAddr>),
}

/// Starts accepting on every listener.
pub fn start(
    listeners: Vec<Listener>,
    ctx: Arc<ServiceCtx>,
    options: ConnOptions,
    rules: Arc<PeerRules>,
    closed: impl FnOnce() + Send + 'static,
    quiesced: impl Fn() + Send + Sync + 'static,
) -> HttpServer {
    let (stop_tx, mut stop_rx) = oneshot::channel::<bool>();
    let (paused_tx, mut paused_rx) = watch::channel(false);
    let quiesced = Arc::new(quiesced);
    let (conn_tx, mut conn_rx) = mpsc::channel::<(Accepted, OwnedSemaphorePermit)>(256);
    let slot_count = options
        .max_connections
        .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    let slots = Arc::new(Semaphore::new(slot_count));
    let accepting: Vec<_> = listeners
        .into_iter()
        .map(|listener| {
            tokio::spawn(accept_loop(
                listener,
                conn_tx.clone(),
                rules.clone(),
                slots.clone(),
                paused_rx.clone(),
            ))
        })
        .collect();
    drop(conn_tx);
    tokio::spawn(async move {
        let mut graceful = GracefulShutdown::new();
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
        let mut paused = false;
        loop {
            tokio::select! {
                accepted = conn_rx.recv() => {
                    // Accepted just before a pause: served for one request
                    // (keep-alive off), as the connections open at the pause.
                    let late = paused.then(GracefulShutdown::new);
                    let watch = late.as_ref().unwrap_or(&graceful);
                    match accepted {
                        Some((Accepted::Tcp(io, info, peer), slot)) => serve(watch, &builder, io, (info, peer, slot), &ctx, options, &rules),
                        Some((Accepted::Unix(io, info, peer), slot)) => serve(watch, &builder, io, (info, peer, slot), &ctx, options, &rules),
                        None => break,
                    }
                    if let Some(late) = late {
                        tokio::spawn(late.shutdown());
                    }
                }
                Ok(()) = paused_rx.changed() => {
                    paused = *paused_rx.borrow_and_update();
                    if paused {
                        // The connections open now finish apart; those
                        // accepted after a resume are watched afresh.
                        let open = std::mem::replace(&mut graceful, GracefulShutdown::new());
                        info!(connections = open.count(), "Accepting paused; open connections finish");
                        tokio::spawn(open.shutdown());
                        tokio::spawn(quiesce(slots.clone(), slot_count as u32, paused_rx.clone(), quiesced.clone()));
                    } else {
                        info!("Accepting resumed");
                    }
                }
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
        paused: paused_tx,
    }
}

/// Paused: once every connection has ended (each holds one of the
/// `slots` until it does), runs `quiesced`; called off by a resume.
async fn quiesce(
    slots: Arc<Semaphore>,
    count: u32,
    mut paused: watch::Receiver<bool>,
    quiesced: Arc<impl Fn() + Send + Sync + 'static>,
) {
    let resumed = async {
        while *paused.borrow_and_update() {
            if paused.changed().await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        all = slots.acquire_many(count) => {
            drop(all);
            quiesced();
        }
        () = resumed => {}
    }
}

fn serve<I>(
    graceful: &GracefulShutdown,
    builder: &http1::Builder,
    io: I,
    // What the accept loop learnt, and the connection's slot under
    // `max_connections` (given back when the connection ends).
    (mut info, peer, slot): (ConnInfo, Option<IpAddr>, OwnedSemaphorePermit),
    ctx: &Arc<ServiceCtx>,
    options: ConnOptions,
    rules: &Arc<PeerRules>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ctx = ctx.clone();
    let mut builder = builder.clone();
    builder.timer(KeepAliveTimer::new(
        options.header_timeout,
        options.keep_alive,
    ));
    if rules.proxy_protocol == ProxyProtocol::Off {
        let conn = graceful.watch(connection(&builder, io, info, ctx));
        tokio::spawn(async move {
            if let Err(err) = conn.await {
                debug!(error = %err, "connection ended with an error");
            }
            drop(slot);
        });
        return;
    }
    let watcher = graceful.watcher();
    let rules = rules.clone();
    tokio::spawn(async move {
        let mut io = io;
        // The header counts against the time for the first request head.
        let read = read_proxy_header(&mut io, peer, &rules);
        let (header, rest) = match tokio::time::timeout(options.header_timeout, read).await {
            Ok(Ok(read)) => read,
            Ok(Err(Some(refusal))) => {
                debug!(peer = ?peer, error = %refusal, "connection refused");
                let _ = io.write_all(&refusal.response_bytes()).await;
                let _ = io.shutdown().await;
                return;
            }
            Ok(Err(None)) | Err(_) => return,
        };
        // gunicorn's proxy_environ: the client is REMOTE_ADDR and
        // REMOTE_PORT; LOCAL, UNSPEC and UNKNOWN keep the socket's peer.
        if let Some(ProxyHeader::Proxied {
            source,
            destination,
            protocol,
        }) = header
        {
            info.remote_addr = source.ip().to_string();
            info.remote_port = source.port().to_string();
            info.proxied = Some(ProxyInfo {
                protocol,
                addr: destination.ip().to_string(),
                port: destination.port().to_string(),
            });
        }
        let conn = watcher.watch(connection(&builder, Rewound::new(io, rest), info, ctx));
        if let Err(err) = conn.await {
            debug!(error = %err, "connection ended with an error");
        }
        drop(slot);
    });
}

/// hyper's connection over `io`, its bytes watched by the scanner.
fn connection<I>(
    builder: &http1::Builder,
    io: I,
    info: ConnInfo,
    ctx: Arc<ServiceCtx>,
) -> impl Stoppable<Output = Result<(), hyper::Error>> + Send
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let info = Arc::new(info);
    let verdicts = Arc::new(Verdicts::default());
    let io = Guarded::new(io, verdicts.clone());
    let service = service_fn(move |req| handle(ctx.clone(), info.clone(), verdicts.clone(), req));
    builder.serve_connection(TokioIo::new(io), service)
}

async fn accept_loop(
    listener: Listener,
    out: mpsc::Sender<(Accepted, OwnedSemaphorePermit)>,
    rules: Arc<PeerRules>,
    slots: Arc<Semaphore>,
    mut paused: watch::Receiver<bool>,
) {
    loop {
        // Paused: the socket stays open (the kernel queues connections for
        // whoever else accepts on it), we take none.
        while *paused.borrow_and_update() {
            if paused.changed().await.is_err() {
                return;
            }
        }
        // At the bound, wait for a connection to end before accepting.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let accept = async {
            match &listener {
                Listener::Tcp(tcp) => tcp.accept().await.map(|(stream, peer)| {
                    let _ = stream.set_nodelay(true);
                    let local = stream.local_addr().ok();
                    let info = ConnInfo {
                        remote_addr: peer.ip().to_string(),
                        remote_port: peer.port().to_string(),
                        server_name: local.map_or_else(String::new, |a| a.ip().to_string()),
                        server_port: local.map_or_else(String::new, |a| a.port().to_string()),
                        scheme: "http",
                        trusted: rules.trusts(Some(peer.ip())),
                        forwarding: rules.forwarding.clone(),
                        proxied: None,
                    };
                    Accepted::Tcp(stream, info, Some(peer.ip()))
                }),
                Listener::Unix(unix, path) => unix.accept().await.map(|(stream, _)| {
                    let info = ConnInfo {
                        remote_addr: String::new(),
                        remote_port: String::new(),
                        server_name: path.display().to_string(),
                        server_port: String::new(),
                        scheme: "http",
                        trusted: true,
                        forwarding: rules.forwarding.clone(),
                        proxied: None,
                    };
                    Accepted::Unix(stream, info, None)
                }),
            }
        };
        let accepted = tokio::select! {
            accepted = accept => accepted,
            // Accepting is cancel-safe: a connection not taken stays queued.
            Ok(()) = paused.changed() => continue,
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
