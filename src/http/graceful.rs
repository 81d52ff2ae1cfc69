//! A graceful stop for the open connections that costs one atomic load per
//! poll of a connection.
//!
//! hyper-util's `GracefulShutdown` did the same job by polling a `watch`
//! receiver's `changed()` on every poll of every connection: about 1,000
//! instructions per request in the master on plain WSGI (callgrind), 5% of
//! its user-space work, for an event that happens once in a server's life.
//! Here a connection leaves its task's waker once, and looks at a flag on
//! each poll; the stop sets the flag and wakes the wakers left.
//!
//! A [`Watcher`] counts as an open connection from the moment it is made
//! (a PROXY-protocol connection still reading its header is one), so
//! [`GracefulShutdown::shutdown`] waits for it too, as hyper-util's did.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use hyper::body::{Body, Incoming};
use hyper::rt::{Read, Write};
use hyper::server::conn::http1;
use hyper::service::HttpService;
use tokio::sync::Notify;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A connection that can be asked to finish its running request and close.
pub trait Stoppable: Future {
    /// Finish the request in flight, then end (no further keep-alive).
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S, B> Stoppable for http1::Connection<I, S>
where
    S: HttpService<Incoming, ResBody = B>,
    S::Error: Into<BoxError>,
    I: Read + Write + Unpin,
    B: Body + 'static,
    B::Error: Into<BoxError>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        http1::Connection::graceful_shutdown(self)
    }
}

/// The open connections of one server (or of one pause), and their stop.
#[derive(Default)]
pub struct GracefulShutdown {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    stopping: AtomicBool,
    open: Mutex<Open>,
    all_closed: Notify,
}

/// The wakers of the watched connections, by slot; `None`: not polled yet
/// (or a watcher not watching yet). `count` counts the slots in use.
#[derive(Default)]
struct Open {
    wakers: Vec<Option<Waker>>,
    free: Vec<usize>,
    count: usize,
}

impl Shared {
    fn open(&self) -> MutexGuard<'_, Open> {
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn leave(&self, slot: usize) {
        let mut open = self.open();
        open.wakers[slot] = None;
        open.free.push(slot);
        open.count -= 1;
        if open.count == 0 {
            self.all_closed.notify_waiters();
        }
    }
}

impl GracefulShutdown {
    /// Nothing open yet.
    pub fn new() -> GracefulShutdown {
        GracefulShutdown::default()
    }

    /// A handle that counts as an open connection until it is dropped or
    /// the connection it [`Watcher::watch`]es ends.
    pub fn watcher(&self) -> Watcher {
        let mut open = self.shared.open();
        open.count += 1;
        let slot = match open.free.pop() {
            Some(slot) => slot,
            None => {
                open.wakers.push(None);
                open.wakers.len() - 1
            }
        };
        drop(open);
        Watcher {
            shared: self.shared.clone(),
            slot,
        }
    }

    /// Watches `conn`: it is stopped gracefully when [`Self::shutdown`] runs.
    pub fn watch<C: Stoppable>(&self, conn: C) -> Watched<C> {
        self.watcher().watch(conn)
    }

    /// Connections open (watchers included).
    pub fn count(&self) -> usize {
        self.shared.open().count
    }

    /// Stops every connection gracefully, those watched later at their
    /// first poll, and returns once all have ended.
    pub async fn shutdown(self) {
        let shared = &self.shared;
        shared.stopping.store(true, Ordering::SeqCst);
        // Taken under the lock after the flag is set: a connection that
        // leaves its waker later sees the flag (it looks after leaving it).
        let wakers: Vec<Waker> = shared
            .open()
            .wakers
            .iter_mut()
            .filter_map(Option::take)
            .collect();
        for waker in wakers {
            waker.wake();
        }
        loop {
            let closed = shared.all_closed.notified();
            tokio::pin!(closed);
            closed.as_mut().enable();
            if shared.open().count == 0 {
                return;
            }
            closed.await;
        }
    }
}

