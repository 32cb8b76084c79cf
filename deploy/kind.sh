#!/usr/bin/env bash
# Sluice in kind, for machines with Docker (the development machines of this project have no
# container engine, so this script is not run by the test command; scripts/cluster.sh and
# scripts/e2e.sh are its counterpart there and do the same steps).
#
#   deploy/kind.sh up        create the cluster, install the Gateway API CRDs, build and load
#                            the image, install the chart, apply examples/cluster/echo.yaml
#   deploy/kind.sh check     a request through the gateway's Service (kubectl port-forward)
#   deploy/kind.sh down      delete the cluster
#
# Needs docker, kind, kubectl and helm on PATH.
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

down() {
  need kind
  kind delete cluster --name "$CLUSTER"
}

case "${1:-}" in
  up) up ;;
  check) check ;;
  down) down ;;
  *) echo "usage: $0 up | check | down" >&2; exit 2 ;;
esac
