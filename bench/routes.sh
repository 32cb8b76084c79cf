#!/usr/bin/env bash
# Route-table scale: the same request through 10 and through 10,000 HTTPRoutes (host, path and
# header matches), with the time to load and translate the manifests, the time to apply a
# reload, and resident memory.
#
# Usage: bench/routes.sh [ROUTES] [SECONDS]     (defaults: 10000 routes, 10 s of wrk per size)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
N="${1:-10000}"
SECS="${2:-10}"
command -v nginx >/dev/null && command -v wrk >/dev/null || {
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq nginx wrk >/dev/null
}
cargo build -q --release -p gateway
GATEWAY="$CARGO_TARGET_DIR/release/gateway"
WORK="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT INT TERM

cat > "$WORK/backend.conf" <<CONF
worker_processes 1;
daemon off;
pid $WORK/backend.pid;
error_log $WORK/backend.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:18000 reuseport; location / { return 200 "ok"; } } }
CONF
taskset -c 1 nginx -c "$WORK/backend.conf" & pids+=($!)

generate() { # count dir
  mkdir -p "$2"
  python3 - "$1" "$2" <<'PY'
import sys
n, d = int(sys.argv[1]), sys.argv[2]
head = """apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: sluice}
spec: {controllerName: sluice.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: bench, namespace: default}
spec:
  gatewayClassName: sluice
  listeners: [{name: http, protocol: HTTP, port: 18080}]
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
ports: [{name: http, port: 18000}]
endpoints: [{addresses: ["127.0.0.1"]}]
"""
open(f"{d}/base.yaml", "w").write(head)
with open(f"{d}/routes.yaml", "w") as f:
    for i in range(n):
        f.write(f"""---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r{i}, namespace: default}}
spec:
  parentRefs: [{{name: bench}}]
  hostnames: [r{i}.example.com]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /p{i}}}, headers: [{{name: x-id, value: "{i}"}}]}}]
    backendRefs: [{{name: backend, port: 80}}]
""")
PY
}

measure() { # count
  local n=$1 dir="$WORK/m$1" target=$(( $1 / 2 ))
  generate "$n" "$dir"
  local t0 t1
  t0=$(date +%s%N); "$GATEWAY" status -m "$dir" -o json >/dev/null; t1=$(date +%s%N)
  local load_ms=$(( (t1 - t0) / 1000000 ))
  taskset -c 0 "$GATEWAY" run -m "$dir" --threads 1 --access-log off --admin-addr 127.0.0.1:18901 2>"$WORK/gw$n.log" &
  local pid=$!; pids+=($pid)
  until curl -sf -o /dev/null http://127.0.0.1:18901/ready; do sleep 0.05; done
  # Reload: change one route and wait for the next configuration version.
  local v; v=$(curl -s http://127.0.0.1:18901/metrics | awk '/^sluice_config_version/{print $2}')
  t0=$(date +%s%N)
  sed -i "s/value: \/p0}/value: \/q0}/" "$dir/routes.yaml"
  until [ "$(curl -s http://127.0.0.1:18901/metrics | awk '/^sluice_config_version/{print $2}')" -gt "$v" ]; do sleep 0.01; done
  t1=$(date +%s%N)
  local reload_ms=$(( (t1 - t0) / 1000000 ))
  taskset -c 1 wrk -t1 -c50 -d2s -H "Host: r$target.example.com" -H "x-id: $target" "http://127.0.0.1:18080/p$target" >/dev/null
  local out; out=$(taskset -c 1 wrk -t1 -c50 -d"${SECS}s" -H "Host: r$target.example.com" -H "x-id: $target" "http://127.0.0.1:18080/p$target")
  local rps; rps=$(echo "$out" | awk '/Requests\/sec/{print $2}')
  local non2xx; non2xx=$(echo "$out" | awk '/Non-2xx/{print $5}')
  local rss; rss=$(awk '/VmRSS/{print $2}' "/proc/$pid/status")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "$n $rps $load_ms $reload_ms $rss ${non2xx:-0}"
}

small=$(measure 10)
large=$(measure "$N")
python3 - "$small" "$large" <<'PY'
import sys
rows = [l.split() for l in sys.argv[1:]]
print("| routes | req/s | load+translate ms | reload applied ms (incl. 50 ms debounce) | RSS MiB | non-2xx |")
print("|---|---|---|---|---|---|")
for n, rps, load, reload, rss, bad in rows:
    print(f"| {n} | {float(rps):.0f} | {load} | {reload} | {int(rss)/1024:.1f} | {bad} |")
print(f"throughput at {rows[1][0]} routes: {float(rows[1][1]) / float(rows[0][1]):.2f}x of {rows[0][0]} routes")
PY
