//! The master's side of the doorbells: one eventfd every worker rings, and
//! one task (the pump) that looks at every lane's response ring and wakes
//! the tasks whose bytes or space arrived.
//!
//! While the pump finds work it looks again after the other ready tasks
//! had their turn, and workers do not ring at all. Only when a look finds
//! nothing does it declare sleep (an odd sequence number in every lane's
//! `M_DATA_SLEEP`), look once more after a fence, and wait for the
//! doorbell. So a busy master takes responses without a syscall, and an
//! idle one costs each response one doorbell.
//!
//! A lost doorbell (the worker read the sleep word before our store reached
//! it) costs at most [`LOST_WAKEUP_BOUND`]: while any task waits on a ring
//! the pump's sleep is bounded, and a wake-up by timeout that finds work is
//! counted in [`Hub::lost_wakeups`].

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use nix::libc;
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;

use super::{lock, Ring};

/// The longest a lost doorbell can delay a response or a request.
pub const LOST_WAKEUP_BOUND: Duration = Duration::from_millis(2);

/// The shortest ceiling `FERROCORN_MASTER_NAP` may set; below it the pump
/// never naps.
const MIN_NAP: Duration = Duration::from_micros(10);

/// The shortest nap worth its timer (or the ceiling, if that is shorter).
/// Arming a timerfd and disarming it when a request cuts the nap short
/// cost the master microseconds, far more in a VM, where programming the
/// timer exits to the hypervisor: on this 2-core KVM guest `timerfd_settime`
/// was 7% of the master's time on plain WSGI, whose workers empty their
/// queues in microseconds. A nap shorter than this saves fewer doorbells
/// than it costs, so once the learnt nap falls below it the pump sleeps on
/// the doorbell instead (docs/design/hop.md, "Session 12").
const NAP_FLOOR: Duration = Duration::from_micros(40);

/// While naps are off, one chance to nap in this many takes a nap at the
/// floor anyway, to learn whether the workers' queues last longer again.
const PROBE_EVERY: u32 = 16;

/// The longest nap, by default (`FERROCORN_MASTER_NAP`). The nap learns
/// how long the workers' queues last, so the ceiling matters only where
/// they last longer (an app slower than a bare `/hello`, or a slower
/// machine): there a longer nap means fewer wake-ups of the master
/// (docs/design/hop.md, "Naps").
pub const DEFAULT_MAX_NAP: Duration = Duration::from_millis(1);

/// A yield that comes back sooner than this ran no other task: the master
/// has nothing else to do and may sleep.
const ALONE: Duration = Duration::from_micros(2);

/// Looks in a row that found nothing, between other tasks, before the pump
/// declares sleep anyway (a slow build or a preempted thread would
/// otherwise keep it looking for ever).
const MAX_IDLE_LOOKS: u32 = 32;

/// The doorbells' shared state; see the module docs.
#[derive(Debug)]
pub struct Hub {
    bell: OwnedFd,
    lanes: Mutex<Vec<Weak<Ring>>>,
    /// The pump's sleep sequence: odd while it sleeps.
    seq: AtomicU64,
    /// The pump sleeps without the bound: a task that starts waiting must
    /// kick it, or a lost doorbell would cost it forever.
    unbounded: AtomicBool,
    kick: Notify,
    /// Some lane published requests its worker may need a doorbell for.
    bells_due: AtomicBool,
    /// When the pump last looked for workers asleep with work.
    last_check: Mutex<Instant>,
    /// Workers found asleep with work for a whole interval and rung again.
    nudged: AtomicU64,
    lost: AtomicU64,
    worker_lost_retired: AtomicU64,
    /// `FERROCORN_DROP_BELL=N` (tests): skip every Nth doorbell to a worker.
    drop_every: u64,
    rung: AtomicU64,
    /// How long the pump naps instead of sleeping while every worker it
    /// waits on has requests queued (None: never).
    nap: Option<Duration>,
    /// The pump naps: it wakes on its timer, not on doorbells, but a
    /// request published meanwhile cuts the nap short.
    napping: AtomicBool,
    naps: AtomicU64,
    /// The current nap, in ns, learnt ([`next_nap`]): a quarter shorter
    /// when a worker slept during one (it ran out of requests: the nap was
    /// too long), a sixteenth longer when none did; 0 while naps are off
    /// (learnt below the floor).
    nap_ns: AtomicU64,
    /// Chances to nap so far (a worker waited on had requests queued).
    nap_chances: AtomicU32,
}

