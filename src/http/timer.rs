//! A per-connection timer for hyper that gives the first request head
//! `--header-timeout` and every later one `--keep-alive`. hyper has a
//! single header-read timeout that also runs while a kept-alive connection
//! sits idle; gunicorn's keep-alive is exactly that idle wait, so the
//! second and later deadlines are shortened to it.
//!
//! hyper asks for a new sleep before every request head and drops it once
//! the head is read. A tokio sleep per head put an entry in tokio's timer
//! wheel and took it out again for every request (about 650 instructions
//! per request in the master, callgrind, plain WSGI). Here a connection
//! keeps one tokio sleep, armed no later than the deadline of the head
//! awaited; a head's deadline only moves it when it is earlier. When it
//! goes off before the awaited head's deadline (a deadline of a head read
//! since), it is armed again for that one. So a busy connection touches
//! the wheel about once per keep-alive interval, not once per request.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::rt::{Sleep, Timer};
use hyper_util::rt::TokioTimer;

/// See the module doc.
#[derive(Debug)]
pub struct KeepAliveTimer {
    /// For any other sleep hyper asks for (none, on a server, today).
    inner: TokioTimer,
    /// hyper's header-read timeout: what it adds to its clock reading.
    header_timeout: Duration,
    keep_alive: Duration,
    first_head_seen: AtomicBool,
    armed: Arc<Armed>,
}

/// The connection's one tokio sleep, once a head was awaited.
type Armed = Mutex<Option<Pin<Box<tokio::time::Sleep>>>>;

impl KeepAliveTimer {
    /// A timer for one new connection whose hyper has `header_timeout`.
    pub fn new(header_timeout: Duration, keep_alive: Duration) -> KeepAliveTimer {
        KeepAliveTimer {
            inner: TokioTimer::new(),
            header_timeout,
            keep_alive,
            first_head_seen: AtomicBool::new(false),
            armed: Arc::default(),
        }
    }

    fn head_sleep(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(HeadSleep {
            deadline: deadline.into(),
            armed: self.armed.clone(),
        })
    }
}

impl Timer for KeepAliveTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.inner.sleep(duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        // hyper asks for a fresh sleep before each request head, due at
        // its clock reading plus the header timeout; a later head's is
        // that reading plus the keep-alive (no second reading).
        if self.first_head_seen.swap(true, Ordering::Relaxed) {
            let asked_at = deadline.checked_sub(self.header_timeout);
            self.head_sleep(asked_at.unwrap_or_else(|| self.now()) + self.keep_alive)
        } else {
            self.head_sleep(deadline)
        }
    }

    fn now(&self) -> Instant {
        // tokio's clock: std's, or the paused one in tests.
        tokio::time::Instant::now().into_std()
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: Instant) {
        match sleep.as_mut().downcast_mut_pin::<HeadSleep>() {
            Some(mut head) => head.deadline = new_deadline.into(),
            None => self.inner.reset(sleep, new_deadline),
        }
    }
}

/// The wait for one request head: done at `deadline`, on the connection's
/// shared sleep.
struct HeadSleep {
    deadline: tokio::time::Instant,
    armed: Arc<Armed>,
}

impl Sleep for HeadSleep {}

impl Future for HeadSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = self.deadline;
        let mut armed = self
            .armed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let sleep = armed.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        // Never later than this head's deadline.
        if sleep.deadline() > deadline {
            sleep.as_mut().reset(deadline);
        }
        loop {
            match sleep.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                // Gone off at or after this head's deadline: due.
                Poll::Ready(()) if sleep.deadline() >= deadline => return Poll::Ready(()),
                // Gone off for an earlier head's deadline: on to this one.
                Poll::Ready(()) => sleep.as_mut().reset(deadline),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn ready(sleep: &mut Pin<Box<dyn Sleep>>) -> bool {
        sleep
            .as_mut()
            .poll(&mut Context::from_waker(std::task::Waker::noop()))
            .is_ready()
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_head_gets_hypers_deadline_and_later_ones_the_keep_alive() {
        let timer = KeepAliveTimer::new(10 * SECOND, 2 * SECOND);
        let mut first = timer.sleep_until(timer.now() + 10 * SECOND);
        assert!(!ready(&mut first));
        tokio::time::advance(9 * SECOND).await;
        assert!(!ready(&mut first), "the header timeout is 10 s");
        tokio::time::advance(SECOND).await;
        assert!(ready(&mut first));
        drop(first);
        // hyper asks with its own (header) timeout: the keep-alive wins.
        let mut second = timer.sleep_until(timer.now() + 10 * SECOND);
        assert!(!ready(&mut second));
        tokio::time::advance(SECOND * 3 / 2).await;
        assert!(!ready(&mut second));
        tokio::time::advance(SECOND).await;
        assert!(ready(&mut second), "2 s of keep-alive");
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_read_in_time_leaves_the_next_head_its_whole_keep_alive() {
        let timer = KeepAliveTimer::new(10 * SECOND, 2 * SECOND);
        // The first head, read at once.
        drop(timer.sleep_until(timer.now() + 10 * SECOND));
        // Head 2 awaited at 0 s (deadline 2 s), read at 1.5 s; head 3
        // awaited from then (deadline 3.5 s). The sleep armed for 2 s
        // goes off on the way and must not end head 3's wait.
        let mut head2 = timer.sleep_until(timer.now() + 10 * SECOND);
        assert!(!ready(&mut head2));
        tokio::time::advance(SECOND * 3 / 2).await;
        drop(head2);
        let mut head3 = timer.sleep_until(timer.now() + 10 * SECOND);
        assert!(!ready(&mut head3));
        tokio::time::advance(SECOND).await; // 2.5 s: past head 2's deadline
        assert!(!ready(&mut head3), "head 2's deadline is not head 3's");
        tokio::time::advance(SECOND * 9 / 10).await; // 3.4 s
        assert!(!ready(&mut head3));
        tokio::time::advance(SECOND / 5).await; // 3.6 s
        assert!(ready(&mut head3), "due at 3.5 s");
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_deadline_moves_the_armed_sleep_and_reset_moves_a_heads() {
        let timer = KeepAliveTimer::new(10 * SECOND, SECOND);
        let mut first = timer.sleep_until(timer.now() + 10 * SECOND);
        assert!(!ready(&mut first)); // armed for 10 s
        drop(first);
        let mut second = timer.sleep_until(timer.now() + 10 * SECOND); // keep-alive 1 s: earlier
        tokio::time::advance(SECOND / 2).await;
        assert!(!ready(&mut second));
        tokio::time::advance(SECOND).await;
        assert!(ready(&mut second), "not left at the 10 s armed first");
        let now = timer.now();
        timer.reset(&mut second, now + 5 * SECOND);
        assert!(!ready(&mut second));
        tokio::time::advance(5 * SECOND).await;
        assert!(ready(&mut second));
    }
}
