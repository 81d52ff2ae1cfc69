//! The server's resources, read from /proc once a second: CPU of its whole
//! process tree and of the host (as a % of all cores), and total RSS and PSS
//! of the tree. CPU of workers that exited is not lost: the master reaps
//! them, so their time is in its `cutime`/`cstime`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::MemoryMetric;
use crate::sweep::model::{MemoryFigure, ServerFigures, ServerSecond};
use crate::worker::memory;

/// Samples one server's process tree.
#[derive(Debug)]
pub struct Sampler {
    root: u32,
    ticks_per_sec: f64,
    cores: f64,
    started: Instant,
    last: Option<Reading>,
    /// Every pid seen in the tree, to count replaced processes.
    seen: BTreeSet<u32>,
}

#[derive(Debug, Clone, Copy)]
struct Reading {
    at: Instant,
    server_ticks: u64,
    host_busy: u64,
    host_total: u64,
}

impl Sampler {
    /// A sampler for the tree under `root`; the first sample's CPU is 0.
    pub fn new(root: u32) -> Sampler {
        Sampler {
            root,
            ticks_per_sec: clock_ticks(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()) as f64,
            started: Instant::now(),
            last: None,
            seen: BTreeSet::new(),
        }
    }

    /// Pids of the tree: the root and its descendants.
    pub fn tree(&self) -> Vec<u32> {
        let mut pids = vec![self.root];
        let mut i = 0;
        while i < pids.len() {
            pids.extend(children(pids[i]));
            i += 1;
        }
        pids
    }

    /// Processes seen in the tree beyond those of the first sample.
    pub fn processes_seen(&self) -> usize {
        self.seen.len()
    }

    /// One sample; CPU is the average since the previous one.
    pub fn sample(&mut self) -> ServerSecond {
        let pids = self.tree();
        self.seen.extend(&pids);
        let now = Instant::now();
        let server_ticks: u64 = pids
            .iter()
            .map(|&pid| cpu_ticks(pid, pid == self.root))
            .sum();
        let (host_busy, host_total) = host_ticks().unwrap_or((0, 0));
        let reading = Reading {
            at: now,
            server_ticks,
            host_busy,
            host_total,
        };
        let (cpu_server_pct, cpu_host_pct) = match self.last {
            Some(last) => {
                let secs = now.duration_since(last.at).as_secs_f64().max(1e-3);
                let server = reading.server_ticks.saturating_sub(last.server_ticks) as f64;
                let server_pct = 100.0 * server / self.ticks_per_sec / secs / self.cores;
                let total = reading.host_total.saturating_sub(last.host_total) as f64;
                let busy = reading.host_busy.saturating_sub(last.host_busy) as f64;
                let host_pct = if total > 0.0 {
                    100.0 * busy / total
                } else {
                    0.0
                };
                (server_pct, host_pct)
            }
            None => (0.0, 0.0),
        };
        self.last = Some(reading);
        let sum = |metric| {
            pids.iter()
                .filter_map(|&pid| memory::read(pid, metric).ok())
                .sum()
        };
        ServerSecond {
            t: now.duration_since(self.started).as_secs() as u32,
            cpu_server_pct,
            cpu_host_pct,
            rss_bytes: sum(MemoryMetric::Rss),
            pss_bytes: sum(MemoryMetric::Pss),
            processes: pids.len() as u32,
        }
    }
}

fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    // Children are listed under the thread that forked them.
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
                out.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
        }
    }
    out
}

/// utime + stime (+ reaped children's, for the root) in clock ticks.
fn cpu_ticks(pid: u32, with_children: bool) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    parse_stat_ticks(&stat, with_children).unwrap_or(0)
}

/// Fields after the command name (which may hold spaces and parentheses).
fn parse_stat_ticks(stat: &str, with_children: bool) -> Option<u64> {
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // after ")": state is field 3 of stat(5), so utime (14) is index 11.
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    let own = field(14)? + field(15)?;
    Some(if with_children {
        own + field(16)? + field(17)?
    } else {
        own
    })
}

/// (busy, total) jiffies of all CPUs from /proc/stat.
fn host_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_host_ticks(stat.lines().next()?)
}

