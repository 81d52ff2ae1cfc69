//! Requests that wait in a busy lane, behind the one running there: how the
//! dispatcher keeps track of them, and what becomes of them when their
//! worker breaks. The rule that decides (docs/design/lane-pipelining.md): a
//! lane runs its requests in order and the worker ends one before it reads
//! the next, so a waiting request cannot have started while the response of
//! the one before it has not ended. Reading the broken lane to its end
//! tells which did.

use std::collections::VecDeque;
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
    /// It waited in the queue past the queue timeout.
    Expired,
}

/// A request waiting in a lane: where to send its lane, and its bytes in
/// case it must be written again elsewhere.
#[derive(Debug)]
pub(super) struct Waiting {
    pub tx: oneshot::Sender<Delivery>,
    pub request: Bytes,
}

#[cfg(test)]
impl Waiting {
    /// A waiting request for tests of the pool's choices: nobody awaits it.
    pub fn detached() -> Waiting {
        Waiting {
            tx: oneshot::channel().0,
            request: Bytes::new(),
        }
    }
}

/// One open lane of a worker, as the dispatcher sees it while it is lent.
#[derive(Debug)]
pub(super) struct LaneBook {
    pub lane: LaneId,
    /// Reaches whoever holds the lane, who writes what it gets.
    ahead: mpsc::UnboundedSender<Bytes>,
    /// When it was lent for its running request; `None` while idle.
    pub since: Option<Instant>,
    /// Requests written (or to be written) behind the running one, in
    /// lane order: the first runs next.
    pub waiting: VecDeque<Waiting>,
}

impl LaneBook {
    pub fn new(lane: &Lane) -> LaneBook {
        LaneBook {
            lane: lane.id(),
            ahead: lane.ahead_sender(),
            since: None,
            waiting: VecDeque::new(),
        }
    }

    /// A book for tests of the pool's choices: no lane behind it.
    #[cfg(test)]
    pub fn detached(lane: LaneId) -> LaneBook {
        LaneBook {
            lane,
            ahead: mpsc::unbounded_channel().0,
            since: None,
            waiting: VecDeque::new(),
        }
    }

    /// Makes `request` wait behind the running one and those already
    /// waiting; the lane's holder writes it (or the dispatcher, if the lane
    /// comes back first).
    pub fn wait(&mut self, tx: oneshot::Sender<Delivery>, request: Bytes) {
        let _ = self.ahead.send(request.clone());
        self.waiting.push_back(Waiting { tx, request });
    }
}

/// Of `waiting` requests behind the one running on a broken lane, how many
/// reached the worker: they are numbered from the one after the running
/// one, and the lane counted `written` requests written and `ended` ended.
/// Returns the number the first waiting one follows (the lease's request,
/// or the last that ended if the lease's was never written, 0) and that
/// count; the rest were never written and may go elsewhere at once.
pub(super) fn written_behind(
    running: u64,
    ended: u64,
    written: u64,
    waiting: usize,
) -> (u64, usize) {
    let running = running.max(ended);
    let behind = written.saturating_sub(running) as usize;
    (running, behind.min(waiting))
}

/// Which of the requests waiting behind request number `running` of a
/// broken lane may have started, given that `ended` responses ended on it:
/// the one numbered `running + 1 + i` did if the one before it ended.
pub(super) fn may_have_started(running: u64, ended: u64, i: usize) -> bool {
    ended >= running + i as u64
}

/// Decides, off the dispatcher's lock, the fate of the requests written
/// behind request number `running` of a lane that broke (the first is
/// number `running + 1`): read the lane to its end; one whose predecessor
/// never ended never started and is served elsewhere, the others fail like
/// any request in flight.
pub(super) fn settle(
    dispatcher: Dispatcher,
    mut lane: Box<Lane>,
    running: u64,
    waiting: VecDeque<Waiting>,
) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        for waiting in waiting {
            let _ = waiting.tx.send(Delivery::Lost);
        }
        return;
    };
    runtime.spawn(async move {
        // Past this count every waiting request may have started.
        let all = running + waiting.len() as u64 - 1;
        let ended = tokio::time::timeout(SETTLE_LIMIT, async {
            loop {
                if lane.ended() >= all {
                    return lane.ended();
                }
                match lane.reader.read_frame().await {
                    Ok(_) => {}
                    Err(LaneError::Closed | LaneError::Unread) => return lane.ended(),
                    Err(_) => return u64::MAX,
                }
            }
        })
        .await
        .unwrap_or(u64::MAX);
        drop(lane);
        let now = super::clock();
        let mut state = dispatcher.state();
        let mut handoffs = Vec::new();
        let mut again = Vec::new();
        for (i, waiting) in waiting.into_iter().enumerate() {
            if may_have_started(running, ended, i) {
                warn!("a request waiting in a lane failed with its worker");
                let _ = waiting.tx.send(Delivery::Lost);
            } else {
                again.push(waiting);
            }
        }
        // Back to the front of the queue in their order.
        for waiting in again.into_iter().rev() {
            dispatcher.redispatch(&mut state, waiting, &mut handoffs, now);
        }
        drop(state);
        super::Handoff::complete_all(handoffs);
    });
}
