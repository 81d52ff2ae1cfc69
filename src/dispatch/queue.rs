//! The bounded FIFO of requests waiting for a free lane. Pure bookkeeping:
//! the dispatcher holds it under its lock and hands a freed lane straight to
//! the oldest waiter that is still there.

use std::collections::VecDeque;
use tokio::sync::oneshot;

/// A full queue: the request gets 503 at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull;

/// Waiters for `T` (a lane lease), oldest first, at most `bound` of them.
#[derive(Debug)]
pub struct WaitQueue<T> {
    waiters: VecDeque<oneshot::Sender<T>>,
    bound: usize,
}

impl<T> WaitQueue<T> {
    /// An empty queue holding at most `bound` waiters.
    pub fn new(bound: usize) -> Self {
        WaitQueue {
            waiters: VecDeque::new(),
            bound,
        }
    }

    /// Adds a waiter, or refuses when the queue is full.
    pub fn push(&mut self) -> Result<oneshot::Receiver<T>, QueueFull> {
        // Waiters that gave up (timed out, client gone) do not count.
        self.waiters.retain(|w| !w.is_closed());
        if self.waiters.len() >= self.bound {
            return Err(QueueFull);
        }
        let (tx, rx) = oneshot::channel();
        self.waiters.push_back(tx);
        Ok(rx)
    }

    /// Hands `item` to the oldest live waiter; gives it back if there is none.
    pub fn hand_over(&mut self, mut item: T) -> Result<(), T> {
        while let Some(waiter) = self.waiters.pop_front() {
            match waiter.send(item) {
                Ok(()) => return Ok(()),
                Err(back) => item = back,
            }
        }
        Err(item)
    }

    /// Waiters still waiting.
    pub fn len(&self) -> usize {
        self.waiters.iter().filter(|w| !w.is_closed()).count()
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
    fn first_in_first_served_and_bounded() {
        let mut queue = WaitQueue::new(2);
        let mut first = queue.push().unwrap();
        let mut second = queue.push().unwrap();
        assert_eq!(queue.push().unwrap_err(), QueueFull);
        queue.hand_over(1).unwrap();
        assert_eq!(first.try_recv().unwrap(), 1);
        queue.hand_over(2).unwrap();
        assert_eq!(second.try_recv().unwrap(), 2);
        assert_eq!(queue.hand_over(3), Err(3));
    }

    #[test]
    fn departed_waiters_are_skipped_and_free_their_place() {
        let mut queue = WaitQueue::new(1);
        let gone = queue.push().unwrap();
        drop(gone);
        let mut stays = queue.push().expect("the departed waiter's place is free");
        queue.hand_over(9).unwrap();
        assert_eq!(stays.try_recv().unwrap(), 9);
        assert!(queue.is_empty());
    }
}
