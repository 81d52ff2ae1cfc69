"""Median (and range) per variant of results.csv rows whose label matches a prefix (throwaway).

    python3 prototypes/hop/summarize.py [CSV] [PREFIX]
"""
import csv, re, statistics, sys
from collections import defaultdict
path = sys.argv[1] if len(sys.argv) > 1 else "prototypes/hop/results.csv"
prefix = sys.argv[2] if len(sys.argv) > 2 else ""
rows = defaultdict(list)
for r in csv.DictReader(open(path)):
    if r["label"].startswith(prefix) and re.search(r"-r\d+$", r["label"]):
        rows[re.sub(r"-r\d+$", "", r["label"])].append(r)
cols = [c for c in ["rps", "p50_ms", "p99_ms", "cpu_us_master", "cpu_us_workers", "cpu_us_wrk", "cs_master", "cs_workers"] if c in open(path).readline()]
print("| variant | n | " + " | ".join(cols) + " | load |")
print("|---|--:|" + "--:|" * len(cols) + "---|")
for k, rs in rows.items():
    cells = []
    for c in cols:
        v = [float(r[c]) for r in rs]
        cells.append(f"{statistics.median(v):.4g} ({min(v):.4g}-{max(v):.4g})" if c in ("rps", "p99_ms") else f"{statistics.median(v):.3g}")
    loads = [float(r["load_before"]) for r in rs]
    print(f"| {k} | {len(rs)} | " + " | ".join(cells) + f" | {min(loads):.1f}-{max(loads):.1f} |")
