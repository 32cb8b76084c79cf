#!/usr/bin/env bash
# A real single-node Kubernetes cluster on this machine, without Docker or kind: for the
# controller's tests, the end-to-end test and the conformance suite.
#
#   scripts/cluster.sh build [--api-only]   build the binaries and images into the cache
#   scripts/cluster.sh up                   the whole node: control plane, containerd, kubelet,
#                                           kube-proxy, CoreDNS, the Gateway API CRDs
#   scripts/cluster.sh up --api-only        etcd and kube-apiserver on 127.0.0.1, the CRDs
#   scripts/cluster.sh status               what runs, and the kubeconfig path
#   scripts/cluster.sh load IMAGE.tar...    import images into the node's containerd
#   scripts/cluster.sh down                 stop everything this script started (by PID) and
#                                           remove its state, interfaces and iptables rules
#
# Kubernetes (KUBE_VERSION) is built from the k8s.io/kubernetes Go module, the pause and CoreDNS
# images and the image tool from deploy/images, all into $SLUICE_CLUSTER_CACHE (default
# ~/.cache/sluice/cluster), outside the clone: a fresh machine builds them once (about 15
# minutes on 2 cores), later runs reuse them. etcd, containerd, runc and the CNI plugins are
# Debian's packages.
#
# Network: the node lives on a bridge this script creates (sluice0, 10.244.0.1/24); Pods get
# 10.244.0.0/24 and Services 10.96.0.0/16. None of it may leave the machine: no masquerade, the
# service range is routed onto the bridge, a mangle POSTROUTING chain drops every packet of
# those ranges that would leave through any other interface, containerd's registry traffic goes
# to a closed loopback port (every image is imported, nothing is pulled), and CoreDNS has no
# upstream: names outside the cluster get SERVFAIL (the CoreDNS built here has a `forward` that
# answers SERVFAIL itself, for Corefiles that name one). The API-only mode creates no node
# bridge and listens on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."

KUBE_VERSION="${KUBE_VERSION:-1.34.4}"
GATEWAY_API_VERSION="${GATEWAY_API_VERSION:-v1.6.3}"
CACHE="${SLUICE_CLUSTER_CACHE:-$HOME/.cache/sluice/cluster}"
BIN="$CACHE/bin/v$KUBE_VERSION"
TOOLS="$CACHE/bin/tools"
IMAGES="$CACHE/images"
RUN="$CACHE/run"
API_PORT="${SLUICE_API_PORT:-16443}"
NODE_NAME=sluice-node
NODE_IF=sluice0
NODE_ADDR=10.244.0.1
POD_CIDR=10.244.0.0/24
SERVICE_CIDR=10.96.0.0/16
DNS_ADDR=10.96.0.10
GUARD=SLUICE-GUARD
# The API server refuses loopback endpoint addresses, so the controller's tests run their
# backends on this address of a bridge with no ports: a /32 with no route beyond it.
BACKEND_IF=sluice-api0
BACKEND_ADDR="${SLUICE_BACKEND_ADDR:-10.244.1.1}"
export GOMODCACHE="$CACHE/gomod" GOCACHE="$CACHE/gocache" GOFLAGS=-mod=mod CGO_ENABLED=0
export PATH="/usr/local/go/bin:$BIN:$PATH"
KUBECTL=(kubectl --kubeconfig="$RUN/kubeconfig")
CTR=(ctr --address "$RUN/containerd/containerd.sock" --namespace k8s.io)

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
  if [ "${1:-}" != "--api-only" ]; then
    command -v containerd >/dev/null || need+=(containerd)
    command -v runc >/dev/null || need+=(runc)
    [ -x /usr/lib/cni/bridge ] || need+=(containernetworking-plugins)
    command -v iptables >/dev/null || need+=(iptables)
    command -v conntrack >/dev/null || need+=(conntrack)
  fi
  if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]} (apt-get)"
    # policy-rc.d keeps the packages from starting their own daemons (containerd); one that
    # exists already is left as it is.
    local own_policy=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
      own_policy=yes
    fi
    local rc=0
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; } || rc=$?
    [ -z "$own_policy" ] || rm -f /usr/sbin/policy-rc.d
    [ $rc = 0 ] || die "apt-get install ${need[*]} failed"
  fi
}

