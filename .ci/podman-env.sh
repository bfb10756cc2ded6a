# shellcheck shell=bash
# Source me (bash). Points podman at a private configuration and storage under $PODMAN_DIR, so
# nothing is written to /etc/containers and removing that directory removes every image and layer.
#
# Settings this CI machine class needs (see the container build notes in the project's shared docs):
# - runtime runc: crun refuses the hybrid cgroup v1/v2 layout of these machines;
# - default_ulimits from our own hard limits: root here lacks CAP_SYS_RESOURCE, and podman's default
#   rlimits (nofile 1048576, large nproc) fail with EPERM; podman caps its own nproc at 32768;
# - netns host: no bridge, so nothing is added to the root namespace's firewall or ip_forward.
: "${PODMAN_DIR:?PODMAN_DIR must be set before sourcing podman-env.sh}"
: "${PODMAN_DRIVER:=overlay}"
mkdir -p "$PODMAN_DIR"
_nofile=$(ulimit -Hn)
_nproc=$(ulimit -Hu)
[ "$_nofile" = unlimited ] && _nofile=1048576
if [ "$_nproc" = unlimited ] || [ "$_nproc" -gt 32768 ]; then _nproc=32768; fi
cat > "$PODMAN_DIR/containers.conf" <<CONF
[containers]
netns = "host"
default_ulimits = ["nofile=$_nofile:$_nofile", "nproc=$_nproc:$_nproc"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
cat > "$PODMAN_DIR/storage.conf" <<CONF
[storage]
driver = "$PODMAN_DRIVER"
graphroot = "$PODMAN_DIR/storage"
runroot = "$PODMAN_DIR/run"
CONF
unset _nofile _nproc
export CONTAINERS_CONF="$PODMAN_DIR/containers.conf"
export CONTAINERS_STORAGE_CONF="$PODMAN_DIR/storage.conf"
