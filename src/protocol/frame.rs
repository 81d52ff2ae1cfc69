//! Frames of the master <-> worker protocol (docs/protocol.md): the 8-byte
//! header, the kinds and flags, encoding into a buffer and decoding from one.
//!
//! Decoding never panics: partial input is a normal state (`Ok(None)`), and
//! bytes that break the rules are a [`DecodeError`]. Sockets live in
//! `lane.rs`; this file only turns bytes into frames and back.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Version of the protocol; the worker reports its own in HELLO.
pub const PROTOCOL_VERSION: u32 = 3;
/// Bytes in a frame header.
pub const HEADER_LEN: usize = 8;
/// Largest payload of one frame; larger data is split into BODY frames.
pub const MAX_PAYLOAD: usize = 16 * 1024 * 1024;

/// Largest BODY frame payload, either way. Bodies are split this fine so a
/// lane's read buffer never holds more than this of one (a worker that
/// sends larger BODY frames breaks the protocol and is treated as such).
pub const MAX_BODY_PAYLOAD: usize = 256 * 1024;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Worker -> master: handshake, JSON.
    Hello = 1,
    /// Worker -> master: the app is imported.
    Ready = 2,
    /// Worker -> master: the worker could not start; text.
    BootFailed = 3,
    /// Master -> worker, control: reopen the error log; the new file's
    /// descriptor rides along (SCM_RIGHTS).
    ReopenLog = 4,
    /// Master -> fork server: fork a worker onto the descriptors that ride
    /// along (control socket, then lanes); JSON.
    Fork = 5,
    /// Fork server -> master: the worker's pid; JSON.
    Forked = 6,
    /// Fork server -> master: no worker was forked; JSON with the error.
    ForkFailed = 7,
    /// Master -> worker, control: a request timed out; log which lane runs
    /// what, and every thread's stack, and serve on.
    DumpStacks = 8,
    /// Master -> fork server: every first worker is ready; run the
    /// `when_ready` server hook (docs/hooks.md). Empty JSON object.
    WhenReady = 9,
    /// Master -> fork server: a worker exited; run `child_exit`. JSON
    /// `{"worker", "pid"}`.
    ChildExit = 10,
    /// Master -> fork server: the desired worker count changed; run
    /// `nworkers_changed`. JSON `{"new", "old"}` (`old` null the first time).
    NworkersChanged = 11,
    /// Master -> fork server: HUP reloaded the config; run `on_reload`.
    OnReload = 12,
    /// Master -> fork server: the master is stopping; run `on_exit`, then exit.
    OnExit = 13,
    /// Both ways: USR2 is about to start a new master; run `pre_exec`
    /// (master -> fork server), done (fork server -> master). Empty JSON object.
    PreExec = 14,
    /// Master -> worker: the request head as environ pairs.
    Request = 16,
    /// Both ways: a chunk of a body.
    Body = 17,
    /// Master -> worker: the client is gone.
    Cancel = 18,
    /// Worker -> master: the response head.
    Response = 32,
    /// Worker -> master: the request failed in the app; text.
    Error = 33,
}

impl Kind {
    fn from_u8(value: u8) -> Option<Kind> {
        Some(match value {
            1 => Kind::Hello,
            2 => Kind::Ready,
            3 => Kind::BootFailed,
            4 => Kind::ReopenLog,
            5 => Kind::Fork,
            6 => Kind::Forked,
            7 => Kind::ForkFailed,
            8 => Kind::DumpStacks,
            9 => Kind::WhenReady,
            10 => Kind::ChildExit,
            11 => Kind::NworkersChanged,
            12 => Kind::OnReload,
            13 => Kind::OnExit,
            14 => Kind::PreExec,
            16 => Kind::Request,
            17 => Kind::Body,
            18 => Kind::Cancel,
            32 => Kind::Response,
            33 => Kind::Error,
            _ => return None,
        })
    }

    /// The largest payload a frame of this kind may have.
    fn max_payload(self) -> usize {
        match self {
            Kind::Body => MAX_BODY_PAYLOAD,
            _ => MAX_PAYLOAD,
        }
    }

    /// Flag bits this kind may carry.
    fn allowed_flags(self) -> u8 {
        match self {
            Kind::Request => flags::HAS_BODY | flags::ODD,
            Kind::Cancel => flags::ODD,
            Kind::Body => flags::END,
            Kind::BootFailed => flags::APP_LOAD | flags::CONFIG,
            _ => 0,
        }
    }
}

