#!/usr/bin/env bash
# A real Kubernetes API server on this machine, for the controller's tests and for users who
# want to try Sluice against a cluster without Docker or kind.
#
#   scripts/cluster.sh build [--api-only]   build the Kubernetes binaries into the cache
#   scripts/cluster.sh up --api-only        etcd and kube-apiserver on 127.0.0.1, Gateway API CRDs
#   scripts/cluster.sh status               what runs, and the kubeconfig path
#   scripts/cluster.sh down                 stop everything this script started (by PID)
#
# Binaries are built from the k8s.io/kubernetes Go module (KUBE_VERSION) into
# $SLUICE_CLUSTER_CACHE (default ~/.cache/sluice/cluster), outside the clone: a fresh machine
# builds them once (several minutes), later runs reuse them. etcd is Debian's etcd-server.
# The API-only mode listens on loopback only and creates no network interface; the full node
# (kubelet, kube-proxy, CNI, the network guards) is not in this script yet.
set -euo pipefail
cd "$(dirname "$0")/.."

KUBE_VERSION="${KUBE_VERSION:-1.34.4}"
GATEWAY_API_VERSION="${GATEWAY_API_VERSION:-v1.6.3}"
CACHE="${SLUICE_CLUSTER_CACHE:-$HOME/.cache/sluice/cluster}"
BIN="$CACHE/bin/v$KUBE_VERSION"
RUN="$CACHE/run"
API_PORT="${SLUICE_API_PORT:-16443}"
# The API server refuses loopback endpoint addresses, so API-only tests run their backends on
# this address of a bridge with no ports: a /32 with no route beyond it, local to this machine.
BACKEND_IF=sluice-api0
BACKEND_ADDR="${SLUICE_BACKEND_ADDR:-10.244.1.1}"
export GOMODCACHE="$CACHE/gomod" GOCACHE="$CACHE/gocache" GOFLAGS=-mod=mod CGO_ENABLED=0
export PATH="/usr/local/go/bin:$BIN:$PATH"

say() { printf '[cluster] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

# Waits (bounded) until a command succeeds.
wait_for() { # seconds description command...
  local secs=$1 what=$2; shift 2
  local until=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $until ] || die "$what not ready after ${secs}s (logs in $RUN/logs)"
    sleep 0.2
  done
}

install_debs() {
  local need=()
  command -v etcd >/dev/null || need+=(etcd-server)
  command -v openssl >/dev/null || need+=(openssl)
  if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]} (apt-get)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

build() {
  local targets="kube-apiserver kubectl"
  [ "${1:-}" = "--api-only" ] || targets="$targets kube-controller-manager kube-scheduler kubelet kube-proxy"
  install_debs
  mkdir -p "$BIN" "$CACHE/build-v$KUBE_VERSION"
  local missing=""
  for t in $targets; do [ -x "$BIN/$t" ] || missing="$missing $t"; done
  if [ -z "$missing" ]; then say "binaries v$KUBE_VERSION are built ($BIN)"; return; fi
  say "building$missing v$KUBE_VERSION from the k8s.io/kubernetes module (first time: several minutes)"
  cd "$CACHE/build-v$KUBE_VERSION"
  go mod download -json "k8s.io/kubernetes@v$KUBE_VERSION" >/dev/null
  local kgo="$GOMODCACHE/k8s.io/kubernetes@v$KUBE_VERSION/go.mod"
  # k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with folders of
  # its own repository; a module that depends on it replaces each with the published v0.x.y.
  {
    echo "module sluice.dev/kube-build"
    echo
    grep -m1 '^go ' "$kgo"
    grep -m1 '^godebug ' "$kgo" || true
    echo
    echo "require k8s.io/kubernetes v$KUBE_VERSION"
    echo
    echo "replace ("
    sed -n '/^replace (/,/^)/p' "$kgo" | awk -v v="0.${KUBE_VERSION#1.}" '/=>/ {print "\t" $1 " => " $1 " v" v}'
    echo ")"
  } > go.mod
  {
    echo "//go:build tools"
    echo
    echo "package tools"
    echo
    echo "import ("
    for t in $targets; do echo "	_ \"k8s.io/kubernetes/cmd/$t\""; done
    echo ")"
  } > tools.go
  go mod tidy
  local minor ld p
  minor=$(echo "$KUBE_VERSION" | cut -d. -f2)
  ld="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld="$ld -X $p.gitVersion=v$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
  done
  for t in $missing; do
    local start=$SECONDS
    go build -trimpath -ldflags "$ld" -o "$BIN/$t" "k8s.io/kubernetes/cmd/$t"
    say "built $t in $((SECONDS - start)) s"
  done
}

