#!/bin/bash
# Builds the enforcer's image from the project's Dockerfile and runs it, on a CI machine with no
# container registry: podman, runc and debootstrap from Debian; a locally made bookworm-slim base.
#
# Steps (each timed): install the tools if missing; make the base image (skipped when it is already
# in the storage, KEEP=1 from an earlier run); build with --pull=never (no registry is ever asked);
# check the image (version label = package version = `enforcer --version`, no compiler, size);
# run it in a throwaway lab's node namespace with exactly the DaemonSet's capabilities, where it must
# let an allowed TCP connection through and block a denied one (container-lab.py).
#
# Environment:
#   KEEP=1            keep the podman storage and work directory (a second run is then warm)
#   WORK=DIR          work directory (default /var/tmp/enforcer-container-ci)
#   SKIP_INSTALL=1    do not apt-get install podman/runc/debootstrap
#   PODMAN_DRIVER=vfs storage driver (default overlay)
#   BUILD_TIMEOUT=S   bound of the podman build in seconds (default 1200; debootstrap: DEBOOTSTRAP_TIMEOUT=900)
#   SAVE=FILE         also write the checked image as a docker-archive tarball (for nodes without a
#                     registry: `ctr -n k8s.io images import FILE` or `docker load -i FILE`)
# Exit status: 0 when every step passed, non-zero at the first failure. Leaves no process, network
# namespace or (unless KEEP=1) storage behind.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
WORK=${WORK:-/var/tmp/enforcer-container-ci}
export PODMAN_DIR=$WORK/podman
export PODMAN_DRIVER=${PODMAN_DRIVER:-overlay}
VERSION=$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$REPO/pyproject.toml" | head -n1)
IMAGE=localhost/enforcer:$VERSION
[ -n "$VERSION" ] || { echo "container-test: no version in pyproject.toml" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "container-test: needs root (podman rootful, network namespaces)" >&2; exit 2; }
case $WORK in /*/*/*) ;; *) echo "container-test: WORK must be an absolute path two levels below /, got '$WORK'" >&2; exit 2 ;; esac

had_cache=0; [ -e /var/lib/containers ] && had_cache=1
had_cgroup=0; [ -n "$(find /sys/fs/cgroup -maxdepth 2 -name libpod_parent -print -quit 2>/dev/null)" ] && had_cgroup=1

cleanup() {
  local rc=$?
  set +e
  if [ -z "${KEEP:-}" ]; then
    if command -v podman >/dev/null && [ -n "${CONTAINERS_CONF:-}" ]; then
      podman system reset -f >/dev/null 2>&1
    fi
    rm -rf "$WORK"
    [ "$had_cache" = 1 ] || rm -rf /var/lib/containers
    if [ "$had_cgroup" = 0 ]; then   # runc leaves empty libpod_parent cgroups in each hierarchy
      find /sys/fs/cgroup -maxdepth 2 -type d -name libpod_parent 2>/dev/null | while read -r d; do
        find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null
      done
    fi
  fi
  if [ "$rc" -ne 0 ]; then echo "container-test: FAILED (exit $rc)" >&2; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
step() {
  local name=$1; shift
  local t0=$EPOCHREALTIME
  echo "== $name"
  "$@"
  printf 'TIMING %-36s %6ss\n' "$name" "$(since "$t0")"
}

install_tools() {
  if [ -n "${SKIP_INSTALL:-}" ] || dpkg -s podman runc debootstrap >/dev/null 2>&1; then
    echo "podman, runc, debootstrap already installed"
  else
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends podman runc debootstrap >/dev/null
  fi
  podman --version
}

base_image() {
  if podman image exists localhost/debian:bookworm-slim; then
    echo "base image already in the storage"
  else
    "$HERE/make-base-image.sh" "$WORK/base"
  fi
}

build_image() {
  if ! timeout "${BUILD_TIMEOUT:-1200}" podman build --network=host --pull=never --build-arg "VERSION=$VERSION" \
        -t "$IMAGE" -f "$REPO/Dockerfile" "$REPO" >"$WORK/build.log" 2>&1; then
    tail -n 40 "$WORK/build.log" >&2
    return 1
  fi
  echo "built $IMAGE: $(podman image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.1f MB", $1/1e6}')"
}

check_image() {
  local label reported
  label=$(podman image inspect --format '{{ index .Labels "org.opencontainers.image.version" }}' "$IMAGE")
  reported=$(podman run --rm "$IMAGE" --version | awk '{print $NF}')
  echo "label version: $label, enforcer --version: $reported, package: $VERSION"
  if [ "$label" != "$VERSION" ] || [ "$reported" != "$VERSION" ]; then
    echo "version mismatch" >&2
    return 1
  fi
  # no compiler in the runtime image
  if podman run --rm --entrypoint sh "$IMAGE" -c 'command -v gcc || command -v cc || command -v x86_64-linux-gnu-gcc-12'; then
    echo "runtime image contains a compiler" >&2
    return 1
  fi
  local entry
  entry=$(podman image inspect --format '{{json .Config.Entrypoint}} {{json .Config.Cmd}}' "$IMAGE")
  echo "entrypoint/cmd: $entry"
  if [ "$entry" != '["enforcer"] ["run"]' ]; then
    echo "unexpected entrypoint/cmd" >&2
    return 1
  fi
}

# The capabilities the DaemonSet grants (securityContext.capabilities.add), read from the manifest so
# the container test runs the image with exactly them and fails if they do not suffice.
daemonset_caps() {
  awk '/^ *add:/ { on = 1; next } on && /^ *#/ { next } on && /^ *- / { gsub(/[ "-]/, ""); print; next } on { exit }' \
    "$REPO/deploy/daemonset.yaml"
}

# The image in the lab's node namespace, with the DaemonSet's capabilities, read-only root and
# configuration, enforcing the lab policy on real traffic (see container-lab.py).
run_in_lab() {
  local caps=() c
  for c in $(daemonset_caps); do caps+=(--cap "$c"); done
  [ "${#caps[@]}" -gt 0 ] || { echo "no capabilities found in deploy/daemonset.yaml" >&2; return 1; }
  echo "capabilities: $(daemonset_caps | tr '\n' ' ')"
  (cd "$REPO" && PYTHONPATH="$REPO" timeout 300 python3 "$HERE/container-lab.py" \
     --image "$IMAGE" --prefix "ci$(( $$ % 10000 ))" "${caps[@]}")
  # And as a plain container would run it: its own PID namespace, the enforcer as PID 1.
  (cd "$REPO" && PYTHONPATH="$REPO" timeout 300 python3 "$HERE/container-lab.py" \
     --image "$IMAGE" --prefix "cp$(( $$ % 10000 ))" --pid private "${caps[@]}")
}

echo "container-test: kernel $(uname -r), driver $PODMAN_DRIVER, image $IMAGE"
T0=$EPOCHREALTIME
step "install podman/runc/debootstrap" install_tools
mkdir -p "$WORK"
# shellcheck source=.ci/podman-env.sh
. "$HERE/podman-env.sh"
step "base image"                      base_image
step "podman build"                    build_image
step "check image"                     check_image
step "enforce in the lab (DaemonSet caps)" run_in_lab
if [ -n "${SAVE:-}" ]; then
  step "save image archive" podman save --format docker-archive -o "$SAVE" "$IMAGE"
  echo "saved $SAVE: $(du -h "$SAVE" | cut -f1)"
fi
printf 'TIMING %-36s %6ss\n' TOTAL "$(since "$T0")"
echo "podman storage: $(du -sh "$PODMAN_DIR" | cut -f1)"
