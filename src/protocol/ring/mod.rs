//! A lane over shared memory (docs/design/hop.md, "The design to build"):
//! the lane's frames travel through two byte rings in a memfd both processes
//! map, and a side is woken by an eventfd doorbell only when it declared that
//! it sleeps. A busy server moves requests and responses without a syscall.
//!
//! The lane socket stays, but no byte is written on it: its EOF is how the
//! master learns that the worker died, and how the worker learns that the
//! master let go of the lane.
//!
//! Layout (docs/protocol.md, "Ring lanes"): a 4 KiB control page of 8-byte
//! words, each on its own cache line with one writer, then the request ring
//! (master to worker), then the response ring. Stream positions are byte
//! counts that never wrap; position `p` lives at `p % size` in its ring.
//!
//! The master trusts nothing the worker writes: every index difference is
//! checked against the ring size ([`readable`], [`writable`]) and bytes are
//! copied out before the frame decoder sees them.

mod hub;
mod stream;

pub use hub::{Hub, DEFAULT_MAX_NAP, LOST_WAKEUP_BOUND};
pub use stream::{halves, RingReader, RingWriter};

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Waker;

use nix::libc;

/// Bytes per ring (each direction) unless configured otherwise: room for a
/// 256 KiB BODY frame, so a response chunk never waits for the master to
/// take part of it before the rest fits.
pub const DEFAULT_RING_SIZE: usize = 256 * 1024;
/// The smallest ring the worker accepts.
pub const MIN_RING_SIZE: usize = 64 * 1024;

/// The control page's length; the request ring starts after it.
pub const CONTROL_LEN: usize = 4096;

/// Byte offsets of the control words (one writer each).
pub mod word {
    /// Master: bytes of the request stream published.
    pub const REQ_TAIL: usize = 0;
    /// Worker: bytes of the request stream consumed.
    pub const REQ_HEAD: usize = 64;
    /// Worker: bytes of the response stream published.
    pub const RESP_TAIL: usize = 128;
    /// Master: bytes of the response stream consumed.
    pub const RESP_HEAD: usize = 192;
    /// Worker: odd while it sleeps waiting for request bytes.
    pub const W_DATA_SLEEP: usize = 256;
    /// Worker: odd while it sleeps waiting for response-ring space.
    pub const W_SPACE_SLEEP: usize = 320;
    /// Master: odd while it does not look at this response ring until rung.
    pub const M_DATA_SLEEP: usize = 384;
    /// Master: odd while it waits for request-ring space on this lane.
    pub const M_SPACE_SLEEP: usize = 448;
    /// Worker: its lost wake-ups on this lane (woke by timeout, found work).
    pub const W_LOST: usize = 512;
}

/// Shared memory (or a multiplexed socket's framing) that cannot be right:
/// the worker broke the protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Corrupt {
    /// A tail more than a ring's size ahead of the head, or behind it.
    #[error("the worker's ring index is {ahead} bytes ahead of ours in a {size}-byte ring")]
    Index {
        /// How far the worker's word is ahead (wrapping difference).
        ahead: u64,
        /// The ring's size.
        size: u64,
    },
    /// The worker wrote on the lane socket, which carries no bytes on a ring lane.
    #[error("the worker wrote on a ring lane's socket")]
    SocketBytes,
    /// A frame on a multiplexed socket longer than any frame may be.
    #[error("the worker sent a {length}-byte frame on a multiplexed lane socket")]
    MuxFrame {
        /// The length its header gave.
        length: usize,
    },
    /// A frame for a stream the socket does not carry.
    #[error("the worker sent a frame for stream {stream} on a socket of {streams} streams")]
    MuxStream {
        /// The stream it named.
        stream: u16,
        /// How many the socket carries.
        streams: usize,
    },
    /// A CREDIT frame whose payload is not 8 bytes.
    #[error("the worker sent a CREDIT frame of {length} bytes, not 8")]
    MuxCredit {
        /// Its payload length.
        length: usize,
    },
    /// A frame started after the stream's window was used up.
    #[error("the worker sent past stream {stream}'s window ({outstanding} bytes not given back)")]
    MuxWindow {
        /// The stream.
        stream: u16,
        /// What it had sent that the master had not given back.
        outstanding: usize,
    },
}

