//! Which CPU a worker is pinned to (`worker_cpu_affinity`).
//!
//! On a small machine under load the kernel's wake-up placement piles the
//! master, a worker and the client onto one core while the other idles for
//! moments at a time (a waker's core is where a woken task lands when that
//! core looks about to free up). A worker pinned to a core of its own
//! cannot join such a pile; the master stays unpinned and takes whichever
//! core is free. That gains a trivial app 5-12% on 2 cores and costs Flask
//! about 6%, so it is off unless asked for (docs/design/hop.md, "Session 15").
//!
//! The choice is a pure function of the CPUs allowed and the ones live
//! workers hold ([`place`]); the shell reads the master's affinity once
//! ([`allowed_cpus`]) and the worker pins itself before it starts a thread
//! (`FERROCORN_WORKER_CPU`), so every thread it ever runs inherits the pin.

use crate::config::WorkerCpuAffinity;
use nix::libc;

/// Whether workers are pinned at all: `spread` always (on any CPU),
/// `auto` when there are at least as many workers as CPUs and at least 2
/// CPUs (with fewer workers the kernel has idle cores to use and a pin
/// only takes choices away), `off` never.
pub fn spreads(mode: WorkerCpuAffinity, workers: usize, cpus: usize) -> bool {
    match mode {
        WorkerCpuAffinity::Off => false,
        WorkerCpuAffinity::Spread => cpus >= 1,
        WorkerCpuAffinity::Auto => cpus >= 2 && workers >= cpus,
    }
}

/// The CPU for a new worker: the one of the worker it replaces, if that
/// one is still allowed, so recycling keeps the spread as it was; else the
/// allowed CPU the fewest live workers hold (`held`: one entry per live,
/// pinned worker), the first of those in `allowed` on a tie. None when no
/// CPU is allowed.
pub fn place(allowed: &[usize], held: &[usize], replaced: Option<usize>) -> Option<usize> {
    if let Some(cpu) = replaced.filter(|cpu| allowed.contains(cpu)) {
        return Some(cpu);
    }
    allowed
        .iter()
        .copied()
        .min_by_key(|cpu| held.iter().filter(|held| *held == cpu).count())
}

/// The CPUs this process may run on (its affinity mask, which a cpuset or
/// `taskset` narrows), in ascending order; empty if it cannot be read.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain bits; zeroed is the empty set, and
    // sched_getaffinity writes at most size_of::<cpu_set_t>() bytes into it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    if unsafe { libc::sched_getaffinity(0, size, &mut set) } != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: cpu is below CPU_SETSIZE, the set's size in bits.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// Pins every thread of a running process `pid` to `cpu`, from outside:
/// for a spare that takes over from a worker on another CPU. Threads
/// started meanwhile inherit the pin from a thread already moved or are
/// found by the next pass; one that ends meanwhile is skipped.
pub fn pin_threads(pid: u32, cpu: usize) -> std::io::Result<()> {
    // SAFETY: as in allowed_cpus; cpu is checked against the set's size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    unsafe { libc::CPU_SET(cpu, &mut set) };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    let mut pinned = std::collections::HashSet::new();
    loop {
        let mut found = false;
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))?.flatten() {
            let Some(tid) = task
                .file_name()
                .to_str()
                .and_then(|t| t.parse::<i32>().ok())
            else {
                continue;
            };
            if !pinned.insert(tid) {
                continue;
            }
            found = true;
            // SAFETY: a plain syscall on a live set.
            if unsafe { libc::sched_setaffinity(tid, size, &set) } != 0 {
                let err = std::io::Error::last_os_error();
                if err.raw_os_error() != Some(libc::ESRCH) {
                    return Err(err);
                }
            }
        }
        if !found {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_spreads_only_with_a_worker_for_every_cpu_and_two_cpus_or_more() {
        use WorkerCpuAffinity::{Auto, Off, Spread};
        assert!(spreads(Auto, 2, 2));
        assert!(spreads(Auto, 5, 2));
        assert!(!spreads(Auto, 1, 2));
        assert!(!spreads(Auto, 8, 64));
        assert!(!spreads(Auto, 4, 1));
        assert!(spreads(Spread, 1, 64));
        assert!(spreads(Spread, 3, 1));
        assert!(!spreads(Spread, 3, 0));
        assert!(!spreads(Off, 64, 64));
    }

    #[test]
    fn a_new_worker_takes_the_cpu_the_fewest_live_workers_hold_the_first_on_a_tie() {
        let allowed = [2, 3, 5];
        assert_eq!(place(&allowed, &[], None), Some(2));
        assert_eq!(place(&allowed, &[2], None), Some(3));
        assert_eq!(place(&allowed, &[2, 3], None), Some(5));
        assert_eq!(place(&allowed, &[2, 3, 5], None), Some(2));
        assert_eq!(place(&allowed, &[2, 3, 5, 2], None), Some(3));
        // A worker that died left its CPU the least held.
        assert_eq!(place(&allowed, &[2, 5, 2, 5, 3], None), Some(3));
        // A CPU no longer allowed counts for nothing.
        assert_eq!(place(&allowed, &[7, 7, 2], None), Some(3));
    }

    #[test]
    fn a_replacement_takes_the_cpu_of_the_worker_it_replaces_while_that_is_allowed() {
        let allowed = [0, 1];
        // Its predecessor still runs there, and the tie would say CPU 0.
        assert_eq!(place(&allowed, &[0, 1], Some(1)), Some(1));
        assert_eq!(place(&allowed, &[0, 1], Some(9)), Some(0));
        assert_eq!(place(&allowed, &[0], None), Some(1));
    }

    #[test]
    fn no_cpu_allowed_places_nowhere() {
        assert_eq!(place(&[], &[0], Some(0)), None);
    }

    #[test]
    fn this_process_may_run_on_at_least_one_cpu() {
        let cpus = allowed_cpus();
        assert!(!cpus.is_empty());
        assert!(cpus.windows(2).all(|w| w[0] < w[1]), "{cpus:?}");
    }
}
