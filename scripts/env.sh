# shellcheck shell=bash
# Shared by the scripts: installs what a fresh machine lacks and sets the build cache outside
# the clone, so repeated runs are fast and a machine without the cache still works.
set -euo pipefail
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/sluice/target}"
export PATH="$HOME/.cargo/bin:$HOME/go/bin:$PATH"

need_apt=()
command -v cmake >/dev/null || need_apt+=(cmake)   # pingora's zlib-ng build
command -v curl >/dev/null || need_apt+=(curl)
command -v ip >/dev/null || need_apt+=(iproute2)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "installing: ${need_apt[*]}" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null; then
  echo "cargo is required: install Rust with rustup (https://rustup.rs)" >&2
  exit 1
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true

# The chart's appVersion: the tag of the images scripts/image.sh builds and the chart runs.
chart_version() {
  sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' deploy/helm/sluice/Chart.yaml
}
