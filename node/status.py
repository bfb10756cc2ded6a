"""`enforcer status` and `enforcer top`: live counters from the supervisor's status endpoint."""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from typing import Any

from node.config import load_config

# Counters shown per child by `top` (all are in `status --json`).
SHOWN = ("packets", "verdict.allow", "verdict.pass", "verdict.reset", "verdict.drop", "inspect.sent",
         "flows.active", "inflight", "worker.verdict_timeout", "worker.unavailable")  # fmt: skip
MAX_TOP_ROUNDS = 3600


def fetch(addr: str, timeout: float = 2.0) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{addr}/status", timeout=timeout) as resp:
        return dict(json.loads(resp.read()))


def render(status: dict[str, Any], previous: dict[str, Any] | None, interval: float) -> str:
    lines = [f"ready={status['ready']} uptime={status['uptime_s']}s"]
    lines += _netfilter_lines(status)
    before = {c["name"]: c["counters"] for c in (previous or {}).get("children", [])}
    lines.append(
        f"{'child':12s} {'pid':>7s} {'cpu':>3s} {'up':>3s} {'restarts':>8s}  counters (per second when refreshed)"
    )
    for c in status["children"]:
        counters = c["counters"]
        shown = []
        for key in SHOWN:
            if key in counters:
                value = counters[key]
                if previous and key not in ("flows.active", "inflight"):
                    value = round((value - before.get(c["name"], {}).get(key, 0)) / interval)
                shown.append(f"{key}={value}")
        lines.append(f"{c['name']:12s} {c['pid']!s:>7s} {c['cpu']!s:>3s} {'yes' if c['alive'] else 'NO':>3s} "
                     f"{c['restarts']:>8d}  {' '.join(shown)}")  # fmt: skip
    return "\n".join(lines)


def _netfilter_lines(status: dict[str, Any]) -> list[str]:
    """What the supervisor found about our hooks: unseen bridged traffic, jumps it had to put back."""
    nf = status.get("netfilter") or {}
    repairs = (status.get("counters") or {}).get("netfilter.jump_repaired", 0)
    lines = []
    if nf.get("bridges_unfiltered"):
        lines.append(f"WARNING: {nf['bridges_unfiltered']}")
    if repairs:
        lines.append(
            f"netfilter: our jump was put back first {repairs} times; last: {nf.get('last_jump_repair')}"
        )
    return lines


def _addr(args: argparse.Namespace) -> str:
    return str(args.addr or load_config(args.config).metrics.listen)


def _cmd_status(args: argparse.Namespace) -> int:
    try:
        status = fetch(_addr(args))
    except (OSError, urllib.error.URLError) as exc:
        print(f"enforcer: no enforcer answers at {_addr(args)}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(status, indent=2) if args.json else render(status, None, 1.0))
    return 0 if status.get("ready") else 1


def _cmd_top(args: argparse.Namespace) -> int:
    previous = None
    for _ in range(min(args.rounds, MAX_TOP_ROUNDS)):
        try:
            status = fetch(_addr(args))
        except (OSError, urllib.error.URLError) as exc:
            print(f"enforcer: no enforcer answers at {_addr(args)}: {exc}", file=sys.stderr)
            return 1
        print("\033[2J\033[H" + render(status, previous, args.interval), flush=True)
        previous = status
        time.sleep(args.interval)
    return 0


def register(subparsers: Any) -> None:
    for name, func, text in (("status", _cmd_status, "state and counters of the running enforcer"),
                             ("top", _cmd_top, "live counters, refreshed")):  # fmt: skip
        p = subparsers.add_parser(name, help=text)
        p.add_argument("--addr", help="metrics address host:port (default: metrics.listen of the config)")
        p.add_argument("--config", help="TOML file (default: $ENFORCER_CONFIG or the packaged default)")
        if name == "status":
            p.add_argument("--json", action="store_true", help="the whole status as JSON")
        else:
            p.add_argument("--interval", type=float, default=1.0)
            p.add_argument(
                "--rounds", type=int, default=60, help=f"refreshes before exiting (max {MAX_TOP_ROUNDS})"
            )
        p.set_defaults(func=func)
