//! A lane lent to one request, and how it comes back: settled lanes return
//! at once; a lane dropped mid-exchange (client gone) is first cancelled.

use super::Dispatcher;
use crate::protocol::lane::Lane;
use crate::worker::WorkerId;

/// A lane lent to one request. Dropping it gives the lane back; a lane
/// dropped mid-exchange (client gone) is first brought to a clean state.
#[derive(Debug)]
pub struct LaneLease {
    lane: Option<Lane>,
    worker: WorkerId,
    dispatcher: Dispatcher,
    request_written: bool,
}

impl LaneLease {
    pub(super) fn new(lane: Lane, worker: WorkerId, dispatcher: Dispatcher) -> LaneLease {
        LaneLease {
            lane: Some(lane),
            worker,
            dispatcher,
            request_written: false,
        }
    }

    /// Takes the lane out (a queued request was delivered with it, or it
    /// goes back to the idle list).
    pub(super) fn take_lane(&mut self) -> Option<Lane> {
        self.lane.take()
    }

    pub(super) fn mark_written(&mut self) {
        self.request_written = true;
    }

    /// Whether the dispatcher already wrote the request given to `acquire`
    /// (or queued what the socket did not take at once).
    pub fn request_written(&self) -> bool {
        self.request_written
    }

    /// The worker this lane belongs to.
    pub fn worker(&self) -> WorkerId {
        self.worker
    }

    /// The lane itself.
    pub fn lane(&mut self) -> &mut Lane {
        self.lane
            .as_mut()
            .expect("a lease holds its lane until it is dropped")
    }

    /// Closes the lane for good: it broke or its worker is being replaced.
    pub fn discard(mut self) {
        if self.lane.take().is_some() {
            self.dispatcher.discard(self.worker);
        }
    }
}

impl Drop for LaneLease {
    fn drop(&mut self) {
        let Some(mut lane) = self.lane.take() else {
            return;
        };
        if lane.is_settled() {
            self.dispatcher.release(self.worker, lane);
            return;
        }
        let (dispatcher, worker) = (self.dispatcher.clone(), self.worker);
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    match lane.cancel().await {
                        Ok(()) => dispatcher.release(worker, lane),
                        Err(_) => dispatcher.discard(worker),
                    }
                });
            }
            Err(_) => dispatcher.discard(worker),
        }
    }
}