impl Hub {
    /// Makes the master's doorbell and starts the pump on the current
    /// runtime; it naps at most `nap` (None: never, it sleeps on doorbells).
    pub fn start(nap: Option<Duration>) -> io::Result<Arc<Hub>> {
        // SAFETY: a plain syscall; the descriptor is owned at once.
        let bell = unsafe {
            let fd = libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC);
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            OwnedFd::from_raw_fd(fd)
        };
        // SAFETY: the AsyncFd owns its descriptor (a dup of the bell), so
        // it stays open and the same for the AsyncFd's whole life.
        let waiter = unsafe { AsyncFd::register(bell.try_clone()?) }.map_err(io::Error::from)?;
        let nap = nap.filter(|n| *n >= MIN_NAP);
        let timer = match nap {
            Some(_) => Some(Timer::new()?),
            None => None,
        };
        let drop_every = std::env::var("FERROCORN_DROP_BELL")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let hub = Arc::new(Hub {
            bell,
            lanes: Mutex::new(Vec::new()),
            seq: AtomicU64::new(0),
            unbounded: AtomicBool::new(false),
            kick: Notify::new(),
            bells_due: AtomicBool::new(false),
            last_check: Mutex::new(Instant::now()),
            nudged: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            worker_lost_retired: AtomicU64::new(0),
            drop_every,
            rung: AtomicU64::new(0),
            nap,
            napping: AtomicBool::new(false),
            naps: AtomicU64::new(0),
            nap_ns: AtomicU64::new(nap.map_or(0, |n| n.as_nanos() as u64 / 4)),
            nap_chances: AtomicU32::new(0),
        });
        tokio::spawn(pump(Arc::downgrade(&hub), waiter, timer));
        Ok(hub)
    }

    /// A descriptor of the master's doorbell for a worker to ring.
    pub fn worker_bell(&self) -> io::Result<OwnedFd> {
        self.bell.try_clone()
    }

    /// Lost wake-ups: the master's (woke by timeout and found work), and the
    /// workers' (as their lanes counted them, plus those the pump found
    /// asleep with work for a whole interval and rang again).
    pub fn lost_wakeups(&self) -> (u64, u64) {
        let live: u64 = lock(&self.lanes)
            .iter()
            .filter_map(Weak::upgrade)
            .map(|ring| ring.worker_lost_wakeups())
            .sum();
        (
            self.lost.load(Ordering::Relaxed),
            self.worker_lost_retired.load(Ordering::Relaxed)
                + live
                + self.nudged.load(Ordering::Relaxed),
        )
    }

    pub(super) fn register(&self, ring: &Arc<Ring>) {
        let mut lanes = lock(&self.lanes);
        ring.set_master_sleep(self.seq.load(Ordering::SeqCst));
        lanes.push(Arc::downgrade(ring));
    }

    pub(super) fn retire(&self, worker_lost: u64) {
        self.worker_lost_retired
            .fetch_add(worker_lost, Ordering::Relaxed);
    }

    /// A task starts waiting on a ring: make sure the pump's sleep is bounded.
    pub(super) fn waiting(&self) {
        if self.unbounded.load(Ordering::SeqCst) {
            self.kick.notify_one();
        }
    }

    /// Rings a worker's doorbell (unless a test drops this one).
    pub(super) fn ring(&self, bell: &OwnedFd) {
        let n = self.rung.fetch_add(1, Ordering::Relaxed) + 1;
        if self.drop_every > 0 && n % self.drop_every == 0 {
            return;
        }
        ring_eventfd(bell);
    }

    /// Requests were published: the pump rings for them on its next
    /// look, and wakes for it if it sleeps.
    pub(super) fn bell_due(&self) {
        if !self.bells_due.swap(true, Ordering::SeqCst)
            && (self.seq.load(Ordering::SeqCst) & 1 == 1 || self.napping.load(Ordering::SeqCst))
        {
            self.kick.notify_one();
        }
    }

    /// Whether the pump may nap: a task waits for a response, and every
    /// worker a task waits on has requests it has not read yet, so it will
    /// answer without the master's help for a while.
    /// Each ring notes its worker's sleep word, to tell after the nap
    /// whether one of them slept meanwhile ([`Hub::ran_dry`]).
    fn may_nap(&self) -> bool {
        let mut waited_on = false;
        for ring in lock(&self.lanes).iter().filter_map(Weak::upgrade) {
            match ring.mark_for_nap() {
                // Marks left stale here are all written again before the next nap.
                Some(false) => return false,
                Some(true) => waited_on = true,
                None => {}
            }
        }
        waited_on
    }

    /// Whether a worker waited on when the nap began fell asleep during it.
    fn ran_dry(&self) -> bool {
        lock(&self.lanes)
            .iter()
            .filter_map(Weak::upgrade)
            .any(|ring| ring.ran_dry())
    }

    /// Naps taken so far.
    pub fn naps(&self) -> u64 {
        self.naps.load(Ordering::Relaxed)
    }

    /// Rings the workers that sleep with requests published since the last
    /// look, and wakes every task whose ring has what it waits for.
    fn scan(&self) -> usize {
        let bells = self.bells_due.swap(false, Ordering::SeqCst);
        if bells {
            // One fence for every tail stored since the last look.
            fence(Ordering::SeqCst);
        }
        // A busy pump never times out, so it looks for stuck workers on a
        // clock too: a doorbell lost while the master is busy costs at most
        // two of these intervals.
        let now = Instant::now();
        let check = {
            let mut last = lock(&self.last_check);
            let due = now.duration_since(*last) >= LOST_WAKEUP_BOUND;
            if due {
                *last = now;
            }
            due
        };
        let (mut woke, mut stuck) = (0, 0);
        lock(&self.lanes).retain(|lane| match lane.upgrade() {
            Some(ring) => {
                if bells {
                    ring.ring_due_bell();
                }
                if check && ring.nudge_if_stuck() {
                    stuck += 1;
                }
                woke += ring.wake_ready();
                true
            }
            None => false,
        });
        self.nudged.fetch_add(stuck, Ordering::Relaxed);
        woke
    }

    /// Rings again every worker that sleeps with work waiting for it.
    fn nudge(&self) {
        for ring in lock(&self.lanes).iter().filter_map(Weak::upgrade) {
            ring.nudge();
        }
    }

    /// Whether a task waits on any ring.
    fn has_waiters(&self) -> bool {
        lock(&self.lanes)
            .iter()
            .filter_map(Weak::upgrade)
            .any(|ring| ring.has_waiter())
    }

    /// Stores the next sequence number in every lane; returns whether a
    /// task waits on one of them.
    fn set_sleep(&self, asleep: bool) -> bool {
        let seq = self.seq.load(Ordering::Relaxed) + 1;
        debug_assert_eq!(seq & 1 == 1, asleep);
        self.seq.store(seq, Ordering::SeqCst);
        let mut waiter = false;
        for ring in lock(&self.lanes).iter().filter_map(Weak::upgrade) {
            ring.set_master_sleep(seq);
            waiter |= ring.has_waiter();
        }
        fence(Ordering::SeqCst);
        waiter
    }
}

