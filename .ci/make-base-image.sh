#!/bin/bash
# Usage: make-base-image.sh WORKDIR [IMAGE]
# Makes the base image the Dockerfile names (debian:bookworm-slim) without any container registry:
# debootstrap a bookworm minbase tree from the machine's own Debian mirror, trim it to the slim
# image's shape, and `podman import` it as localhost/debian:bookworm-slim (also tagged with the
# docker.io name, so a fully qualified FROM resolves locally too). podman-env.sh must be sourced.
#
# CI only: the tree trusts the CAs this machine trusts (HTTPS egress here is TLS-intercepted, which
# pip inside the build must accept). An image built on such a base must never be published.
# CI_TRUST_HOST_CA=0 leaves that out.
set -euo pipefail
WORKDIR=${1:?usage: make-base-image.sh WORKDIR [IMAGE]}
IMAGE=${2:-localhost/debian:bookworm-slim}
HERE=$(cd "$(dirname "$0")" && pwd)
: "${CONTAINERS_STORAGE_CONF:?source podman-env.sh first}"

mirror() {  # first non-security Debian URI of the machine's apt sources
  { grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' || true
    grep -hs '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | awk '{print $2}' || true
  } | grep -v security | head -n1 || true   # a missing sources file is not an error
}

MIRROR=$(mirror)
MIRROR=${MIRROR:-http://deb.debian.org/debian}
R=$WORKDIR/rootfs
rm -rf "$R"
mkdir -p "$WORKDIR"
if ! timeout "${DEBOOTSTRAP_TIMEOUT:-900}" debootstrap --variant=minbase bookworm "$R" "$MIRROR" >"$WORKDIR/debootstrap.log" 2>&1; then
  tail -n 30 "$WORKDIR/debootstrap.log" >&2
  exit 1
fi
echo "base: raw tree $(du -sh "$R" | cut -f1)"
"$HERE/trim-rootfs.sh" "$R"

if [ "${CI_TRUST_HOST_CA:-1}" = 1 ]; then
  mkdir -p "$R/usr/local/share/ca-certificates" "$R/etc/ssl/certs"
  find /usr/local/share/ca-certificates -maxdepth 1 -name '*.crt' -exec cp {} "$R/usr/local/share/ca-certificates/" \;
  if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    cp /etc/ssl/certs/ca-certificates.crt "$R/etc/ssl/certs/ca-certificates.crt"
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' > "$R/etc/pip.conf"
  fi
fi
echo "base: trimmed tree $(du -sh "$R" | cut -f1)"

tar --numeric-owner -C "$R" -c . | podman import --quiet \
  --change 'CMD ["bash"]' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  - "$IMAGE" >/dev/null
podman tag "$IMAGE" docker.io/library/debian:bookworm-slim
rm -rf "$R"
echo "base: image $IMAGE $(podman image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.1f MB", $1/1e6}')"