pki() {
  local p="$RUN/pki"
  mkdir -p "$p"
  [ -f "$p/ca.key" ] && return
  say "making a CA and certificates ($p)"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$p/ca.key" -out "$p/ca.crt" -days 3650 \
    -subj "/CN=sluice-local-ca" 2>/dev/null
  issue() { # name subject extensions
    openssl req -newkey rsa:2048 -nodes -keyout "$p/$1.key" -out "$p/$1.csr" -subj "$2" 2>/dev/null
    printf '%s\n' "$3" > "$p/$1.ext"
    openssl x509 -req -in "$p/$1.csr" -CA "$p/ca.crt" -CAkey "$p/ca.key" -CAcreateserial \
      -days 3650 -extfile "$p/$1.ext" -out "$p/$1.crt" 2>/dev/null
    rm -f "$p/$1.csr" "$p/$1.ext"
  }
  issue apiserver "/CN=kube-apiserver" \
    "extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,DNS:kubernetes.default.svc,IP:127.0.0.1"
  issue admin "/CN=sluice-admin/O=system:masters" "extendedKeyUsage=clientAuth"
  openssl genrsa -out "$p/sa.key" 2048 2>/dev/null
  openssl rsa -in "$p/sa.key" -pubout -out "$p/sa.pub" 2>/dev/null
}

kubeconfig() {
  local k="$RUN/kubeconfig"
  kubectl config --kubeconfig="$k" set-cluster local --server="https://127.0.0.1:$API_PORT" \
    --certificate-authority="$RUN/pki/ca.crt" --embed-certs >/dev/null
  kubectl config --kubeconfig="$k" set-credentials admin --client-certificate="$RUN/pki/admin.crt" \
    --client-key="$RUN/pki/admin.key" --embed-certs >/dev/null
  kubectl config --kubeconfig="$k" set-context local --cluster=local --user=admin >/dev/null
  kubectl config --kubeconfig="$k" use-context local >/dev/null
}

start() { # name command...
  local name=$1; shift
  mkdir -p "$RUN/logs" "$RUN/pids"
  "$@" > "$RUN/logs/$name.log" 2>&1 &
  echo $! > "$RUN/pids/$name"
}

