//! hopbench: a throwaway upper-bound prototype for docs/design/hop.md.
//!
//! A minimal hyper HTTP/1 server on a current-thread tokio runtime (like the
//! master) that hands each request to N Python workers (worker.py, which calls
//! the real app) over one of two transports:
//!
//! - `sock`: today's lane framing on a Unix socketpair (8-byte header,
//!   REQUEST with NUL-separated environ, RESPONSE + BODY(END) back), to
//!   calibrate the prototype against the real server;
//! - `shm`: per-worker request and response rings in a memfd, 8-byte control
//!   words, eventfd doorbells rung only to a side that declared it sleeps,
//!   a bounded spin on this side and a 2 ms-bounded first sleep on both sides.
//!
//! Not the server: no bodies, no streaming, no failure handling, no CANCEL.
//! Usage: hopbench MODE PORT WORKERS DEPTH SPIN_US ENV PYTHON APP
//!   (ENV = split | marshal)

use std::cell::RefCell;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::io::unix::AsyncFd;
use tokio::io::AsyncReadExt;
use tokio::sync::{oneshot, Notify};

// ---------------------------------------------------------------- shm layout
// One memfd per worker: a 4 KiB control page, then the request ring, then the
// response ring. Each control word sits on its own 64-byte line and has one
// writer.
const REQ_TAIL: usize = 0; // master writes: requests published
const REQ_HEAD: usize = 64; // worker writes: requests taken
const W_SLEEP: usize = 128; // worker writes: odd = asleep (a sequence number)
const RESP_TAIL: usize = 192; // worker writes: responses published
const RESP_HEAD: usize = 256; // master writes: responses taken
const M_SLEEP: usize = 320; // master writes: odd = asleep
const SLOTS: usize = 16;
const SLOT: usize = 16 * 1024;
const CTRL: usize = 4096;
const MAP: usize = CTRL + 2 * SLOTS * SLOT;

struct Shm {
    base: *mut u8,
}

impl Shm {
    fn word(&self, off: usize) -> &AtomicU64 {
        // SAFETY: off is one of the aligned control offsets inside the mapping.
        unsafe { &*(self.base.add(off) as *const AtomicU64) }
    }
    fn req_slot(&self, i: u64) -> *mut u8 {
        unsafe { self.base.add(CTRL + (i as usize % SLOTS) * SLOT) }
    }
    fn resp_slot(&self, i: u64) -> *mut u8 {
        unsafe { self.base.add(CTRL + SLOTS * SLOT + (i as usize % SLOTS) * SLOT) }
    }
}

// ---------------------------------------------------------------- dispatch

struct Job {
    payload: Vec<u8>,
    tx: oneshot::Sender<Bytes>,
}

enum Link {
    Sock { fd: RawFd },
    Shm { shm: Shm, doorbell: RawFd, req_tail: u64, resp_head: u64, last_rung: u64 },
}

struct Worker {
    link: Link,
    inflight: VecDeque<oneshot::Sender<Bytes>>,
}

struct Dispatcher {
    workers: Vec<Worker>,
    queue: VecDeque<Job>,
    depth: usize,
    outstanding: usize,
    doorbells: u64,
    master_sleep_seq: u64,
}

impl Dispatcher {
    fn submit(&mut self, job: Job) {
        self.queue.push_back(job);
        self.fill();
    }

