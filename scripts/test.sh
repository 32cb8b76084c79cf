#!/usr/bin/env bash
# The whole test suite: formatting and lints (Rust, Go, shell), unit and integration tests, the
# Helm chart (lint and install), the controller's tests against a real Kubernetes API server,
# the end-to-end test on a real node (scripts/e2e.sh) and the upstream conformance suite of every
# gateway profile we claim (scripts/conformance.sh). The local cluster
# (scripts/cluster.sh up) is started if it does not run, and stopped at the end if this script
# started it; its binaries and images are built into ~/.cache/sluice/cluster the first time.
cd "$(dirname "$0")/.." || exit 1
source scripts/env.sh
CACHE="${SLUICE_CLUSTER_CACHE:-$HOME/.cache/sluice/cluster}"
echo "== rustfmt, clippy" >&2
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
echo "== the local cluster: API server, node, CoreDNS" >&2
state=$(scripts/cluster.sh status 2>&1)
if [[ "$state" != *"kube-apiserver: running"* ]]; then
  # Stop what this script starts, however it ends (also when starting it fails).
  trap 'scripts/cluster.sh down' EXIT
  scripts/cluster.sh up
elif [[ "$state" != *"MODE=node"* ]]; then
  echo "a cluster runs that is not a finished node (up --api-only, or an 'up' that did not" >&2
  echo "finish); the end-to-end test needs the node: run scripts/cluster.sh down, then this again" >&2
  exit 1
fi
export SLUICE_KUBECONFIG="$CACHE/run/kubeconfig"
echo "== gofmt, go vet (deploy/images, conformance/upstream), shellcheck" >&2
for m in deploy/images conformance/upstream; do
  unformatted=$(cd "$m" && /usr/local/go/bin/gofmt -l .)
  [ -z "$unformatted" ] || { echo "gofmt: $m: $unformatted" >&2; exit 1; }
  # CGO off as the builds of these modules have it, so vet reuses their build cache.
  (cd "$m" && GOMODCACHE="$CACHE/gomod" GOCACHE="$CACHE/gocache" GOFLAGS=-mod=mod CGO_ENABLED=0 \
    /usr/local/go/bin/go vet ./...)
done
command -v shellcheck >/dev/null || apt-get install -y -qq shellcheck >/dev/null
shellcheck -S warning scripts/*.sh scripts/gateway scripts/echo deploy/kind.sh bench/*.sh
echo "== the images (scripts/image.sh --debug: the test build's binaries)" >&2
scripts/image.sh --debug
echo "== the Helm chart: lint, and install into the cluster" >&2
scripts/helm.sh lint
scripts/helm.sh install --set image.pullPolicy=Never
echo "== cargo test" >&2
cargo test --workspace
echo "== end to end on the node (scripts/e2e.sh)" >&2
scripts/e2e.sh
echo "== the upstream Gateway API conformance suite v1.6.3, every profile we claim (scripts/conformance.sh)" >&2
# The report goes to the cache: the committed one under conformance/reports is written by
# scripts/conformance.sh run by hand, with the commit it ran at.
scripts/conformance.sh --report "$CACHE/conformance/test-sh/sluice-report.yaml"