build() {
  local mode=${1:-}
  local targets="kube-apiserver kubectl"
  [ "$mode" = "--api-only" ] || targets="$targets kube-controller-manager kube-scheduler kubelet kube-proxy"
  install_debs "$mode"
  build_kube $targets
  [ "$mode" = "--api-only" ] || { build_tools; build_images; }
}

build_kube() {
  mkdir -p "$BIN" "$CACHE/build-v$KUBE_VERSION"
  local missing="" t
  for t in "$@"; do [ -x "$BIN/$t" ] || missing="$missing $t"; done
  if [ -z "$missing" ]; then say "Kubernetes v$KUBE_VERSION is built ($BIN)"; return; fi
  say "building$missing v$KUBE_VERSION from the k8s.io/kubernetes module (first time: several minutes)"
  (
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
      for t in kube-apiserver kubectl kube-controller-manager kube-scheduler kubelet kube-proxy; do
        echo "	_ \"k8s.io/kubernetes/cmd/$t\""
      done
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
  )
}

# The image tool and the pause program (deploy/images), small and always rebuilt when changed
# (the Go build cache makes an unchanged rebuild take a second).
build_tools() {
  mkdir -p "$TOOLS"
  (cd deploy/images && go build -trimpath -ldflags "-s -w" -o "$TOOLS/" ./mkimage ./pause)
}

# The images the node needs and cannot pull: the pod sandbox (pause) and CoreDNS.
build_images() {
  mkdir -p "$IMAGES"
  if [ ! -x "$TOOLS/coredns" ] || [ deploy/images/go.sum -nt "$TOOLS/coredns" ] ||
     [ -n "$(find deploy/images/coredns -newer "$TOOLS/coredns" -print -quit)" ]; then
    say "building CoreDNS (deploy/images/coredns; first time: a few minutes)"
    local start=$SECONDS
    (cd deploy/images && go build -trimpath -ldflags "-s -w" -o "$TOOLS/" ./coredns)
    say "built coredns in $((SECONDS - start)) s"
  fi
  "$TOOLS/mkimage" -o "$IMAGES/pause.tar" -tag registry.k8s.io/pause:3.10 \
    -file "$TOOLS/pause=/pause:0755" -entrypoint /pause -user 65535:65535 >/dev/null
  "$TOOLS/mkimage" -o "$IMAGES/coredns.tar" -tag sluice.dev/local/coredns:1.15.0 \
    -file "$TOOLS/coredns=/coredns:0755" -entrypoint /coredns -user 65532:65532 >/dev/null
  # Also under the name the Gateway API v1.6.3 conformance manifests run (their Corefile
  # forwards to public resolvers; this build's `forward` answers SERVFAIL instead). Their Pod
  # listens on port 53 as a non-root user with NET_BIND_SERVICE added, which works (as with the
  # official image) through the binary's file capability. The cluster's own DNS drops every
  # capability, and a binary with a file capability the process may not have does not start:
  # hence two images.
  "$TOOLS/mkimage" -o "$IMAGES/coredns-conformance.tar" -tag registry.k8s.io/coredns/coredns:v1.12.2 \
    -file "$TOOLS/coredns=/coredns:0755" -bind-cap /coredns -entrypoint /coredns \
    -user 65532:65532 >/dev/null
}