    /// Move queued jobs into the least-loaded workers, up to depth each.
    fn fill(&mut self) {
        while !self.queue.is_empty() {
            let (i, n) = self
                .workers
                .iter()
                .enumerate()
                .map(|(i, w)| (i, w.inflight.len()))
                .min_by_key(|&(_, n)| n)
                .expect("at least one worker");
            if n >= self.depth {
                return;
            }
            let job = self.queue.pop_front().expect("queue not empty");
            let w = &mut self.workers[i];
            match &mut w.link {
                Link::Sock { fd } => {
                    let mut frame = Vec::with_capacity(8 + job.payload.len());
                    frame.extend_from_slice(&(job.payload.len() as u32).to_le_bytes());
                    frame.extend_from_slice(&[16, 0, 0, 0]);
                    frame.extend_from_slice(&job.payload);
                    let n = unsafe { libc::write(*fd, frame.as_ptr().cast(), frame.len()) };
                    assert_eq!(n as usize, frame.len(), "prototype: short lane write");
                }
                Link::Shm { shm, doorbell, req_tail, last_rung, .. } => {
                    assert!(job.payload.len() + 4 <= SLOT, "prototype: request too large");
                    let slot = shm.req_slot(*req_tail);
                    unsafe {
                        std::ptr::copy_nonoverlapping((job.payload.len() as u32).to_le_bytes().as_ptr(), slot, 4);
                        std::ptr::copy_nonoverlapping(job.payload.as_ptr(), slot.add(4), job.payload.len());
                    }
                    *req_tail += 1;
                    shm.word(REQ_TAIL).store(*req_tail, Ordering::Release);
                    // Store (tail) then load (sleep word): needs a full fence,
                    // or the worker may go to sleep having missed the tail.
                    fence(Ordering::SeqCst);
                    let s = shm.word(W_SLEEP).load(Ordering::Acquire);
                    if s & 1 == 1 && s != *last_rung {
                        *last_rung = s;
                        self.doorbells += 1;
                        let one: u64 = 1;
                        unsafe { libc::write(*doorbell, (&one as *const u64).cast(), 8) };
                    }
                }
            }
            w.inflight.push_back(job.tx);
            self.outstanding += 1;
        }
    }

    fn complete(&mut self, i: usize, resp: Bytes) {
        let tx = self.workers[i].inflight.pop_front().expect("a response answers the oldest request");
        self.outstanding -= 1;
        let _ = tx.send(resp);
    }

    /// Take every published response from the shm rings.
    fn drain_shm(&mut self) -> usize {
        let mut n = 0;
        for i in 0..self.workers.len() {
            loop {
                let resp = match &mut self.workers[i].link {
                    Link::Shm { shm, resp_head, .. } => {
                        let tail = shm.word(RESP_TAIL).load(Ordering::Acquire);
                        if *resp_head == tail {
                            break;
                        }
                        let slot = shm.resp_slot(*resp_head);
                        let mut len = [0u8; 4];
                        unsafe { std::ptr::copy_nonoverlapping(slot, len.as_mut_ptr(), 4) };
                        let len = (u32::from_le_bytes(len) as usize).min(SLOT - 4); // never trust the worker
                        let data = unsafe { std::slice::from_raw_parts(slot.add(4), len) };
                        let b = Bytes::copy_from_slice(data);
                        *resp_head += 1;
                        shm.word(RESP_HEAD).store(*resp_head, Ordering::Release);
                        b
                    }
                    Link::Sock { .. } => break,
                };
                self.complete(i, resp);
                n += 1;
            }
        }
        n
    }

    fn set_master_sleep(&mut self, asleep: bool) {
        self.master_sleep_seq += 1;
        debug_assert_eq!(self.master_sleep_seq & 1 == 1, asleep);
        for w in &self.workers {
            if let Link::Shm { shm, .. } = &w.link {
                shm.word(M_SLEEP).store(self.master_sleep_seq, Ordering::Release);
            }
        }
        fence(Ordering::SeqCst);
    }
}

type Shared = Rc<RefCell<Dispatcher>>;

// ---------------------------------------------------------------- environ

#[derive(Clone, Copy, PartialEq)]
enum Env {
    Split,
    Marshal,
}

struct EnvWriter {
    kind: Env,
    buf: Vec<u8>,
    first: bool,
}

impl EnvWriter {
    fn new(kind: Env) -> Self {
        let mut buf = Vec::with_capacity(512);
        if kind == Env::Marshal {
            buf.push(b'{');
        }
        EnvWriter { kind, buf, first: true }
    }
    fn marshal_str(&mut self, s: &[u8], intern: bool) {
        if s.is_ascii() {
            if s.len() < 256 {
                self.buf.push(if intern { b'Z' } else { b'z' });
                self.buf.push(s.len() as u8);
            } else {
                self.buf.push(if intern { b'A' } else { b'a' });
                self.buf.extend_from_slice(&(s.len() as u32).to_le_bytes());
            }
            self.buf.extend_from_slice(s);
        } else {
            // latin-1 bytes -> UTF-8 text, as the worker's decode("latin-1") would give
            let text: String = s.iter().map(|&b| b as char).collect();
            self.buf.push(b'u');
            self.buf.extend_from_slice(&(text.len() as u32).to_le_bytes());
            self.buf.extend_from_slice(text.as_bytes());
        }
    }
    fn pair(&mut self, k: &[u8], v: &[u8]) {
        match self.kind {
            Env::Split => {
                if !self.first {
                    self.buf.push(0);
                }
                self.buf.extend_from_slice(k);
                self.buf.push(0);
                self.buf.extend_from_slice(v);
            }
            Env::Marshal => {
                self.marshal_str(k, true);
                self.marshal_str(v, false);
            }
        }
        self.first = false;
    }
    fn finish(mut self) -> Vec<u8> {
        if self.kind == Env::Marshal {
            self.buf.push(b'0');
        }
        self.buf
    }
}

