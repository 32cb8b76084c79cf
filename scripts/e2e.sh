#!/usr/bin/env bash
# The end-to-end test on the full local node: what a user does in a cluster, checked.
#
#   scripts/e2e.sh [--release] [--keep]
#
# 1. brings the node up (scripts/cluster.sh up) unless it runs,
# 2. builds the images without Docker and imports them (scripts/image.sh; --debug unless
#    --release, so it reuses the test build),
# 3. installs the Helm chart with that image (helm upgrade --install --wait),
# 4. applies examples/cluster/echo.yaml (two echo Pods, a Gateway, an HTTPRoute) with kubectl
#    into the namespace sluice-e2e,
# 5. checks: the controller created the gateway Deployment from the local image, its Pods are
#    Ready, the Gateway is Programmed with its Service's address, requests from this host to
#    that address reach both echo Pods, an HTTPRoute change is served, and the gateway Pod
#    restarted by Kubernetes serves again.
# It stops what it started (the node) at the end unless --keep.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

profile=--debug
keep=no
for a in "$@"; do
  case "$a" in
    --release) profile="" ;;
    --keep) keep=yes ;;
    *) echo "usage: $0 [--release] [--keep]" >&2; exit 2 ;;
  esac
done

CACHE="${SLUICE_CLUSTER_CACHE:-$HOME/.cache/sluice/cluster}"
KUBECONFIG_PATH="$CACHE/run/kubeconfig"
NS=sluice-e2e
VERSION=$(chart_version)
K=("$CACHE/bin/v${KUBE_VERSION:-1.34.4}/kubectl" --kubeconfig="$KUBECONFIG_PATH")
say() { printf '[e2e] %s\n' "$*" >&2; }
fail() {
  say "FAIL: $*"
  "${K[@]}" get pods -A -o wide >&2 || true
  "${K[@]}" -n "$NS" get gateway,httproute,deploy,svc -o wide >&2 || true
  "${K[@]}" -n sluice-system logs deploy/sluice-controller --tail=40 >&2 || true
  "${K[@]}" -n "$NS" logs deploy/web-sluice --tail=40 >&2 || true
  exit 1
}

state=$(scripts/cluster.sh status 2>&1)
if [[ "$state" == *"MODE=node"* ]]; then
  say "the node is up"
else
  [[ "$state" != *"kube-apiserver: running"* ]] ||
    { say "a cluster runs that is not a finished node: run scripts/cluster.sh down first"; exit 1; }
  [ $keep = yes ] || trap 'scripts/cluster.sh down' EXIT
  scripts/cluster.sh up
fi

# shellcheck disable=SC2086
scripts/image.sh $profile

say "installing the chart (image sluice/sluice:$VERSION, never pulled)"
scripts/helm.sh install --set image.pullPolicy=Never --wait --timeout 180s >/dev/null ||
  fail "helm install did not get the controller Ready"

"${K[@]}" delete namespace "$NS" --ignore-not-found --wait --timeout=60s >/dev/null
"${K[@]}" create namespace "$NS" >/dev/null
# The example names the echo image of this version.
sed "s#sluice/echo:[0-9][^ ]*#sluice/echo:$VERSION#" examples/cluster/echo.yaml |
  "${K[@]}" apply -n "$NS" -f - >/dev/null
say "applied examples/cluster/echo.yaml in $NS"

"${K[@]}" -n "$NS" rollout status deployment/echo --timeout=120s >/dev/null || fail "echo Pods not Ready"
"${K[@]}" -n "$NS" wait --for=condition=Accepted gateway/web --timeout=60s >/dev/null ||
  fail "Gateway web not Accepted"
# The controller creates the Deployment when it accepts the Gateway.
until_s=$((SECONDS + 60))
until "${K[@]}" -n "$NS" get deployment web-sluice >/dev/null 2>&1; do
  [ $SECONDS -lt $until_s ] || fail "the controller created no Deployment web-sluice"
  sleep 0.5
