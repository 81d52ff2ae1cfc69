//! Reading a worker's memory from /proc: the I/O half of the memory policy.
//! The decision lives in [`crate::master::policy::memory`]; the shell calls
//! [`read_all`] on each tick and hands the samples to it.
//!
//! RSS comes from `/proc/PID/statm` (the kernel's per-process counters, what
//! `ps` shows; cheap, no page-table walk). PSS and USS come from
//! `/proc/PID/smaps_rollup`, which walks the worker's page tables under its
//! mmap lock on every read, so its cost grows with the worker's size:
//! measured about 3 us for statm at any size, and for smaps_rollup 225 us at
//! 30 MiB resident, 680 us at 130 MiB, 3.6 ms at 530 MiB (2-core VM, Linux
//! 6.18). These are blocking reads: run a round off the async threads
//! (`spawn_blocking`), and RSS stays the default metric.

use std::fs::File;
use std::io::{self, Read};
use std::sync::OnceLock;

use nix::unistd::{sysconf, SysconfVar};

use super::WorkerId;
use crate::config::MemoryMetric;

/// Both files fit easily: statm is one short line, smaps_rollup about 25.
/// A file that fills the buffer is treated as garbled rather than read in part.
const BUF_LEN: usize = 4096;

/// The memory of process `pid` in bytes, by `metric`.
///
/// # Errors
/// `ErrorKind::NotFound` when the process is gone (or is a zombie with no
/// memory left to read); `ErrorKind::InvalidData` when the /proc file lacks a
/// field or cannot be parsed; other kinds as the OS reports them.
pub fn read(pid: u32, metric: MemoryMetric) -> io::Result<u64> {
    match metric {
        MemoryMetric::Rss => {
            let mut buf = [0u8; BUF_LEN];
            let text = read_proc(pid, "statm", &mut buf)?;
            let pages = parse_statm_resident(text)?;
            pages
                .checked_mul(page_size()?)
                .ok_or_else(|| invalid("statm: resident size overflows u64"))
        }
        MemoryMetric::Pss | MemoryMetric::Uss => {
            let mut buf = [0u8; BUF_LEN];
            let text = read_proc(pid, "smaps_rollup", &mut buf)?;
            let fields = if metric == MemoryMetric::Pss {
                PSS_FIELDS
            } else {
                USS_FIELDS
            };
            sum_smaps_rollup(text, fields)
        }
    }
}

/// The memory of each `(worker, pid)` in bytes, skipping processes that
/// vanished between listing and reading (they are reaped elsewhere).
///
/// Other read errors are skipped too, since one unreadable worker must not
/// stop the others from being sampled; a worker that is never readable simply
/// never gets a memory verdict.
pub fn read_all(pids: &[(WorkerId, u32)], metric: MemoryMetric) -> Vec<(WorkerId, u64)> {
    pids.iter()
        .filter_map(|&(worker, pid)| match read(pid, metric) {
            Ok(bytes) => Some((worker, bytes)),
            Err(err) => {
                if err.kind() != io::ErrorKind::NotFound {
                    tracing::debug!(worker = worker.0, pid, error = %err, "memory read failed");
                }
                None
            }
        })
        .collect()
}

/// A worker's RSS, read after each of its requests when a limit applies
/// to RSS (uWSGI's reload-on-rss checks at the same point): statm stays
/// open and one `pread` costs a few microseconds, so a leak is caught
/// within a request rather than within a sampling interval. PSS and USS
/// walk page tables and are sampled on the interval only.
#[derive(Debug)]
pub struct RssProbe {
    statm: File,
    excluded: u64,
}

/// How much of `mapped` bytes of lane rings (shared memory both the master
/// and the worker map, populated at once) a worker's `metric` counts: all
/// of it in RSS, half in PSS (two processes map it), none in USS. The
/// memory policy subtracts it, so a limit applies to the app, not to the
/// transport.
pub fn transport_share(metric: MemoryMetric, mapped: u64) -> u64 {
    match metric {
        MemoryMetric::Rss => mapped,
        MemoryMetric::Pss => mapped / 2,
        MemoryMetric::Uss => 0,
    }
}

impl RssProbe {
    /// Opens `/proc/PID/statm`.
    pub fn open(pid: u32) -> io::Result<RssProbe> {
        let statm = File::open(format!("/proc/{pid}/statm")).map_err(gone_is_not_found)?;
        Ok(RssProbe { statm, excluded: 0 })
    }

    /// The same probe, reading `bytes` less (the worker's lane rings).
    pub fn excluding(self, bytes: u64) -> RssProbe {
        RssProbe {
            excluded: bytes,
            ..self
        }
    }

