#!/usr/bin/env bash
# Install what the enforcer, its demo and its tests need on Debian 12: system packages (apt) and a
# virtual environment (.venv) with the project installed in it. Idempotent; fast when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

# The attack and client tools (hping3, nmap, tcpdump, curl, dig; dropbear, sshpass and hydra for brute
# force, slowhttptest for slow HTTP; ab from apache2-utils for benign load; iodine, a real DNS tunnel) are
# for the live threat tests; ethtool turns GRO/GSO on in a lab's veths; iperf3 is a compiled load
# generator of scripts/loadtest.py.
# containerd, runc, the CNI plugins and busybox-static (packed into a local OCI image) are the real container
# runtime of the `cri` tests.
APT_PACKAGES=(python3 python3-venv python3-dev gcc libc6-dev iptables iproute2 iputils-ping procps kmod
  hping3 nmap tcpdump curl bind9-dnsutils apache2-utils dropbear-bin sshpass slowhttptest hydra ethtool iperf3 wrk dnsperf iodine
  containerd runc containernetworking-plugins busybox-static)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
if [ ! -f "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e '.[dev]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi

# The compiled request/response and connection-rate generator of scripts/loadtest.py.
if [ ! -x .venv/bin/rrgen ] || [ lab/rrgen.c -nt .venv/bin/rrgen ]; then
  gcc -O2 -Wall -o .venv/bin/rrgen lab/rrgen.c
fi