fn environ(kind: Env, req: &Request<Incoming>, peer: SocketAddr, port: &str) -> Vec<u8> {
    let mut w = EnvWriter::new(kind);
    let uri = req.uri();
    w.pair(b"REQUEST_METHOD", req.method().as_str().as_bytes());
    w.pair(b"SCRIPT_NAME", b"");
    w.pair(b"PATH_INFO", uri.path().as_bytes());
    w.pair(b"QUERY_STRING", uri.query().unwrap_or("").as_bytes());
    w.pair(b"SERVER_NAME", b"127.0.0.1");
    w.pair(b"SERVER_PORT", port.as_bytes());
    w.pair(b"SERVER_PROTOCOL", if req.version() == hyper::Version::HTTP_10 { b"HTTP/1.0" } else { b"HTTP/1.1" });
    w.pair(b"SERVER_SOFTWARE", b"ferrocorn/0.1.0");
    w.pair(b"REMOTE_ADDR", peer.ip().to_string().as_bytes());
    w.pair(b"REMOTE_PORT", peer.port().to_string().as_bytes());
    w.pair(b"RAW_URI", uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").as_bytes());
    w.pair(b"wsgi.url_scheme", b"http");
    let mut key = Vec::with_capacity(64);
    for (name, value) in req.headers() {
        key.clear();
        match name.as_str() {
            "content-type" => key.extend_from_slice(b"CONTENT_TYPE"),
            "content-length" => key.extend_from_slice(b"CONTENT_LENGTH"),
            n => {
                key.extend_from_slice(b"HTTP_");
                key.extend(n.bytes().map(|b| if b == b'-' { b'_' } else { b.to_ascii_uppercase() }));
            }
        }
        w.pair(&key, value.as_bytes());
    }
    w.finish()
}

/// A worker's response (`status NUL name NUL value ...` head, then body) as hyper's.
fn response(mode_sock: bool, data: Bytes) -> Response<Full<Bytes>> {
    // sock: RESPONSE frame + BODY(END) frame; shm: u32 head length, head, body.
    let (head, body) = if mode_sock {
        let hl = u32::from_le_bytes(data[0..4].try_into().expect("4 bytes")) as usize;
        let head = data.slice(8..8 + hl);
        let body = data.slice(8 + hl + 8..);
        (head, body)
    } else {
        let hl = u32::from_le_bytes(data[0..4].try_into().expect("4 bytes")) as usize;
        (data.slice(4..4 + hl), data.slice(4 + hl..))
    };
    let mut parts = head.split(|&b| b == 0);
    let status = parts.next().unwrap_or(b"500");
    let code = std::str::from_utf8(&status[..3.min(status.len())]).ok().and_then(|s| s.parse::<u16>().ok()).unwrap_or(500);
    let mut rb = Response::builder().status(code);
    while let (Some(k), Some(v)) = (parts.next(), parts.next()) {
        if k.eq_ignore_ascii_case(b"content-length") {
            continue; // hyper sets it from the full body
        }
        rb = rb.header(k, v);
    }
    rb.header("server", "ferrocorn").body(Full::new(body)).expect("valid response")
}

// ---------------------------------------------------------------- workers

fn spawn_worker(python: &str, app: &str, env: Env, vars: &[(&str, String)], keep: &[RawFd]) -> std::process::Child {
    let mut cmd = std::process::Command::new(python);
    cmd.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/worker.py"))
        .env("HOP_APP", app)
        .env("HOP_ENV", if env == Env::Marshal { "marshal" } else { "split" });
    for (k, v) in vars {
        cmd.env(k, v);
    }
    for &fd in keep {
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
        }
    }
    let child = cmd.spawn().expect("spawn python worker");
    for &fd in keep {
        unsafe { libc::close(fd) };
    }
    child
}

