#!/usr/bin/env bash
# Runs the gateway on examples/quickstart with its three echo backends. Ctrl-C stops all.
# Arguments go to `gateway run`, e.g. `scripts/quickstart.sh --log-level debug`.
cd "$(dirname "$0")/.."
echo "the first build takes about 12-15 minutes on 2 cores; later runs are seconds" >&2
source scripts/env.sh
BIN="$CARGO_TARGET_DIR/debug"

echo "building the gateway and echo binaries into $BIN" >&2
# Cargo's own progress, not hidden: the first build compiles a few hundred crates.
cargo build -p gateway -p conformance --bins

cat >&2 <<MSG

binaries:
  $BIN/gateway
  $BIN/echo
run them from any directory with the wrappers, which rebuild them when the source changed:
  $PWD/scripts/gateway --help
  $PWD/scripts/gateway status --manifests $PWD/examples/quickstart
  $PWD/scripts/echo --listen 127.0.0.1:3004 --service my-app

starting echo backends app-v1, app-v2, app-canary on 127.0.0.1:3001-3003, then
  gateway run --manifests examples/quickstart $*
listeners: 127.0.0.1:8080 (HTTP, Host app.example.com), admin 127.0.0.1:9901. Try:
  curl -s -H 'Host: app.example.com' localhost:8080/hello
Ctrl-C stops the gateway and the backends.

MSG

pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null' EXIT INT TERM
for b in app-v1:3001 app-v2:3002 app-canary:3003; do
  name=${b%%:*}; port=${b##*:}
  "$BIN/echo" --listen "127.0.0.1:$port" --namespace default --service "$name" --pod "$name-0" >/dev/null &
  pids+=($!)
done
"$BIN/gateway" run --manifests examples/quickstart "$@" &
pids+=($!)
wait "${pids[-1]}"
