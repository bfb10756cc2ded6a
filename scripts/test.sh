#!/usr/bin/env bash
# README command two: install what is needed, lint and type-check, then run every test.
# Integration tests need root (network namespaces, iptables inside them); they never touch the
# machine's root network namespace.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/mypy
.venv/bin/lint-imports --no-cache
.venv/bin/python scripts/count_tests.py --no-collect  # a test that checks nothing fails the build
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
