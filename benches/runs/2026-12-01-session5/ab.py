import os, re, signal, socket, subprocess, sys, time, urllib.request
BINS = {"before": "/work/wt-before/target/release/ferrocorn", "after": "/work/main/target/release/ferrocorn"}
APPS = {"flask": ("examples.flask_app:app", "/hello"), "plain": ("examples.wsgi_hello:app", "/")}
PY = "/work/main/.venv/bin/python"
def ticks(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])
def tree(pid):
    out = {pid}
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            out |= {int(c) for c in open(f"/proc/{pid}/task/{t}/children").read().split()}
        except OSError: pass
    return out
def run(name, app):
    port = 18600 + (hash((name, app)) % 300)
    spec, path = APPS[app]
    p = subprocess.Popen([BINS[name], "-w", "2", "-b", f"127.0.0.1:{port}", "--python", PY, spec],
                         cwd="/work/main", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}{path}"
    for _ in range(300):
        try:
            if urllib.request.urlopen(url, timeout=1).status == 200: break
        except Exception: time.sleep(0.1)
    subprocess.run(["wrk", "-t1", "-c50", "-d2s", url], capture_output=True)
    pids = tree(p.pid)
    before = {q: ticks(q) for q in pids}
    load = open("/proc/loadavg").read().split()[0]
    out = subprocess.run(["wrk", "-t1", "-c50", "-d10s", "--latency", url], capture_output=True, text=True).stdout
    after = {q: ticks(q) for q in pids}
    hz = os.sysconf("SC_CLK_TCK")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    p99 = re.search(r"99%\s+(\S+)", out).group(1)
    master = (after[p.pid] - before[p.pid]) / hz / total * 1e6
    allcpu = sum(after[q] - before[q] for q in pids) / hz / total * 1e6
    os.kill(p.pid, signal.SIGTERM)
    try:
        p.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL); p.wait()
    print(f"{name},{app},{rps:.0f},{p99},{master:.1f},{allcpu:.1f},{load}", flush=True)
print("server,app,req_s,p99,master_cpu_us,server_cpu_us,load1", flush=True)
for r in range(3):
    for app in ("flask", "plain"):
        for name in (("before", "after") if r % 2 == 0 else ("after", "before")):
            run(name, app)
