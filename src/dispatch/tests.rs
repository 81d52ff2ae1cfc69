//! The dispatcher over real socketpairs (a lane is a socket), with tokio's
//! paused clock for the queue timeout.

use super::*;
use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;

fn lanes(n: usize) -> (Vec<Lane>, Vec<UnixStream>) {
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for _ in 0..n {
        let (a, b) = UnixStream::pair().unwrap();
        ours.push(Lane::new(a));
        theirs.push(b);
    }
    (ours, theirs)
}

fn dispatcher(backlog: usize) -> (Dispatcher, mpsc::UnboundedReceiver<PoolNews>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        Dispatcher::new(backlog, Duration::from_secs(5), Pipelining::OFF, tx, None),
        rx,
    )
}

#[tokio::test]
async fn picks_the_least_loaded_worker() {
    let (d, _) = dispatcher(8);
    let (a, _keep_a) = lanes(2);
    let (b, _keep_b) = lanes(2);
    d.add_worker(WorkerId(1), a, WorkerTerms::default());
    d.add_worker(WorkerId(2), b, WorkerTerms::default());
    let first = d.acquire(Bytes::new()).await.unwrap();
    let second = d.acquire(Bytes::new()).await.unwrap();
    assert_ne!(
        first.worker(),
        second.worker(),
        "the second request goes to the idle worker"
    );
    assert_eq!(d.stats().busy_lanes, 2);
    drop(first);
    drop(second);
    assert_eq!(d.stats().idle_lanes, 4);
}

#[tokio::test(start_paused = true)]
async fn waits_in_the_queue_then_gets_the_freed_lane() {
    let (d, _) = dispatcher(8);
    let (a, _keep) = lanes(1);
    d.add_worker(WorkerId(1), a, WorkerTerms::default());
    let busy = d.acquire(Bytes::new()).await.unwrap();
    let waiter = tokio::spawn({
        let d = d.clone();
        async move { d.acquire(Bytes::new()).await.map(|l| l.worker()) }
    });
    tokio::task::yield_now().await;
    assert_eq!(d.stats().queued, 1);
    drop(busy);
    assert_eq!(waiter.await.unwrap(), Ok(WorkerId(1)));
}

#[tokio::test(start_paused = true)]
async fn queue_timeout_and_full_queue_refuse() {
    let (d, _) = dispatcher(1);
    let (a, _keep) = lanes(1);
    d.add_worker(WorkerId(1), a, WorkerTerms::default());
    let _busy = d.acquire(Bytes::new()).await.unwrap();
    let waiting = tokio::spawn({
        let d = d.clone();
        async move { d.acquire(Bytes::new()).await.map(|l| l.worker()) }
    });
    tokio::task::yield_now().await;
    assert_eq!(
        d.acquire(Bytes::new()).await.unwrap_err(),
        DispatchError::QueueFull
    );
    assert_eq!(waiting.await.unwrap(), Err(DispatchError::QueueTimeout));
}

