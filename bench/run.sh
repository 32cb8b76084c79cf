#!/usr/bin/env bash
# Sluice, nginx and HAProxy as reverse proxies in front of the same backend.
#
# Layout (2 cores): each proxy alone on core 0 with one worker; the load generator and the
# backend (an nginx answering 100 bytes) on core 1. HTTP/1.1 keep-alive to the backend. Rounds
# alternate between the proxies so drift on the machine hits all of them; tables show medians.
#
# Scenarios (SCENARIOS, default "http tls h2 passthrough grpc latency idle reload routes"):
#   http     HTTP/1.1 keep-alive (wrk)
#   tls      HTTP/1.1 over TLS 1.3 with an ECDSA P-256 certificate (wrk)
#   h2       HTTP/2 over the same TLS, 10 streams per connection (h2load)
#   passthrough  TLS passed through by SNI (bench.example.com) to a TLS backend, HTTP/1.1
#            keep-alive end to end (h2load --h1): nginx's stream module with ssl_preread, HAProxy
#            mode tcp with req_ssl_sni, Sluice's TLS Passthrough listener and a TLSRoute
#   grpc     unary gRPC calls (the conformance echo's GrpcEcho/Echo) over h2c, 10 streams per
#            connection (h2load with a gRPC frame): nginx grpc_pass, HAProxy proto h2, Sluice
#            GRPCRoute; the backend is the echo binary (--grpc) on core 1
#   latency  open loop at a fixed 1,000 requests/s, latency-corrected (oha)
#   idle     resident memory idle and with 10,000 idle keep-alive client connections (nginx and
#            Sluice: HAProxy needs two descriptors per connection, beyond this machine's limit)
#   reload   Sluice only: 100 configuration changes during a wrk run, against a steady run
#   routes   Sluice only: the same request through 10 and through ROUTES (default 10,000)
#            HTTPRoutes with host, path and header matches; load, translate and reload times
#   workers  HTTP/1.1 with two workers per proxy and nothing pinned (not in the default set:
#            the proxy shares both cores with the load generator and the backend)
#
# Usage: bench/run.sh [ROUNDS] [SECONDS]     (defaults: 3 rounds of 10 s)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
ROUNDS="${1:-3}"
SECS="${2:-10}"
CONNS=50
IDLE_CONNS="${IDLE_CONNS:-10000}"
SCENARIOS="${SCENARIOS:-http tls h2 passthrough grpc latency idle reload routes}"
ROUTES="${ROUTES:-10000}"
PROXIES="${PROXIES:-nginx haproxy sluice}"   # nginx is the reference of the ratios

need=()
command -v nginx >/dev/null || need+=(nginx)
command -v haproxy >/dev/null || need+=(haproxy)
command -v wrk >/dev/null || need+=(wrk)
command -v taskset >/dev/null || need+=(util-linux)
command -v openssl >/dev/null || need+=(openssl)
command -v h2load >/dev/null || need+=(nghttp2-client)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi
# oha is only the latency scenario's.
if [[ " $SCENARIOS " == *" latency "* ]] && ! command -v oha >/dev/null; then
  CARGO_TARGET_DIR="$HOME/.cache/sluice/oha-target" cargo install -q oha --locked
fi

# GATEWAY_BIN runs another build of the gateway (to compare two versions).
if [ -z "${GATEWAY_BIN:-}" ]; then cargo build -q --release -p gateway; fi
# The gRPC scenario's backend.
if [[ " $SCENARIOS " == *" grpc "* ]]; then cargo build -q --release -p conformance --bin echo; fi
GATEWAY="${GATEWAY_BIN:-$CARGO_TARGET_DIR/release/gateway}"

# 10,000 idle client connections need as many descriptors in the client and in each proxy.
ulimit -n "$(ulimit -Hn)"

WORK="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

