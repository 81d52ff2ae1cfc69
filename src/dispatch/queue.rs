//! The bounded FIFO of requests waiting for a free lane. Pure bookkeeping:
//! the dispatcher holds it under its lock and gives a freed lane to the
//! oldest waiter that is still there ([`WaitQueue::pop_if`]), and says
//! which waiters have waited too long ([`WaitQueue::expire`]).

use std::collections::VecDeque;
use std::time::Instant;
use tokio::sync::oneshot;

/// A full queue: the request gets 503 at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull;

/// Waiters for `T` (a lane lease), oldest first, at most `bound` of them,
/// each with a ticket `P` (its pre-encoded request) and when it was
/// admitted (none for one put first again: it never expires).
#[derive(Debug)]
pub struct WaitQueue<T, P = ()> {
    waiters: VecDeque<(oneshot::Sender<T>, P, Option<Instant>)>,
    bound: usize,
}

impl<T, P> WaitQueue<T, P> {
    /// An empty queue holding at most `bound` waiters.
    pub fn new(bound: usize) -> Self {
        WaitQueue {
            waiters: VecDeque::new(),
            bound,
        }
    }

    /// Adds a waiter with its ticket, admitted `now`, or refuses when the
    /// queue is full.
    pub fn push(&mut self, ticket: P, now: Instant) -> Result<oneshot::Receiver<T>, QueueFull> {
        // Waiters that gave up (client gone) do not count.
        self.waiters.retain(|(w, _, _)| !w.is_closed());
        if self.waiters.len() >= self.bound {
            return Err(QueueFull);
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.push_back((tx, ticket, Some(now)));
        Ok(rx)
    }

    /// Puts a waiter first, ahead of every other and past the bound: it
    /// was admitted before and lost its place through no fault of its own.
    /// It never expires: it was past the queue once already.
    pub fn push_front(&mut self, waiter: oneshot::Sender<T>, ticket: P) {
        self.waiters.push_front((waiter, ticket, None));
    }

    /// Takes out every waiter admitted at or before `cutoff` (and those
    /// that gave up), in order; the caller tells them they expired.
    pub fn expire(&mut self, cutoff: Instant) -> Vec<oneshot::Sender<T>> {
        let mut expired = Vec::new();
        let mut kept = VecDeque::with_capacity(self.waiters.len());
        for (waiter, ticket, admitted) in self.waiters.drain(..) {
            if waiter.is_closed() {
                continue;
            }
            if admitted.is_some_and(|at| at <= cutoff) {
                expired.push(waiter);
            } else {
                kept.push_back((waiter, ticket, admitted));
            }
        }
        self.waiters = kept;
        expired
    }

    /// When the longest-waiting waiter that can expire was admitted.
    pub fn oldest_admitted(&self) -> Option<Instant> {
        self.waiters
            .iter()
            .filter(|(w, _, _)| !w.is_closed())
            .filter_map(|(_, _, admitted)| *admitted)
            .min()
    }

    /// Takes the oldest live waiter out if `fits` its ticket; `None` if
    /// there is none or it does not fit (a younger one never goes first).
    pub fn pop_if(&mut self, fits: impl Fn(&P) -> bool) -> Option<(oneshot::Sender<T>, P)> {
        while let Some((waiter, ticket, _)) = self.waiters.front() {
            if waiter.is_closed() {
                self.waiters.pop_front();
                continue;
            }
            if !fits(ticket) {
                return None;
            }
            return self.waiters.pop_front().map(|(w, t, _)| (w, t));
        }
        None
    }

    /// Whether at least `n` waiters are still waiting (stops counting there).
    pub fn live_at_least(&self, n: usize) -> bool {
        self.waiters
            .iter()
            .filter(|(w, _, _)| !w.is_closed())
            .take(n)
            .count()
            >= n
    }

    /// Waiters still waiting.
    pub fn len(&self) -> usize {
        self.waiters
            .iter()
            .filter(|(w, _, _)| !w.is_closed())
            .count()
    }

    /// Whether nobody waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn t(ms: u64) -> Instant {
        // A fixed origin, far enough from the clock's start to subtract from.
        static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *ORIGIN.get_or_init(Instant::now) + Duration::from_millis(ms)
    }

    #[test]
    fn first_in_first_out_and_bounded() {
        let mut queue: WaitQueue<u32, u32> = WaitQueue::new(2);
        let _first = queue.push(10, t(0)).unwrap();
        let _second = queue.push(20, t(0)).unwrap();
        assert_eq!(queue.push(30, t(0)).unwrap_err(), QueueFull);
        assert_eq!(queue.pop_if(|_| true).map(|(_, t)| t), Some(10));
        assert_eq!(queue.pop_if(|_| true).map(|(_, t)| t), Some(20));
        assert!(queue.pop_if(|_| true).is_none());
    }

    #[test]
    fn pop_if_takes_the_oldest_live_waiter_only_if_it_fits() {
        let mut queue: WaitQueue<u32, u32> = WaitQueue::new(4);
        drop(queue.push(1, t(0)).unwrap());
        let _big = queue.push(500, t(0)).unwrap();
        let _small = queue.push(2, t(0)).unwrap();
        assert!(
            queue.pop_if(|t| *t < 100).is_none(),
            "the big one blocks the small one behind it"
        );
        assert_eq!(queue.pop_if(|_| true).map(|(_, t)| t), Some(500));
        let (tx, _rx) = oneshot::channel();
        queue.push_front(tx, 7);
        assert_eq!(queue.pop_if(|t| *t < 100).map(|(_, t)| t), Some(7));
        assert_eq!(queue.pop_if(|t| *t < 100).map(|(_, t)| t), Some(2));
        assert!(queue.pop_if(|_| true).is_none());
    }

    #[test]
    fn departed_waiters_are_skipped_and_free_their_place() {
        let mut queue: WaitQueue<u32, u32> = WaitQueue::new(1);
        let gone = queue.push(100, t(0)).unwrap();
        drop(gone);
        let mut stays = queue
            .push(5, t(0))
            .expect("the departed waiter's place is free");
        let (to, ticket) = queue.pop_if(|_| true).expect("the live one");
        assert_eq!(ticket, 5);
        to.send(ticket + 9).unwrap();
        assert_eq!(stays.try_recv().unwrap(), 14);
        assert!(queue.is_empty());
    }

    #[test]
    fn expire_takes_the_waiters_admitted_by_the_cutoff_and_never_one_put_first_again() {
        let mut queue: WaitQueue<u32, u32> = WaitQueue::new(8);
        let mut old = queue.push(1, t(10)).unwrap();
        drop(queue.push(2, t(15)).unwrap()); // gave up: neither expired nor kept
        let _young = queue.push(3, t(30)).unwrap();
        let (again, _again_rx) = oneshot::channel();
        queue.push_front(again, 4);
        assert_eq!(queue.oldest_admitted(), Some(t(10)));
        let expired = queue.expire(t(20));
        assert_eq!(expired.len(), 1);
        expired.into_iter().for_each(|w| w.send(99).unwrap());
        assert_eq!(old.try_recv().unwrap(), 99, "the one admitted at 10 ms");
        assert_eq!(queue.oldest_admitted(), Some(t(30)));
        assert_eq!(
            queue.pop_if(|_| true).map(|(_, t)| t),
            Some(4),
            "order kept"
        );
        assert_eq!(queue.pop_if(|_| true).map(|(_, t)| t), Some(3));
        assert_eq!(queue.oldest_admitted(), None);
        assert!(queue.expire(t(1_000)).is_empty());
    }
}
