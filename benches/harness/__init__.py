"""The parts of the benchmarks in benches/ (compare, containment, boot, memory), one job per module.

- options.py  command line -> Config; setup checks that name their fix
- process.py  start a server in its own session, wait for 200, stop its process group
- measure.py  memory (RSS/PSS) and CPU of a process tree, read from /proc; one process's
              smaps_rollup (PSS, USS) and exact run time (schedstat)
- masterlog.py ferrocorn's master log lines (`Booting worker with pid: N`, `Worker (pid:N) is ready`) with their timestamps
- wrk.py      the wrk command line and the parser of its output
- syscalls.py system calls per request of a process tree: perf stat on the sys_enter tracepoint
- paced.py    a paced keep-alive HTTP load (same requests at the same times for every server)
- restarts.py workers replaced: ferrocorn's /metrics restart counters, gunicorn's boot log lines
- report.py   one RunResult per server x app; ratios, CSV and the Markdown summary; machine facts
"""
