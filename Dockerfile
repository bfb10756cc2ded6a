# The enforcer's image: a DaemonSet main (`enforcer run`) for every node.
#
# Two stages so the runtime image carries no compiler: the build stage has gcc and the headers
# (for any dependency that PyPI has only as source) and makes a venv in /opt/venv; the runtime
# stage installs only what the enforcer calls at run time and copies the venv in.
# Both stages use the same Debian python3 (3.11 in bookworm), so the venv's interpreter link holds.
#
# Kept within bookworm's buildah (1.28): no heredocs, no COPY --link.
# Build:  podman build -t enforcer:0.1.0 .      (or docker build; .ci/container-test.sh builds and runs it)
# VERSION defaults to the package version (tests/deploy keeps them equal); BASE can pin the base
# image by digest for a release build: --build-arg BASE=debian:bookworm-slim@sha256:...

ARG BASE=debian:bookworm-slim

FROM ${BASE} AS build
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      python3 python3-venv python3-dev gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, from pyproject.toml alone: a change to the code does not refetch them.
COPY pyproject.toml /src/pyproject.toml
RUN python3 -m venv /opt/venv \
 && python3 -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb")); print("\n".join(p["build-system"]["requires"] + p["project"]["dependencies"]))' > /tmp/requirements.txt \
 && /opt/venv/bin/pip install -r /tmp/requirements.txt
COPY . /src
# The package itself, against the dependencies above; pip check fails the build if one is missing.
# pip and setuptools are only needed here: removed from the venv the runtime stage copies. Debug
# symbols of the extension modules go too (uvloop's alone are 12 MB); libraries that wheels bundle
# (*.libs/, rewritten by auditwheel) are left as they are.
RUN /opt/venv/bin/pip install --no-deps --no-build-isolation /src \
 && /opt/venv/bin/pip check \
 && /opt/venv/bin/python -m pip uninstall -y -q setuptools pip \
 && find /opt/venv/lib -type f -name '*.cpython-*.so' -exec strip --strip-unneeded {} + \
 && /opt/venv/bin/python -c 'import msgpack, psutil, uvloop, yaml, zmq' \
 && /opt/venv/bin/enforcer --version

FROM ${BASE}
ENV DEBIAN_FRONTEND=noninteractive
# Run-time needs only: the interpreter, iptables (nft and legacy backends) for our chains,
# iproute2 for namespaces and links, conntrack for operators to inspect connection marks. The NFQUEUE
# binding is our own (pure-Python netlink), so no libnetfilter-queue.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      python3 iptables iproute2 conntrack \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/venv /opt/venv
# The documented default configuration; a DaemonSet mounts its ConfigMap over it.
COPY config/enforcer.toml /etc/enforcer/enforcer.toml
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    ENFORCER_CONFIG=/etc/enforcer/enforcer.toml
# The version last, so a new version does not invalidate the layers above.
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="enforcer" \
      org.opencontainers.image.description="Per-node container security enforcer: inline NFQUEUE data plane with DPI, policy and runtime security" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# Fails the build if the command does not report the version the image is labelled with, or the
# configuration it would start with does not load.
RUN test "$(enforcer --version)" = "enforcer ${VERSION}" \
 && enforcer config check > /dev/null
STOPSIGNAL SIGTERM
ENTRYPOINT ["enforcer"]
CMD ["run"]