BACKEND_PORT=18000; BACKEND_STATUS_PORT=18001; BACKEND_TLS_PORT=18002; BACKEND_GRPC_PORT=18003
declare -A HTTP_PORT=([nginx]=18081 [haproxy]=18082 [sluice]=18080)
declare -A TLS_PORT=([nginx]=18444 [haproxy]=18445 [sluice]=18443)
declare -A PASS_PORT=([nginx]=18447 [haproxy]=18448 [sluice]=18449)
declare -A GRPC_PORT=([nginx]=18451 [haproxy]=18452 [sluice]=18453)
ADMIN=127.0.0.1:18901
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj "/CN=bench.example.com" -addext "subjectAltName=DNS:bench.example.com" \
  -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null
cat "$WORK/cert.pem" "$WORK/key.pem" > "$WORK/haproxy.pem"
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
  # Connections accepted so far: proves that the proxies pool their upstream connections.
  server { listen 127.0.0.1:$BACKEND_STATUS_PORT; location / { stub_status; } }
  # The TLS backend of the passthrough scenario.
  server {
    listen 127.0.0.1:$BACKEND_TLS_PORT ssl reuseport;
    ssl_certificate $WORK/cert.pem;
    ssl_certificate_key $WORK/key.pem;
    ssl_protocols TLSv1.3;
    location / { default_type text/plain; return 200 "$BODY"; }
  }
}
CONF
cat > "$WORK/proxy/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1;
worker_rlimit_nofile 20000;
daemon off;
pid $WORK/proxy/nginx.pid;
error_log $WORK/proxy/error.log warn;
events { worker_connections 16000; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 300s;
  # Idle upstream connections kept, like Sluice's pool (engine/proxy.rs UPSTREAM_IDLE_POOL).
  upstream backend { server 127.0.0.1:$BACKEND_PORT; keepalive 4096; }
  server {
    listen 127.0.0.1:${HTTP_PORT[nginx]} reuseport;
    listen 127.0.0.1:${TLS_PORT[nginx]} ssl http2 reuseport;
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
  # h2c with prior knowledge downstream, gRPC over h2c upstream.
  server {
    listen 127.0.0.1:${GRPC_PORT[nginx]} http2 reuseport;
    location / { grpc_pass grpc://127.0.0.1:$BACKEND_GRPC_PORT; }
  }
}
stream {
  map \$ssl_preread_server_name \$passthrough { bench.example.com 127.0.0.1:$BACKEND_TLS_PORT; }
  server {
    listen 127.0.0.1:${PASS_PORT[nginx]} reuseport;
    ssl_preread on;
    proxy_pass \$passthrough;
  }
}
CONF
cat > "$WORK/proxy/haproxy.cfg" <<CONF
global
  nbthread 1
  # HAProxy reserves two descriptors per connection; the hard limit here is 20,000.
  maxconn 9000
  ssl-default-bind-options ssl-min-ver TLSv1.3
defaults
  mode http
  timeout connect 5s
  timeout client 300s
  timeout server 30s
  timeout http-keep-alive 300s
  option http-keep-alive
  http-reuse always
frontend bench
  bind 127.0.0.1:${HTTP_PORT[haproxy]}
  bind 127.0.0.1:${TLS_PORT[haproxy]} ssl crt $WORK/haproxy.pem alpn h2,http/1.1
  default_backend backend
backend backend
  server b1 127.0.0.1:$BACKEND_PORT
frontend grpc
  bind 127.0.0.1:${GRPC_PORT[haproxy]} proto h2
  default_backend grpc_backend
backend grpc_backend
  server g1 127.0.0.1:$BACKEND_GRPC_PORT proto h2
frontend passthrough
  mode tcp
  bind 127.0.0.1:${PASS_PORT[haproxy]}
  tcp-request inspect-delay 5s
  tcp-request content accept if { req_ssl_hello_type 1 }
  use_backend tls_backend if { req_ssl_sni -i bench.example.com }
backend tls_backend
  mode tcp
  server t1 127.0.0.1:$BACKEND_TLS_PORT
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
  - {name: http, protocol: HTTP, port: ${HTTP_PORT[sluice]}}
  - {name: https, protocol: HTTPS, port: ${TLS_PORT[sluice]}, tls: {certificateRefs: [{name: bench-cert}]}}
  - {name: pass, protocol: TLS, port: ${PASS_PORT[sluice]}, hostname: bench.example.com, tls: {mode: Passthrough}}
  - {name: grpc, protocol: HTTP, port: ${GRPC_PORT[sluice]}}
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
---
apiVersion: v1
kind: Service
metadata: {name: backend-tls, namespace: default}
spec: {ports: [{name: https, port: 443}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: backend-tls-1, namespace: default, labels: {kubernetes.io/service-name: backend-tls}}
addressType: IPv4
ports: [{name: https, port: $BACKEND_TLS_PORT}]
endpoints: [{addresses: ["127.0.0.1"]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: TLSRoute
metadata: {name: passthrough, namespace: default}
spec:
  parentRefs: [{name: bench, sectionName: pass}]
  hostnames: [bench.example.com]
  rules:
  - backendRefs: [{name: backend-tls, port: 443}]
---
apiVersion: v1
kind: Service
metadata: {name: grpc-echo, namespace: default}
spec: {ports: [{name: grpc, port: 8080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: grpc-echo-1, namespace: default, labels: {kubernetes.io/service-name: grpc-echo}}
addressType: IPv4
ports: [{name: grpc, port: $BACKEND_GRPC_PORT}]
endpoints: [{addresses: ["127.0.0.1"]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: grpc, namespace: default}
spec:
  parentRefs: [{name: bench, sectionName: grpc}]
  rules:
  - matches: [{method: {service: gateway_api_conformance.echo_basic.grpcecho.GrpcEcho, method: Echo}}]
    backendRefs: [{name: grpc-echo, port: 8080}]
YAML
route() { # the HTTPRoute, with an optional header the reload scenario changes
  cat <<YAML
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bench, namespace: default}
spec:
  parentRefs: [{name: bench}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /}}]
    backendRefs: [{name: backend, port: 80}]
YAML
  if [ -n "${1:-}" ]; then
    echo "    filters: [{type: RequestHeaderModifier, requestHeaderModifier: {set: [{name: x-change, value: '$1'}]}}]"
  fi
}
route > "$WORK/manifests/route.yaml"

wait_port() {
  for _ in $(seq 200); do
    if curl -s -o /dev/null "http://127.0.0.1:$1/"; then return 0; fi
    sleep 0.05
  done
  echo "port $1 never answered" >&2; exit 1
}

declare -A PID
taskset -c 1 nginx -c "$WORK/backend/nginx.conf" & pids+=($!)
if [[ " $SCENARIOS " == *" grpc "* ]]; then
  printf '\0\0\0\0\0' > "$WORK/grpc-request"
  taskset -c 1 "$CARGO_TARGET_DIR/release/echo" --grpc --listen "127.0.0.1:$BACKEND_GRPC_PORT" \
    --pod grpc-echo > "$WORK/grpc-echo.log" 2>&1 & pids+=($!)
fi
taskset -c 0 nginx -c "$WORK/proxy/nginx.conf" & pids+=($!); NGINX_MASTER=$!
taskset -c 0 haproxy -db -f "$WORK/proxy/haproxy.cfg" 2>"$WORK/haproxy.log" & pids+=($!); PID[haproxy]=$!
taskset -c 0 "$GATEWAY" run --manifests "$WORK/manifests" --threads 1 --access-log off \
  --admin-addr "$ADMIN" 2>"$WORK/sluice.log" & pids+=($!); PID[sluice]=$!
wait_port $BACKEND_PORT
for p in $PROXIES; do wait_port "${HTTP_PORT[$p]}"; done
# The nginx proxy's work happens in its worker, a child of the master.
PID[nginx]=$(pgrep -P "$NGINX_MASTER" | head -1)

# CPU time (user, system) in clock ticks of processes and all their threads, summed.
cpu() { for p in "$@"; do cat "/proc/$p/stat"; done | awk '{u += $14; s += $15} END {print u, s}'; }
rss_kb() { for p in "$@"; do cat "/proc/$p/status"; done | awk '/VmRSS/{kb += $2} END {print kb}'; }
backend_accepts() { curl -s "http://127.0.0.1:$BACKEND_STATUS_PORT/" | awk 'NR==3{print $1}'; }
TICK=$(getconf CLK_TCK)

url_for() { # scenario proxy
  case $1 in
    http) echo "http://127.0.0.1:${HTTP_PORT[$2]}/" ;;
    # The name is the SNI; h2load connects to the port on loopback (--connect-to).
    passthrough) echo "https://bench.example.com:${PASS_PORT[$2]}/" ;;
    grpc) echo "http://127.0.0.1:${GRPC_PORT[$2]}/gateway_api_conformance.echo_basic.grpcecho.GrpcEcho/Echo" ;;
    *) echo "https://127.0.0.1:${TLS_PORT[$2]}/" ;;
  esac
}

LOAD_CPUS=1; WRK_THREADS=1   # the workers scenario spreads the load generator over both cores
load() { # tool url seconds -> the tool's output
  case $1 in
    wrk) taskset -c $LOAD_CPUS wrk -t$WRK_THREADS -c$CONNS -d"$3s" --latency "$2" 2>&1 ;;
    h2load) taskset -c 1 h2load -c$CONNS -m10 -D"$3" "$2" 2>&1 ;;
    h2load-h1) # the URL's name is the SNI; the connection goes to its port on loopback
      local port=${2##*:}; port=${port%%/*}
      taskset -c 1 h2load --h1 -c$CONNS -D"$3" --connect-to="127.0.0.1:$port" "$2" 2>&1 ;;
    h2load-grpc) # one empty EchoRequest per call: a gRPC frame of 5 bytes (uncompressed, length 0)
      taskset -c 1 h2load -c$CONNS -m10 -D"$3" -d "$WORK/grpc-request" \
        -H 'content-type: application/grpc' -H 'te: trailers' "$2" 2>&1 ;;
    oha) taskset -c 1 oha -z "$3s" -q 1000 -c 10 --latency-correction --no-tui --output-format json "$2" 2>&1 ;;
  esac
}

