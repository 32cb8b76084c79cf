#!/usr/bin/env bash
# Builds the Sluice images without a container engine and imports them into the local cluster.
#
#   scripts/image.sh [--debug] [--no-load]
#
# sluice/sluice:VERSION   the `gateway` and `controller` binaries (the image deploy/Containerfile
#                         builds with Docker or Podman; the Helm chart runs it)
# sluice/echo:VERSION     the echo backend (conformance/), for the end-to-end test and examples
#
# The binaries are built with cargo (release, or --debug to reuse the test build), stripped, and
# laid into one layer each with the glibc libraries they link (found with ldd), an
# /etc/nsswitch.conf, /etc/passwd with the nonroot user 65532, /tmp and this machine's CA
# bundle (/etc/ssl/certs/ca-certificates.crt, from Debian's ca-certificates); no base image,
# no shell.
# The tool that writes the docker-archive tarballs is deploy/images/mkimage (go-containerregistry).
# The tarballs go to $SLUICE_CLUSTER_CACHE/images/sluice (default ~/.cache/sluice/cluster); when
# the node of scripts/cluster.sh is up they are imported into its containerd (unless --no-load).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh

profile=release
load=yes
for a in "$@"; do
  case "$a" in
    --debug) profile=debug ;;
    --no-load) load=no ;;
    *) echo "usage: $0 [--debug] [--no-load]" >&2; exit 2 ;;
  esac
done

CACHE="${SLUICE_CLUSTER_CACHE:-$HOME/.cache/sluice/cluster}"
TOOLS="$CACHE/bin/tools"
OUT="$CACHE/images/sluice"
STAGE="$OUT/stage"
VERSION=$(chart_version)
[ -n "$VERSION" ] || { echo "no appVersion in deploy/helm/sluice/Chart.yaml" >&2; exit 1; }
say() { printf '[image] %s\n' "$*" >&2; }

if [ ! -x "$TOOLS/mkimage" ] || [ -n "$(find deploy/images/mkimage deploy/images/go.sum -newer "$TOOLS/mkimage" -print -quit)" ]; then
  say "building the image tool (deploy/images/mkimage)"
  mkdir -p "$TOOLS"
  (cd deploy/images && GOMODCACHE="$CACHE/gomod" GOCACHE="$CACHE/gocache" CGO_ENABLED=0 \
    PATH="/usr/local/go/bin:$PATH" go build -trimpath -ldflags "-s -w" -o "$TOOLS/" ./mkimage)
fi

if [ $profile = release ]; then
  say "cargo build (release): gateway, controller, echo"
  cargo build --release -p gateway -p controller -p conformance --bin gateway --bin controller --bin echo
else
  # The test build itself (cargo test --workspace builds these binaries for the integration
  # tests, with the features of the whole workspace): the test command then builds nothing twice.
  say "cargo test --workspace --no-run (the test build): gateway, controller, echo"
  cargo test --workspace --no-run
fi
target="$CARGO_TARGET_DIR/$profile"

rm -rf "$STAGE"
mkdir -p "$STAGE/etc"
printf 'hosts: files dns\n' > "$STAGE/etc/nsswitch.conf"
printf 'root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/:/sbin/nologin\n' > "$STAGE/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$STAGE/etc/group"

# image NAME BINARY...: one image whose entrypoint is the first binary.
image() {
  local tag=$1 entry=$2; shift
  local args=(-o "$OUT/$(basename "${tag%%:*}").tar" -tag "$tag" -user 65532:65532
    -entrypoint "/usr/local/bin/$entry" -dir /tmp:1777
    -file "$STAGE/etc/nsswitch.conf=/etc/nsswitch.conf" -file "$STAGE/etc/passwd=/etc/passwd"
    -file "$STAGE/etc/group=/etc/group")
  local b libs lib
  for b in "$@"; do
    objcopy --strip-debug "$target/$b" "$STAGE/$b"
    args+=(-file "$STAGE/$b=/usr/local/bin/$b:0755")
  done
  # The shared libraries, under the paths the loader looks them up by.
  libs=$(for b in "$@"; do ldd "$STAGE/$b"; done |
    awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}' | sort -u)
  for lib in $libs; do args+=(-file "$lib=$lib:0755"); done
  # The system trust store (TLS origination to public names), as distroless carries it.
  [ -f /etc/ssl/certs/ca-certificates.crt ] &&
    args+=(-file "/etc/ssl/certs/ca-certificates.crt=/etc/ssl/certs/ca-certificates.crt")
  "$TOOLS/mkimage" "${args[@]}"
}

mkdir -p "$OUT"
image "sluice/sluice:$VERSION" gateway controller
image "sluice/echo:$VERSION" echo

if [ $load = yes ]; then
  state=$(scripts/cluster.sh status 2>&1)
  if [[ "$state" == *"containerd: running"* ]]; then
    scripts/cluster.sh load "$OUT/sluice.tar" "$OUT/echo.tar"
  else
    say "the local node is not up: not imported (scripts/cluster.sh load $OUT/sluice.tar $OUT/echo.tar)"
  fi
fi
say "images: $OUT/sluice.tar (sluice/sluice:$VERSION), $OUT/echo.tar (sluice/echo:$VERSION)"