#[tokio::test(start_paused = true)]
async fn each_queued_request_expires_its_own_timeout_after_admission_and_the_reaper_comes_back() {
    let (d, _) = dispatcher(8);
    let (a, _keep) = lanes(1);
    d.add_worker(WorkerId(1), a, WorkerTerms::default());
    let _busy = d.acquire(Bytes::new()).await.unwrap();
    let queue = |d: &Dispatcher| {
        let d = d.clone();
        tokio::spawn(async move { d.acquire(Bytes::new()).await.map(|l| l.worker()) })
    };
    let first = queue(&d);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let second = queue(&d);
    tokio::time::sleep(Duration::from_millis(2_100)).await; // 5.1 s, 2.1 s
    assert!(first.is_finished(), "past its 5 s");
    assert_eq!(first.await.unwrap(), Err(DispatchError::QueueTimeout));
    assert!(!second.is_finished(), "3 s younger: still waiting");
    assert_eq!(d.stats().queued, 1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(second.await.unwrap(), Err(DispatchError::QueueTimeout));
    assert_eq!(d.stats().queued, 0);
    // The queue ran empty and the reaper stopped; the next queued request
    // starts it again.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let third = queue(&d);
    tokio::time::sleep(Duration::from_millis(5_100)).await;
    assert!(third.is_finished());
    assert_eq!(third.await.unwrap(), Err(DispatchError::QueueTimeout));
}

#[tokio::test]
async fn retiring_worker_gets_nothing_and_reports_drained() {
    let (d, mut drained) = dispatcher(8);
    let (a, _keep_a) = lanes(1);
    let (b, _keep_b) = lanes(1);
    d.add_worker(WorkerId(1), a, WorkerTerms::default());
    d.add_worker(WorkerId(2), b, WorkerTerms::default());
    let lease = d.acquire(Bytes::new()).await.unwrap();
    let busy_worker = lease.worker();
    d.retire(busy_worker);
    assert!(drained.try_recv().is_err(), "still has a request in flight");
    let other = d.acquire(Bytes::new()).await.unwrap();
    assert_ne!(other.worker(), busy_worker);
    drop(lease);
    assert_eq!(
        drained.try_recv().unwrap(),
        PoolNews::Drained {
            worker: busy_worker,
            served: 1
        }
    );
}

#[tokio::test]
async fn close_refuses_new_requests() {
    let (d, _) = dispatcher(8);
    d.close();
    assert_eq!(
        d.acquire(Bytes::new()).await.unwrap_err(),
        DispatchError::ShuttingDown
    );
}

#[tokio::test]
async fn a_queued_request_is_written_the_moment_its_lane_frees_up() {
    let (d, _) = dispatcher(8);
    let (a, mut theirs) = lanes(1);
    d.add_worker(WorkerId(1), a, WorkerTerms::default());
    let busy = d.acquire(Bytes::new()).await.unwrap();
    let waiter = tokio::spawn({
        let d = d.clone();
        async move {
            d.acquire(Bytes::from_static(b"next request"))
                .await
                .map(|l| l.request_written())
        }
    });
    tokio::task::yield_now().await;
    drop(busy);
    // The worker side sees the bytes before the waiting task has even run.
    let mut got = [0u8; 12];
    theirs[0].read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"next request");
    assert_eq!(waiter.await.unwrap(), Ok(true));
}

#[tokio::test]
async fn a_worker_in_reserve_serves_only_when_no_normal_worker_accepts() {
    let (d, _) = dispatcher(8);
    let (a, _keep_a) = lanes(2);
    let (b, _keep_b) = lanes(1);
    d.add_worker(WorkerId(1), a, WorkerTerms::default());
    d.add_worker(WorkerId(2), b, WorkerTerms::default());
    d.set_standing(WorkerId(1), Standing::Reserve);
    let first = d.acquire(Bytes::new()).await.unwrap();
    assert_eq!(first.worker(), WorkerId(2));
    let waiter = tokio::spawn({
        let d = d.clone();
        async move { d.acquire(Bytes::new()).await.map(|l| l.worker()) }
    });
    tokio::task::yield_now().await;
    assert_eq!(d.stats().queued, 1, "waits for the normal worker");
    // The normal worker retires: the one in reserve takes the waiter.
    d.retire(WorkerId(2));
    assert_eq!(waiter.await.unwrap(), Ok(WorkerId(1)));
    drop(first);
}

#[tokio::test]
async fn an_excluded_worker_takes_no_new_request_even_when_alone() {
    let (d, _) = dispatcher(8);
    let (a, _keep_a) = lanes(1);
    d.add_worker(WorkerId(1), a, WorkerTerms::default());
    d.set_standing(WorkerId(1), Standing::Excluded);
    let waiter = tokio::spawn({
        let d = d.clone();
        async move { d.acquire(Bytes::new()).await.map(|l| l.worker()) }
    });
    tokio::task::yield_now().await;
    assert_eq!(d.stats().queued, 1, "waits for the replacement");
    let (b, _keep_b) = lanes(1);
    d.add_worker(WorkerId(2), b, WorkerTerms::default());
    assert_eq!(waiter.await.unwrap(), Ok(WorkerId(2)));
}

