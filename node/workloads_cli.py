"""`enforcer workloads [--json]`: the node's workloads with identity, addresses and groups.

Two sources, both in the enforcer's private run directory: the runtime child's view of the inventory it
sends the policy process (`workloads.json`: pods from the container runtime with labels, annotations and
containers; other workloads from /proc and cgroups), and the shared policy tables the readers enforce
with, asked which group each address is in under the policy generation in force. So the groups shown
are those the packet path uses, not a second opinion.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
import time
from typing import Any

from node.config import load_config

STALE_AFTER_S = 15.0  # three inventory periods of the runtime child: an older view is not being refreshed
PROTO_TCP = 6


class WorkloadsError(Exception):
    pass


def read_view(run_dir: str) -> dict[str, Any]:
    from node.runtime_child import WORKLOADS_VIEW

    path = os.path.join(run_dir, WORKLOADS_VIEW)
    try:
        with open(path, encoding="utf-8") as f:
            view = json.load(f)
    except FileNotFoundError:
        raise WorkloadsError(
            f"{path} does not exist: is the enforcer (with its runtime monitor) running here?"
        ) from None
    except (OSError, ValueError) as exc:
        raise WorkloadsError(f"{path}: {exc}") from None
    if not isinstance(view, dict) or not isinstance(view.get("workloads"), list):
        raise WorkloadsError(f"{path}: not a workloads view")
    return view


def with_groups(view: dict[str, Any], run_dir: str) -> dict[str, Any]:
    """The view with `groups` per workload (and per address) from the shared tables in force."""
    from policy.layout import TablesError, tables_path
    from policy.table_reader import SharedTables

    try:
        tables = SharedTables(tables_path(run_dir), slot=None, cache=False)
    except (FileNotFoundError, TablesError) as exc:
        raise WorkloadsError(f"policy tables: {exc}") from None
    try:
        version = tables.version()
        for w in view["workloads"]:
            by_address = {}
            for addr in w.get("addresses", []):
                packed = ipaddress.ip_address(addr).packed
                by_address[addr] = tables.decide(0, packed, packed, PROTO_TCP, 0).dst_group
            w["address_groups"] = by_address
            w["groups"] = sorted(set(by_address.values()))
    finally:
        tables.close()
    return {**view, "policy_version": version}


def render(view: dict[str, Any]) -> str:
    cri = view.get("cri") or {}
    source = f"{cri.get('runtime') or 'runtime'} at {cri['socket']}" if cri.get("socket") else "no CRI socket"
    state = "connected" if cri.get("connected") else "not connected"
    lines = [
        f"node {view.get('node')}: {len(view['workloads'])} workloads; CRI: {source} ({state}); policy version {view.get('policy_version')}"
    ]
    for w in view["workloads"]:
        if w.get("source") == "cri":
            title = f"{w['namespace']}/{w['pod']}  (workload {w['workload']}, uid {w['uid']})"
        else:
            title = f"{w['key']}  ({w.get('kind')}, from /proc)"
        lines.append(title)
        lines.append(f"  addresses: {', '.join(w.get('addresses') or []) or '-'}")
        lines.append(f"  groups:    {', '.join(w.get('groups') or []) or '-'}")
        if w.get("source") == "cri":
            labels = ", ".join(f"{k}={v}" for k, v in sorted(w.get("labels", {}).items()))
            lines.append(f"  labels:    {labels or '-'}")
            for c in w.get("containers", []):
                lines.append(f"  container: {c['name']}  {c['image']}  {c['state']}")
    return "\n".join(lines)


def _cmd_workloads(args: argparse.Namespace) -> int:
    run_dir = args.run_dir or load_config(args.config).paths.run_dir
    try:
        view = with_groups(read_view(run_dir), run_dir)
    except WorkloadsError as exc:
        print(f"enforcer workloads: {exc}", file=sys.stderr)
        return 1
    age = time.time() - float(view.get("time") or 0)
    if age > STALE_AFTER_S:
        print(
            f"enforcer workloads: the view is {age:.0f}s old (is the runtime child running?)", file=sys.stderr
        )
    print(json.dumps(view, indent=2, sort_keys=True) if args.json else render(view))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("workloads", help="the node's workloads: pod identity, addresses and groups")
    p.add_argument("--config", help="the enforcer's TOML (for paths.run_dir)")
    p.add_argument("--run-dir", help="the enforcer's run directory (default: paths.run_dir of the config)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_workloads)