/// One open connection's place in a [`GracefulShutdown`].
pub struct Watcher {
    shared: Arc<Shared>,
    slot: usize,
}

impl Watcher {
    /// Watches `conn` in this watcher's place.
    pub fn watch<C: Stoppable>(self, conn: C) -> Watched<C> {
        Watched {
            conn,
            watcher: self,
            left: None,
            stopped: false,
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.shared.leave(self.slot);
    }
}

pin_project_lite::pin_project! {
    /// A connection under a [`GracefulShutdown`].
    pub struct Watched<C> {
        #[pin]
        conn: C,
        watcher: Watcher,
        // The waker left in the watcher's slot, to leave a new one only
        // when the task's waker changes (never, for a spawned task).
        left: Option<Waker>,
        stopped: bool,
    }
}

impl<C: Stoppable> Future for Watched<C> {
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let mut this = self.project();
        if !*this.stopped {
            let shared = &this.watcher.shared;
            if !this.left.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                shared.open().wakers[this.watcher.slot] = Some(cx.waker().clone());
                *this.left = Some(cx.waker().clone());
            }
            if shared.stopping.load(Ordering::SeqCst) {
                *this.stopped = true;
                this.conn.as_mut().graceful_shutdown();
            }
        }
        this.conn.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    /// A connection that ends only once asked to stop (and counts the asks).
    struct Idle {
        asked: Arc<AtomicUsize>,
        stop: bool,
    }

    impl Future for Idle {
        type Output = ();
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
            if self.stop {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        }
    }

    impl Stoppable for Idle {
        fn graceful_shutdown(mut self: Pin<&mut Self>) {
            self.asked.fetch_add(1, Ordering::SeqCst);
            self.stop = true;
        }
    }

    fn idle(asked: &Arc<AtomicUsize>) -> Idle {
        Idle {
            asked: asked.clone(),
            stop: false,
        }
    }

    #[tokio::test]
    async fn shutdown_stops_every_connection_once_and_waits_for_them() {
        let graceful = GracefulShutdown::new();
        let asked = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..3)
            .map(|_| tokio::spawn(graceful.watch(idle(&asked))))
            .collect();
        tokio::task::yield_now().await; // each polled once: pending
        assert_eq!(graceful.count(), 3);
        tokio::time::timeout(Duration::from_secs(5), graceful.shutdown())
            .await
            .expect("shutdown returns once the connections ended");
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(asked.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_watcher_not_yet_watching_holds_the_shutdown_and_its_connection_stops_at_once() {
        let graceful = GracefulShutdown::new();
        let asked = Arc::new(AtomicUsize::new(0));
        let watcher = graceful.watcher();
        assert_eq!(graceful.count(), 1);
        let stop = tokio::spawn(graceful.shutdown());
        tokio::task::yield_now().await;
        assert!(
            !stop.is_finished(),
            "the watcher counts as an open connection"
        );
        // Watched after the stop began: stopped at its first poll.
        watcher.watch(idle(&asked)).await;
        assert_eq!(asked.load(Ordering::SeqCst), 1);
        tokio::time::timeout(Duration::from_secs(5), stop)
            .await
            .expect("shutdown returns")
            .unwrap();
    }

    #[tokio::test]
    async fn an_ended_connection_frees_its_place_for_the_next() {
        let graceful = GracefulShutdown::new();
        let asked = Arc::new(AtomicUsize::new(0));
        let mut ready = idle(&asked);
        ready.stop = true;
        graceful.watch(ready).await;
        assert_eq!(graceful.count(), 0);
        drop(graceful.watcher());
        let _open = graceful.watcher();
        assert_eq!(graceful.count(), 1);
        assert_eq!(graceful.shared.open().wakers.len(), 1, "the slot is reused");
        assert_eq!(asked.load(Ordering::SeqCst), 0, "never asked: no stop");
    }

    #[tokio::test]
    async fn shutdown_with_nothing_open_returns_at_once() {
        tokio::time::timeout(Duration::from_secs(5), GracefulShutdown::new().shutdown())
            .await
            .expect("returns");
    }
}