#[tokio::test]
async fn counts_requests_and_reports_the_limit_once_when_it_is_handed_out() {
    let (d, mut news) = dispatcher(8);
    let (a, _keep) = lanes(1);
    let terms = WorkerTerms {
        request_limit: Some(3),
        ..WorkerTerms::default()
    };
    d.add_worker(WorkerId(7), a, terms);
    for _ in 0..5 {
        drop(d.acquire(Bytes::new()).await.unwrap());
    }
    assert_eq!(d.served(), vec![(WorkerId(7), 5)]);
    assert_eq!(
        news.try_recv().unwrap(),
        PoolNews::RequestLimit {
            worker: WorkerId(7),
            served: 2
        },
        "heard as the third request is given, before it is done"
    );
    assert!(news.try_recv().is_err(), "reported once");
}

#[tokio::test]
async fn a_worker_at_its_request_cap_gets_nothing_more_whatever_its_standing() {
    let (d, _news) = dispatcher(8);
    let (a, _keep_a) = lanes(1);
    let terms = WorkerTerms {
        request_limit: Some(1),
        request_cap: Some(2),
        ..WorkerTerms::default()
    };
    d.add_worker(WorkerId(1), a, terms);
    d.set_standing(WorkerId(1), Standing::Reserve);
    for _ in 0..2 {
        drop(d.acquire(Bytes::new()).await.unwrap());
    }
    let waiter = tokio::spawn({
        let d = d.clone();
        async move { d.acquire(Bytes::new()).await.map(|lease| lease.worker()) }
    });
    wait_for(|| d.stats().queued == 1).await;
    let (b, _keep_b) = lanes(1);
    d.add_worker(WorkerId(2), b, WorkerTerms::default());
    assert_eq!(waiter.await.unwrap(), Ok(WorkerId(2)));
    assert_eq!(d.served(), vec![(WorkerId(1), 2), (WorkerId(2), 1)]);
}