# One measurement -> "rps p50_ms p99_ms user_us system_us requests rss_kb upstream_conns p999_ms"
run_one() { # tool url "pid..."
  local tool=$1 url=$2 pid=$3
  local a0 a1 u0 s0 u1 s1 out
  a0=$(backend_accepts)
  # shellcheck disable=SC2086  # several PIDs for multi-process proxies
  read -r u0 s0 < <(cpu $pid)
  out=$(load "$tool" "$url" "$SECS")
  # shellcheck disable=SC2086
  read -r u1 s1 < <(cpu $pid)
  a1=$(backend_accepts)
  # shellcheck disable=SC2086
  python3 bench/parse.py "${tool%-*}" "$u0" "$s0" "$u1" "$s1" "$TICK" "$(rss_kb $pid)" "$((a1 - a0))" <<< "$out"
}

table() { # title file
  python3 bench/table.py "$1" "$2" "$PROXIES"
}

throughput_scenario() { # scenario title tool
  local scenario=$1 title=$2 tool=$3
  for p in $PROXIES; do load "$tool" "$(url_for "$scenario" "$p")" 2 >/dev/null; done   # warm-up
  : > "$WORK/results"
  for r in $(seq "$ROUNDS"); do
    echo "$scenario: round $r/$ROUNDS" >&2
    for p in $PROXIES; do
      echo "$p $(run_one "$tool" "$(url_for "$scenario" "$p")" "${PID[$p]}")" >> "$WORK/results"
    done
  done
  table "$title, $CONNS connections, proxy pinned to core 0 with 1 worker; median of $ROUNDS rounds of $SECS s" "$WORK/results"
}