    /// The current RSS in bytes.
    pub fn read(&self) -> io::Result<u64> {
        use std::os::unix::fs::FileExt;
        let mut buf = [0u8; 256];
        let n = self.statm.read_at(&mut buf, 0).map_err(gone_is_not_found)?;
        let text = std::str::from_utf8(&buf[..n]).map_err(|_| invalid("statm is not UTF-8"))?;
        let pages = parse_statm_resident(text)?;
        pages
            .checked_mul(page_size()?)
            .map(|bytes| bytes.saturating_sub(self.excluded))
            .ok_or_else(|| invalid("statm: resident size overflows u64"))
    }
}

/// The system page size, asked once.
fn page_size() -> io::Result<u64> {
    static PAGE_SIZE: OnceLock<u64> = OnceLock::new();
    if let Some(&size) = PAGE_SIZE.get() {
        return Ok(size);
    }
    let size = match sysconf(SysconfVar::PAGE_SIZE) {
        Ok(Some(size)) if size > 0 => size as u64,
        Ok(_) => return Err(invalid("sysconf(PAGE_SIZE) gave no page size")),
        Err(errno) => return Err(errno.into()),
    };
    Ok(*PAGE_SIZE.get_or_init(|| size))
}

/// Reads `/proc/PID/NAME` whole into `buf`, without a heap allocation for
/// the contents.
fn read_proc<'b>(pid: u32, name: &str, buf: &'b mut [u8; BUF_LEN]) -> io::Result<&'b str> {
    let path = format!("/proc/{pid}/{name}");
    let mut file = File::open(&path).map_err(gone_is_not_found)?;
    let mut len = 0;
    loop {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => {
                len += n;
                if len == buf.len() {
                    return Err(invalid(&format!("{path} is larger than {BUF_LEN} bytes")));
                }
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(gone_is_not_found(err)),
        }
    }
    std::str::from_utf8(&buf[..len]).map_err(|_| invalid(&format!("{path} is not UTF-8")))
}

/// smaps_rollup of a process that is exiting (no `mm` left) fails with
/// ESRCH rather than ENOENT; both mean "gone" to the caller.
fn gone_is_not_found(err: io::Error) -> io::Error {
    if err.raw_os_error() == Some(nix::errno::Errno::ESRCH as i32) {
        io::Error::new(io::ErrorKind::NotFound, err)
    } else {
        err
    }
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_owned())
}

/// The resident size in pages: the second field of statm.
fn parse_statm_resident(text: &str) -> io::Result<u64> {
    let mut fields = text.split_ascii_whitespace();
    let resident = fields
        .nth(1)
        .ok_or_else(|| invalid("statm: no resident field"))?;
    // statm has seven fields; fewer means the read was cut short.
    if fields.count() != 5 {
        return Err(invalid("statm: expected 7 fields"));
    }
    resident
        .parse()
        .map_err(|_| invalid("statm: resident field is not a number"))
}