# A CA and every certificate of the cluster (openssl), made once per cache.
pki() {
  local p="$RUN/pki"
  # Version 2 added the node's certificates and SANs; an older set is replaced.
  [ "$(cat "$p/version" 2>/dev/null)" = 2 ] && return
  rm -rf "$p"
  mkdir -p "$p"
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
  local client="extendedKeyUsage=clientAuth"
  issue apiserver "/CN=kube-apiserver" "extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:10.96.0.1,IP:$NODE_ADDR"
  issue admin "/CN=sluice-admin/O=system:masters" "$client"
  issue apiserver-kubelet-client "/CN=kube-apiserver-kubelet-client/O=system:masters" "$client"
  issue controller-manager "/CN=system:kube-controller-manager" "$client"
  issue scheduler "/CN=system:kube-scheduler" "$client"
  issue kube-proxy "/CN=system:kube-proxy" "$client"
  issue kubelet "/CN=system:node:$NODE_NAME/O=system:nodes" "$client"
  issue kubelet-serving "/CN=$NODE_NAME" "extendedKeyUsage=serverAuth
subjectAltName=DNS:$NODE_NAME,IP:$NODE_ADDR"
  openssl genrsa -out "$p/sa.key" 2048 2>/dev/null
  openssl rsa -in "$p/sa.key" -pubout -out "$p/sa.pub" 2>/dev/null
  echo 2 > "$p/version"
}

kubeconfig() { # file certificate user server
  local k=$1
  rm -f "$k"
  kubectl config --kubeconfig="$k" set-cluster local --server="$4" \
    --certificate-authority="$RUN/pki/ca.crt" --embed-certs >/dev/null
  kubectl config --kubeconfig="$k" set-credentials "$3" --client-certificate="$RUN/pki/$2.crt" \
    --client-key="$RUN/pki/$2.key" --embed-certs >/dev/null
  kubectl config --kubeconfig="$k" set-context local --cluster=local --user="$3" >/dev/null
  kubectl config --kubeconfig="$k" use-context local >/dev/null
}

running() { [ -f "$RUN/pids/$1" ] && kill -0 "$(cat "$RUN/pids/$1")" 2>/dev/null; }

start() { # name command...
  local name=$1; shift
  running "$name" && die "$name runs already (pid $(cat "$RUN/pids/$name")); run '$0 down' first"
  mkdir -p "$RUN/logs" "$RUN/pids"
  setsid "$@" > "$RUN/logs/$name.log" 2>&1 < /dev/null &
  echo $! > "$RUN/pids/$name"
}

