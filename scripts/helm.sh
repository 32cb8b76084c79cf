#!/usr/bin/env bash
# Helm for the Sluice chart (deploy/helm/sluice), without a prebuilt download.
#
#   scripts/helm.sh build              build helm into the cache (once)
#   scripts/helm.sh path               print the helm binary's path (building it if needed)
#   scripts/helm.sh lint [args...]     helm lint --strict deploy/helm/sluice
#   scripts/helm.sh install [args...]  helm upgrade --install sluice into sluice-system, on the
#                                      cluster of scripts/cluster.sh (KUBECONFIG_PATH overrides)
#
# Helm is built from the helm.sh/helm/v3 Go module (HELM_VERSION) into $SLUICE_CLUSTER_CACHE
# (default ~/.cache/sluice/cluster), the cache scripts/cluster.sh builds Kubernetes into, with
# the same module and build caches: a fresh machine builds it once, later runs reuse it.
set -euo pipefail
cd "$(dirname "$0")/.."

HELM_VERSION="${HELM_VERSION:-v3.21.4}"
HELM_VERSION="v${HELM_VERSION#v}"
CACHE="${SLUICE_CLUSTER_CACHE:-$HOME/.cache/sluice/cluster}"
HELM_DIR="$CACHE/bin/helm-$HELM_VERSION"
HELM="$HELM_DIR/helm"
CHART=deploy/helm/sluice
RELEASE=sluice
NAMESPACE=sluice-system
KUBECONFIG_PATH="${KUBECONFIG_PATH:-$CACHE/run/kubeconfig}"
export GOMODCACHE="$CACHE/gomod" GOCACHE="$CACHE/gocache" CGO_ENABLED=0
export PATH="/usr/local/go/bin:$PATH"

say() { printf '[helm] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

build() {
  if [ -x "$HELM" ]; then say "helm $HELM_VERSION is built ($HELM)"; return; fi
  command -v go >/dev/null || die "go not found (looked in PATH and /usr/local/go/bin)"
  mkdir -p "$HELM_DIR"
  say "building helm $HELM_VERSION from the helm.sh/helm/v3 module (first time: a few minutes)"
  local start=$SECONDS
  # `go install module/pkg@version` builds outside any go.mod, so no -mod flag and no
  # workspace. The -X flags stamp what `helm version` reports.
  local ld="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  ld="$ld -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  GOBIN="$HELM_DIR" GOFLAGS="" GOWORK=off go install -trimpath -ldflags "$ld" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  [ -x "$HELM" ] || die "go install finished, but there is no $HELM"
  say "built helm $HELM_VERSION in $((SECONDS - start)) s ($HELM)"
}

path() {
  build
  echo "$HELM"
}

lint() {
  build
  say "helm lint --strict $CHART"
  "$HELM" lint --strict "$CHART" "$@"
}

install_chart() {
  build
  [ -f "$KUBECONFIG_PATH" ] ||
    die "no kubeconfig at $KUBECONFIG_PATH (start a cluster with scripts/cluster.sh up, or set KUBECONFIG_PATH)"
  say "installing $CHART as release $RELEASE in namespace $NAMESPACE ($KUBECONFIG_PATH)"
  "$HELM" upgrade --install "$RELEASE" "$CHART" --namespace "$NAMESPACE" --create-namespace \
    --kubeconfig "$KUBECONFIG_PATH" --wait=false "$@"
}

case "${1:-}" in
  build) build ;;
  path) path ;;
  lint) shift; lint "$@" ;;
  install) shift; install_chart "$@" ;;
  *) echo "usage: $0 build | path | lint [helm lint args] | install [helm upgrade args]" >&2; exit 2 ;;
esac
