#!/usr/bin/env bash
# Sluice vs nginx as reverse proxies in front of the same backend, measured with wrk.
#
# Layout (2 cores): each proxy alone on core 0 with one worker; wrk and the backend (an nginx
# answering 100 bytes) on core 1. HTTP/1.1 keep-alive on both sides. Rounds alternate between
# the proxies so drift on the machine hits both; the table shows the median of the rounds.
#
# Scenarios (SCENARIOS, default "http tls h2"): plain HTTP/1.1 (wrk); HTTP/1.1 over TLS 1.3
# with an ECDSA P-256 certificate (wrk); HTTP/2 over the same TLS (h2load, 10 streams per
# connection). TLS is terminated by the proxy; the backend is reached with HTTP/1.1.
#
# Usage: bench/run.sh [ROUNDS] [SECONDS]     (defaults: 3 rounds of 10 s)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
ROUNDS="${1:-3}"
SECS="${2:-10}"
CONNS=50

need=()
command -v nginx >/dev/null || need+=(nginx)
command -v wrk >/dev/null || need+=(wrk)
command -v taskset >/dev/null || need+=(util-linux)
command -v openssl >/dev/null || need+=(openssl)
command -v h2load >/dev/null || need+=(nghttp2-client)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

cargo build -q --release -p gateway
GATEWAY="$CARGO_TARGET_DIR/release/gateway"

WORK="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

BACKEND_PORT=18000; NGINX_PORT=18081; SLUICE_PORT=18080; ADMIN=127.0.0.1:18901
NGINX_TLS_PORT=18444; SLUICE_TLS_PORT=18443
SCENARIOS="${SCENARIOS:-http tls h2}"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj "/CN=bench.example.com" -addext "subjectAltName=DNS:bench.example.com" \
  -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
BODY=$(printf 'x%.0s' $(seq 100))

mkdir -p "$WORK/backend" "$WORK/proxy"
cat > "$WORK/backend/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $WORK/backend/nginx.pid;
error_log $WORK/backend/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:$BACKEND_PORT reuseport;
    location / { default_type text/plain; return 200 "$BODY"; }
  }
}
CONF
cat > "$WORK/proxy/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $WORK/proxy/nginx.pid;
error_log $WORK/proxy/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  upstream backend { server 127.0.0.1:$BACKEND_PORT; keepalive 64; }
  server {
    listen 127.0.0.1:$NGINX_PORT reuseport;
    listen 127.0.0.1:$NGINX_TLS_PORT ssl http2 reuseport;
    ssl_certificate $WORK/cert.pem;
    ssl_certificate_key $WORK/key.pem;
    ssl_protocols TLSv1.3;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
    }
  }
}
CONF
mkdir -p "$WORK/manifests"
cat > "$WORK/manifests/bench.yaml" <<YAML
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: sluice}
spec: {controllerName: sluice.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: bench, namespace: default}
spec:
  gatewayClassName: sluice
  listeners:
  - {name: http, protocol: HTTP, port: $SLUICE_PORT}
  - {name: https, protocol: HTTPS, port: $SLUICE_TLS_PORT, tls: {certificateRefs: [{name: bench-cert}]}}
---
apiVersion: v1
kind: Secret
metadata: {name: bench-cert, namespace: default}
type: kubernetes.io/tls
stringData:
  tls.crt: |
$(sed 's/^/    /' "$WORK/cert.pem")
  tls.key: |
$(sed 's/^/    /' "$WORK/key.pem")
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bench, namespace: default}
spec:
  parentRefs: [{name: bench}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{name: backend, port: 80}]
---
apiVersion: v1
kind: Service
metadata: {name: backend, namespace: default}
spec: {ports: [{name: http, port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: backend-1, namespace: default, labels: {kubernetes.io/service-name: backend}}
addressType: IPv4
ports: [{name: http, port: $BACKEND_PORT}]
endpoints: [{addresses: ["127.0.0.1"]}]
YAML

wait_port() {
  for _ in $(seq 200); do
    if curl -s -o /dev/null "http://127.0.0.1:$1/"; then return 0; fi
    sleep 0.05
  done
  echo "port $1 never answered" >&2; exit 1
}

taskset -c 1 nginx -c "$WORK/backend/nginx.conf" & pids+=($!)
taskset -c 0 nginx -c "$WORK/proxy/nginx.conf" & pids+=($!); NGINX_PID=$!
taskset -c 0 "$GATEWAY" run --manifests "$WORK/manifests" --threads 1 --access-log off --admin-addr "$ADMIN" 2>"$WORK/sluice.log" & pids+=($!); SLUICE_PID=$!
wait_port $BACKEND_PORT; wait_port $NGINX_PORT; wait_port $SLUICE_PORT

# CPU time (user, system) in clock ticks of a process and all its threads/children.
cpu() { awk '{print $14, $15}' "/proc/$1/stat"; }
# The nginx proxy's work happens in its worker, a child of the master.
worker_of() { pgrep -P "$1" | head -1; }
NGINX_WORKER=$(worker_of "$NGINX_PID")
TICK=$(getconf CLK_TCK)

run_one() { # url pid -> "rps p50_ms p99_ms user_us system_us requests rss_kb"
  local url=$1 pid=$2
  read -r u0 s0 < <(cpu "$pid")
  local out
  if [ "$LOAD" = h2load ]; then
    out=$(taskset -c 1 h2load -c$CONNS -m10 -D"$SECS" "$url" 2>&1)
  else
    out=$(taskset -c 1 wrk -t1 -c$CONNS -d"${SECS}s" --latency "$url" 2>&1)
  fi
  read -r u1 s1 < <(cpu "$pid")
  local rss; rss=$(awk '/VmRSS/{print $2}' "/proc/$pid/status")
  python3 - "$out" "$u0" "$s0" "$u1" "$s1" "$TICK" "$rss" <<'PY'
import re, sys
out, u0, s0, u1, s1, tick, rss = sys.argv[1], *map(int, sys.argv[2:])
def ms(v, unit):
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v
if "Requests/sec" in out:  # wrk
    reqs = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    def lat(p):
        m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out)
        return ms(float(m.group(1)), m.group(2))
else:  # h2load: no percentiles; the mean and the max of request times stand in for p50 and p99
    reqs = int(re.search(r"requests: \d+ total, \d+ started, (\d+) done", out).group(1))
    rps = float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))
    m = re.search(r"time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)", out)
    lat = lambda p: ms(float(m.group(5)), m.group(6)) if p == 50 else ms(float(m.group(3)), m.group(4))
errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
if errors or "Socket errors" in out:
    print("WARNING: errors in run:", out, file=sys.stderr)
us = lambda t0, t1: (t1 - t0) * 1e6 / tick / max(reqs, 1)
print(f"{rps:.0f} {lat(50):.3f} {lat(99):.3f} {us(u0, u1):.2f} {us(s0, s1):.2f} {reqs} {rss}")
PY
}

for scenario in $SCENARIOS; do
  case $scenario in
    http) nginx_url="http://127.0.0.1:$NGINX_PORT/"; sluice_url="http://127.0.0.1:$SLUICE_PORT/"; title="HTTP/1.1 keep-alive" ;;
    tls) nginx_url="https://127.0.0.1:$NGINX_TLS_PORT/"; sluice_url="https://127.0.0.1:$SLUICE_TLS_PORT/"; title="HTTP/1.1 keep-alive over TLS 1.3 (ECDSA P-256)" ;;
    h2) nginx_url="https://127.0.0.1:$NGINX_TLS_PORT/"; sluice_url="https://127.0.0.1:$SLUICE_TLS_PORT/"; title="HTTP/2 over TLS 1.3, 10 streams per connection (h2load; p50 = mean, p99 = max)" ;;
    *) echo "unknown scenario $scenario" >&2; exit 2 ;;
  esac
  LOAD=wrk; [ "$scenario" = h2 ] && LOAD=h2load
  # Warm both up (connection pools, page cache).
  if [ "$LOAD" = h2load ]; then
    taskset -c 1 h2load -c$CONNS -m10 -D2 "$nginx_url" >/dev/null
    taskset -c 1 h2load -c$CONNS -m10 -D2 "$sluice_url" >/dev/null
  else
    taskset -c 1 wrk -t1 -c$CONNS -d2s "$nginx_url" >/dev/null
    taskset -c 1 wrk -t1 -c$CONNS -d2s "$sluice_url" >/dev/null
  fi
  : > "$WORK/results"
  for r in $(seq "$ROUNDS"); do
    echo "$scenario: round $r/$ROUNDS" >&2
    echo "nginx $(run_one "$nginx_url" "$NGINX_WORKER")" >> "$WORK/results"
    echo "sluice $(run_one "$sluice_url" "$SLUICE_PID")" >> "$WORK/results"
  done
  python3 - "$WORK/results" "$ROUNDS" "$SECS" "$CONNS" "$title" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, *vals = line.split()
    rows.setdefault(name, []).append([float(v) for v in vals])
med = {n: [statistics.median(col) for col in zip(*v)] for n, v in rows.items()}
cols = ["req/s", "p50 ms", "p99 ms", "user µs/req", "sys µs/req", "total µs/req", "RSS MiB"]
print(f"\n{sys.argv[5]}, {sys.argv[4]} connections, proxy pinned to core 0 with 1 worker; median of {sys.argv[2]} rounds of {sys.argv[3]} s")
print(f"| {'proxy':8} | " + " | ".join(f"{c:>12}" for c in cols) + " |")
print("|" + "---|" * (len(cols) + 1))
def fmt(v):
    rps, p50, p99, u, s, _, rss = v
    return [f"{rps:.0f}", f"{p50:.3f}", f"{p99:.3f}", f"{u:.2f}", f"{s:.2f}", f"{u+s:.2f}", f"{rss/1024:.1f}"]
for n in ("nginx", "sluice"):
    print(f"| {n:8} | " + " | ".join(f"{c:>12}" for c in fmt(med[n])) + " |")
n, s = med["nginx"], med["sluice"]
ratio = [s[0]/n[0], s[1]/n[1], s[2]/n[2], s[3]/max(n[3],1e-9), s[4]/max(n[4],1e-9), (s[3]+s[4])/max(n[3]+n[4],1e-9), s[6]/n[6]]
print(f"| {'ratio':8} | " + " | ".join(f"{r:>11.2f}x" for r in ratio) + " |")
PY
done
