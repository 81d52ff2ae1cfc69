//! The master's ring lane against a worker played in Rust: a thread that
//! maps the same memfd and echoes the request stream into the response
//! stream by the rules of docs/protocol.md, "Ring lanes".

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use nix::libc;
use tokio::net::UnixStream;

use super::hub::ring_eventfd;
use super::*;
use crate::protocol::frame::{put_frame, Kind, HEADER_LEN};
use crate::protocol::lane::{split_ring, Lane, LaneError};

/// The worker's view of one lane's shared memory.
struct Peer {
    base: *mut u8,
    size: usize,
    master_bell: OwnedFd,
}

// SAFETY: shared memory accessed through atomics and byte copies only.
unsafe impl Send for Peer {}

impl Peer {
    fn map(end: &WorkerRing, size: usize, master_bell: OwnedFd) -> Peer {
        let len = CONTROL_LEN + 2 * size;
        // SAFETY: maps the memfd the master made, of the length it made it.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                end.memfd.as_raw_fd(),
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        Peer {
            base: base.cast(),
            size,
            master_bell,
        }
    }

    fn word(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: an aligned word of the control page.
        unsafe { &*self.base.add(offset).cast::<AtomicU64>() }
    }

    fn byte(&self, response: bool, at: u64) -> *mut u8 {
        let ring = CONTROL_LEN + if response { self.size } else { 0 };
        // SAFETY: inside the mapping.
        unsafe { self.base.add(ring + (at % self.size as u64) as usize) }
    }

    fn ring_master_if_asleep(&self, offset: usize) {
        fence(Ordering::SeqCst);
        if self.word(offset).load(Ordering::Acquire) & 1 == 1 {
            ring_eventfd(&self.master_bell);
        }
    }

    /// Moves what it can from the request stream to the response stream;
    /// returns how many bytes.
    fn echo_once(&self) -> usize {
        let req_tail = self.word(word::REQ_TAIL).load(Ordering::Acquire);
        let req_head = self.word(word::REQ_HEAD).load(Ordering::Relaxed);
        let resp_tail = self.word(word::RESP_TAIL).load(Ordering::Relaxed);
        let resp_head = self.word(word::RESP_HEAD).load(Ordering::Acquire);
        let room = self.size as u64 - (resp_tail - resp_head);
        let n = (req_tail - req_head).min(room);
        for i in 0..n {
            // SAFETY: both bytes are inside their rings.
            unsafe { *self.byte(true, resp_tail + i) = *self.byte(false, req_head + i) };
        }
        if n > 0 {
            self.word(word::REQ_HEAD)
                .store(req_head + n, Ordering::Release);
            self.ring_master_if_asleep(word::M_SPACE_SLEEP);
            self.word(word::RESP_TAIL)
                .store(resp_tail + n, Ordering::Release);
            self.ring_master_if_asleep(word::M_DATA_SLEEP);
        }
        n as usize
    }
}

impl Peer {
    /// Echoes the first whole request frame, if there is one, as a worker
    /// that reads one request at a time; returns whether it did.
    fn echo_one_frame(&self) -> bool {
        let req_tail = self.word(word::REQ_TAIL).load(Ordering::Acquire);
        let req_head = self.word(word::REQ_HEAD).load(Ordering::Relaxed);
        if req_tail - req_head < HEADER_LEN as u64 {
            return false;
        }
        let mut header = [0u8; 4];
        for (i, b) in header.iter_mut().enumerate() {
            // SAFETY: inside the request ring.
            *b = unsafe { *self.byte(false, req_head + i as u64) };
        }
        let frame = HEADER_LEN as u64 + u32::from_le_bytes(header) as u64;
        if req_tail - req_head < frame {
            return false;
        }
        let resp_tail = self.word(word::RESP_TAIL).load(Ordering::Relaxed);
        for i in 0..frame {
            // SAFETY: both bytes are inside their rings (the test's frames
            // are far smaller than the response ring's room).
            unsafe { *self.byte(true, resp_tail + i) = *self.byte(false, req_head + i) };
        }
        self.word(word::REQ_HEAD)
            .store(req_head + frame, Ordering::Release);
        self.word(word::RESP_TAIL)
            .store(resp_tail + frame, Ordering::Release);
        self.ring_master_if_asleep(word::M_DATA_SLEEP);
        true
    }
}

fn echo_until(peer: Peer, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            if peer.echo_once() == 0 {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    })
}