/// Flag bits, by the kind they belong to.
pub mod flags {
    /// REQUEST: BODY frames follow.
    pub const HAS_BODY: u8 = 0x01;
    /// REQUEST and CANCEL: the request's parity on its lane. A second
    /// request may wait behind the running one, so a CANCEL says whose it is.
    pub const ODD: u8 = 0x02;
    /// BODY: the last frame of the body.
    pub const END: u8 = 0x01;
    /// BOOT_FAILED: the app could not be loaded (exit 4, not 3).
    pub const APP_LOAD: u8 = 0x01;
    /// BOOT_FAILED: the server hooks config (`FERROCORN_HOOKS_FROM`) failed,
    /// or a hook that may stop the boot raised: not the app's fault (exit 3),
    /// and a fork server that says so is not started again.
    pub const CONFIG: u8 = 0x02;
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What it carries.
    pub kind: Kind,
    /// Kind-specific flag bits.
    pub flags: u8,
    /// The payload, sliced out of the read buffer without a copy.
    pub payload: Bytes,
}

impl Frame {
    /// Whether a BODY frame is the last of its body.
    pub fn is_end(&self) -> bool {
        self.flags & flags::END != 0
    }
}

/// Bytes that break the framing rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The kind byte is not in the table.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// Flag bits that this kind does not define.
    #[error("frame kind {kind:?} has undefined flags {flags:#04x}")]
    BadFlags {
        /// The frame's kind.
        kind: Kind,
        /// The flags byte as received.
        flags: u8,
    },
    /// The reserved field is not zero.
    #[error("frame has a non-zero reserved field {0}")]
    Reserved(u16),
    /// The length is over its kind's limit ([`MAX_PAYLOAD`], or
    /// [`MAX_BODY_PAYLOAD`] for BODY).
    #[error("{kind:?} frame payload of {length} bytes is over its kind's limit")]
    TooLong {
        /// The frame's kind.
        kind: Kind,
        /// The length as received.
        length: usize,
    },
}

/// Decodes one frame from the front of `buf`, consuming it. `Ok(None)` means
/// more bytes are needed; `buf` is left untouched then.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let length = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let kind = Kind::from_u8(buf[4]).ok_or(DecodeError::UnknownKind(buf[4]))?;
    let flag_bits = buf[5];
    let reserved = u16::from_le_bytes([buf[6], buf[7]]);
    if flag_bits & !kind.allowed_flags() != 0 {
        return Err(DecodeError::BadFlags {
            kind,
            flags: flag_bits,
        });
    }
    if reserved != 0 {
        return Err(DecodeError::Reserved(reserved));
    }
    if length > kind.max_payload() {
        return Err(DecodeError::TooLong { kind, length });
    }
    if buf.len() < HEADER_LEN + length {
        buf.reserve(HEADER_LEN + length - buf.len());
        return Ok(None);
    }
    buf.advance(HEADER_LEN);
    let payload = buf.split_to(length).freeze();
    Ok(Some(Frame {
        kind,
        flags: flag_bits,
        payload,
    }))
}

/// Appends a frame header for a payload of `length` bytes to `out`.
///
/// # Panics
/// If `length` is over [`MAX_PAYLOAD`]: callers split bodies first.
pub fn put_header(out: &mut BytesMut, kind: Kind, flag_bits: u8, length: usize) {
    assert!(
        length <= MAX_PAYLOAD,
        "callers split payloads to MAX_PAYLOAD"
    );
    out.reserve(HEADER_LEN);
    out.put_u32_le(length as u32);
    out.put_u8(kind as u8);
    out.put_u8(flag_bits);
    out.put_u16_le(0);
}