crds() {
  say "installing the Gateway API $GATEWAY_API_VERSION CRDs (experimental channel)"
  local dir
  dir=$(go mod download -json "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  [ -d "$dir/config/crd/experimental" ] || die "no CRDs in the gateway-api module ($dir)"
  "${KUBECTL[@]}" apply --server-side -k "$dir/config/crd/experimental" >/dev/null
  say "installing Sluice's CRDs (deploy/crds)"
  "${KUBECTL[@]}" apply --server-side -f deploy/crds >/dev/null
  "${KUBECTL[@]}" wait --for=condition=Established --timeout=60s \
    crd/gateways.gateway.networking.k8s.io crd/httproutes.gateway.networking.k8s.io \
    crd/grpcroutes.gateway.networking.k8s.io \
    crd/egresspolicies.policy.sluice.dev >/dev/null
}

up() {
  local mode=node
  [ "${1:-}" = "--api-only" ] && mode=api-only
  if [ -f "$RUN/up" ] && running kube-apiserver; then
    local current
    current=$(cat "$RUN/mode" 2>/dev/null || echo api-only)
    [ "$current" = "$mode" ] || [ "$mode" = api-only ] ||
      die "the cluster is up in $current mode; run '$0 down' first"
    say "already up ($current)"; backend_address; status; return
  fi
  if compgen -G "$RUN/pids/*" >/dev/null; then
    say "an earlier 'up' did not finish or its processes died: stopping what is left"
    down
  fi
  build "${1:-}"
  # A failure from here on stops what was started, so the next 'up' starts clean.
  trap 'rc=$?; if [ $rc != 0 ]; then say "up failed: stopping what it started"; down; fi' EXIT
  pki
  local t0=$SECONDS bind=127.0.0.1
  if [ $mode = node ]; then
    node_network
    bind=$NODE_ADDR
  fi
  echo "$mode" > "$RUN/mode"
  local server="https://$bind:$API_PORT"
  kubeconfig "$RUN/kubeconfig" admin admin "$server"
  rm -rf "$RUN/etcd"
  say "starting etcd and kube-apiserver on $bind"
  start etcd etcd --data-dir "$RUN/etcd" --listen-client-urls http://127.0.0.1:12379 \
    --advertise-client-urls http://127.0.0.1:12379 --listen-peer-urls http://127.0.0.1:12380 \
    --initial-advertise-peer-urls http://127.0.0.1:12380 --initial-cluster default=http://127.0.0.1:12380
  wait_for 30 etcd curl -sf http://127.0.0.1:12379/health
  local node_flags=(--authorization-mode=RBAC)
  if [ $mode = node ]; then
    node_flags=("--authorization-mode=Node,RBAC" --enable-admission-plugins=NodeRestriction
      --kubelet-client-certificate="$RUN/pki/apiserver-kubelet-client.crt"
      --kubelet-client-key="$RUN/pki/apiserver-kubelet-client.key"
      --kubelet-preferred-address-types=InternalIP --allow-privileged=true)
  fi
  start kube-apiserver kube-apiserver --etcd-servers=http://127.0.0.1:12379 \
    --bind-address="$bind" --advertise-address="$bind" --secure-port="$API_PORT" \
    --tls-cert-file="$RUN/pki/apiserver.crt" --tls-private-key-file="$RUN/pki/apiserver.key" \
    --client-ca-file="$RUN/pki/ca.crt" --service-account-key-file="$RUN/pki/sa.pub" \
    --service-account-signing-key-file="$RUN/pki/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc --service-cluster-ip-range="$SERVICE_CIDR" \
    --enable-priority-and-fairness=false --profiling=false "${node_flags[@]}"
  wait_for 60 kube-apiserver "${KUBECTL[@]}" get --raw /readyz
  # /readyz can answer before discovery is served.
  wait_for 30 "API discovery" "${KUBECTL[@]}" get namespace default
  crds
  backend_address
  if [ $mode = node ]; then node_up "$server"; fi
  touch "$RUN/up"
  trap - EXIT
  say "up ($mode) in $((SECONDS - t0)) s"
  status
}

# The node's bridge, routes and guards.
node_network() {
  ip link show "$NODE_IF" >/dev/null 2>&1 || ip link add "$NODE_IF" type bridge
  sysctl -qw "net.ipv6.conf.$NODE_IF.disable_ipv6=1" 2>/dev/null || true
  ip addr show dev "$NODE_IF" | grep -q "inet $NODE_ADDR/24" || ip addr add "$NODE_ADDR/24" dev "$NODE_IF"
  ip link set "$NODE_IF" up
  ip route show "$SERVICE_CIDR" | grep -q "$NODE_IF" || ip route add "$SERVICE_CIDR" dev "$NODE_IF" src "$NODE_ADDR"
  # The guard comes first: every packet from or to the pod and service ranges (also as
  # they were before address translation) that would leave through an interface other than
  # the node's bridge or loopback is dropped, whatever routes exist.
  iptables -t mangle -N "$GUARD" 2>/dev/null || iptables -t mangle -F "$GUARD"
  iptables -t mangle -A "$GUARD" -o "$NODE_IF" -j RETURN
  iptables -t mangle -A "$GUARD" -o lo -j RETURN
  local r
  for r in "-s 10.244.0.0/16" "-d 10.244.0.0/16" "-s $SERVICE_CIDR" "-d $SERVICE_CIDR" \
    "-m conntrack --ctorigsrc 10.244.0.0/16" "-m conntrack --ctorigdst 10.244.0.0/16" \
    "-m conntrack --ctorigdst $SERVICE_CIDR"; do
    # shellcheck disable=SC2086
    iptables -t mangle -A "$GUARD" $r -j DROP
  done
  iptables -t mangle -C POSTROUTING -j "$GUARD" 2>/dev/null || iptables -t mangle -I POSTROUTING 1 -j "$GUARD"
  modprobe br_netfilter 2>/dev/null || true
  [ -f "$RUN/ip_forward.before" ] || sysctl -n net.ipv4.ip_forward > "$RUN/ip_forward.before"
  [ -f "$RUN/bridge_nf.before" ] ||
    sysctl -n net.bridge.bridge-nf-call-iptables > "$RUN/bridge_nf.before" 2>/dev/null || true
  sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null ||
    die "net.bridge.bridge-nf-call-iptables is missing (the br_netfilter module): Services would not work"
  sysctl -qw net.ipv4.ip_forward=1
  say "node network: $NODE_IF $NODE_ADDR/24, services $SERVICE_CIDR routed onto it, guard chain mangle/$GUARD"
}

node_up() {
  local server=$1 cd="$RUN/containerd"
  mkdir -p "$cd" "$RUN/cni/net.d" "$RUN/cni/ipam" "$RUN/kubelet" "$RUN/pod-logs" "$RUN/kubeconfigs"
  kubeconfig "$RUN/kubeconfigs/controller-manager" controller-manager system:kube-controller-manager "$server"
  kubeconfig "$RUN/kubeconfigs/scheduler" scheduler system:kube-scheduler "$server"
  kubeconfig "$RUN/kubeconfigs/kubelet" kubelet "system:node:$NODE_NAME" "$server"
  kubeconfig "$RUN/kubeconfigs/kube-proxy" kube-proxy system:kube-proxy "$server"
  local k="$RUN/kubeconfigs"
  say "starting kube-controller-manager and kube-scheduler"
  start kube-controller-manager kube-controller-manager --kubeconfig="$k/controller-manager" \
    --authentication-kubeconfig="$k/controller-manager" --authorization-kubeconfig="$k/controller-manager" \
    --bind-address=127.0.0.1 --leader-elect=false --use-service-account-credentials=true \
    --service-account-private-key-file="$RUN/pki/sa.key" --root-ca-file="$RUN/pki/ca.crt" \
    --cluster-signing-cert-file="$RUN/pki/ca.crt" --cluster-signing-key-file="$RUN/pki/ca.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" --profiling=false
  start kube-scheduler kube-scheduler --kubeconfig="$k/scheduler" \
    --authentication-kubeconfig="$k/scheduler" --authorization-kubeconfig="$k/scheduler" \
    --bind-address=127.0.0.1 --leader-elect=false --profiling=false
  # Pods resolve names through CoreDNS only; it answers the cluster's names and nothing else.
  echo "nameserver $DNS_ADDR" > "$RUN/resolv.conf"
  cat > "$RUN/cni/net.d/10-sluice.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "sluice-pods",
  "plugins": [
    {
      "type": "bridge", "bridge": "$NODE_IF", "isGateway": true, "ipMasq": false, "hairpinMode": true,
      "ipam": {
        "type": "host-local", "dataDir": "$RUN/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_ADDR"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  cat > "$cd/config.toml" <<EOF
version = 2
root = "$cd/root"
state = "$cd/state"
[grpc]
  address = "$cd/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.10"
  # Root on this VM cannot set a negative oom_score_adj, which runc init needs for sandboxes
  # and Guaranteed Pods; clamp the score to containerd's own instead.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$RUN/cni/net.d"
EOF
  say "starting containerd"
  # A missing image would be pulled: send that to a closed loopback port, never off the machine.
  start containerd env HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 NO_PROXY= \
    containerd --config "$cd/config.toml"
  wait_for 60 containerd "${CTR[@]}" version
  load "$IMAGES"/*.tar
  cat > "$RUN/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_ADDR
readOnlyPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $RUN/pki/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $RUN/pki/kubelet-serving.crt
tlsPrivateKeyFile: $RUN/pki/kubelet-serving.key
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$cd/containerd.sock
failSwapOn: false
failCgroupV1: false
clusterDNS: [$DNS_ADDR]
clusterDomain: cluster.local
resolvConf: $RUN/resolv.conf
podLogsDir: $RUN/pod-logs
serializeImagePulls: false
evictionHard: {memory.available: "100Mi", nodefs.available: "2%", imagefs.available: "2%"}
# Nothing can be pulled again here: never garbage-collect images (100 turns it off).
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
EOF
  say "starting kubelet"
  start kubelet kubelet --config="$RUN/kubelet.yaml" --kubeconfig="$k/kubelet" \
    --root-dir="$RUN/kubelet" --hostname-override="$NODE_NAME" --node-ip="$NODE_ADDR" --v=1
  wait_for 120 "node $NODE_NAME Ready" node_ready
  # kube-proxy exits when its configuration file changes under it; it is written before start.
  cat > "$RUN/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $k/kube-proxy}
mode: iptables
clusterCIDR: $POD_CIDR
hostnameOverride: $NODE_NAME
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
nodePortAddresses: ["$NODE_ADDR/32"]
conntrack: {maxPerCore: 0}
EOF
  say "starting kube-proxy"
  start kube-proxy kube-proxy --config="$RUN/kube-proxy.yaml"
  wait_for 60 kube-proxy curl -sf http://127.0.0.1:10256/healthz
  wait_for 60 "the default ServiceAccount" "${KUBECTL[@]}" get serviceaccount default -n default
  say "starting CoreDNS ($DNS_ADDR)"
  "${KUBECTL[@]}" apply -f deploy/local-cluster/coredns.yaml >/dev/null
  "${KUBECTL[@]}" -n kube-system rollout status deployment/coredns --timeout=120s >/dev/null ||
    die "CoreDNS did not become ready (kubectl -n kube-system describe pod -l k8s-app=kube-dns)"
}

node_ready() {
  [ "$("${KUBECTL[@]}" get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
}

# Imports image tarballs into the node's containerd (pulling is never possible here).
load() {
  running containerd || die "the node is not up (scripts/cluster.sh up)"
  local t
  for t in "$@"; do
    [ -f "$t" ] || die "no image tarball $t"
    "${CTR[@]}" images import "$t" >/dev/null || die "importing $t failed"
    say "imported $(basename "$t")"
  done
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
  # MODE only once an 'up' finished.
  [ $any = 1 ] && [ -f "$RUN/up" ] && [ -f "$RUN/mode" ] && echo "MODE=$(cat "$RUN/mode")"
  [ -f "$RUN/kubeconfig" ] && echo "KUBECONFIG=$RUN/kubeconfig"
  ip link show "$BACKEND_IF" >/dev/null 2>&1 && echo "SLUICE_BACKEND_ADDR=$BACKEND_ADDR"
  return 0
}

stop() { # name
  local f="$RUN/pids/$1" pid
  [ -e "$f" ] || return 0
  pid=$(cat "$f")
  # A PID file older than a reboot may name another process now: only ours is stopped.
  local cmd
  cmd=$(tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null || true)
  if [[ "$cmd" != *"$1"* ]]; then
    rm -f "$f"
    return 0
  fi
  if kill "$pid" 2>/dev/null; then
    local until=$((SECONDS + 20))
    while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $until ]; do sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
    say "stopped $1"
  fi
  rm -f "$f"
}

down() {
  stop kube-proxy
  stop kubelet
  # Pod processes and their shims outlive containerd: kill the tasks through it first.
  if running containerd && "${CTR[@]}" version >/dev/null 2>&1; then
    local tasks t
    tasks=$("${CTR[@]}" tasks ls -q 2>/dev/null || true)
    for t in $tasks; do "${CTR[@]}" tasks kill -s KILL "$t" >/dev/null 2>&1 || true; done
    local until=$((SECONDS + 10))
    while [ $SECONDS -lt $until ] &&
      "${CTR[@]}" tasks ls 2>/dev/null | awk 'NR > 1 && $3 != "STOPPED" {found = 1} END {exit !found}'; do
      sleep 0.2
    done
    for t in $tasks; do "${CTR[@]}" tasks rm -f "$t" >/dev/null 2>&1 || true; done
    [ -z "$tasks" ] || say "killed $(echo "$tasks" | wc -w) container tasks"
  fi
  stop containerd
  # Whatever still runs in the Pods' cgroups (a task containerd could not kill, or did not
  # know any more) is killed, so no Pod outlives the guard removed below.
  local procs
  procs=$(cat /sys/fs/cgroup/*/kubepods/cgroup.procs /sys/fs/cgroup/*/kubepods/*/cgroup.procs \
    /sys/fs/cgroup/*/kubepods/*/*/cgroup.procs /sys/fs/cgroup/*/kubepods/*/*/*/cgroup.procs \
    2>/dev/null | sort -u || true)
  if [ -n "$procs" ]; then
    # shellcheck disable=SC2086
    kill -9 $procs 2>/dev/null || true
    say "killed $(echo "$procs" | wc -w) processes left in the Pods' cgroups"
  fi
  stop kube-scheduler
  stop kube-controller-manager
  stop kube-apiserver
  stop etcd
  rm -rf "$RUN/etcd"
  if [ "$(cat "$RUN/mode" 2>/dev/null)" = node ] || ip link show "$NODE_IF" >/dev/null 2>&1; then
    node_cleanup
  fi
  rm -f "$RUN/mode" "$RUN/up"
  if ip link show "$BACKEND_IF" >/dev/null 2>&1; then
    ip link del "$BACKEND_IF" && say "removed $BACKEND_IF"
  fi
}

# Removes what the node left behind: Service rules, pod network namespaces, the bridge, the
# guard chain, the kubelet's chains, cgroups, mounts and state.
node_cleanup() {
  [ -x "$BIN/kube-proxy" ] && "$BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
  local ns
  for ns in $(ip netns list 2>/dev/null | awk '/^cni-/ {print $1}'); do ip netns delete "$ns" || true; done
  ip link del "$NODE_IF" 2>/dev/null || true
  ip route del "$SERVICE_CIDR" 2>/dev/null || true
  iptables -t mangle -D POSTROUTING -j "$GUARD" 2>/dev/null || true
  iptables -t mangle -F "$GUARD" 2>/dev/null || true
  iptables -t mangle -X "$GUARD" 2>/dev/null || true
  local ipt c t
  for ipt in iptables ip6tables; do
    for c in INPUT OUTPUT; do $ipt -D "$c" -j KUBE-FIREWALL 2>/dev/null || true; done
    $ipt -F KUBE-FIREWALL 2>/dev/null || true
    $ipt -X KUBE-FIREWALL 2>/dev/null || true
    for t in nat mangle filter; do
      $ipt -t $t -F KUBE-KUBELET-CANARY 2>/dev/null || true
      $ipt -t $t -X KUBE-KUBELET-CANARY 2>/dev/null || true
    done
    $ipt -t mangle -X KUBE-IPTABLES-HINT 2>/dev/null || true
  done
  local cg
  for cg in /sys/fs/cgroup/*/kubepods; do
    [ -d "$cg" ] && find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null
  done
  local m
  for m in $(awk -v r="$RUN/" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r); do umount "$m" 2>/dev/null || true; done
  rm -rf --one-file-system "$RUN/containerd/root" "$RUN/containerd/state" "$RUN/kubelet" \
    "$RUN/cni/ipam" "$RUN/pod-logs"
  rm -f /var/lib/cni/results/sluice-pods-* 2>/dev/null || true
  if [ -f "$RUN/ip_forward.before" ]; then
    sysctl -qw "net.ipv4.ip_forward=$(cat "$RUN/ip_forward.before")"
    rm -f "$RUN/ip_forward.before"
  fi
  if [ -s "$RUN/bridge_nf.before" ]; then
    sysctl -qw "net.bridge.bridge-nf-call-iptables=$(cat "$RUN/bridge_nf.before")" 2>/dev/null || true
  fi
  rm -f "$RUN/bridge_nf.before"
  say "removed the node's state, $NODE_IF and the guard chain"
}

case "${1:-}" in
  build) shift; build "$@" ;;
  up) shift; up "$@" ;;
  status) status ;;
  load) shift; load "$@" ;;
  down) down ;;
  *) echo "usage: $0 build [--api-only] | up [--api-only] | status | load IMAGE.tar... | down" >&2; exit 2 ;;
esac
