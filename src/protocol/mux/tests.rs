use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::*;

/// A frame as the worker sends it: `stream` in the reserved field.
fn frame(kind: u8, flags: u8, stream: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Reads one frame from the worker's end: (kind, stream, payload).
async fn read_frame(peer: &mut UnixStream) -> (u8, u16, Vec<u8>) {
    let mut head = [0u8; HEADER_LEN];
    peer.read_exact(&mut head).await.expect("a frame header");
    let length = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let mut payload = vec![0u8; length];
    peer.read_exact(&mut payload).await.expect("the payload");
    (head[4], u16::from_le_bytes([head[6], head[7]]), payload)
}

async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen within 5 s"))
}

fn streams(count: usize) -> (Vec<(MuxReader, MuxWriter)>, UnixStream) {
    let (ours, peer) = UnixStream::pair().expect("socketpair");
    let halves = start(ours, count)
        .into_iter()
        .map(MuxStream::halves)
        .collect();
    (halves, peer)
}

const BODY: u8 = 17;
const REQUEST: u8 = 16;

#[tokio::test]
async fn each_lane_reads_its_own_frames_with_the_stream_cleared_and_writes_stamped_ones() {
    let (mut lanes, mut peer) = streams(4);
    peer.write_all(&frame(BODY, 1, 3, b"for three"))
        .await
        .unwrap();
    peer.write_all(&frame(BODY, 0, 1, b"for one"))
        .await
        .unwrap();
    let mut got = vec![0u8; HEADER_LEN + 9];
    within("stream 3's frame", lanes[3].0.read_exact(&mut got))
        .await
        .unwrap();
    assert_eq!(got, frame(BODY, 1, 0, b"for three"));
    let mut got = vec![0u8; HEADER_LEN + 7];
    within("stream 1's frame", lanes[1].0.read_exact(&mut got))
        .await
        .unwrap();
    assert_eq!(got, frame(BODY, 0, 0, b"for one"));

    // Written in pieces that split the header: still one whole frame, stamped.
    let request = frame(REQUEST, 0, 0, b"head");
    lanes[2].1.write_all(&request[..3]).await.unwrap();
    lanes[2].1.write_all(&request[3..]).await.unwrap();
    assert_eq!(
        within("the stamped frame", read_frame(&mut peer)).await,
        (REQUEST, 2, b"head".to_vec())
    );
}

#[tokio::test]
async fn a_shut_window_holds_back_that_lane_only_until_the_worker_gives_bytes_back() {
    let (mut lanes, mut peer) = streams(2);
    let big = frame(BODY, 0, 0, &vec![7u8; MAX_BODY]);
    // The window opens for frames until WINDOW bytes are out: then the lane waits.
    lanes[0].1.write_all(&big).await.unwrap();
    let blocked =
        tokio::time::timeout(Duration::from_millis(100), lanes[0].1.write_all(&big)).await;
    assert!(blocked.is_err(), "a lane past its window must wait");
    // Another lane is not held back.
    within(
        "the other lane's write",
        lanes[1].1.write_all(&frame(BODY, 1, 0, b"x")),
    )
    .await
    .unwrap();
    let (kind, stream, payload) = within("the first frame", read_frame(&mut peer)).await;
    assert_eq!((kind, stream, payload.len()), (BODY, 0, MAX_BODY));
    assert_eq!(
        within("lane 1's frame", read_frame(&mut peer)).await,
        (BODY, 1, b"x".to_vec())
    );
    // The worker gives the bytes back: the waiting frame goes out.
    peer.write_all(&frame(CREDIT, 0, 0, &(big.len() as u64).to_le_bytes()))
        .await
        .unwrap();
    within("the frame after the credit", lanes[0].1.write_all(&big))
        .await
        .unwrap();
    let (_, stream, payload) = within("it arrives", read_frame(&mut peer)).await;
    assert_eq!((stream, payload.len()), (0, MAX_BODY));
}

const MAX_BODY: usize = crate::protocol::frame::MAX_BODY_PAYLOAD;

