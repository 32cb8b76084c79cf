"""Turns one load generator run into a line of numbers for bench/table.py.

stdin: the output of wrk --latency, h2load or oha (JSON).
argv: tool, the proxy's user and system CPU ticks before and after, ticks per second, its RSS in
KiB, and the connections the backend accepted during the run.
stdout: rps p50_ms p99_ms user_us_per_req sys_us_per_req requests rss_kb upstream_conns p999_ms
"""
import json
import re
import sys

tool = sys.argv[1]
u0, s0, u1, s1, tick, rss, accepts = map(int, sys.argv[2:9])
out = sys.stdin.read()


def ms(v, unit):
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v


p999 = 0.0
if tool == "wrk":
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def lat(p):
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        return ms(float(m.group(1)), m.group(2))

    p50, p99 = lat(50), lat(99)
    if "Non-2xx" in out or "Socket errors" in out:
        print("WARNING: errors in run:", out, file=sys.stderr)
elif tool == "h2load":
    # No percentiles: the mean and the maximum request time stand in for p50 and p99.
    reqs = int(re.search(r"requests: \d+ total, \d+ started, (\d+) done", out).group(1))
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))
    m = re.search(r"time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)", out)
    p50, p99 = ms(float(m.group(5)), m.group(6)), ms(float(m.group(3)), m.group(4))
    if not re.search(r"\d+ succeeded, 0 failed, 0 errored", out):
        print("WARNING: errors in run:", out, file=sys.stderr)
else:  # oha --output-format json; latencies in seconds
    j = json.loads(out[out.index("{"):])
    codes = j.get("statusCodeDistribution", {})
    reqs = sum(codes.values())
    rps = j["summary"]["requestsPerSec"]
    pct = j["latencyPercentiles"]
    p50, p99, p999 = (pct[k] * 1000 for k in ("p50", "p99", "p99.9"))
    # Requests still in flight when the run's time is up are reported as aborted: not errors.
    errors = {k: v for k, v in j.get("errorDistribution", {}).items() if "deadline" not in k}
    if set(codes) != {"200"} or errors:
        print("WARNING: errors in run:", codes, errors, file=sys.stderr)


def us(t0, t1):
    return (t1 - t0) * 1e6 / tick / max(reqs, 1)


print(f"{rps:.0f} {p50:.3f} {p99:.3f} {us(u0, u1):.2f} {us(s0, s1):.2f} {reqs} {rss} {accepts} {p999:.3f}")
