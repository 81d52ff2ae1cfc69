//! The shell's upkeep of running workers: memory and request-count
//! samples for the arbiter, and the reopened error log handed to each.

use super::*;

impl Shell {
    /// Reads every live worker's request count and memory off the async
    /// thread (PSS and USS walk page tables: milliseconds for a big worker)
    /// and reports them as `Event::Sample`.
    pub fn start_sample(&self) {
        let served = self.dispatcher.served();
        let workers: Vec<(WorkerId, u32, u64)> = self
            .workers
            .iter()
            .filter_map(|(&worker, handle)| Some((worker, handle.pid?, handle.ring_bytes)))
            .collect();
        let (metric, events) = (self.memory.metric, self.events.clone());
        tokio::task::spawn_blocking(move || {
            let samples = workers
                .into_iter()
                .map(|(worker, pid, rings)| WorkerSample {
                    worker,
                    served: served.iter().find(|(w, _)| *w == worker).map(|&(_, n)| n),
                    memory: memory::read(pid, metric)
                        .ok()
                        .map(|bytes| bytes.saturating_sub(memory::transport_share(metric, rings))),
                })
                .collect();
            let _ = events.send(Event::Sample(samples));
        });
    }

    /// Hands every running worker the reopened error log: a REOPEN_LOG
    /// frame on its control socket with the file's descriptor attached.
    pub(super) fn reopen_worker_logs(&mut self) {
        self.collect_reports();
        let file = self.logging.worker_log_file().ok().flatten();
        let old = self.before_reload.as_ref().map(|(_, _, launcher)| launcher);
        for launcher in std::iter::once(&self.launcher).chain(old) {
            launcher.reopen_log(file.as_ref().and_then(|f| f.try_clone().ok()));
        }
        for (&worker, handle) in &self.workers {
            let Some(control) = &handle.control else {
                continue; // booting or stopping: a new worker gets the new file anyway
            };
            let sent = match self.logging.worker_log_file() {
                Ok(Some(file)) => control::send(control, Kind::ReopenLog, Some(&file)),
                Ok(None) => return, // stderr: nothing moved
                Err(err) => Err(err),
            };
            if let Err(err) = sent {
                error!(worker = %worker, pid = handle.pid, error = %err, "cannot hand the reopened error log to a worker");
            }
        }
    }
}
