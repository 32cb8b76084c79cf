#!/usr/bin/env bash
# Runs the gateway on examples/quickstart with its three echo backends. Ctrl-C stops all.
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo build -q -p gateway -p conformance --bins
BIN="$CARGO_TARGET_DIR/debug"
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
