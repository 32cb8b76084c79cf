"""Prints the median of each proxy's rounds as a Markdown table, with ratios to nginx.

argv: title, results file (lines of "proxy" + bench/parse.py's numbers), proxies in order,
and optionally "latency" for the open-loop columns.
"""
import statistics
import sys

title, path, proxies = sys.argv[1], sys.argv[2], sys.argv[3].split()
latency = len(sys.argv) > 4 and sys.argv[4] == "latency"
rows = {}
for line in open(path):
    name, *vals = line.split()
    rows.setdefault(name, []).append([float(v) for v in vals])
med = {n: [statistics.median(col) for col in zip(*v)] for n, v in rows.items()}

if latency:
    cols = ["p50 ms", "p99 ms", "p99.9 ms", "user µs/req", "sys µs/req", "total µs/req"]

    def values(v):
        _, p50, p99, u, s, _, _, _, p999 = v
        return [p50, p99, p999, u, s, u + s]
else:
    cols = ["req/s", "p50 ms", "p99 ms", "user µs/req", "sys µs/req", "total µs/req", "RSS MiB", "upstream conns"]

    def values(v):
        rps, p50, p99, u, s, _, rss, conns, _ = v
        return [rps, p50, p99, u, s, u + s, rss / 1024, conns]


def fmt(col, v):
    if col == "req/s" or col == "upstream conns":
        return f"{v:.0f}"
    return f"{v:.3f}" if "ms" in col else f"{v:.2f}" if "µs" in col else f"{v:.1f}"


print(f"\n{title}\n")
print("| proxy | " + " | ".join(cols) + " |")
print("|---|" + "---|" * len(cols))
for n in proxies:
    print(f"| {n} | " + " | ".join(fmt(c, x) for c, x in zip(cols, values(med[n]))) + " |")
# Ratios need the reference; PROXIES=sluice (comparing two builds) has none.
base = values(med["nginx"]) if "nginx" in med else None
for n in proxies:
    if n == "nginx" or base is None:
        continue
    ratios = [x / b if b else float("nan") for x, b in zip(values(med[n]), base)]
    print(f"| {n} / nginx | " + " | ".join(f"{r:.2f}x" for r in ratios) + " |")