impl From<Corrupt> for io::Error {
    fn from(err: Corrupt) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidData, err)
    }
}

/// Bytes the worker published and we have not taken: `tail - head`, which
/// a correct worker keeps within the ring.
pub fn readable(head: u64, tail: u64, size: usize) -> Result<usize, Corrupt> {
    let ahead = tail.wrapping_sub(head);
    if ahead > size as u64 {
        return Err(Corrupt::Index {
            ahead,
            size: size as u64,
        });
    }
    Ok(ahead as usize)
}

/// Room left in a ring we write: `size - (tail - head)`, where the worker's
/// head may not pass our tail.
pub fn writable(head: u64, tail: u64, size: usize) -> Result<usize, Corrupt> {
    readable(head, tail, size).map(|used| size - used)
}

/// One lane's shared memory as the master holds it, with the wakers of the
/// tasks waiting on it and the lane's doorbell.
#[derive(Debug)]
pub struct Ring {
    base: NonNull<u8>,
    map_len: usize,
    size: usize,
    /// The worker's doorbell: it sleeps on this eventfd.
    bell: OwnedFd,
    hub: Arc<Hub>,
    /// The reader, waiting for response bytes.
    reader: Mutex<Option<Waker>>,
    /// The writer, waiting for request-ring space.
    writer: Mutex<Option<Waker>>,
    /// The reader saw the lane socket's EOF: the worker is gone, and a
    /// writer waiting for space would wait forever.
    closed: AtomicBool,
    /// Master-private copies of the words only the master writes (the
    /// worker could overwrite the shared ones).
    sent: AtomicU64,
    taken: AtomicU64,
    space_seq: AtomicU64,
    /// The worker's sleep words we last rang for: one doorbell per sleep.
    rung_data: AtomicU64,
    /// Requests were published since the pump last rang for this lane.
    bell_due: AtomicBool,
    /// The worker's sleep word when the pump last saw it asleep with work.
    stuck: AtomicU64,
    /// The worker's sleep word when the pump began its nap, if a task waited
    /// on this ring then (else [`NOT_WAITED_ON`]).
    nap_mark: AtomicU64,
    rung_space: AtomicU64,
}

// SAFETY: the mapping is plain shared memory owned by this value; every
// access goes through atomics or byte copies, and the wakers through mutexes.
unsafe impl Send for Ring {}
// SAFETY: as above.
unsafe impl Sync for Ring {}

/// A nap mark for a ring no task waited on (no sleep word reaches it: the
/// worker only ever counts up from 0).
const NOT_WAITED_ON: u64 = u64::MAX;

/// The worker's descriptors for one ring lane, handed over with its socket.
#[derive(Debug)]
pub struct WorkerRing {
    /// The memfd the worker maps.
    pub memfd: OwnedFd,
    /// Its doorbell (the same eventfd the master rings).
    pub bell: OwnedFd,
}

