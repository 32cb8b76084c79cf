#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit and integration tests.
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
