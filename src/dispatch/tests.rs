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
        Dispatcher::new(backlog, Duration::from_secs(5), tx, None),
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
async fn counts_requests_and_reports_the_limit_once() {
    let (d, mut news) = dispatcher(8);
    let (a, _keep) = lanes(1);
    let terms = WorkerTerms {
        request_limit: Some(3),
        rss_watch: None,
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
            served: 3
        }
    );
    assert!(news.try_recv().is_err(), "reported once");
}

#[tokio::test]
async fn reports_rss_above_the_threshold_after_each_request_and_once_below() {
    use crate::worker::memory::RssProbe;
    let (d, mut news) = dispatcher(8);
    let (a, _keep) = lanes(1);
    let rss = RssProbe::open(std::process::id()).unwrap().read().unwrap();
    let terms = WorkerTerms {
        request_limit: None,
        rss_watch: Some((RssProbe::open(std::process::id()).unwrap(), rss / 2)),
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