impl Ring {
    /// Makes the shared memory for one lane with rings of `size` bytes (a
    /// power of two, at least [`MIN_RING_SIZE`]), registered with `hub`.
    pub fn create(hub: &Arc<Hub>, size: usize) -> io::Result<(Arc<Ring>, WorkerRing)> {
        assert!(size.is_power_of_two() && size >= MIN_RING_SIZE);
        let map_len = CONTROL_LEN + 2 * size;
        // SAFETY: plain syscalls on descriptors this function owns.
        unsafe {
            let memfd = libc::memfd_create(
                c"ferrocorn-lane".as_ptr(),
                libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
            );
            if memfd < 0 {
                return Err(io::Error::last_os_error());
            }
            let memfd = OwnedFd::from_raw_fd(memfd);
            if libc::ftruncate(memfd.as_raw_fd(), map_len as libc::off_t) != 0 {
                return Err(io::Error::last_os_error());
            }
            // A worker that shrank the file would make our next access to a
            // page past its end a SIGBUS; sealed, it cannot.
            let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
            if libc::fcntl(memfd.as_raw_fd(), libc::F_ADD_SEALS, seals) != 0 {
                return Err(io::Error::last_os_error());
            }
            // Populated now, so the pages count in both processes' RSS from
            // the start and the memory policy can subtract a constant.
            let base = libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                memfd.as_raw_fd(),
                0,
            );
            if base == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            let base = NonNull::new(base.cast::<u8>()).expect("mmap returned a mapping");
            let bell = libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC);
            if bell < 0 {
                let err = io::Error::last_os_error();
                libc::munmap(base.as_ptr().cast(), map_len);
                return Err(err);
            }
            let bell = OwnedFd::from_raw_fd(bell);
            let worker_bell = bell.try_clone()?;
            let ring = Arc::new(Ring {
                base,
                map_len,
                size,
                bell,
                hub: hub.clone(),
                reader: Mutex::new(None),
                writer: Mutex::new(None),
                closed: AtomicBool::new(false),
                sent: AtomicU64::new(0),
                taken: AtomicU64::new(0),
                space_seq: AtomicU64::new(0),
                rung_data: AtomicU64::new(0),
                bell_due: AtomicBool::new(false),
                stuck: AtomicU64::new(0),
                nap_mark: AtomicU64::new(NOT_WAITED_ON),
                rung_space: AtomicU64::new(0),
            });
            hub.register(&ring);
            Ok((
                ring,
                WorkerRing {
                    memfd,
                    bell: worker_bell,
                },
            ))
        }
    }

    /// Bytes per ring.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Both rings and the control page: what the mapping adds to each
    /// process's resident size.
    pub fn mapped_bytes(&self) -> usize {
        self.map_len
    }

    fn word(&self, offset: usize) -> &AtomicU64 {
        debug_assert!(offset < CONTROL_LEN && offset % 8 == 0);
        // SAFETY: the offset is an aligned word inside the control page,
        // which lives as long as `self`.
        unsafe { &*self.base.as_ptr().add(offset).cast::<AtomicU64>() }
    }

    fn ring_ptr(&self, response: bool) -> *mut u8 {
        let offset = CONTROL_LEN + if response { self.size } else { 0 };
        // SAFETY: inside the mapping.
        unsafe { self.base.as_ptr().add(offset) }
    }

    /// Copies `out.len()` bytes from stream position `at` of the response
    /// ring (joining the two pieces when they wrap).
    fn copy_out(&self, at: u64, out: &mut [u8]) {
        let ring = self.ring_ptr(true);
        let start = (at % self.size as u64) as usize;
        let first = out.len().min(self.size - start);
        // SAFETY: both ranges lie inside the response ring; the bytes may
        // change under us (the worker is another process), which only makes
        // them garbage, and garbage is what the decoder is for.
        unsafe {
            std::ptr::copy_nonoverlapping(ring.add(start), out.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(ring, out.as_mut_ptr().add(first), out.len() - first);
        }
    }

    /// Copies `data` to stream position `at` of the request ring.
    fn copy_in(&self, at: u64, data: &[u8]) {
        let ring = self.ring_ptr(false);
        let start = (at % self.size as u64) as usize;
        let first = data.len().min(self.size - start);
        // SAFETY: both ranges lie inside the request ring, which the
        // worker does not read past the tail we publish after this.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), ring.add(start), first);
            std::ptr::copy_nonoverlapping(data.as_ptr().add(first), ring, data.len() - first);
        }
    }

    /// Response bytes ready to take.
    fn response_ready(&self) -> Result<usize, Corrupt> {
        let tail = self.word(word::RESP_TAIL).load(Ordering::Acquire);
        readable(self.taken.load(Ordering::Relaxed), tail, self.size)
    }

    /// Room in the request ring.
    fn request_room(&self) -> Result<usize, Corrupt> {
        let head = self.word(word::REQ_HEAD).load(Ordering::Acquire);
        writable(head, self.sent.load(Ordering::Relaxed), self.size)
    }

    /// Whether the worker has not consumed everything we published.
    fn unread(&self) -> bool {
        self.word(word::REQ_HEAD).load(Ordering::Acquire) != self.sent.load(Ordering::Relaxed)
    }

    /// Rings the worker if its sleep word at `offset` says it sleeps and we
    /// have not rung for this sleep yet. Call after a fence.
    fn ring_worker_if_asleep(&self, offset: usize, rung: &AtomicU64) {
        let sleep = self.word(offset).load(Ordering::Acquire);
        if sleep & 1 == 1 && rung.swap(sleep, Ordering::Relaxed) != sleep {
            self.hub.ring(&self.bell);
        }
    }

    /// Publishes the request stream up to `sent` and rings a sleeping worker.
    ///
    /// The doorbell waits for the pump's next look, at the end of this
    /// turn of the event loop: a worker that sleeps while the master is
    /// busy then gets one doorbell for every request written to it in the
    /// turn, not one each, and wakes to find them all.
    fn publish(&self, sent: u64) {
        self.sent.store(sent, Ordering::Relaxed);
        self.word(word::REQ_TAIL).store(sent, Ordering::Release);
        self.bell_due.store(true, Ordering::Relaxed);
        self.hub.bell_due();
    }

    /// Rings the worker for the requests published since the last look, if
    /// it sleeps. The caller fenced after those tail stores: without a full
    /// fence between them and this load both sides could sleep.
    /// Not when the worker took those bytes already: a doorbell for them
    /// would only wake it for nothing.
    fn ring_due_bell(&self) {
        if self.bell_due.swap(false, Ordering::Relaxed) && self.unread() {
            self.ring_worker_if_asleep(word::W_DATA_SLEEP, &self.rung_data);
        }
    }

    /// Marks the response stream taken up to `taken` and rings a worker
    /// waiting for space.
    fn release(&self, taken: u64) {
        self.taken.store(taken, Ordering::Relaxed);
        self.word(word::RESP_HEAD).store(taken, Ordering::Release);
        fence(Ordering::SeqCst);
        self.ring_worker_if_asleep(word::W_SPACE_SLEEP, &self.rung_space);
    }

    /// Rings the worker, whatever we rang before, if it sleeps with
    /// request bytes unconsumed or with response space it waits for: the
    /// pump's cover for a doorbell the worker lost.
    fn nudge(&self) {
        let asleep = |offset| self.word(offset).load(Ordering::Acquire) & 1 == 1;
        let room = readable(
            self.taken.load(Ordering::Relaxed),
            self.word(word::RESP_TAIL).load(Ordering::Acquire),
            self.size,
        )
        .is_ok_and(|used| used < self.size);
        if (asleep(word::W_DATA_SLEEP) && self.unread()) || (asleep(word::W_SPACE_SLEEP) && room) {
            self.hub.ring(&self.bell);
        }
    }

    /// A look at a worker asleep with work, between two of the pump's
    /// periodic checks: if it slept through the whole interval with the same
    /// sleep word (our doorbell lost, or never rung), ring it again. Returns
    /// whether it did.
    fn nudge_if_stuck(&self) -> bool {
        let sleep = self.word(word::W_DATA_SLEEP).load(Ordering::Acquire);
        if sleep & 1 == 0 || !self.unread() {
            self.stuck.store(0, Ordering::Relaxed);
            return false;
        }
        if self.stuck.swap(sleep, Ordering::Relaxed) != sleep {
            return false; // first seen asleep with work: look again next time
        }
        self.hub.ring(&self.bell);
        true
    }

    /// Says whether we wait for request-ring space (odd) or not (even).
    fn set_space_wait(&self, waiting: bool) {
        let seq = self.space_seq.load(Ordering::Relaxed);
        if (seq & 1 == 1) != waiting {
            self.space_seq.store(seq + 1, Ordering::Relaxed);
            self.word(word::M_SPACE_SLEEP)
                .store(seq + 1, Ordering::Release);
            fence(Ordering::SeqCst);
        }
    }

    fn set_master_sleep(&self, seq: u64) {
        self.word(word::M_DATA_SLEEP).store(seq, Ordering::Release);
    }

    /// The worker's lost wake-ups on this lane, as it counted them.
    pub fn worker_lost_wakeups(&self) -> u64 {
        self.word(word::W_LOST).load(Ordering::Relaxed)
    }

    /// Wakes the reader if response bytes (or a broken index, which it
    /// reports) wait, and the writer if space opened; returns how many woke.
    fn wake_ready(&self) -> usize {
        let mut woke = 0;
        if self.response_ready() != Ok(0) {
            if let Some(waker) = lock(&self.reader).take() {
                waker.wake();
                woke += 1;
            }
        }
        if self.request_room() != Ok(0) || self.closed.load(Ordering::Relaxed) {
            if let Some(waker) = lock(&self.writer).take() {
                waker.wake();
                woke += 1;
            }
        }
        woke
    }

    /// Whether a task waits for a response here (None if not), and then
    /// whether the worker has request bytes it has not read yet.
    fn backlogged_reader(&self) -> Option<bool> {
        lock(&self.reader).is_some().then(|| self.unread())
    }

    /// The worker's data-sleep sequence: it grows each time the worker
    /// sleeps for want of requests (and wakes). Read only to learn, never trusted.
    fn worker_sleeps(&self) -> u64 {
        self.word(word::W_DATA_SLEEP).load(Ordering::Relaxed)
    }

    /// Before a nap: whether a task waits for a response here and the
    /// worker has requests unread (`backlogged_reader`), noting its sleep
    /// word for [`Ring::ran_dry`] if a task waits.
    fn mark_for_nap(&self) -> Option<bool> {
        let backlogged = self.backlogged_reader();
        let mark = match backlogged {
            Some(_) => self.worker_sleeps(),
            None => NOT_WAITED_ON,
        };
        self.nap_mark.store(mark, Ordering::Relaxed);
        backlogged
    }

    /// After a nap: whether the worker, waited on when it began, is asleep
    /// now under a new sequence (it ran out of requests during the nap).
    fn ran_dry(&self) -> bool {
        let mark = self.nap_mark.load(Ordering::Relaxed);
        let now = self.worker_sleeps();
        mark != NOT_WAITED_ON && now & 1 == 1 && now != mark
    }

    /// Whether a task waits on this ring (the hub then bounds its sleep).
    fn has_waiter(&self) -> bool {
        lock(&self.reader).is_some() || lock(&self.writer).is_some()
    }

    /// The reader saw EOF: wake a writer waiting for space that will never come.
    fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        if let Some(waker) = lock(&self.writer).take() {
            waker.wake();
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        self.hub.retire(self.worker_lost_wakeups());
        // SAFETY: the mapping was made in `create` with this length and
        // nothing borrows it past `self`.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.map_len);
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_within_the_ring_are_read_as_they_are() {
        assert_eq!(readable(10, 10, 1024), Ok(0));
        assert_eq!(readable(10, 1034, 1024), Ok(1024));
        assert_eq!(writable(10, 1034, 1024), Ok(0));
        assert_eq!(writable(1034, 1034, 1024), Ok(1024));
        // Positions never wrap in practice, but the arithmetic does.
        assert_eq!(readable(u64::MAX - 1, 3, 1024), Ok(5));
    }

    #[test]
    fn a_tail_too_far_ahead_or_behind_is_corrupt() {
        assert!(matches!(
            readable(0, 1025, 1024),
            Err(Corrupt::Index { .. })
        ));
        // Behind: the wrapping difference is huge.
        assert!(matches!(
            readable(100, 99, 1024),
            Err(Corrupt::Index { .. })
        ));
        assert!(matches!(
            writable(101, 100, 1024),
            Err(Corrupt::Index { .. })
        ));
    }
}

#[cfg(test)]
mod peer_tests;