fn ring_lane(size: usize) -> (Lane, Peer, std::os::unix::net::UnixStream, Arc<Hub>) {
    let hub = Hub::start(None).unwrap();
    let (ring, end) = Ring::create(&hub, size).unwrap();
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let lane = Lane::over_ring(UnixStream::from_std(ours).unwrap(), ring);
    let peer = Peer::map(&end, size, hub.worker_bell().unwrap());
    (lane, peer, theirs, hub)
}

#[tokio::test]
async fn frames_larger_than_the_ring_cross_both_ways_and_wrap() {
    let hub = Hub::start(None).unwrap();
    let (ring, end) = Ring::create(&hub, MIN_RING_SIZE).unwrap();
    let (ours, _theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let (mut reader, mut writer) = split_ring(UnixStream::from_std(ours).unwrap(), ring);
    let peer = Peer::map(&end, MIN_RING_SIZE, hub.worker_bell().unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let echo = echo_until(peer, stop.clone());
    for (i, len) in [0usize, 10, 5000, 70_000, 200_000, 3, 65_536, 131_000]
        .into_iter()
        .enumerate()
    {
        let payload: Vec<u8> = (0..len).map(|b| (b * 7 + i) as u8).collect();
        put_frame(&mut writer.buf, Kind::Request, 0, &payload);
        // A frame larger than both rings is written while it is read back.
        let (wrote, back) = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::join!(writer.flush(), reader.read_frame())
        })
        .await
        .expect("the echo arrives");
        wrote.unwrap();
        let back = back.unwrap();
        assert_eq!(back.kind, Kind::Request);
        assert_eq!(&back.payload[..], &payload[..], "frame {i} of {len} bytes");
    }
    stop.store(true, Ordering::Relaxed);
    echo.join().unwrap();
}

#[tokio::test]
async fn a_worker_gone_with_request_bytes_unconsumed_leaves_them_unread() {
    let (mut lane, peer, theirs, _hub) = ring_lane(MIN_RING_SIZE);
    lane.write_now(&request_frame(b"never read"));
    drop(theirs);
    let read = tokio::time::timeout(Duration::from_secs(5), lane.reader.read_frame()).await;
    assert!(matches!(read, Ok(Err(LaneError::Unread))), "{read:?}");
    drop(peer);
}

#[tokio::test]
async fn a_worker_gone_after_its_last_response_closes_the_lane_after_it() {
    let (mut lane, peer, theirs, _hub) = ring_lane(MIN_RING_SIZE);
    lane.write_now(&request_frame(b"echo me"));
    while peer.echo_once() == 0 {}
    drop(theirs);
    let first = lane.reader.read_frame().await.unwrap();
    assert_eq!(&first.payload[..], b"echo me");
    let next = tokio::time::timeout(Duration::from_secs(5), lane.reader.read_frame()).await;
    assert!(matches!(next, Ok(Err(LaneError::Closed))), "{next:?}");
}

#[tokio::test]
async fn a_tail_past_the_ring_is_a_protocol_fault() {
    let (mut lane, peer, _theirs, _hub) = ring_lane(MIN_RING_SIZE);
    peer.word(word::RESP_TAIL)
        .store(MIN_RING_SIZE as u64 + 1, Ordering::Release);
    ring_eventfd(&peer.master_bell);
    let read = tokio::time::timeout(Duration::from_secs(5), lane.reader.read_frame()).await;
    match read {
        Ok(Err(err)) => assert!(err.is_protocol_fault(), "{err}"),
        other => panic!("expected a protocol fault, got {other:?}"),
    }
    // A head moved past our tail is one too, on the writer's side.
    peer.word(word::REQ_HEAD).store(5, Ordering::Release);
    let wrote = lane_writer_flush_with(&mut lane, &request_frame(b"x")).await;
    assert!(
        matches!(wrote, Err(ref err) if err.is_protocol_fault()),
        "{wrote:?}"
    );
}

async fn lane_writer_flush_with(lane: &mut Lane, bytes: &[u8]) -> Result<(), LaneError> {
    let writer = lane.writer().unwrap();
    writer.buf.extend_from_slice(bytes);
    writer.flush().await
}

