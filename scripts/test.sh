#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests, the Helm chart (lint and
# install), and the controller's tests against a real Kubernetes API server
# (scripts/cluster.sh up --api-only; kube-apiserver, kubectl and helm are built into
# ~/.cache/sluice/cluster the first time).
cd "$(dirname "$0")/.."
source scripts/env.sh
echo "== rustfmt, clippy" >&2
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
echo "== the API server for the controller's tests" >&2
started=""
state=$(scripts/cluster.sh status 2>&1)
if [[ "$state" != *"kube-apiserver: running"* ]]; then
  scripts/cluster.sh up --api-only
  started=yes
fi
# Stop what this script started, however it ends.
[ -n "$started" ] && trap 'scripts/cluster.sh down' EXIT
export SLUICE_KUBECONFIG="${SLUICE_CLUSTER_CACHE:-$HOME/.cache/sluice/cluster}/run/kubeconfig"
echo "== the Helm chart: lint, and install into the API server" >&2
scripts/helm.sh lint
scripts/helm.sh install
echo "== cargo test" >&2
cargo test --workspace