/// Adds one to an eventfd. It cannot fill up in practice (the reader
/// drains it on every wake-up), so a failed write has nothing to retry.
pub(super) fn ring_eventfd(bell: &OwnedFd) {
    let one = 1u64.to_ne_bytes();
    // SAFETY: writes 8 bytes from a live buffer to a descriptor we own.
    unsafe {
        libc::write(bell.as_raw_fd(), one.as_ptr().cast(), one.len());
    }
}

/// Reads an eventfd's counter, resetting it; `WouldBlock` if nobody rang.
fn drain(bell: &OwnedFd) -> io::Result<u64> {
    let mut count = [0u8; 8];
    // SAFETY: reads 8 bytes into a live buffer from a descriptor we own.
    let n = unsafe { libc::read(bell.as_raw_fd(), count.as_mut_ptr().cast(), count.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(u64::from_ne_bytes(count))
}

async fn pump(weak: Weak<Hub>, bell: AsyncFd<OwnedFd>, timer: Option<Timer>) {
    let mut idle_looks = 0;
    loop {
        let Some(hub) = weak.upgrade() else { return };
        if hub.scan() > 0 {
            idle_looks = 0;
            drop(hub);
            tokio::task::yield_now().await;
            continue;
        }
        // Nothing now, but a task waits on a ring. If other tasks are
        // ready they run before we look again, so a busy master keeps
        // looking between them and workers never ring. A look that comes
        // straight back (nothing else ran: the runtime is about to wait),
        // or a long run of looks that found nothing, declares sleep.
        if idle_looks < MAX_IDLE_LOOKS && hub.has_waiters() {
            idle_looks += 1;
            let looked = Instant::now();
            drop(hub);
            tokio::task::yield_now().await;
            if looked.elapsed() > ALONE {
                continue;
            }
            let Some(again) = weak.upgrade() else { return };
            if again.scan() > 0 {
                idle_looks = 0;
                continue;
            }
            hub_sleep(&again, &bell, timer.as_ref()).await;
            idle_looks = 0;
            continue;
        }
        idle_looks = 0;
        hub_sleep(&hub, &bell, timer.as_ref()).await;
    }
}

/// Naps: waits on the timer for `nap`, with the sleep word left awake so
/// that workers answering meanwhile ring no doorbell; a request published
/// meanwhile cuts it short. [`Hub::may_nap`] said it may.
async fn hub_nap(hub: &Hub, timer: &Timer, nap: Duration, max: Duration) {
    hub.napping.store(true, Ordering::SeqCst);
    // A request published before the flag was seen did not kick.
    if !hub.bells_due.load(Ordering::SeqCst) {
        hub.naps.fetch_add(1, Ordering::Relaxed);
        let whole = tokio::select! {
            () = timer.wait(nap) => true,
            () = hub.kick.notified() => { timer.disarm(); false }
        };
        if whole {
            let next = next_nap(nap, hub.ran_dry(), max);
            hub.nap_ns.store(next.as_nanos() as u64, Ordering::Relaxed);
        }
    }
    hub.napping.store(false, Ordering::SeqCst);
}

/// The nap after a whole one of `nap`: a quarter shorter if a worker ran
/// out of requests during it (it slept), else a sixteenth longer, at most
/// `max`. So it settles just short of how long the workers' queued
/// requests last: the master wakes about when they would need it, and they
/// never ring it. Shorter than the floor ([`nap_floor`]) it is zero: naps
/// are off.
fn next_nap(nap: Duration, dried: bool, max: Duration) -> Duration {
    let floor = nap_floor(max);
    if dried {
        let next = nap * 3 / 4;
        return if next < floor { Duration::ZERO } else { next };
    }
    // The floor is never above the ceiling (nap_floor).
    (nap + nap / 16).clamp(floor, max)
}

/// The shortest nap taken: [`NAP_FLOOR`], or the ceiling if lower.
fn nap_floor(max: Duration) -> Duration {
    NAP_FLOOR.min(max)
}

/// The nap to take at the `chance`-th chance to nap, given the learnt one:
/// that one, or while naps are off (zero) the floor once every
/// [`PROBE_EVERY`] chances; None: sleep on the doorbell.
fn nap_to_take(learnt: Duration, max: Duration, chance: u32) -> Option<Duration> {
    if !learnt.is_zero() {
        return Some(learnt);
    }
    (chance % PROBE_EVERY == 0).then(|| nap_floor(max))
}

/// Declares sleep, looks once more, and waits for the doorbell (bounded
/// while a task waits on a ring); then counts a lost doorbell and nudges.
async fn hub_sleep(hub: &Hub, bell: &AsyncFd<OwnedFd>, timer: Option<&Timer>) {
    if let (Some(max), Some(timer)) = (hub.nap, timer) {
        if hub.may_nap() {
            let learnt = Duration::from_nanos(hub.nap_ns.load(Ordering::Relaxed));
            let chance = hub.nap_chances.fetch_add(1, Ordering::Relaxed);
            if let Some(nap) = nap_to_take(learnt, max, chance) {
                hub_nap(hub, timer, nap, max).await;
                return;
            }
        }
    }
    let waiter = hub.set_sleep(true);
    if hub.scan() > 0 {
        hub.set_sleep(false);
        return;
    }
    hub.unbounded.store(!waiter, Ordering::SeqCst);
    let woke = tokio::select! {
        ready = bell.readable() => {
            if let Ok(mut guard) = ready {
                // Drains the counter; WouldBlock clears the readiness.
                let _ = guard.try_io(|fd| drain(fd.get_ref()));
            }
            true
        }
        () = hub.kick.notified() => true,
        () = tokio::time::sleep(LOST_WAKEUP_BOUND), if waiter => false,
    };
    hub.unbounded.store(false, Ordering::SeqCst);
    hub.set_sleep(false);
    if !woke {
        // Woken by the bound with work waiting: lost, unless the doorbell
        // was rung after all, just later than the bound.
        if hub.scan() > 0 && drain(bell.get_ref()).is_err() {
            hub.lost.fetch_add(1, Ordering::Relaxed);
        }
        // Nothing moved for the bound's length: a worker asleep with
        // work for it may have lost our doorbell, whenever it fell asleep.
        hub.nudge();
    }
}

/// A one-shot timerfd: microsecond naps, where tokio's timer wheel counts
/// milliseconds.
struct Timer {
    fd: AsyncFd<OwnedFd>,
}

impl Timer {
    fn new() -> io::Result<Timer> {
        // SAFETY: a plain syscall; the descriptor is owned at once.
        let fd = unsafe {
            let fd = libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            );
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            OwnedFd::from_raw_fd(fd)
        };
        // SAFETY: the AsyncFd owns the descriptor, which stays open and the
        // same for its whole life.
        let fd = unsafe { AsyncFd::register(fd) }.map_err(io::Error::from)?;
        Ok(Timer { fd })
    }

    fn set(&self, after: Duration) {
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: after.as_secs() as libc::time_t,
                tv_nsec: after.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: a plain syscall on a descriptor we own, with a live spec.
        unsafe {
            libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut());
        }
    }

    /// Waits `after` (or less, if an earlier expiry was never read).
    async fn wait(&self, after: Duration) {
        self.set(after);
        loop {
            let Ok(mut guard) = self.fd.readable().await else {
                return;
            };
            if guard.try_io(|fd| drain(fd.get_ref())).is_ok() {
                return;
            }
        }
    }

    fn disarm(&self) {
        self.set(Duration::ZERO);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);

    #[test]
    fn the_nap_shrinks_a_quarter_when_a_worker_ran_dry_and_grows_a_sixteenth_else() {
        let max = 500 * US;
        assert_eq!(next_nap(160 * US, true, max), 120 * US);
        assert_eq!(next_nap(160 * US, false, max), 170 * US);
        assert_eq!(next_nap(490 * US, false, max), max, "never past the bound");
        assert_eq!(
            next_nap(52 * US, true, max),
            Duration::ZERO,
            "below the floor: off"
        );
        assert_eq!(
            next_nap(56 * US, true, max),
            42 * US,
            "at the floor or above: kept"
        );
    }

    #[test]
    fn a_ceiling_below_the_floor_is_the_floor() {
        let max = 20 * US;
        assert_eq!(next_nap(20 * US, false, max), max);
        assert_eq!(next_nap(20 * US, true, max), Duration::ZERO);
        assert_eq!(nap_to_take(Duration::ZERO, max, 0), Some(max));
    }

    #[test]
    fn while_naps_are_off_one_chance_in_sixteen_probes_at_the_floor() {
        let max = 500 * US;
        assert_eq!(
            nap_to_take(120 * US, max, 5),
            Some(120 * US),
            "on: the learnt nap"
        );
        let probes: Vec<u32> = (0..48)
            .filter(|&chance| nap_to_take(Duration::ZERO, max, chance).is_some())
            .collect();
        assert_eq!(probes, [0, 16, 32]);
        assert_eq!(nap_to_take(Duration::ZERO, max, 16), Some(NAP_FLOOR));
        // A probe that finds the queues lasting turns naps back on; one
        // during which a worker ran dry leaves them off.
        assert_eq!(next_nap(NAP_FLOOR, false, max), NAP_FLOOR + NAP_FLOOR / 16);
        assert_eq!(next_nap(NAP_FLOOR, true, max), Duration::ZERO);
    }

    #[test]
    fn workers_faster_than_the_floor_turn_naps_off_for_good_but_the_probes() {
        // Queues that last 15 µs: every nap finds a worker asleep.
        let (max, lasts) = (DEFAULT_MAX_NAP, 15 * US);
        let mut learnt = max / 4;
        let mut naps = 0;
        for chance in 0..1000 {
            if let Some(nap) = nap_to_take(learnt, max, chance) {
                naps += 1;
                learnt = next_nap(nap, nap > lasts, max);
            }
        }
        assert!(learnt.is_zero());
        assert!(naps < 1000 / PROBE_EVERY + 20, "{naps} naps");
    }

    #[test]
    fn a_nap_settles_just_short_of_how_long_the_workers_queues_last() {
        // Workers whose queued requests last 300 µs: a longer nap finds one
        // asleep. The nap oscillates below 300 µs, never far below.
        let (max, lasts) = (500 * US, 300 * US);
        let mut nap = max / 4;
        let mut seen = Vec::new();
        for _ in 0..200 {
            nap = next_nap(nap, nap > lasts, max);
            seen.push(nap);
        }
        let settled = &seen[100..];
        assert!(
            settled.iter().all(|n| *n > 200 * US && *n < 330 * US),
            "{settled:?}"
        );
    }
}