fn parse_host_ticks(cpu_line: &str) -> Option<(u64, u64)> {
    let values: Vec<u64> = cpu_line
        .strip_prefix("cpu ")?
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is in user).
    let total: u64 = values.iter().take(8).sum();
    let idle = values.get(3)? + values.get(4).unwrap_or(&0);
    Some((total - idle, total))
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a constant of the running system.
    let ticks = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// Samples the server once a second on its own thread: /proc reads of a
/// big process (PSS) take milliseconds and must not stall the load.
pub struct SamplingThread {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<(Vec<ServerSecond>, usize)>,
}

impl SamplingThread {
    /// Starts sampling the tree under `root`, first sample at once.
    pub fn start(root: u32) -> SamplingThread {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut sampler = Sampler::new(root);
            let mut series = vec![sampler.sample()];
            let initial = sampler.processes_seen();
            let tick = Duration::from_secs(1);
            let mut next = std::time::Instant::now() + tick;
            while !flag.load(Ordering::Relaxed) {
                let now = std::time::Instant::now();
                if now >= next {
                    series.push(sampler.sample());
                    next += tick;
                } else {
                    std::thread::sleep((next - now).min(Duration::from_millis(50)));
                }
            }
            series.push(sampler.sample());
            (series, sampler.processes_seen().saturating_sub(initial))
        });
        SamplingThread { stop, handle }
    }

    /// Stops; the series and how many processes appeared meanwhile.
    pub fn finish(self) -> (Vec<ServerSecond>, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or_default()
    }
}

/// The cell's server figures from its series.
pub fn server_figures(series: Vec<ServerSecond>, restarts: BTreeMap<String, u64>) -> ServerFigures {
    // The first sample is the baseline: its CPU is 0 by construction.
    let measured = &series[1.min(series.len())..];
    let mean = |f: fn(&ServerSecond) -> f64| {
        if measured.is_empty() {
            0.0
        } else {
            measured.iter().map(f).sum::<f64>() / measured.len() as f64
        }
    };
    let figure = |f: fn(&ServerSecond) -> u64| MemoryFigure {
        start: series.first().map(f).unwrap_or(0),
        end: series.last().map(f).unwrap_or(0),
        peak: series.iter().map(f).max().unwrap_or(0),
    };
    ServerFigures {
        cpu_server_pct: mean(|s| s.cpu_server_pct),
        cpu_host_pct: mean(|s| s.cpu_host_pct),
        rss: figure(|s| s.rss_bytes),
        pss: figure(|s| s.pss_bytes),
        restarts,
        series,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_figures_take_start_end_and_peak() {
        let second = |rss| ServerSecond {
            rss_bytes: rss,
            cpu_server_pct: 50.0,
            ..ServerSecond::default()
        };
        let figures = server_figures(vec![second(10), second(30), second(20)], BTreeMap::new());
        assert_eq!(
            figures.rss,
            MemoryFigure {
                start: 10,
                end: 20,
                peak: 30
            }
        );
        assert_eq!(figures.cpu_server_pct, 50.0);
    }

    #[test]
    fn stat_ticks_survive_odd_command_names() {
        let stat = "42 (my (odd) name) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 11 13 20 0 1 0 5 0 0";
        assert_eq!(parse_stat_ticks(stat, false), Some(10));
        assert_eq!(parse_stat_ticks(stat, true), Some(34));
        assert_eq!(parse_stat_ticks("garbage", false), None);
    }

    #[test]
    fn host_ticks_count_idle_and_iowait_as_idle() {
        let line = "cpu  100 0 50 800 50 0 0 0 0 0";
        assert_eq!(parse_host_ticks(line), Some((150, 1000)));
        assert_eq!(parse_host_ticks("intr 1 2"), None);
    }

    #[test]
    fn sees_a_busy_child_in_the_tree() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"])
            .spawn()
            .unwrap();
        let mut sampler = Sampler::new(std::process::id());
        sampler.sample();
        std::thread::sleep(std::time::Duration::from_millis(300));
        let second = sampler.sample();
        let _ = child.kill();
        let _ = child.wait();
        assert!(second.processes >= 2, "{second:?}");
        assert!(second.rss_bytes > 0 && second.pss_bytes > 0, "{second:?}");
        assert!(second.cpu_server_pct > 1.0, "{second:?}");
    }
}