#[tokio::test]
async fn bytes_read_are_given_back_in_credits() {
    let (mut lanes, mut peer) = streams(1);
    let chunk = frame(BODY, 0, 0, &vec![1u8; 64 * 1024]);
    let mut sent = 0;
    while sent < CREDIT_AT {
        peer.write_all(&chunk).await.unwrap();
        let mut got = vec![0u8; chunk.len()];
        within("the chunk", lanes[0].0.read_exact(&mut got))
            .await
            .unwrap();
        sent += chunk.len();
    }
    let (kind, stream, payload) = within("a CREDIT", read_frame(&mut peer)).await;
    assert_eq!((kind, stream), (CREDIT, 0));
    assert_eq!(u64::from_le_bytes(payload.try_into().unwrap()), sent as u64);
}

async fn read_error(reader: &mut MuxReader) -> io::Error {
    let mut buf = [0u8; 64];
    within("the read to fail", reader.read(&mut buf))
        .await
        .expect_err("a protocol error")
}

fn corrupt(err: &io::Error) -> Corrupt {
    *err.get_ref()
        .and_then(|e| e.downcast_ref::<Corrupt>())
        .expect("a Corrupt")
}

#[tokio::test]
async fn a_worker_that_sends_past_its_window_breaks_every_lane() {
    let (mut lanes, mut peer) = streams(2);
    let big = frame(BODY, 0, 1, &vec![0u8; MAX_BODY]);
    // The first takes the window to 256 KiB + 8: the second breaks it.
    // (Written by a task: the master stops reading once it is broken.)
    tokio::spawn(async move {
        for _ in 0..2 {
            peer.write_all(&big).await.unwrap();
        }
        peer
    });
    let err = read_error(&mut lanes[0].0).await;
    assert!(
        matches!(corrupt(&err), Corrupt::MuxWindow { stream: 1, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn a_frame_for_a_stream_the_socket_does_not_carry_breaks_every_lane() {
    let (mut lanes, mut peer) = streams(2);
    peer.write_all(&frame(BODY, 0, 2, b"x")).await.unwrap();
    let err = read_error(&mut lanes[1].0).await;
    assert_eq!(
        corrupt(&err),
        Corrupt::MuxStream {
            stream: 2,
            streams: 2
        }
    );
    // A frame longer than any frame may be, too.
    let (mut lanes, mut peer) = streams(1);
    peer.write_all(&u32::MAX.to_le_bytes()).await.unwrap();
    peer.write_all(&[BODY, 0, 0, 0]).await.unwrap();
    let err = read_error(&mut lanes[0].0).await;
    assert!(matches!(corrupt(&err), Corrupt::MuxFrame { .. }), "{err}");
}

#[tokio::test]
async fn the_workers_eof_ends_every_lane_after_what_it_sent_and_the_last_lane_closes_the_socket() {
    let (mut lanes, mut peer) = streams(2);
    peer.write_all(&frame(BODY, 1, 0, b"last")).await.unwrap();
    peer.shutdown().await.unwrap();
    let mut all = Vec::new();
    within("the rest, then EOF", lanes[0].0.read_to_end(&mut all))
        .await
        .unwrap();
    assert_eq!(all, frame(BODY, 1, 0, b"last"));
    let mut none = Vec::new();
    within("EOF on the other lane", lanes[1].0.read_to_end(&mut none))
        .await
        .unwrap();
    assert!(none.is_empty());
    let err = within("a write after EOF", lanes[1].1.write_all(b"12345678"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);

    // Dropping every lane shuts the socket down, as closing lane sockets would.
    let (lanes, mut peer) = streams(3);
    drop(lanes);
    let mut rest = Vec::new();
    within("EOF at the worker", peer.read_to_end(&mut rest))
        .await
        .unwrap();
    assert!(rest.is_empty());
}

#[tokio::test]
async fn frames_for_a_dropped_lane_are_given_back_so_the_worker_never_waits_on_it() {
    let (mut lanes, mut peer) = streams(2);
    let (gone, keep) = (lanes.remove(0), lanes.remove(0));
    drop(gone);
    let big = frame(BODY, 0, 0, &vec![0u8; MAX_BODY]);
    peer.write_all(&big).await.unwrap();
    let (kind, stream, payload) =
        within("the credit for the dropped lane", read_frame(&mut peer)).await;
    assert_eq!((kind, stream), (CREDIT, 0));
    assert_eq!(
        u64::from_le_bytes(payload.try_into().unwrap()),
        big.len() as u64
    );
    drop(keep);
}
