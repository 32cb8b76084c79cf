#!/usr/bin/env bash
# Sluice in kind, for machines with Docker (the development machines of this project have no
# container engine, so this script is not run by the test command; scripts/cluster.sh and
# scripts/e2e.sh are its counterpart there and do the same steps).
#
#   deploy/kind.sh up        create the cluster, install the Gateway API CRDs, build and load
#                            the image, install the chart, apply examples/cluster/echo.yaml
#   deploy/kind.sh check     a request through the gateway's Service (kubectl port-forward)
#   deploy/kind.sh conformance [SUITE FLAGS...]
#                            the upstream Gateway API suite v1.6.3 against the cluster (after
#                            up): the chart reinstalled as scripts/conformance.sh installs it,
#                            the suite's test binary built from conformance/upstream and run in
#                            a container on kind's Docker network, which routes the Service and
#                            external-IP ranges to the control-plane node; writes
#                            conformance/reports/v1.6.3/kind-report.yaml and prints the summary.
#                            Extra flags go to the suite (e.g. -run-test HTTPRouteWeight
#                            -supported-features ..., -conformance-profiles GATEWAY-HTTP),
#                            each one word: they are spliced into the container's command.
#   deploy/kind.sh down      delete the cluster
#
# Needs docker, kind, kubectl and helm on PATH (and go for conformance).
set -euo pipefail
cd "$(dirname "$0")/.."

CLUSTER=sluice
GATEWAY_API_VERSION="${GATEWAY_API_VERSION:-v1.6.3}"
VERSION=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' deploy/helm/sluice/Chart.yaml)
NS=sluice-demo
say() { printf '[kind] %s\n' "$*" >&2; }
need() { for c in "$@"; do command -v "$c" >/dev/null || { say "$c is required on PATH"; exit 1; }; done; }

up() {
  need docker kind kubectl helm
  kind get clusters 2>/dev/null | grep -qx "$CLUSTER" ||
    kind create cluster --config deploy/kind/cluster.yaml --wait 120s
  kubectl config use-context "kind-$CLUSTER" >/dev/null
  say "installing the Gateway API $GATEWAY_API_VERSION CRDs (experimental channel) and Sluice's CRDs"
  kubectl apply --server-side -f \
    "https://github.com/kubernetes-sigs/gateway-api/releases/download/$GATEWAY_API_VERSION/experimental-install.yaml" >/dev/null
  kubectl apply --server-side -f deploy/crds >/dev/null
  say "building sluice/sluice:$VERSION (deploy/Containerfile) and the echo image"
  docker build -f deploy/Containerfile -t "sluice/sluice:$VERSION" .
  docker build -f deploy/Containerfile --target echo -t "sluice/echo:$VERSION" .
  kind load docker-image --name "$CLUSTER" "sluice/sluice:$VERSION" "sluice/echo:$VERSION"
  say "installing the chart"
  helm upgrade --install sluice deploy/helm/sluice --namespace sluice-system --create-namespace \
    --set image.pullPolicy=Never --wait --timeout 180s
  kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  kubectl apply -n "$NS" -f examples/cluster/echo.yaml
  kubectl -n "$NS" wait --for=condition=Programmed gateway/web --timeout=120s
  kubectl -n "$NS" get gateway web
}

check() {
  need kubectl curl
  kubectl -n "$NS" rollout status deployment/web-sluice --timeout=120s
  # kind assigns the gateway's LoadBalancer Service no address the host can reach: forward a
  # local port to the Service instead.
  kubectl -n "$NS" port-forward service/web-sluice 18080:80 >/dev/null 2>&1 &
  local forward=$!
  # shellcheck disable=SC2064 # the PID is known now
  trap "kill $forward 2>/dev/null" EXIT
  local until=$((SECONDS + 60))
  until curl -sf --max-time 2 http://127.0.0.1:18080/hello; do
    [ $SECONDS -lt $until ] || { say "FAIL: no answer through the gateway's Service"; exit 1; }
    sleep 0.5
  done
  echo
  say "PASS: the gateway answers through its Service"
}

conformance() {
  need docker kind kubectl helm go
  kind get clusters 2>/dev/null | grep -qx "$CLUSTER" || { say "no cluster: run $0 up first"; exit 1; }
  # helm and kubectl below act on the kind cluster, whatever context was current.
  kubectl config use-context "kind-$CLUSTER" >/dev/null
  local work=.kind-conformance report=conformance/reports/v1.6.3/kind-report.yaml
  mkdir -p "$work"
  say "reinstalling the chart with Service external IPs in 10.244.2.0/24 (GatewayStaticAddresses)"
  helm upgrade --install sluice deploy/helm/sluice --namespace sluice-system --create-namespace \
    --set image.pullPolicy=Never --set serviceExternalIPs=true \
    --set 'serviceExternalIPCIDRs={10.244.2.0/24}' --wait --timeout 180s
  kubectl wait --for=condition=Accepted gatewayclass/sluice --timeout=60s
  say "building the suite's test binary (conformance/upstream)"
  # For Linux, the containers' system, on the host's architecture (Docker Desktop included).
  (cd conformance/upstream && CGO_ENABLED=0 GOOS=linux GOFLAGS=-mod=mod \
    go test -c -o "../../$work/conformance.test" .)
  kind get kubeconfig --internal --name "$CLUSTER" > "$work/kubeconfig"
  local node
  node=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$CLUSTER-control-plane")
  [ -n "$node" ] || { say "no address for $CLUSTER-control-plane"; exit 1; }
  # The suite reaches Gateways at their Services' cluster IPs (kind gives LoadBalancer Services
  # no ingress address) and at requested external IPs: both ranges go to a node, where
  # kube-proxy forwards them. Only the container's own routes change, never the host's.
  say "running the suite in a container on the kind network (log: $work/suite.log)"
  local rc=0
  docker run --rm --network kind --cap-add NET_ADMIN -v "$PWD:/src" -w /src/conformance/upstream \
    -e KUBECONFIG=/src/$work/kubeconfig "busybox:1.37" sh -c \
    "ip route add 10.96.0.0/16 via $node && ip route add 10.244.2.0/24 via $node &&
     exec /src/$work/conformance.test -test.v -test.run '^TestConformance\$' -test.timeout 80m \
       -gateway-class sluice \
       -conformance-profiles GATEWAY-HTTP,GATEWAY-GRPC,GATEWAY-TLS,GATEWAY-TCP,GATEWAY-UDP \
       -conformance-options-file /src/conformance/upstream/options.yaml \
       -report-output /src/$report -organization sluice.dev -project sluice \
       -url https://sluice.dev -version v$VERSION -contact https://sluice.dev/community $*" \
    > "$work/suite.log" 2>&1 || rc=$?
  [ -s "$report" ] || { say "the suite wrote no report (exit $rc; see $work/suite.log)"; exit 1; }
  (cd conformance/upstream && GOFLAGS=-mod=mod go run ./summary "../../$report") || rc=1
  return $rc
}

down() {
  need kind
  kind delete cluster --name "$CLUSTER"
}

case "${1:-}" in
  up) up ;;
  check) check ;;
  conformance) shift; conformance "$@" ;;
  down) down ;;
  *) echo "usage: $0 up | check | conformance [SUITE FLAGS...] | down" >&2; exit 2 ;;
esac
