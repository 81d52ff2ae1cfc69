//! A lane lent to one request, and how it comes back: settled lanes return
//! at once; a lane dropped mid-exchange (client gone) is first cancelled.

use std::sync::Arc;

use super::Dispatcher;
use crate::protocol::lane::{Lane, LaneError};
use crate::worker::memory::RssProbe;
use crate::worker::WorkerId;

/// A lane lent to one request. Dropping it gives the lane back; a lane
/// dropped mid-exchange (client gone) is first brought to a clean state.
#[derive(Debug)]
pub struct LaneLease {
    lane: Option<Box<Lane>>,
    worker: WorkerId,
    dispatcher: Dispatcher,
    /// The number of this lease's request on its lane, once written (0: not yet).
    request: u64,
    /// Reads the worker's RSS when the lane comes back (a memory limit on
    /// RSS is checked after every request), before the dispatcher's lock.
    rss: Option<Arc<RssProbe>>,
}

impl LaneLease {
    pub(super) fn new(
        lane: Box<Lane>,
        worker: WorkerId,
        dispatcher: Dispatcher,
        rss: Option<Arc<RssProbe>>,
    ) -> LaneLease {
        LaneLease {
            lane: Some(lane),
            worker,
            dispatcher,
            request: 0,
            rss,
        }
    }

    /// The lease's request is the last one written to its lane.
    pub(super) fn mark_written(&mut self) {
        if let Some(lane) = &self.lane {
            self.request = lane.written();
        }
    }

    /// The lease's request is number `request` on its lane, written already
    /// (it waited in the lane, maybe with more behind it).
    pub(super) fn mark_written_as(&mut self, request: u64) {
        self.request = request;
    }

    /// Sends what the lane's writer holds, then `request` unless the
    /// dispatcher wrote it already, and notes the request's number on the lane.
    pub async fn send_request(&mut self, request: &[u8]) -> Result<(), LaneError> {
        let unsent: &[u8] = if self.request_written() { b"" } else { request };
        let lane = self.lane();
        lane.send_request(unsent).await?;
        if !unsent.is_empty() {
            self.request = self.lane().written();
        }
        Ok(())
    }

    /// Whether the request is written: before [`LaneLease::send_request`],
    /// whether the dispatcher already wrote the request given to `acquire`
    /// (or queued what the socket did not take at once).
    pub fn request_written(&self) -> bool {
        self.request != 0
    }

    /// The number of this lease's request on its lane (0 until written).
    pub fn request(&self) -> u64 {
        self.request
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
        if let Some(lane) = self.lane.take() {
            self.dispatcher.discard(self.worker, lane, self.request);
        }
    }
}

impl Drop for LaneLease {
    fn drop(&mut self) {
        let Some(mut lane) = self.lane.take() else {
            return;
        };
        // A vanished process reads as an error: its exit is on the way.
        let rss = |probe: Option<Arc<RssProbe>>| probe.and_then(|p| p.read().ok());
        if lane.is_settled(self.request) {
            self.dispatcher
                .release(self.worker, lane, rss(self.rss.take()));
            return;
        }
        let (dispatcher, worker, request) = (self.dispatcher.clone(), self.worker, self.request);
        let probe = self.rss.take();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    match lane.cancel(request).await {
                        Ok(()) => dispatcher.release(worker, lane, rss(probe)),
                        Err(_) => dispatcher.discard(worker, lane, request),
                    }
                });
            }
            Err(_) => dispatcher.discard(worker, lane, request),
        }
    }
}