#[tokio::test]
async fn reports_rss_above_the_threshold_after_each_request_and_once_below() {
    use crate::worker::memory::RssProbe;
    let (d, mut news) = dispatcher(8);
    let (a, _keep) = lanes(1);
    let rss = RssProbe::open(std::process::id()).unwrap().read().unwrap();
    let terms = WorkerTerms {
        rss_watch: Some((RssProbe::open(std::process::id()).unwrap(), rss / 2)),
        ..WorkerTerms::default()
    };
    d.add_worker(WorkerId(1), a, terms);
    drop(d.acquire(Bytes::new()).await.unwrap());
    drop(d.acquire(Bytes::new()).await.unwrap());
    for _ in 0..2 {
        match news.try_recv().unwrap() {
            PoolNews::Rss { worker, bytes, .. } => {
                assert_eq!(worker, WorkerId(1));
                assert!(bytes > rss / 2);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn light_load_rotates_over_every_worker() {
    let (d, _) = dispatcher(8);
    let mut keep = Vec::new();
    for id in 1..=3 {
        let (lanes, theirs) = lanes(1);
        keep.push(theirs);
        d.add_worker(WorkerId(id), lanes, WorkerTerms::default());
    }
    let mut picked = Vec::new();
    for _ in 0..6 {
        // One request at a time: every worker is idle at each pick.
        picked.push(d.acquire(Bytes::new()).await.unwrap().worker().0);
    }
    assert_eq!(picked, [1, 2, 3, 1, 2, 3]);
}

// ------------------------------------------------------------- waiting in lanes

fn pipelining(below: Duration) -> Dispatcher {
    pipelining_deep(below, 2)
}

fn pipelining_deep(below: Duration, depth: usize) -> Dispatcher {
    let (tx, rx) = mpsc::unbounded_channel();
    std::mem::forget(rx); // no arbiter in these tests; keep the channel open
    Dispatcher::new(
        8,
        Duration::from_secs(5),
        Pipelining { below, depth },
        tx,
        None,
    )
}

fn request(tag: &[u8]) -> Bytes {
    let mut out = bytes::BytesMut::new();
    crate::protocol::frame::put_frame(&mut out, crate::protocol::frame::Kind::Request, 0, tag);
    out.freeze()
}

/// What the worker end of a lane reads: (flags, payload) of one frame.
async fn worker_reads(sock: &mut UnixStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 8];
    sock.read_exact(&mut head).await.unwrap();
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let mut payload = vec![0u8; len];
    sock.read_exact(&mut payload).await.unwrap();
    (head[5], payload)
}

/// The worker end answers one request: RESPONSE then BODY(END).
async fn worker_answers(sock: &mut UnixStream) {
    use crate::protocol::frame::{flags, put_frame, Kind};
    use tokio::io::AsyncWriteExt;
    let mut out = bytes::BytesMut::new();
    put_frame(&mut out, Kind::Response, 0, b"200 OK");
    put_frame(&mut out, Kind::Body, flags::END, b"");
    sock.write_all(&out).await.unwrap();
}

/// Serves one request through `lease` as the exchange does: sends it, then
/// reads its response.
async fn run(lease: &mut LaneLease, req: &Bytes) {
    lease.send_request(req).await.unwrap();
    finish(lease).await;
}

/// Reads a whole response through `lease` as the exchange does: the head
/// (writing whatever waits behind it meanwhile), then BODY(END).
async fn finish(lease: &mut LaneLease) {
    let head = lease.lane().read_frame_within(Duration::from_secs(5)).await;
    assert!(matches!(head, Ok(Some(_))), "{head:?}");
    let end = lease.lane().reader.read_frame().await.unwrap();
    assert!(end.is_end());
}

/// A lane leased for request `tag`, its request sent: the running request.
async fn running(d: &Dispatcher, tag: &'static [u8]) -> LaneLease {
    let mut lease = d.acquire(request(tag)).await.unwrap();
    lease.send_request(&request(tag)).await.unwrap();
    lease
}

/// One worker with one lane that has served a request, so its service time is known.
async fn warmed(d: &Dispatcher, id: u64) -> UnixStream {
    let (lanes, mut theirs) = lanes(1);
    d.add_worker(WorkerId(id), lanes, WorkerTerms::default());
    let mut sock = theirs.pop().unwrap();
    let warm = request(b"warm");
    let mut lease = d.acquire(warm.clone()).await.unwrap();
    let serve = async {
        worker_reads(&mut sock).await;
        worker_answers(&mut sock).await;
    };
    tokio::join!(run(&mut lease, &warm), serve);
    drop(lease);
    sock
}

/// Spawns an acquire of `req`; yields so it reaches the dispatcher.
async fn ask(
    d: &Dispatcher,
    tag: &'static [u8],
) -> tokio::task::JoinHandle<Result<LaneLease, DispatchError>> {
    let handle = tokio::spawn({
        let d = d.clone();
        async move { d.acquire(request(tag)).await }
    });
    tokio::task::yield_now().await;
    handle
}

fn load_of(d: &Dispatcher) -> (usize, usize, u64) {
    let s = d.stats();
    (s.queued, s.waiting_in_lanes, s.pipelined_total)
}

#[tokio::test]
async fn under_overload_the_oldest_queued_request_is_written_behind_the_running_one() {
    let d = pipelining(Duration::from_secs(1));
    let mut sock = warmed(&d, 1).await;
    let mut a = running(&d, b"a").await;
    let b = ask(&d, b"b").await;
    assert_eq!(
        load_of(&d),
        (1, 0, 0),
        "one queued request waits for any lane"
    );
    let c = ask(&d, b"c").await;
    assert_eq!(
        load_of(&d),
        (1, 1, 1),
        "with two, the oldest moves into the lane"
    );
    // The worker gets b right behind a, before a's response, with the other parity.
    let (a_flags, _) = worker_reads(&mut sock).await;
    let reading = tokio::spawn(async move {
        let b = worker_reads(&mut sock).await;
        (b, sock)
    });
    let head = tokio::time::timeout(
        Duration::from_millis(200),
        a.lane().read_frame_within(Duration::ZERO),
    )
    .await;
    assert!(
        head.is_err(),
        "no response yet: the holder only wrote b meanwhile"
    );
    let ((b_flags, b_payload), mut sock) = reading.await.unwrap();
    assert_eq!(b_payload, b"b");
    assert_ne!(a_flags & 0x02, b_flags & 0x02);
    worker_answers(&mut sock).await;
    finish(&mut a).await;
    drop(a);
    let b = b.await.unwrap().unwrap();
    assert!(b.request_written());
    assert_eq!(b.request(), 3, "warm-up, a, b");
    assert_eq!(load_of(&d), (1, 0, 1), "c alone in the queue stays there");
    c.abort();
}

#[tokio::test]
async fn nothing_waits_behind_a_worker_whose_requests_are_slow() {
    let d = pipelining(Duration::from_nanos(1));
    let _sock = warmed(&d, 1).await;
    let _a = d.acquire(request(b"a")).await.unwrap();
    let b = ask(&d, b"b").await;
    let c = ask(&d, b"c").await;
    assert_eq!(load_of(&d), (2, 0, 0));
    b.abort();
    c.abort();
}

#[tokio::test]
async fn the_next_queued_request_moves_in_as_soon_as_the_waiting_one_starts() {
    let d = pipelining(Duration::from_secs(1));
    let mut sock = warmed(&d, 1).await;
    let mut a = running(&d, b"a").await;
    let b = ask(&d, b"b").await;
    let c = ask(&d, b"c").await;
    let e = ask(&d, b"e").await;
    assert_eq!(load_of(&d), (2, 1, 1), "one waiting place per lane");
    worker_reads(&mut sock).await; // a
    worker_answers(&mut sock).await;
    finish(&mut a).await;
    drop(a);
    assert_eq!(b.await.unwrap().unwrap().request(), 3);
    assert_eq!(load_of(&d), (1, 1, 2), "c moved in behind b");
    c.abort();
    e.abort();
}

#[tokio::test]
async fn a_request_waiting_behind_one_whose_worker_died_is_served_by_another() {
    let d = pipelining(Duration::from_secs(1));
    let mut dying = warmed(&d, 1).await;
    let mut a = running(&d, b"a").await;
    let b = ask(&d, b"b").await;
    let c = ask(&d, b"c").await;
    assert_eq!(load_of(&d), (1, 1, 1));
    // The holder writes b behind a; then the worker dies without answering a.
    let holder = tokio::spawn(async move {
        let read = a.lane().read_frame_within(Duration::ZERO).await;
        (read.map(|_| ()), a)
    });
    worker_reads(&mut dying).await; // a
    let (_, b_payload) = worker_reads(&mut dying).await;
    assert_eq!(b_payload, b"b", "b was in the dying worker's lane");
    drop(dying);
    let (read, a) = holder.await.unwrap();
    assert!(read.is_err());
    a.discard();
    // b goes back to the front of the queue, ahead of c.
    wait_for(|| d.stats().redispatched_total == 1).await;
    let (other, _keep) = lanes(1);
    d.add_worker(WorkerId(2), other, WorkerTerms::default());
    let b = b.await.unwrap().expect("b is served elsewhere");
    assert_eq!(b.worker(), WorkerId(2));
    assert!(b.request_written());
    assert_eq!(d.stats().queued, 1, "c still waits");
    c.abort();
}

#[tokio::test]
async fn a_request_waiting_behind_one_that_ended_fails_with_its_worker() {
    let d = pipelining(Duration::from_secs(1));
    let mut dying = warmed(&d, 1).await;
    let mut a = running(&d, b"a").await;
    let b = ask(&d, b"b").await;
    let c = ask(&d, b"c").await;
    // The holder writes b and gives up on a (as a timeout does), but the
    // worker had answered a: b may have started when the worker died.
    let read = tokio::time::timeout(
        Duration::from_millis(100),
        a.lane().read_frame_within(Duration::ZERO),
    )
    .await;
    assert!(read.is_err());
    worker_reads(&mut dying).await; // a
    worker_reads(&mut dying).await; // b
    worker_answers(&mut dying).await;
    drop(dying);
    a.discard();
    assert_eq!(b.await.unwrap().map(|_| ()), Err(DispatchError::WorkerLost));
    assert_eq!(d.stats().redispatched_total, 0);
    c.abort();
}

#[tokio::test]
async fn a_deeper_lane_holds_up_to_its_depth_and_each_waiting_request_runs_in_turn() {
    let d = pipelining_deep(Duration::from_secs(1), 3);
    let mut sock = warmed(&d, 1).await;
    let mut a = running(&d, b"a").await;
    let b = ask(&d, b"b").await;
    let c = ask(&d, b"c").await;
    let e = ask(&d, b"e").await;
    let f = ask(&d, b"f").await;
    assert_eq!(
        load_of(&d),
        (2, 2, 2),
        "depth 3: the running one and two behind it"
    );
    // The holder writes both behind a while it waits for a's response.
    let serve = async {
        let mut tags = Vec::new();
        for _ in 0..3 {
            tags.push(worker_reads(&mut sock).await.1);
        }
        worker_answers(&mut sock).await;
        tags
    };
    let (tags, ()) = tokio::join!(serve, finish(&mut a));
    assert_eq!(tags, [b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
    drop(a);
    let mut b = b.await.unwrap().unwrap();
    assert_eq!(b.request(), 3, "warm-up, a, then b");
    assert_eq!(load_of(&d), (1, 2, 3), "e moved in behind c");
    let serve = async {
        let e_tag = worker_reads(&mut sock).await.1;
        worker_answers(&mut sock).await;
        e_tag
    };
    let (e_tag, ()) = tokio::join!(serve, finish(&mut b));
    assert_eq!(e_tag, b"e");
    drop(b);
    let c = c.await.unwrap().unwrap();
    assert_eq!(c.request(), 4, "c runs next, numbered after b");
    drop(c);
    e.abort();
    f.abort();
}

#[tokio::test]
async fn requests_waiting_behind_one_whose_worker_died_unanswered_all_go_elsewhere() {
    let d = pipelining_deep(Duration::from_secs(1), 4);
    let mut dying = warmed(&d, 1).await;
    let mut a = running(&d, b"a").await;
    let waiters = [
        ask(&d, b"b").await,
        ask(&d, b"c").await,
        ask(&d, b"e").await,
        ask(&d, b"f").await,
    ];
    assert_eq!(load_of(&d), (1, 3, 3));
    let holder = tokio::spawn(async move {
        let read = a.lane().read_frame_within(Duration::ZERO).await;
        (read.map(|_| ()), a)
    });
    for tag in [&b"a"[..], b"b", b"c", b"e"] {
        assert_eq!(worker_reads(&mut dying).await.1, tag);
    }
    drop(dying);
    let (read, a) = holder.await.unwrap();
    assert!(read.is_err());
    a.discard();
    wait_for(|| d.stats().redispatched_total == 3).await;
    let (other, _keep) = lanes(1);
    d.add_worker(WorkerId(2), other, WorkerTerms::default());
    let [b, c, e, f] = waiters;
    let b = b.await.unwrap().expect("b is served elsewhere, first");
    assert_eq!(b.worker(), WorkerId(2));
    assert!(b.request_written());
    assert_eq!(d.stats().queued, 3, "c and e wait again, with f");
    for waiter in [c, e, f] {
        waiter.abort();
    }
}

#[test]
fn the_requests_written_behind_a_broken_lanes_running_one_are_counted_from_it() {
    use super::waiting::written_behind;
    // Request 5 runs; 6 and 7 were written, an eighth waits unwritten.
    assert_eq!(written_behind(5, 4, 7, 3), (5, 2));
    // Nothing written behind it yet.
    assert_eq!(written_behind(5, 4, 5, 2), (5, 0));
    // Never more than are waiting (the lane may count more written).
    assert_eq!(written_behind(5, 4, 9, 2), (5, 2));
    // A lease whose own request was never written (0): the waiting ones
    // follow the last that ended, so 4 and 5 reached the worker.
    assert_eq!(written_behind(0, 3, 5, 3), (3, 2));
}

#[test]
fn a_waiting_request_may_have_started_once_the_one_before_it_ended() {
    use super::waiting::may_have_started;
    // Request 5 was running; 6, 7, 8 waited behind it.
    assert!(!may_have_started(5, 4, 0), "5 never ended: 6 never started");
    assert!(may_have_started(5, 5, 0), "5 ended: 6 may have started");
    assert!(!may_have_started(5, 5, 1), "6 did not end: 7 never started");
    assert!(may_have_started(5, 7, 2), "7 ended: 8 may have started");
}

async fn wait_for(done: impl Fn() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("condition not reached in 5 s");
}
