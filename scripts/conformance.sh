#!/usr/bin/env bash
# The upstream Gateway API conformance suite (sigs.k8s.io/gateway-api/conformance v1.6.3,
# unmodified: conformance/upstream is its standard entry point) against Sluice installed in the
# local cluster as a user installs it.
#
#   scripts/conformance.sh [--profile P[,P...]] [--run-test NAME] [--release] [--keep]
#                          [--report FILE] [--timeout MINUTES]
#
# 1. brings the node up (scripts/cluster.sh up) unless it runs,
# 2. builds the suite's test binary and the upstream echo server (conformance/upstream) and
#    imports the echo server as the images the suite's manifests name (nothing is pulled),
# 3. builds and imports the Sluice images (scripts/image.sh; --debug unless --release) and
#    installs the Helm chart,
# 4. runs the suite with our GatewayClass (sluice) and the profiles given (default: every
#    gateway profile we claim); the supported features are the ones the GatewayClass publishes
#    in status.supportedFeatures (the suite infers them), or, with --run-test, the same list
#    passed explicitly (the suite infers nothing when one test is picked),
# 5. writes the ConformanceReport (default conformance/reports/v1.6.3/sluice-report.yaml for a
#    whole run, $CACHE/conformance/report.yaml for --run-test), each test's result beside it
#    (REPORT-tests.txt: "NAME PASS|FAIL|SKIP") and prints a summary per profile and level:
#    passed, failed, skipped, and the failed tests' names. Exits 1 if a test failed.
# The suite's output is in $CACHE/conformance/suite.log. The base manifests (the echo Pods in
# the gateway-conformance-* namespaces) are kept for the next run; --keep also keeps the node.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

SUITE_VERSION=v1.6.3
ALL_PROFILES=GATEWAY-HTTP,GATEWAY-GRPC,GATEWAY-TLS,GATEWAY-TCP,GATEWAY-UDP
profiles=$ALL_PROFILES
run_test=""
image_profile=--debug
keep=no
report=""
timeout_min=80
usage() {
  sed -n '6,7p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) [ $# -ge 2 ] || usage; profiles=$2; shift ;;
    --run-test) [ $# -ge 2 ] || usage; run_test=$2; shift ;;
    --release) image_profile="" ;;
    --keep) keep=yes ;;
    --report) [ $# -ge 2 ] || usage; report=$2; shift ;;
    --timeout) [ $# -ge 2 ] || usage; timeout_min=$2; shift ;;
    *) usage ;;
  esac
  shift