#[tokio::test]
async fn a_response_published_without_its_doorbell_arrives_within_the_bound() {
    let (mut lane, peer, _theirs, hub) = ring_lane(MIN_RING_SIZE);
    lane.write_now(&request_frame(b"quiet"));
    let reader = tokio::spawn(async move {
        let frame = lane.reader.read_frame().await;
        (lane, frame)
    });
    // Wait for the pump to declare sleep (an odd sequence in the lane's
    // sleep word; a fixed pause is not enough on a busy machine), then
    // publish without ringing.
    let asleep = tokio::time::timeout(Duration::from_secs(5), async {
        while peer.word(word::M_DATA_SLEEP).load(Ordering::Acquire) & 1 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    });
    asleep
        .await
        .expect("the pump sleeps while the reader waits");
    let req_tail = peer.word(word::REQ_TAIL).load(Ordering::Acquire);
    for i in 0..req_tail {
        // SAFETY: inside the rings.
        unsafe { *peer.byte(true, i) = *peer.byte(false, i) };
    }
    peer.word(word::REQ_HEAD).store(req_tail, Ordering::Release);
    peer.word(word::RESP_TAIL)
        .store(req_tail, Ordering::Release);
    let (_lane, frame) = tokio::time::timeout(Duration::from_secs(5), reader)
        .await
        .expect("the pump's bounded sleep finds it")
        .unwrap();
    assert_eq!(&frame.unwrap().payload[..], b"quiet");
    assert!(hub.lost_wakeups().0 >= 1, "the lost doorbell is counted");
}

fn request_frame(payload: &[u8]) -> Vec<u8> {
    let mut frame = BytesMut::new();
    put_frame(&mut frame, Kind::Request, 0, payload);
    frame.to_vec()
}

/// Reads an eventfd's count without blocking; 0 if nobody rang.
fn rung(bell: &OwnedFd) -> u64 {
    let mut count = [0u8; 8];
    // SAFETY: reads 8 bytes into a live buffer from a descriptor we own.
    let n = unsafe { libc::read(bell.as_raw_fd(), count.as_mut_ptr().cast(), 8) };
    if n == 8 {
        u64::from_ne_bytes(count)
    } else {
        0
    }
}

#[tokio::test]
async fn a_sleeping_worker_is_rung_at_the_end_of_the_turn_and_only_for_bytes_it_has_not_taken() {
    let hub = Hub::start(None).unwrap();
    let (ring, end) = Ring::create(&hub, MIN_RING_SIZE).unwrap();
    let (ours, _theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let mut lane = Lane::over_ring(UnixStream::from_std(ours).unwrap(), ring);
    let peer = Peer::map(&end, MIN_RING_SIZE, hub.worker_bell().unwrap());
    peer.word(word::W_DATA_SLEEP).store(1, Ordering::Release); // asleep
                                                               // Two requests in one turn: no doorbell yet, then one for both.
    lane.write_now(&request_frame(b"one"));
    lane.write_now(&request_frame(b"two"));
    assert_eq!(rung(&end.bell), 0, "the doorbell waits for the turn's end");
    tokio::task::yield_now().await;
    tokio::task::yield_now().await;
    assert_eq!(rung(&end.bell), 1, "one doorbell for the turn");
    // The worker took them and sleeps again; a request it takes before the
    // pump's look gets no doorbell.
    let tail = peer.word(word::REQ_TAIL).load(Ordering::Acquire);
    peer.word(word::REQ_HEAD).store(tail, Ordering::Release);
    peer.word(word::W_DATA_SLEEP).store(3, Ordering::Release);
    lane.write_now(&request_frame(b"three"));
    let tail = peer.word(word::REQ_TAIL).load(Ordering::Acquire);
    peer.word(word::REQ_HEAD).store(tail, Ordering::Release);
    tokio::task::yield_now().await;
    tokio::task::yield_now().await;
    assert_eq!(rung(&end.bell), 0, "no doorbell for bytes already taken");
}

#[tokio::test]
async fn a_master_waiting_on_a_worker_with_requests_queued_naps_instead_of_taking_doorbells() {
    let hub = Hub::start(Some(Duration::from_micros(500))).unwrap();
    let (ring, end) = Ring::create(&hub, MIN_RING_SIZE).unwrap();
    let (ours, _theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    let mut lane = Lane::over_ring(UnixStream::from_std(ours).unwrap(), ring);
    let peer = Peer::map(&end, MIN_RING_SIZE, hub.worker_bell().unwrap());
    // 40 requests queued at once; the worker answers one per 200 µs and
    // rings the master only when its sleep word says it sleeps.
    for i in 0..40u8 {
        lane.write_now(&request_frame(&[i; 100]));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if peer.echo_one_frame() {
                    std::thread::sleep(Duration::from_micros(200));
                } else {
                    std::thread::yield_now();
                }
            }
        })
    };
    for i in 0..40u8 {
        let frame = tokio::time::timeout(Duration::from_secs(5), lane.reader.read_frame())
            .await
            .expect("every response arrives")
            .unwrap();
        assert_eq!(&frame.payload[..], &[i; 100], "response {i} in order");
    }
    stop.store(true, Ordering::Relaxed);
    worker.join().unwrap();
    assert!(
        hub.naps() > 0,
        "the pump napped while the worker had requests queued"
    );
}