/// A field of smaps_rollup to add up, and whether it must be present.
type Field = (&'static str, bool);

/// PSS: shared pages divided among the processes that map them.
const PSS_FIELDS: &[Field] = &[("Pss", true)];

/// USS: pages only this process maps. Private_Hugetlb is optional because
/// older kernels lack it; note the kernel leaves hugetlb pages out of Rss and
/// Pss, so with hugetlb in use USS can exceed PSS.
const USS_FIELDS: &[Field] = &[
    ("Private_Clean", true),
    ("Private_Dirty", true),
    ("Private_Hugetlb", false),
];

/// The sum of `wanted` (in kB in the file) in bytes, from the text of smaps_rollup.
fn sum_smaps_rollup(text: &str, wanted: &[Field]) -> io::Result<u64> {
    let mut found = [None::<u64>; 3];
    debug_assert!(wanted.len() <= found.len());
    // Skip the header line (`start-end ---p ... [rollup]`); a file without
    // one is not smaps_rollup.
    let mut lines = text.lines();
    match lines.next() {
        Some(header) if header.ends_with("[rollup]") => {}
        _ => return Err(invalid("smaps_rollup: missing [rollup] header")),
    }
    for line in lines {
        let Some((key, value)) = line.split_once(':') else {
            return Err(invalid("smaps_rollup: line without a colon"));
        };
        let Some(slot) = wanted.iter().position(|&(name, _)| name == key) else {
            continue;
        };
        // Every line has the unit; a value without it was cut off mid-number.
        let kib: u64 = value
            .trim_start()
            .strip_suffix(" kB")
            .and_then(|digits| digits.trim_end().parse().ok())
            .ok_or_else(|| invalid("smaps_rollup: value is not a number of kB"))?;
        found[slot] = Some(kib);
    }
    let mut total_kib: u64 = 0;
    for (&(name, required), value) in wanted.iter().zip(found) {
        match value {
            Some(kib) => total_kib = total_kib.saturating_add(kib),
            None if required => {
                return Err(invalid(&format!("smaps_rollup: no {name} field")));
            }
            None => {}
        }
    }
    total_kib
        .checked_mul(1024)
        .ok_or_else(|| invalid("smaps_rollup: size overflows u64"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::Instant;

    /// Tests that read this process's memory run one at a time, so one
    /// test's 64 MiB does not appear or vanish between another's reads.
    static OWN_MEMORY: Mutex<()> = Mutex::new(());

    const MIB: u64 = 1 << 20;

    const SAMPLE: &str = "\
5635ade32000-7ffc01173000 ---p 00000000 00:00 0                          [rollup]
Rss:                1616 kB
Pss:                 308 kB
Pss_Dirty:           112 kB
Pss_Anon:            112 kB
Pss_File:            196 kB
Pss_Shmem:             0 kB
Shared_Clean:       1464 kB
Shared_Dirty:          0 kB
Private_Clean:        40 kB
Private_Dirty:       112 kB
Referenced:         1616 kB
Anonymous:           112 kB
KSM:                   0 kB
LazyFree:              0 kB
AnonHugePages:         0 kB
ShmemPmdMapped:        0 kB
FilePmdMapped:         0 kB
Shared_Hugetlb:        0 kB
Private_Hugetlb:       4 kB
Swap:                  0 kB
SwapPss:               0 kB
Locked:                0 kB
";

    #[test]
    fn smaps_rollup_sample_parses() {
        assert_eq!(sum_smaps_rollup(SAMPLE, PSS_FIELDS).unwrap(), 308 * 1024);
        assert_eq!(
            sum_smaps_rollup(SAMPLE, USS_FIELDS).unwrap(),
            (40 + 112 + 4) * 1024
        );
    }

    #[test]
    fn private_hugetlb_is_optional() {
        let old_kernel: String = SAMPLE
            .lines()
            .filter(|line| !line.starts_with("Private_Hugetlb"))
            .map(|line| format!("{line}\n"))
            .collect();
        assert_eq!(
            sum_smaps_rollup(&old_kernel, USS_FIELDS).unwrap(),
            (40 + 112) * 1024
        );
    }

    #[test]
    fn every_truncation_of_smaps_rollup_errs_or_parses_without_panic() {
        // Cut after Pss's line: PSS parses, USS lacks its fields.
        let cut = SAMPLE.find("Pss_Dirty").unwrap();
        assert_eq!(
            sum_smaps_rollup(&SAMPLE[..cut], PSS_FIELDS).unwrap(),
            308 * 1024
        );
        let err = sum_smaps_rollup(&SAMPLE[..cut], USS_FIELDS).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("Private_Clean"), "{err}");
        // Cut inside "Pss:                 308 kB": never a wrong number.
        for end in 0..SAMPLE.len() {
            for fields in [PSS_FIELDS, USS_FIELDS] {
                if let Ok(bytes) = sum_smaps_rollup(&SAMPLE[..end], fields) {
                    let full = sum_smaps_rollup(SAMPLE, fields).unwrap();
                    // Only Private_Hugetlb may be cut off whole (it is optional).
                    assert!(bytes == full || bytes == full - 4 * 1024, "{end}: {bytes}");
                }
            }
        }
    }

    #[test]
    fn garbled_smaps_rollup_errs() {
        let header = "0-1 ---p 00000000 00:00 0 [rollup]\n";
        for text in [
            "",
            "Pss: 308 kB\n",
            &format!("{header}Pss: many kB\n"),
            &format!("{header}Pss: 308\n"),
            &format!("{header}Pss: -3 kB\n"),
            &format!("{header}Pss 308 kB\n"),
            &format!("{header}Pss: 99999999999999999999 kB\n"),
            &format!("{header}Pss: 18014398509481984 kB\n"),
            &format!("{header}Rss: 308 kB\n"),
        ] {
            let err = sum_smaps_rollup(text, PSS_FIELDS).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{text:?}");
        }
    }

    #[test]
    fn the_rings_count_fully_in_rss_half_in_pss_and_not_in_uss() {
        assert_eq!(transport_share(MemoryMetric::Rss, 1 << 20), 1 << 20);
        assert_eq!(transport_share(MemoryMetric::Pss, 1 << 20), 1 << 19);
        assert_eq!(transport_share(MemoryMetric::Uss, 1 << 20), 0);
    }

    #[test]
    fn a_probe_excluding_the_rings_reads_that_much_less() {
        let pid = std::process::id();
        let whole = RssProbe::open(pid).unwrap().read().unwrap();
        let less = RssProbe::open(pid)
            .unwrap()
            .excluding(1 << 20)
            .read()
            .unwrap();
        // Our own RSS moves a little between the reads.
        assert!(
            less + (1 << 20) <= whole + (1 << 18),
            "{less} + 1 MiB vs {whole}"
        );
        assert_eq!(
            RssProbe::open(pid)
                .unwrap()
                .excluding(u64::MAX)
                .read()
                .unwrap(),
            0
        );
    }

    #[test]
    fn statm_parses_the_resident_field() {
        assert_eq!(
            parse_statm_resident("5000 1234 300 10 0 900 0\n").unwrap(),
            1234
        );
        for bad in [
            "",
            "5000",
            "5000 x 1 1 0 1 0",
            "5000 1234 300",
            "1 2 3 4 5 6 7 8",
        ] {
            assert!(parse_statm_resident(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn own_process_is_readable_with_every_metric() {
        let _serial = OWN_MEMORY.lock().unwrap_or_else(|e| e.into_inner());
        let pid = std::process::id();
        // Smallest first, so growth between reads only widens the gaps.
        let uss = read(pid, MemoryMetric::Uss).unwrap();
        let pss = read(pid, MemoryMetric::Pss).unwrap();
        let rss = read(pid, MemoryMetric::Rss).unwrap();
        assert!(
            uss > 0 && pss > 0 && rss > 0,
            "uss {uss} pss {pss} rss {rss}"
        );
        assert!(uss <= pss, "uss {uss} > pss {pss}");
        assert!(pss <= rss, "pss {pss} > rss {rss}");
    }

    #[test]
    fn touching_64_mib_shows_in_every_metric() {
        let _serial = OWN_MEMORY.lock().unwrap_or_else(|e| e.into_inner());
        let pid = std::process::id();
        let metrics = [MemoryMetric::Rss, MemoryMetric::Pss, MemoryMetric::Uss];
        let before = metrics.map(|m| read(pid, m).unwrap());
        let mut block = vec![0u8; 64 << 20];
        // vec![0; n] maps zero pages lazily: write one byte per page to make them resident.
        for page in block.chunks_mut(4096) {
            page[0] = 1;
        }
        std::hint::black_box(&block);
        let after = metrics.map(|m| read(pid, m).unwrap());
        drop(block);
        for ((metric, before), after) in metrics.iter().zip(before).zip(after) {
            assert!(
                after >= before + 60 * MIB,
                "{metric:?}: {before} -> {after} bytes"
            );
        }
    }

    #[test]
    fn a_gone_pid_is_not_found() {
        // Above the kernel's PID_MAX_LIMIT (4194304), so never a live pid.
        for metric in [MemoryMetric::Rss, MemoryMetric::Pss, MemoryMetric::Uss] {
            let err = read(u32::MAX, metric).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::NotFound, "{metric:?}: {err}");
        }
    }

    #[test]
    fn read_all_skips_gone_pids() {
        let pids = [
            (WorkerId(1), std::process::id()),
            (WorkerId(2), u32::MAX),
            (WorkerId(3), std::process::id()),
        ];
        let samples = read_all(&pids, MemoryMetric::Rss);
        let workers: Vec<_> = samples.iter().map(|&(w, _)| w).collect();
        assert_eq!(workers, [WorkerId(1), WorkerId(3)]);
        assert!(samples.iter().all(|&(_, bytes)| bytes > 0));
    }

    /// Prints what one read costs, for whoever picks the sampling interval.
    /// Run with `cargo test --lib read_cost -- --nocapture`; asserts nothing.
    #[test]
    fn read_cost() {
        let _serial = OWN_MEMORY.lock().unwrap_or_else(|e| e.into_inner());
        let pid = std::process::id();
        const ROUNDS: u32 = 200;
        for metric in [MemoryMetric::Rss, MemoryMetric::Pss, MemoryMetric::Uss] {
            let start = Instant::now();
            for _ in 0..ROUNDS {
                std::hint::black_box(read(pid, metric).unwrap());
            }
            let each = start.elapsed() / ROUNDS;
            let rss_mib = read(pid, MemoryMetric::Rss).unwrap() / MIB;
            println!("memory read {metric:?}: {each:?} per read (process rss {rss_mib} MiB)");
        }
    }

    #[test]
    fn the_probe_sees_our_own_growth() {
        let _guard = OWN_MEMORY.lock().unwrap_or_else(|e| e.into_inner());
        let probe = RssProbe::open(std::process::id()).unwrap();
        let before = probe.read().unwrap();
        let block = vec![1u8; 64 << 20];
        let after = probe.read().unwrap();
        assert!(after >= before + (60 << 20), "{before} -> {after}");
        drop(block);
        assert!(RssProbe::open(u32::MAX).is_err());
    }
}