done
for p in ${profiles//,/ }; do
  [[ ",$ALL_PROFILES," == *",$p,"* ]] || { echo "unknown profile $p (one of $ALL_PROFILES)" >&2; exit 2; }
done

CACHE="${SLUICE_CLUSTER_CACHE:-$HOME/.cache/sluice/cluster}"
WORK="$CACHE/conformance"
TOOLS="$CACHE/bin/tools"
KUBECONFIG_PATH="$CACHE/run/kubeconfig"
VERSION=$(chart_version)
K=("$CACHE/bin/v${KUBE_VERSION:-1.34.4}/kubectl" --kubeconfig="$KUBECONFIG_PATH")
say() { printf '[conformance] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
mkdir -p "$WORK"
if [ -z "$report" ]; then
  if [ -n "$run_test" ]; then
    report="$WORK/report.yaml"
  else
    report="conformance/reports/$SUITE_VERSION/sluice-report.yaml"
  fi
fi
mkdir -p "$(dirname "$report")"
report=$(realpath -m "$report")

state=$(scripts/cluster.sh status 2>&1)
if [[ "$state" == *"MODE=node"* ]]; then
  say "the node is up"
else
  [[ "$state" != *"kube-apiserver: running"* ]] ||
    die "a cluster runs that is not a finished node: run scripts/cluster.sh down first"
  [ $keep = yes ] || trap 'scripts/cluster.sh down' EXIT
  scripts/cluster.sh up
fi

# The suite and the echo server, from the one module (Go's build cache skips what is built).
say "building the suite $SUITE_VERSION and its echo server (conformance/upstream; first time: minutes)"
(
  cd conformance/upstream
  export GOMODCACHE="$CACHE/gomod" GOCACHE="$CACHE/gocache" GOFLAGS=-mod=mod CGO_ENABLED=0
  export PATH="/usr/local/go/bin:$PATH"
  go test -c -o "$WORK/conformance.test" .
  go build -trimpath -ldflags "-s -w" -o "$WORK/echo-basic" sigs.k8s.io/gateway-api/conformance/echo-basic
)
# Every name the v1.6.3 manifests give the echo server (the base, the TCP and UDP tests).
"$TOOLS/mkimage" -o "$WORK/echo-basic.tar" \
  -tag registry.k8s.io/gateway-api/echo-basic:v1.5.1 \
  -tag registry.k8s.io/gateway-api/echo-basic:v1.6.0-dev.2 \
  -tag registry.k8s.io/gateway-api/echo-basic:v1.6.0-dev.3 \
  -file "$WORK/echo-basic=/echo-basic:0755" -entrypoint /echo-basic -user 65532:65532 >/dev/null
scripts/cluster.sh load "$WORK/echo-basic.tar"

# shellcheck disable=SC2086
scripts/image.sh $image_profile
say "installing the chart (image sluice/sluice:$VERSION, never pulled)"
# Requested Gateway addresses (GatewayStaticAddresses) become Service external IPs, within a
# range of the local cluster that nothing routes (conformance/upstream/options.yaml).
scripts/helm.sh install --set image.pullPolicy=Never --set serviceExternalIPs=true \
  --set 'serviceExternalIPCIDRs={10.244.2.0/24}' --wait --timeout 180s >/dev/null ||
  die "helm install did not get the controller Ready"
# The images keep their tag from build to build: Pods of an earlier run (the controller, the
# base Gateways' Deployments, which the suite keeps) still run the old binaries until restarted.
say "restarting the controller and the gateway Deployments on the images just built"
"${K[@]}" -n sluice-system rollout restart deployment/sluice-controller >/dev/null
"${K[@]}" -n sluice-system rollout status deployment/sluice-controller --timeout=180s >/dev/null ||
  die "the restarted controller is not Ready"
while read -r ns name; do
  "${K[@]}" -n "$ns" rollout restart "deployment/$name" >/dev/null
  "${K[@]}" -n "$ns" rollout status "deployment/$name" --timeout=120s >/dev/null ||
    die "the restarted gateway Deployment $ns/$name is not Ready"
done < <("${K[@]}" get deployments -A -l app.kubernetes.io/managed-by=sluice \
  -o jsonpath='{range .items[*]}{.metadata.namespace} {.metadata.name}{"\n"}{end}')
"${K[@]}" wait --for=condition=Accepted gatewayclass/sluice --timeout=60s >/dev/null ||
  die "GatewayClass sluice not Accepted"
features=$("${K[@]}" get gatewayclass sluice -o jsonpath='{.status.supportedFeatures[*].name}')
[ -n "$features" ] || die "GatewayClass sluice publishes no supportedFeatures"

args=(
  -test.v -test.run '^TestConformance$' -test.timeout "${timeout_min}m"
  -gateway-class sluice
  -conformance-profiles "$profiles"
  -cleanup-base-resources=false
  -conformance-options-file "$PWD/conformance/upstream/options.yaml"
  -report-output "$report"
  -organization sluice.dev -project sluice -url https://sluice.dev
  -version "v$VERSION" -contact "${SLUICE_CONTACT:-https://sluice.dev/community}"
)
if [ -n "$run_test" ]; then
  args+=(-run-test "$run_test" -supported-features "${features// /,}")
fi
say "running the suite: profiles $profiles${run_test:+, test $run_test} (log: $WORK/suite.log)"
rm -f "$report"
start=$SECONDS
rc=0
# The suite runs in the module folder (its manifests are embedded; it writes nothing else).
# Test names are printed as they start (results come at the end); everything else goes to
# the log.
(cd conformance/upstream && KUBECONFIG="$KUBECONFIG_PATH" \
  timeout "$((timeout_min + 5))m" "$WORK/conformance.test" "${args[@]}") > "$WORK/suite.log" 2>&1 &
suite=$!
tail -n +1 -F "$WORK/suite.log" 2>/dev/null --pid=$suite |
  sed -un 's#^=== RUN   TestConformance/\([^/]*\)$#  \1#p' >&2 || true
wait $suite || rc=$?
say "the suite ran $((SECONDS - start)) s (exit $rc)"
[ -s "$report" ] || die "the suite wrote no report (exit $rc; see $WORK/suite.log)"
# Each test's result by name (the report counts passed tests but names only failed and skipped
# ones): "NAME PASS|FAIL|SKIP", sorted, next to the report.
tests="${report%.yaml}-tests.txt"
sed -nE 's#^ *--- (PASS|FAIL|SKIP): TestConformance/([^/ ]+) .*#\2 \1#p' "$WORK/suite.log" |
  sort -u > "$tests"
say "results by test: $tests ($(wc -l < "$tests") tests)"
(
  cd conformance/upstream
  export GOMODCACHE="$CACHE/gomod" GOCACHE="$CACHE/gocache" GOFLAGS=-mod=mod CGO_ENABLED=0
  # One picked test: the others' names, all skipped, would only hide it.
  /usr/local/go/bin/go run ./summary -skipped="$([ -n "$run_test" ] && echo false || echo true)" "$report"
) || rc=1
exit $rc
