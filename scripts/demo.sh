#!/usr/bin/env bash
# README command one: install what is needed, then run the demo (a lab of network namespaces, the
# enforcer inline in it with the built-in lab policy, a mix of allowed and denied traffic, teardown).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "demo: run as root (it creates network namespaces)" >&2; exit 2; }
bash scripts/setup.sh
exec .venv/bin/enforcer demo "$@"