/// Appends a whole frame to `out`.
pub fn put_frame(out: &mut BytesMut, kind: Kind, flag_bits: u8, payload: &[u8]) {
    put_header(out, kind, flag_bits, payload.len());
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn encoded(kind: Kind, flag_bits: u8, payload: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        put_frame(&mut out, kind, flag_bits, payload);
        out
    }

    #[test]
    fn round_trips_every_kind() {
        let kinds = [
            (Kind::Hello, 0),
            (Kind::Ready, 0),
            (Kind::BootFailed, flags::APP_LOAD),
            (Kind::Fork, 0),
            (Kind::Forked, 0),
            (Kind::ForkFailed, 0),
            (Kind::Request, flags::HAS_BODY),
            (Kind::Body, flags::END),
            (Kind::Cancel, 0),
            (Kind::Response, 0),
            (Kind::Error, 0),
        ];
        for (kind, flag_bits) in kinds {
            let mut buf = encoded(kind, flag_bits, b"payload");
            let frame = decode(&mut buf).unwrap().unwrap();
            assert_eq!(frame.kind, kind);
            assert_eq!(frame.flags, flag_bits);
            assert_eq!(&frame.payload[..], b"payload");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn kinds_match_the_python_worker() {
        let program = crate::worker::script::WORKER_PROGRAM;
        for (name, kind) in [
            ("HELLO", Kind::Hello),
            ("READY", Kind::Ready),
            ("BOOT_FAILED", Kind::BootFailed),
            ("REOPEN_LOG", Kind::ReopenLog),
            ("FORK", Kind::Fork),
            ("FORKED", Kind::Forked),
            ("FORK_FAILED", Kind::ForkFailed),
            ("DUMP_STACKS", Kind::DumpStacks),
            ("WHEN_READY", Kind::WhenReady),
            ("CHILD_EXIT", Kind::ChildExit),
            ("NWORKERS_CHANGED", Kind::NworkersChanged),
            ("ON_RELOAD", Kind::OnReload),
            ("ON_EXIT", Kind::OnExit),
            ("PRE_EXEC", Kind::PreExec),
            ("REQUEST", Kind::Request),
            ("BODY", Kind::Body),
            ("CANCEL", Kind::Cancel),
            ("RESPONSE", Kind::Response),
            ("ERROR", Kind::Error),
        ] {
            let line = format!("\n{name} = {}\n", kind as u8);
            assert!(program.contains(&line), "the worker lacks {line:?}");
        }
    }

    #[test]
    fn header_layout_matches_python_struct() {
        // struct.pack("<IBBH", 5, 17, 1, 0) in the worker
        let buf = encoded(Kind::Body, flags::END, b"hello");
        assert_eq!(&buf[..8], &[5, 0, 0, 0, 17, 1, 0, 0]);
    }

    #[test]
    fn every_truncation_waits_for_more() {
        let mut whole = encoded(Kind::Response, 0, b"200 OK\0Content-Type\0text/plain");
        put_frame(&mut whole, Kind::Body, flags::END, b"hi");
        for cut in 0..whole.len() {
            let mut buf = BytesMut::from(&whole[..cut]);
            let mut frames = 0;
            while let Some(_frame) = decode(&mut buf).unwrap() {
                frames += 1;
            }
            assert!(frames < 2, "cut at {cut} decoded both frames");
        }
        let mut buf = whole.clone();
        assert!(decode(&mut buf).unwrap().is_some());
        assert!(decode(&mut buf).unwrap().unwrap().is_end());
    }

    #[test]
    fn rejects_rule_breakers() {
        let mut buf = BytesMut::from(&[0u8, 0, 0, 0, 99, 0, 0, 0][..]);
        assert_eq!(decode(&mut buf), Err(DecodeError::UnknownKind(99)));
        let mut buf = BytesMut::from(&[0u8, 0, 0, 0, 17, 2, 0, 0][..]);
        assert!(matches!(
            decode(&mut buf),
            Err(DecodeError::BadFlags { .. })
        ));
        let mut buf = BytesMut::from(&[0u8, 0, 0, 0, 17, 0, 1, 0][..]);
        assert_eq!(decode(&mut buf), Err(DecodeError::Reserved(1)));
        let mut buf = BytesMut::from(&[0xffu8, 0xff, 0xff, 0xff, 17, 0, 0, 0][..]);
        assert!(matches!(decode(&mut buf), Err(DecodeError::TooLong { .. })));
        // BODY frames have the smaller limit: 256 KiB waits for its
        // payload, one byte more is refused before any of it is held.
        let body_header = |length: u32| {
            let mut header = length.to_le_bytes().to_vec();
            header.extend_from_slice(&[17, 0, 0, 0]);
            BytesMut::from(&header[..])
        };
        let mut buf = body_header(MAX_BODY_PAYLOAD as u32);
        assert_eq!(decode(&mut buf), Ok(None));
        let mut buf = body_header(MAX_BODY_PAYLOAD as u32 + 1);
        assert!(matches!(
            decode(&mut buf),
            Err(DecodeError::TooLong {
                kind: Kind::Body,
                ..
            })
        ));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0xf3);
        for _ in 0..20_000 {
            let len = rng.random_range(0..64);
            let mut bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            // Bias towards valid kinds and small lengths so decoding goes deep.
            if len >= 8 && rng.random_bool(0.7) {
                bytes[4] = [1, 2, 3, 16, 17, 18, 32, 33][rng.random_range(0..8)];
                bytes[3] = 0;
                bytes[2] = 0;
                bytes[1] = 0;
                bytes[0] %= 80;
            }
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some(_)) = decode(&mut buf) {}
        }
    }

    /// A random stream of valid frames, and the frames it holds.
    fn random_stream(rng: &mut rand::rngs::StdRng) -> (BytesMut, Vec<Frame>) {
        const KINDS: [Kind; 19] = [
            Kind::Hello,
            Kind::Ready,
            Kind::BootFailed,
            Kind::ReopenLog,
            Kind::Fork,
            Kind::Forked,
            Kind::ForkFailed,
            Kind::DumpStacks,
            Kind::WhenReady,
            Kind::ChildExit,
            Kind::NworkersChanged,
            Kind::OnReload,
            Kind::OnExit,
            Kind::PreExec,
            Kind::Request,
            Kind::Body,
            Kind::Cancel,
            Kind::Response,
            Kind::Error,
        ];
        let mut out = BytesMut::new();
        let mut frames = Vec::new();
        for _ in 0..rng.random_range(1..6) {
            let kind = KINDS[rng.random_range(0..KINDS.len())];
            let flag_bits = rng.random::<u8>() & kind.allowed_flags();
            let len = if rng.random_bool(0.1) {
                rng.random_range(0..5000)
            } else {
                rng.random_range(0..40)
            };
            let payload: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            put_frame(&mut out, kind, flag_bits, &payload);
            frames.push(Frame {
                kind,
                flags: flag_bits,
                payload: Bytes::from(payload),
            });
        }
        (out, frames)
    }

    /// Decodes until more bytes are needed or an error; never panics.
    fn decode_all(bytes: &[u8]) -> (Vec<Frame>, Option<DecodeError>, usize) {
        let mut buf = BytesMut::from(bytes);
        let mut frames = Vec::new();
        loop {
            match decode(&mut buf) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => return (frames, None, buf.len()),
                Err(err) => return (frames, Some(err), buf.len()),
            }
        }
    }

    #[test]
    fn mutated_valid_streams_never_panic_and_valid_ones_round_trip() {
        // Issue 10 item 14: seeded, so a failure reproduces; 4,000 cases.
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x14f1);
        for case in 0..4_000 {
            let (stream, frames) = random_stream(&mut rng);
            let (got, err, left) = decode_all(&stream);
            assert_eq!((&got, &err, left), (&frames, &None, 0), "case {case}");

            // Every truncation: a prefix of the frames, then a wait for more.
            let cut = rng.random_range(0..stream.len());
            let (got, err, _) = decode_all(&stream[..cut]);
            assert_eq!(err, None, "case {case}: cut at {cut}");
            assert!(got.len() < frames.len(), "case {case}: cut at {cut}");
            assert_eq!(got[..], frames[..got.len()], "case {case}: cut at {cut}");

            // Two streams back to back: all frames of both, in order.
            let (second, more) = random_stream(&mut rng);
            let mut both = stream.clone();
            both.extend_from_slice(&second);
            let (got, err, left) = decode_all(&both);
            let expected: Vec<Frame> = frames.iter().chain(&more).cloned().collect();
            assert_eq!((got, err, left), (expected, None, 0), "case {case}");

            // Flipped bits: an error, a wait or other frames, never a panic;
            // the frames wholly before the first flipped byte are unchanged.
            let mut flipped = stream.to_vec();
            let mut first = flipped.len();
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..flipped.len());
                flipped[at] ^= 1 << rng.random_range(0..8);
                first = first.min(at);
            }
            let (got, _, _) = decode_all(&flipped);
            let mut end = 0;
            for (i, frame) in frames.iter().enumerate() {
                end += HEADER_LEN + frame.payload.len();
                if end > first {
                    break;
                }
                assert_eq!(got.get(i), Some(frame), "case {case}: flips from {first}");
            }

            // Inserted or deleted bytes, then a valid stream after them.
            let mut spliced = stream.to_vec();
            let at = rng.random_range(0..=spliced.len());
            if rng.random_bool(0.5) {
                let noise: Vec<u8> = (0..rng.random_range(1..12)).map(|_| rng.random()).collect();
                spliced.splice(at..at, noise);
            } else {
                let to = rng.random_range(at..=spliced.len());
                spliced.drain(at..to);
            }
            spliced.extend_from_slice(&second);
            let _ = decode_all(&spliced);
        }
    }
}