latency_scenario() {
  : > "$WORK/results"
  for r in $(seq "$ROUNDS"); do
    echo "latency: round $r/$ROUNDS" >&2
    for p in $PROXIES; do
      echo "$p $(run_one oha "$(url_for http "$p")" "${PID[$p]}")" >> "$WORK/results"
    done
  done
  python3 bench/table.py "Open loop at 1,000 requests/s over 10 keep-alive connections, latency-corrected (oha); median of $ROUNDS rounds of $SECS s" "$WORK/results" "$PROXIES" latency
}

idle_scenario() {
  : > "$WORK/results"
  # HAProxy's connection limit (see its maxconn) is below 10,000 on this machine.
  for p in ${IDLE_PROXIES:-nginx sluice}; do
    echo "idle: $p" >&2
    local before after
    before=$(rss_kb "${PID[$p]}")
    # The client opens the connections, makes one request on each, then holds them open until
    # it is told to close them (a line on stdin); it is bounded by `timeout` either way.
    coproc HOLD { taskset -c 1 timeout 300 python3 bench/idle.py 127.0.0.1 "${HTTP_PORT[$p]}" "$IDLE_CONNS"; }
    local line; read -r line <&"${HOLD[0]}"
    case $line in open*) ;; *) echo "idle client failed: $line" >&2; exit 1 ;; esac
    after=$(rss_kb "${PID[$p]}")
    echo close >&"${HOLD[1]}"; wait "$HOLD_PID" 2>/dev/null || true
    echo "$p $before $after $IDLE_CONNS" >> "$WORK/results"
  done
  python3 - "$WORK/results" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1])]
