//! The bounded FIFO of requests waiting for a free lane. Pure bookkeeping:
//! the dispatcher holds it under its lock and gives a freed lane to the
//! oldest waiter that is still there ([`WaitQueue::pop_if`]).

use std::collections::VecDeque;
use tokio::sync::oneshot;

/// A full queue: the request gets 503 at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull;

/// Waiters for `T` (a lane lease), oldest first, at most `bound` of them,
/// each with a ticket `P` (its pre-encoded request).
#[derive(Debug)]
pub struct WaitQueue<T, P = ()> {
    waiters: VecDeque<(oneshot::Sender<T>, P)>,
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

    /// Adds a waiter with its ticket, or refuses when the queue is full.
    pub fn push(&mut self, ticket: P) -> Result<oneshot::Receiver<T>, QueueFull> {
        // Waiters that gave up (timed out, client gone) do not count.
        self.waiters.retain(|(w, _)| !w.is_closed());
        if self.waiters.len() >= self.bound {
            return Err(QueueFull);
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.push_back((tx, ticket));
        Ok(rx)
    }

    /// Puts a waiter first, ahead of every other and past the bound: it
    /// was admitted before and lost its place through no fault of its own.
    pub fn push_front(&mut self, waiter: oneshot::Sender<T>, ticket: P) {
        self.waiters.push_front((waiter, ticket));
    }

    /// Takes the oldest live waiter out if `fits` its ticket; `None` if
    /// there is none or it does not fit (a younger one never goes first).
    pub fn pop_if(&mut self, fits: impl Fn(&P) -> bool) -> Option<(oneshot::Sender<T>, P)> {
        while let Some((waiter, ticket)) = self.waiters.front() {
            if waiter.is_closed() {
                self.waiters.pop_front();
                continue;
            }
            if !fits(ticket) {
                return None;
            }
            return self.waiters.pop_front();
        }
        None
    }

    /// Whether at least `n` waiters are still waiting (stops counting there).
    pub fn live_at_least(&self, n: usize) -> bool {
        self.waiters
            .iter()
            .filter(|(w, _)| !w.is_closed())
            .take(n)
            .count()
            >= n
    }

    /// Waiters still waiting.
    pub fn len(&self) -> usize {
        self.waiters.iter().filter(|(w, _)| !w.is_closed()).count()
    }

    /// Whether nobody waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_in_first_out_and_bounded() {
        let mut queue: WaitQueue<u32, u32> = WaitQueue::new(2);
        let _first = queue.push(10).unwrap();
        let _second = queue.push(20).unwrap();
        assert_eq!(queue.push(30).unwrap_err(), QueueFull);
        assert_eq!(queue.pop_if(|_| true).map(|(_, t)| t), Some(10));
        assert_eq!(queue.pop_if(|_| true).map(|(_, t)| t), Some(20));
        assert!(queue.pop_if(|_| true).is_none());
    }

    #[test]
    fn pop_if_takes_the_oldest_live_waiter_only_if_it_fits() {
        let mut queue: WaitQueue<u32, u32> = WaitQueue::new(4);
        drop(queue.push(1).unwrap());
        let _big = queue.push(500).unwrap();
        let _small = queue.push(2).unwrap();
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
        let gone = queue.push(100).unwrap();
        drop(gone);
        let mut stays = queue.push(5).expect("the departed waiter's place is free");
        let (to, ticket) = queue.pop_if(|_| true).expect("the live one");
        assert_eq!(ticket, 5);
        to.send(ticket + 9).unwrap();
        assert_eq!(stays.try_recv().unwrap(), 14);
        assert!(queue.is_empty());
    }
}