fn socketpair() -> (RawFd, RawFd) {
    let mut fds = [0; 2];
    let rc = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr()) };
    assert_eq!(rc, 0);
    (fds[0], fds[1])
}

fn eventfd(cloexec: bool) -> RawFd {
    let fl = libc::EFD_NONBLOCK | if cloexec { libc::EFD_CLOEXEC } else { 0 };
    let fd = unsafe { libc::eventfd(0, fl) };
    assert!(fd >= 0);
    fd
}

fn memfd() -> (RawFd, *mut u8) {
    let fd = unsafe { libc::memfd_create(c"hop".as_ptr(), 0) };
    assert!(fd >= 0);
    assert_eq!(unsafe { libc::ftruncate(fd, MAP as i64) }, 0);
    let p = unsafe { libc::mmap(std::ptr::null_mut(), MAP, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0) };
    assert!(p != libc::MAP_FAILED);
    (fd, p.cast())
}

/// sock mode: read RESPONSE + BODY(END) pairs from one lane and complete them in order.
async fn sock_reader(d: Shared, i: usize, fd: RawFd) {
    let std = unsafe { std::os::unix::net::UnixStream::from_raw_fd(libc::dup(fd)) };
    std.set_nonblocking(true).expect("nonblocking");
    let mut s = tokio::net::UnixStream::from_std(std).expect("register lane");
    let mut buf: Vec<u8> = Vec::with_capacity(65536);
    let mut tmp = vec![0u8; 65536];
    loop {
        let n = s.read(&mut tmp).await.expect("lane read");
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&tmp[..n]);
        // one response = RESPONSE frame + BODY(END) frame
        let mut pos = 0;
        let mut done = Vec::new();
        loop {
            if buf.len() - pos < 8 {
                break;
            }
            let hl = u32::from_le_bytes(buf[pos..pos + 4].try_into().unwrap()) as usize;
            let b = pos + 8 + hl;
            if buf.len() < b + 8 {
                break;
            }
            let bl = u32::from_le_bytes(buf[b..b + 4].try_into().unwrap()) as usize;
            let end = b + 8 + bl;
            if buf.len() < end {
                break;
            }
            done.push(Bytes::copy_from_slice(&buf[pos..end]));
            pos = end;
        }
        buf.drain(..pos);
        let mut dd = d.borrow_mut();
        for r in done {
            dd.complete(i, r);
        }
        dd.fill();
    }
}

