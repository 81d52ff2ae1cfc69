//! Requests that wait in a busy lane, behind the one running there: how the
//! dispatcher keeps track of them, and what becomes of one whose worker
//! breaks. The rule that decides (docs/design/lane-pipelining.md): a lane
//! runs its requests in order and the worker ends one before it reads the
//! next, so a waiting request cannot have started while the running one's
//! response has not ended. Reading the broken lane to its end tells which.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

use super::{Dispatcher, LaneLease};
use crate::protocol::lane::{Lane, LaneError, LaneId};

/// How long a broken lane gets to reach its end before a request waiting
/// in it is given up as lost. Its worker is being killed, so this is slack.
const SETTLE_LIMIT: Duration = Duration::from_secs(10);

/// What a waiting request receives.
// A lease is what nearly every delivery carries: boxing it would allocate
// once per queued request to save bytes on the rare moves.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(super) enum Delivery {
    /// Its lane, with its request written.
    Lease(LaneLease),
    /// It moved (into a busy lane, or back to the queue): wait there.
    Moved(oneshot::Receiver<Delivery>),
    /// Its worker died and it may have started: it failed with it.
    Lost,
}

/// A request waiting in a lane: where to send its lane, and its bytes in
/// case it must be written again elsewhere.
#[derive(Debug)]
pub(super) struct Waiting {
    pub tx: oneshot::Sender<Delivery>,
    pub request: Bytes,
}

/// One open lane of a worker, as the dispatcher sees it while it is lent.
#[derive(Debug)]
pub(super) struct LaneBook {
    pub lane: LaneId,
    /// Reaches whoever holds the lane, who writes what it gets.
    ahead: mpsc::UnboundedSender<Bytes>,
    /// When it was lent for its running request; `None` while idle.
    pub since: Option<Instant>,
    pub waiting: Option<Waiting>,
}

impl LaneBook {
    pub fn new(lane: &Lane) -> LaneBook {
        LaneBook {
            lane: lane.id(),
            ahead: lane.ahead_sender(),
            since: None,
            waiting: None,
        }
    }

    /// Makes `request` wait behind the running one; the lane's holder
    /// writes it (or the dispatcher, if the lane comes back first).
    pub fn wait(&mut self, tx: oneshot::Sender<Delivery>, request: Bytes) {
        let _ = self.ahead.send(request.clone());
        self.waiting = Some(Waiting { tx, request });
    }
}

/// Decides, off the dispatcher's lock, the fate of a request written behind
/// request number `running` of a lane that broke: read the lane to its end;
/// if `running` never ended, the waiting one never started and is served
/// elsewhere, otherwise it fails like any request in flight.
pub(super) fn settle(dispatcher: Dispatcher, mut lane: Lane, running: u64, waiting: Waiting) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        let _ = waiting.tx.send(Delivery::Lost);
        return;
    };
    runtime.spawn(async move {
        let may_have_run = tokio::time::timeout(SETTLE_LIMIT, async {
            loop {
                if lane.ended() >= running {
                    return true;
                }
                match lane.reader.read_frame().await {
                    Ok(_) => {}
                    Err(LaneError::Closed | LaneError::Unread) => return false,
                    Err(_) => return true,
                }
            }
        })
        .await
        .unwrap_or(true);
        drop(lane);
        if may_have_run {
            warn!("a request waiting in a lane failed with its worker");
            let _ = waiting.tx.send(Delivery::Lost);
        } else {
            let mut state = dispatcher.state();
            let mut orphans = Vec::new();
            dispatcher.redispatch(&mut state, waiting, &mut orphans);
            drop(state);
            drop(orphans);
        }
    });
}