print(f"\nResident memory, idle and with {rows[0][3]} idle keep-alive client connections (each served one request)\n")
print("| proxy | idle MiB | with connections MiB | KiB per connection |")
print("|---|---|---|---|")
for p, before, after, n in rows:
    b, a = int(before), int(after)
    print(f"| {p} | {b/1024:.1f} | {a/1024:.1f} | {(a-b)/int(n):.1f} |")
PY
}

reload_scenario() {
  local url; url=$(url_for http sluice)
  version() { curl -s "http://$ADMIN/metrics" | awk '/^sluice_config_version/{print $2}'; }
  local steady during v0 v1
  steady=$(load wrk "$url" 20)
  v0=$(version)
  load wrk "$url" 20 > "$WORK/during" & local wrk_pid=$!
  # 100 changes to the route that serves the traffic, one every 150 ms (longer than the 50 ms
  # debounce, so each one is applied on its own).
  for i in $(seq 100); do
    route "$i" > "$WORK/manifests/route.yaml.tmp"
    mv "$WORK/manifests/route.yaml.tmp" "$WORK/manifests/route.yaml"
    sleep 0.15
  done
  wait "$wrk_pid"
  v1=$(version)
  during=$(cat "$WORK/during")
  python3 - "$steady" "$during" "$((v1 - v0))" <<'PY'
import re, sys
steady, during, applied = sys.argv[1], sys.argv[2], int(sys.argv[3])
def ms(text, p):
    m = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", text)
    v, u = float(m.group(1)), m.group(2)
    return v / 1000 if u == "us" else v * 1000 if u == "s" else v
def count(text, pattern):
    m = re.search(pattern, text)
    return sum(int(g) for g in m.groups()) if m else 0
print("\nReload under load: Sluice, wrk 50 connections for 20 s, 100 route changes during the second run\n")
print("| run | requests | failed (non-2xx + socket errors) | p50 ms | p99 ms | configurations applied |")
print("|---|---|---|---|---|---|")
for name, text, n in (("steady", steady, "-"), ("100 changes", during, applied)):
    reqs = int(re.search(r"(\d+) requests in", text).group(1))
    bad = count(text, r"Non-2xx or 3xx responses: (\d+)") + count(text, r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
    print(f"| {name} | {reqs} | {bad} | {ms(text, 50):.3f} | {ms(text, 99):.3f} | {n} |")
print(f"\np99 during changes: {ms(during, 99) / ms(steady, 99):.2f}x the steady p99")
PY
}

generate_routes() { # count dir
  mkdir -p "$2"
  python3 - "$1" "$2" "$BACKEND_PORT" <<'PY'
import sys
n, d, backend = int(sys.argv[1]), sys.argv[2], sys.argv[3]
open(f"{d}/base.yaml", "w").write(f"""apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: sluice}}
spec: {{controllerName: sluice.dev/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: scale, namespace: default}}
spec:
  gatewayClassName: sluice
  listeners: [{{name: http, protocol: HTTP, port: 18090}}]
---
apiVersion: v1
kind: Service
metadata: {{name: backend, namespace: default}}
spec: {{ports: [{{name: http, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: backend-1, namespace: default, labels: {{kubernetes.io/service-name: backend}}}}
addressType: IPv4
ports: [{{name: http, port: {backend}}}]
endpoints: [{{addresses: ["127.0.0.1"]}}]
""")
with open(f"{d}/routes.yaml", "w") as f:
    for i in range(n):
        f.write(f"""---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r{i}, namespace: default}}
spec:
  parentRefs: [{{name: scale}}]
  hostnames: [r{i}.example.com]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /p{i}}}, headers: [{{name: x-id, value: "{i}"}}]}}]
    backendRefs: [{{name: backend, port: 80}}]
""")
PY
}

# One route-table size -> "routes rps load_ms reload_ms rss_kb non2xx"
measure_routes() { # count
  local n=$1 dir="$WORK/routes$1" target=$(( $1 / 2 )) admin=127.0.0.1:18902
  generate_routes "$n" "$dir"
  local t0 t1 load_ms reload_ms pid v out rps non2xx rss
  t0=$(date +%s%N); "$GATEWAY" status -m "$dir" -o json >/dev/null; t1=$(date +%s%N)
  load_ms=$(( (t1 - t0) / 1000000 ))
  taskset -c 0 "$GATEWAY" run -m "$dir" --threads 1 --access-log off --admin-addr "$admin" 2>"$WORK/routes$n.log" &
  pid=$!; pids+=("$pid")
  for _ in $(seq 600); do curl -sf -o /dev/null "http://$admin/ready" && break; sleep 0.05; done
  # Reload: change one route, then wait for the next configuration version to be served.
  v=$(curl -s "http://$admin/metrics" | awk '/^sluice_config_version/{print $2}')
  t0=$(date +%s%N)
  sed -i "s/value: \/p0}/value: \/q0}/" "$dir/routes.yaml"
  for _ in $(seq 1000); do
    [ "$(curl -s "http://$admin/metrics" | awk '/^sluice_config_version/{print $2}')" -gt "$v" ] && break
    sleep 0.01
  done
  t1=$(date +%s%N)
  reload_ms=$(( (t1 - t0) / 1000000 ))
  local hdr=(-H "Host: r$target.example.com" -H "x-id: $target")
  taskset -c 1 wrk -t1 -c$CONNS -d2s "${hdr[@]}" "http://127.0.0.1:18090/p$target" >/dev/null
  out=$(taskset -c 1 wrk -t1 -c$CONNS -d"${SECS}s" "${hdr[@]}" "http://127.0.0.1:18090/p$target")
  rps=$(echo "$out" | awk '/Requests\/sec/{print $2}')
  non2xx=$(echo "$out" | awk '/Non-2xx/{print $5}')
  rss=$(rss_kb "$pid")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "$n $rps $load_ms $reload_ms $rss ${non2xx:-0}"
}

routes_scenario() {
  local small large
  small=$(measure_routes 10)
  large=$(measure_routes "$ROUTES")
  python3 - "$small" "$large" <<'PY'
import sys
rows = [l.split() for l in sys.argv[1:]]
print("\nRoute-table scale: Sluice alone, wrk 50 connections, a request for a route in the middle of the table\n")
print("| routes | req/s | load+translate ms | reload applied ms (incl. 50 ms debounce) | RSS MiB | non-2xx |")
print("|---|---|---|---|---|---|")
for n, rps, load, reload, rss, bad in rows:
    print(f"| {n} | {float(rps):.0f} | {load} | {reload} | {int(rss)/1024:.1f} | {bad} |")
print(f"\nthroughput at {rows[1][0]} routes: {float(rows[1][1]) / float(rows[0][1]):.2f}x of {rows[0][0]} routes")
PY
}

# The same proxies with two workers each (nginx worker_processes 2, HAProxy nbthread 2, Sluice
# --threads 2), unpinned, on ports of their own; wrk runs two threads on both cores. Compared
# with the one-worker table, CPU per request shows what a second worker costs each proxy.
workers_scenario() {
  mkdir -p "$WORK/proxy2" "$WORK/manifests2"
  sed -e 's/^worker_processes 1;/worker_processes 2;/' -e "s#$WORK/proxy/#$WORK/proxy2/#g" \
    -e "s/${HTTP_PORT[nginx]}/28081/" -e "s/${TLS_PORT[nginx]}/28444/" \
    "$WORK/proxy/nginx.conf" > "$WORK/proxy2/nginx.conf"
  sed -e 's/nbthread 1/nbthread 2/' -e "s/${HTTP_PORT[haproxy]}/28082/" -e "s/${TLS_PORT[haproxy]}/28445/" \
    "$WORK/proxy/haproxy.cfg" > "$WORK/proxy2/haproxy.cfg"
  sed -e "s/${HTTP_PORT[sluice]}/28080/" -e "s/${TLS_PORT[sluice]}/28443/" \
    "$WORK/manifests/bench.yaml" > "$WORK/manifests2/bench.yaml"
  route > "$WORK/manifests2/route.yaml"
  local master
  nginx -c "$WORK/proxy2/nginx.conf" & pids+=($!); master=$!
  haproxy -db -f "$WORK/proxy2/haproxy.cfg" 2>"$WORK/haproxy2.log" & pids+=($!)
  local -A pid2=([haproxy]=$!)
  "$GATEWAY" run --manifests "$WORK/manifests2" --threads 2 --access-log off \
    --admin-addr 127.0.0.1:28901 2>"$WORK/sluice2.log" & pids+=($!); pid2[sluice]=$!
  local -A port2=([nginx]=28081 [haproxy]=28082 [sluice]=28080)
  for p in $PROXIES; do wait_port "${port2[$p]}"; done
  pid2[nginx]=$(pgrep -P "$master" | tr '\n' ' ')
  LOAD_CPUS=0,1; WRK_THREADS=2
  for p in $PROXIES; do load wrk "http://127.0.0.1:${port2[$p]}/" 2 >/dev/null; done   # warm-up
  : > "$WORK/results"
  for r in $(seq "$ROUNDS"); do
    echo "workers: round $r/$ROUNDS" >&2
    for p in $PROXIES; do
      echo "$p $(run_one wrk "http://127.0.0.1:${port2[$p]}/" "${pid2[$p]}")" >> "$WORK/results"
    done
  done
  LOAD_CPUS=1; WRK_THREADS=1
  table "HTTP/1.1 keep-alive (wrk, 2 threads), $CONNS connections, 2 workers per proxy, nothing pinned; median of $ROUNDS rounds of $SECS s" "$WORK/results"
}

for scenario in $SCENARIOS; do
  case $scenario in
    http) throughput_scenario http "HTTP/1.1 keep-alive (wrk)" wrk ;;
    tls) throughput_scenario tls "HTTP/1.1 keep-alive over TLS 1.3, ECDSA P-256 (wrk)" wrk ;;
    h2) throughput_scenario h2 "HTTP/2 over TLS 1.3, 10 streams per connection (h2load; p50 = mean, p99 = max)" h2load ;;
    grpc) throughput_scenario grpc "Unary gRPC over h2c, 10 streams per connection (h2load; p50 = mean, p99 = max)" h2load-grpc ;;
    passthrough) throughput_scenario passthrough "TLS passthrough by SNI, HTTP/1.1 keep-alive over TLS 1.3 to the backend (h2load --h1; p50 = mean, p99 = max)" h2load-h1 ;;
    latency) latency_scenario ;;
    idle) idle_scenario ;;
    reload) reload_scenario ;;
    routes) routes_scenario ;;
    workers) workers_scenario ;;
    *) echo "unknown scenario $scenario" >&2; exit 2 ;;
  esac
done
