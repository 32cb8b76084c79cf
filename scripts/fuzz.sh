#!/usr/bin/env bash
# Fuzzes the ClientHello reader (crates/tls-peek) with libFuzzer through cargo-fuzz.
#
#   scripts/fuzz.sh [SECONDS]     (default 60)
#
# Needs a nightly toolchain (`rustup toolchain list`); installs cargo-fuzz from crates.io when
# missing. The corpus grows in ~/.cache/sluice/fuzz/corpus, seeded with real rustls
# ClientHellos (whole and fragmented; the crate's ignored test write_fuzz_seeds); crashes land in
# crates/tls-peek/fuzz/artifacts/ (not committed). The test command runs the same checks on
# stable as deterministic tests (crates/tls-peek/tests), not this fuzzer.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
seconds="${1:-60}"
rustup toolchain list | grep -q '^nightly' ||
  { echo "fuzzing needs a nightly toolchain (rustup toolchain install nightly)" >&2; exit 1; }
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
corpus="$HOME/.cache/sluice/fuzz/corpus/peek"
mkdir -p "$corpus"
# Real ClientHellos (rustls) as seeds, so the fuzzer starts from whole handshakes.
SLUICE_FUZZ_SEEDS="$corpus" cargo test -q -p sluice-tls-peek --test client_hello -- \
  --ignored write_fuzz_seeds >/dev/null
export CARGO_TARGET_DIR="$HOME/.cache/sluice/fuzz/target"
cd crates/tls-peek
cargo +nightly fuzz run peek "$corpus" -- -max_total_time="$seconds" -max_len=20000