done
image=$("${K[@]}" -n "$NS" get deployment web-sluice -o jsonpath='{.spec.template.spec.containers[0].image}')
[ "$image" = "sluice/sluice:$VERSION" ] || fail "gateway Deployment runs image $image, not sluice/sluice:$VERSION"
"${K[@]}" -n "$NS" rollout status deployment/web-sluice --timeout=120s >/dev/null ||
  fail "gateway Pods not Ready"
"${K[@]}" -n "$NS" wait --for=condition=Programmed gateway/web --timeout=60s >/dev/null ||
  fail "Gateway web not Programmed"
addr=$("${K[@]}" -n "$NS" get gateway web -o jsonpath='{.status.addresses[0].value}')
svc_ip=$("${K[@]}" -n "$NS" get service web-sluice -o jsonpath='{.spec.clusterIP}')
[ -n "$addr" ] && [ "$addr" = "$svc_ip" ] || fail "Gateway address '$addr' is not its Service's cluster IP '$svc_ip'"
"${K[@]}" -n "$NS" get gateway web >&2

# get PATH: the body of a 200 answer from the gateway's address, retried (bounded) while the
# Service rules and the gateway's configuration settle.
get() {
  local until=$((SECONDS + 30)) body
  while [ $SECONDS -lt $until ]; do
    if body=$(curl -sf --max-time 2 "http://$addr$1"); then printf '%s' "$body"; return 0; fi
    sleep 0.3
  done
  return 1
}
pod_of() { sed -n 's/.*"pod":"\([^"]*\)".*/\1/p'; }

body=$(get /hello) || fail "no 200 from http://$addr/hello"
[[ "$body" == *'"path":"/hello"'* ]] || fail "unexpected answer: $body"
seen=""
for _ in $(seq 1 40); do
  body=$(get /spread) || fail "no 200 from http://$addr/spread"
  seen="$seen $(printf '%s' "$body" | pod_of)"
  [ "$(echo "$seen" | tr ' ' '\n' | sort -u | grep -c .)" -ge 2 ] && break
done
pods=$(echo "$seen" | tr ' ' '\n' | sort -u | grep -c . || true)
[ "$pods" -ge 2 ] || fail "requests reached only: $(echo "$seen" | tr ' ' '\n' | sort -u | tr '\n' ' ')"
say "requests through $addr reached both echo Pods: $(echo "$seen" | tr ' ' '\n' | sort -u | tr '\n' ' ')"

# A route change is served: only /v2 routes now, everything else is 404.
"${K[@]}" -n "$NS" apply -f - >/dev/null <<EOF
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: echo}
spec:
  parentRefs: [{name: web}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /v2}}]
    backendRefs: [{name: echo, port: 80}]
EOF
until_s=$((SECONDS + 30))
until [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$addr/hello")" = 404 ]; do
  [ $SECONDS -lt $until_s ] || fail "/hello still routed 30 s after the HTTPRoute change"
  sleep 0.2
done
get /v2/x >/dev/null || fail "/v2/x not routed after the HTTPRoute change"
say "the HTTPRoute change is served (/hello 404, /v2/x 200)"

# Kubernetes replaces a deleted gateway Pod; the new one gets its configuration and serves.
old=$("${K[@]}" -n "$NS" get pods -l gateway.networking.k8s.io/gateway-name=web -o jsonpath='{.items[0].metadata.name}')
"${K[@]}" -n "$NS" delete pod "$old" --wait=false >/dev/null
until_s=$((SECONDS + 90))
until [ "$("${K[@]}" -n "$NS" get pods -l gateway.networking.k8s.io/gateway-name=web \
  -o jsonpath='{range .items[*]}{.metadata.name} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' |
  awk -v old="$old" '$1 != old && $2 == "True"' | wc -l)" -ge 1 ]; do
  [ $SECONDS -lt $until_s ] || fail "no Ready gateway Pod replaced $old"
  sleep 0.5
done
"${K[@]}" -n "$NS" wait --for=delete "pod/$old" --timeout=60s >/dev/null || fail "$old did not terminate"
get /v2/after-restart >/dev/null || fail "the replacement gateway Pod does not serve"
say "the replacement gateway Pod serves"

"${K[@]}" delete namespace "$NS" --wait --timeout=90s >/dev/null || fail "namespace $NS not deleted"
say "PASS"