/// shm mode: take responses; spin (bounded) while requests are out; then sleep
/// on the master's eventfd, at most 2 ms while requests are out (a lost
/// wake-up costs at most that).
async fn shm_pump(d: Shared, efd: RawFd, notify: Rc<Notify>, spin: Duration) {
    let afd = AsyncFd::new(unsafe { OwnedFd::from_raw_fd(efd) }).expect("register eventfd");
    let mut lost = 0u64;
    let mut sleeps = 0u64;
    loop {
        let n = { let mut dd = d.borrow_mut(); let n = dd.drain_shm(); if n > 0 { dd.fill(); } n };
        if n > 0 {
            tokio::task::yield_now().await;
            continue;
        }
        let start = Instant::now();
        let mut got = false;
        while start.elapsed() < spin && d.borrow().outstanding > 0 {
            tokio::task::yield_now().await;
            let mut dd = d.borrow_mut();
            if dd.drain_shm() > 0 {
                dd.fill();
                got = true;
                break;
            }
        }
        if got {
            continue;
        }
        // declare sleep, then look once more (the fence is in set_master_sleep)
        {
            let mut dd = d.borrow_mut();
            dd.set_master_sleep(true);
            if dd.drain_shm() > 0 {
                dd.fill();
                dd.set_master_sleep(false);
                continue;
            }
        }
        sleeps += 1;
        let outstanding = d.borrow().outstanding;
        let woke = if outstanding > 0 {
            match tokio::time::timeout(Duration::from_millis(2), afd.readable()).await {
                Ok(g) => { g.expect("eventfd").clear_ready(); true }
                Err(_) => false,
            }
        } else {
            tokio::select! {
                g = afd.readable() => { g.expect("eventfd").clear_ready(); true }
                _ = notify.notified() => true,
            }
        };
        let mut v = 0u64;
        unsafe { libc::read(efd, (&mut v as *mut u64).cast(), 8) };
        let mut dd = d.borrow_mut();
        dd.set_master_sleep(false);
        let mut report = sleeps % 100_000 == 0;
        if !woke && dd.drain_shm() > 0 {
            lost += 1; // the worker published but did not ring: a lost wake-up
            report |= lost % 100 == 1;
            dd.fill();
        }
        if report {
            eprintln!("hopbench: master sleeps {sleeps}, lost wake-ups {lost}, doorbells to workers {}", dd.doorbells);
        }
    }
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 9 {
        eprintln!("usage: hopbench sock|shm PORT WORKERS DEPTH SPIN_US split|marshal PYTHON APP");
        std::process::exit(2);
    }
    let sock = a[1] == "sock";
    let port: u16 = a[2].parse().expect("port");
    let nworkers: usize = a[3].parse().expect("workers");
    let depth: usize = a[4].parse().expect("depth");
    let spin = Duration::from_micros(a[5].parse().expect("spin"));
    let env = if a[6] == "marshal" { Env::Marshal } else { Env::Split };
    let (python, app) = (a[7].clone(), a[8].clone());
    assert!(depth <= SLOTS);

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let master_efd = if sock { -1 } else { eventfd(false) };
        let mut workers = Vec::new();
        let mut children = Vec::new();
        for _ in 0..nworkers {
            if sock {
                let (mine, theirs) = socketpair();
                children.push(spawn_worker(&python, &app, env, &[("HOP_MODE", "sock".into()), ("HOP_FD", theirs.to_string())], &[theirs]));
                workers.push(Worker { link: Link::Sock { fd: mine }, inflight: VecDeque::new() });
            } else {
                let (mfd, base) = memfd();
                let bell = eventfd(false);
                let dup_master = unsafe { libc::dup(master_efd) };
                children.push(spawn_worker(
                    &python,
                    &app,
                    env,
                    &[
                        ("HOP_MODE", "shm".into()),
                        ("HOP_MEM_FD", mfd.to_string()),
                        ("HOP_MEM_SIZE", MAP.to_string()),
                        ("HOP_SLOTS", SLOTS.to_string()),
                        ("HOP_SLOT", SLOT.to_string()),
                        ("HOP_DOORBELL_FD", bell.to_string()),
                        ("HOP_MASTER_FD", dup_master.to_string()),
                    ],
                    &[mfd, dup_master],
                ));
                // keep our copy of the doorbell: re-mark it close-on-exec for the next spawn
                unsafe { libc::fcntl(bell, libc::F_SETFD, libc::FD_CLOEXEC) };
                workers.push(Worker {
                    link: Link::Shm { shm: Shm { base }, doorbell: bell, req_tail: 0, resp_head: 0, last_rung: 0 },
                    inflight: VecDeque::new(),
                });
            }
        }
        let d: Shared = Rc::new(RefCell::new(Dispatcher {
            workers,
            queue: VecDeque::new(),
            depth,
            outstanding: 0,
            doorbells: 0,
            master_sleep_seq: 0,
        }));
        let notify = Rc::new(Notify::new());
        if sock {
            let fds: Vec<RawFd> = d.borrow().workers.iter().map(|w| match w.link { Link::Sock { fd } => fd, _ => unreachable!() }).collect();
            for (i, fd) in fds.into_iter().enumerate() {
                tokio::task::spawn_local(sock_reader(d.clone(), i, fd));
            }
        } else {
            tokio::task::spawn_local(shm_pump(d.clone(), master_efd, notify.clone(), spin));
        }
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
        eprintln!("hopbench: listening on 127.0.0.1:{port} mode={} workers={nworkers} depth={depth}", a[1]);
        let port_s: Rc<str> = port.to_string().into();
        loop {
            let (tcp, peer) = listener.accept().await.expect("accept");
            tcp.set_nodelay(true).ok();
            let d = d.clone();
            let notify = notify.clone();
            let port_s = port_s.clone();
            tokio::task::spawn_local(async move {
                let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let d = d.clone();
                    let notify = notify.clone();
                    let payload = environ(env, &req, peer, &port_s);
                    async move {
                        let (tx, rx) = oneshot::channel();
                        d.borrow_mut().submit(Job { payload, tx });
                        notify.notify_one();
                        let data = rx.await.expect("worker answered");
                        Ok::<_, Infallible>(response(sock, data))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
            });
            let _ = children.len();
            let _ = AsRawFd::as_raw_fd(&listener);
        }
    });
}
