//! A per-connection timer for hyper that gives the first request head
//! `--header-timeout` and every later one `--keep-alive`. hyper has a
//! single header-read timeout that also runs while a kept-alive connection
//! sits idle; gunicorn's keep-alive is exactly that idle wait, so the
//! second and later deadlines are shortened to it.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hyper::rt::{Sleep, Timer};
use hyper_util::rt::TokioTimer;

/// See the module doc.
#[derive(Debug)]
pub struct KeepAliveTimer {
    inner: TokioTimer,
    keep_alive: Duration,
    first_head_seen: AtomicBool,
}

impl KeepAliveTimer {
    /// A timer for one new connection.
    pub fn new(keep_alive: Duration) -> KeepAliveTimer {
        KeepAliveTimer {
            inner: TokioTimer::new(),
            keep_alive,
            first_head_seen: AtomicBool::new(false),
        }
    }
}

impl Timer for KeepAliveTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.inner.sleep(duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        // hyper asks for a fresh sleep before each request head.
        if self.first_head_seen.swap(true, Ordering::Relaxed) {
            self.inner.sleep_until(Instant::now() + self.keep_alive)
        } else {
            self.inner.sleep_until(deadline)
        }
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: Instant) {
        self.inner.reset(sleep, new_deadline)
    }
}