crds() {
  say "installing the Gateway API $GATEWAY_API_VERSION CRDs (experimental channel)"
  local dir
  dir=$(go mod download -json "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  [ -d "$dir/config/crd/experimental" ] || die "no CRDs in the gateway-api module ($dir)"
  kubectl --kubeconfig="$RUN/kubeconfig" apply --server-side -k "$dir/config/crd/experimental" >/dev/null
  say "installing Sluice's CRDs (deploy/crds)"
  kubectl --kubeconfig="$RUN/kubeconfig" apply --server-side -f deploy/crds >/dev/null
  kubectl --kubeconfig="$RUN/kubeconfig" wait --for=condition=Established --timeout=60s \
    crd/gateways.gateway.networking.k8s.io crd/httproutes.gateway.networking.k8s.io \
    crd/egresspolicies.policy.sluice.dev >/dev/null
}

up() {
  [ "${1:-}" = "--api-only" ] || die "only 'up --api-only' is built so far (the node comes next)"
  if [ -f "$RUN/pids/kube-apiserver" ] && kill -0 "$(cat "$RUN/pids/kube-apiserver")" 2>/dev/null; then
    say "already up"; backend_address; status; return
  fi
  build --api-only
  pki
  kubeconfig
  rm -rf "$RUN/etcd"
  say "starting etcd and kube-apiserver on 127.0.0.1"
  start etcd etcd --data-dir "$RUN/etcd" --listen-client-urls http://127.0.0.1:12379 \
    --advertise-client-urls http://127.0.0.1:12379 --listen-peer-urls http://127.0.0.1:12380 \
    --initial-advertise-peer-urls http://127.0.0.1:12380 --initial-cluster default=http://127.0.0.1:12380
  wait_for 30 etcd curl -sf http://127.0.0.1:12379/health
  start kube-apiserver kube-apiserver --etcd-servers=http://127.0.0.1:12379 \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$API_PORT" \
    --tls-cert-file="$RUN/pki/apiserver.crt" --tls-private-key-file="$RUN/pki/apiserver.key" \
    --client-ca-file="$RUN/pki/ca.crt" --service-account-key-file="$RUN/pki/sa.pub" \
    --service-account-signing-key-file="$RUN/pki/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc --service-cluster-ip-range=10.96.0.0/16 \
    --authorization-mode=RBAC --enable-priority-and-fairness=false
  wait_for 60 kube-apiserver kubectl --kubeconfig="$RUN/kubeconfig" get --raw /readyz
  # /readyz can answer before discovery is served.
  wait_for 30 "API discovery" kubectl --kubeconfig="$RUN/kubeconfig" get namespace default
  crds
  backend_address
  status
}

backend_address() {
  ip link show "$BACKEND_IF" >/dev/null 2>&1 || ip link add "$BACKEND_IF" type bridge
  ip addr show dev "$BACKEND_IF" | grep -q "inet $BACKEND_ADDR/32" ||
    ip addr add "$BACKEND_ADDR/32" dev "$BACKEND_IF"
  sysctl -qw "net.ipv6.conf.$BACKEND_IF.disable_ipv6=1" 2>/dev/null || true
  ip link set "$BACKEND_IF" up
  say "backend address for endpoints: $BACKEND_ADDR ($BACKEND_IF)"
}

status() {
  local any=0 f
  for f in "$RUN"/pids/*; do
    [ -e "$f" ] || continue
    any=1
    if kill -0 "$(cat "$f")" 2>/dev/null; then say "$(basename "$f"): running (pid $(cat "$f"))"
    else say "$(basename "$f"): not running (log $RUN/logs/$(basename "$f").log)"; fi
  done
  [ $any = 1 ] || say "nothing started"
  [ -f "$RUN/kubeconfig" ] && echo "KUBECONFIG=$RUN/kubeconfig"
  ip link show "$BACKEND_IF" >/dev/null 2>&1 && echo "SLUICE_BACKEND_ADDR=$BACKEND_ADDR"
  return 0
}

down() {
  local f pid
  for f in "$RUN"/pids/kube-apiserver "$RUN"/pids/etcd; do
    [ -e "$f" ] || continue
    pid=$(cat "$f")
    if kill "$pid" 2>/dev/null; then
      local until=$((SECONDS + 20))
      while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $until ]; do sleep 0.2; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
    say "stopped $(basename "$f")"
  done
  rm -rf "$RUN/etcd"
  if ip link show "$BACKEND_IF" >/dev/null 2>&1; then
    ip link del "$BACKEND_IF" && say "removed $BACKEND_IF"
  fi
}

case "${1:-}" in
  build) shift; build "$@" ;;
  up) shift; up "$@" ;;
  status) status ;;
  down) down ;;
  *) echo "usage: $0 build [--api-only] | up --api-only | status | down" >&2; exit 2 ;;
esac
