"""`enforcer controller ...`: serve (the reference controller) and its queries (`events`, `nodes`,
`learned`) over the event store, `keys` to make CURVE certificates and `keys add NODE` to enrol one
for a node."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from controller.learned_export import learned_as_crds
from controller.membership import NODE_GRACE_S
from controller.node_keys import EnrolmentError, enrol
from controller.policy_dir import PolicyDirectory
from controller.server import DEFAULT_LISTEN, Controller, run_controller
from controller.store import DEFAULT_DB, EventStore
from core.events import EventType
from policy.keys import generate_keypair
from policy.model import PolicyError


def _since(text: str) -> float:
    """`300` / `300s` / `5m` / `2h` ago, or an absolute UNIX time (> 10^9)."""
    t = text.strip().lower()
    scale = {"s": 1, "m": 60, "h": 3600, "d": 86400}.get(t[-1:], 0)
    value = float(t[:-1] if scale else t)
    if not scale and value > 1e9:
        return value
    return time.time() - value * (scale or 1)


def _cmd_serve(args: argparse.Namespace) -> int:
    for name in ("policy_dir", "secret_key", "clients"):
        if not getattr(args, name):
            print(f"enforcer controller: --{name.replace('_', '-')} is required to serve", file=sys.stderr)
            return 2
    if not Path(args.policy_dir).is_dir():
        print(f"enforcer controller: --policy-dir {args.policy_dir}: not a directory", file=sys.stderr)
        return 2
    try:
        controller = Controller(
            args.policy_dir, args.db, args.secret_key, args.clients, listen=args.listen,
            heartbeat_s=args.heartbeat, watch_interval_s=args.watch, node_grace_s=args.node_grace,
        )  # fmt: skip
    except (OSError, ValueError) as exc:
        print(f"enforcer controller: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s controller %(levelname)s %(message)s")
    return run_controller(controller)


def _db(args: argparse.Namespace) -> EventStore | None:
    path = getattr(args, "sub_db", None) or args.db
    if not Path(path).exists():
        print(f"enforcer controller: database {path} does not exist", file=sys.stderr)
        return None
    return EventStore(path)


def _cmd_events(args: argparse.Namespace) -> int:
    store = _db(args)
    if store is None:
        return 2
    try:
        since = _since(args.since) if args.since else None
    except ValueError:
        print(
            f"enforcer controller events: --since {args.since!r} is not a duration or time", file=sys.stderr
        )
        store.close()
        return 2
    for event in store.events(args.type, since, args.node, args.limit):
        print(json.dumps(event, sort_keys=True))
    store.close()
    return 0


def _cmd_nodes(args: argparse.Namespace) -> int:
    store = _db(args)
    if store is None:
        return 2
    for node in store.nodes():
        print(json.dumps(node, sort_keys=True))
    store.close()
    return 0


def _cmd_learned(args: argparse.Namespace) -> int:
    store = _db(args)
    if store is None:
        return 2
    doc = store.learned_rules()
    store.close()
    if args.crd:
        policy = None
        policy_dir = args.sub_policy_dir or args.policy_dir
        if policy_dir:
            try:
                policy = PolicyDirectory(policy_dir).load()
            except (OSError, PolicyError) as exc:
                print(f"enforcer controller learned: --policy-dir {policy_dir}: {exc}", file=sys.stderr)
                return 2
        try:
            doc, warnings = learned_as_crds(doc, policy)
        except PolicyError as exc:
            print(f"enforcer controller learned: {exc}", file=sys.stderr)
            return 2
        for w in warnings:
            print(f"enforcer controller learned: warning: {w}", file=sys.stderr)
    text = yaml.safe_dump(doc, sort_keys=False, width=110)
    if args.export and args.export != "-":
        Path(args.export).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def _cmd_keys(args: argparse.Namespace) -> int:
    if args.names[0] == "add":
        return _keys_add(args)
    if not args.dir:
        print("enforcer controller keys: --dir is required to make certificates", file=sys.stderr)
        return 2
    for name in args.names:
        try:
            public, secret = generate_keypair(args.dir, name)
        except (OSError, ValueError) as exc:
            print(f"enforcer controller keys: {exc}", file=sys.stderr)
            return 2
        print(f"{public}\n{secret}")
    return 0


def _keys_add(args: argparse.Namespace) -> int:
    """`keys add NODE --key NODE.key --clients DIR`: admit the key and bind it to NODE."""
    if len(args.names) != 2 or not args.clients_dir:
        print("enforcer controller keys add: usage: keys add NODE --clients DIR [--key PUBLIC.key | --dir DIR]",
              file=sys.stderr)  # fmt: skip
        return 2
    node = args.names[1]
    key = args.key or (str(Path(args.dir) / f"{node}.key") if args.dir else "")
    if not key:
        print("enforcer controller keys add: --key (the node's public certificate) or --dir is required",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        path = enrol(args.clients_dir, node, key)
    except (OSError, EnrolmentError) as exc:
        print(f"enforcer controller keys add: {exc}", file=sys.stderr)
        return 2
    print(f"{path}: enrolled for node {node}")
    return 0


def register(subparsers: Any) -> None:
    """Add `enforcer controller ...` to the `enforcer` command."""
    p = subparsers.add_parser("controller", help="reference controller: serve policy, store events")
    p.add_argument("--policy-dir", help="directory of policy YAML files (native and NeuVector CRDs)")
    p.add_argument("--db", default=DEFAULT_DB, help=f"SQLite event store (default {DEFAULT_DB})")
    p.add_argument("--listen", default=DEFAULT_LISTEN, help=f"ZeroMQ endpoint (default {DEFAULT_LISTEN})")
    p.add_argument("--secret-key", help="the controller's CURVE secret certificate (NAME.key_secret)")
    p.add_argument("--clients", help="directory of accepted enforcers' public certificates (*.key)")
    p.add_argument("--heartbeat", type=float, default=2.0, help="heartbeat interval told to enforcers (s)")
    p.add_argument("--watch", type=float, default=1.0, help="policy directory check interval (s)")
    p.add_argument("--node-grace", type=float, default=NODE_GRACE_S,
                   help=f"a disconnected node's workloads are kept this long (s, default {NODE_GRACE_S:.0f})")  # fmt: skip
    p.set_defaults(func=_cmd_serve)
    sub = p.add_subparsers(dest="controller_command", metavar="ACTION")
    ev = sub.add_parser("events", help="print stored events as JSON lines")
    ev.add_argument("--db", dest="sub_db", help="SQLite event store")
    ev.add_argument("--type", choices=[t.value for t in EventType])
    ev.add_argument("--since", help="events newer than this: 300, 5m, 2h, 1d ago, or a UNIX time")
    ev.add_argument("--node")
    ev.add_argument("--limit", type=int, default=1000)
    ev.set_defaults(func=_cmd_events)
    nodes = sub.add_parser("nodes", help="print known enforcers as JSON lines")
    nodes.add_argument("--db", dest="sub_db", help="SQLite event store")
    nodes.set_defaults(func=_cmd_nodes)
    learned = sub.add_parser("learned", help="learned connections as proposed native rules (YAML)")
    learned.add_argument("--db", dest="sub_db", help="SQLite event store")
    learned.add_argument("--export", nargs="?", const="-", default="-", help="write to FILE (default stdout)")
    learned.add_argument("--crd", action="store_true", help="as NeuVector CRDs (NvSecurityRule) instead")
    learned.add_argument(
        "--policy-dir", dest="sub_policy_dir", help="--crd: the served policy, for group criteria"
    )
    learned.set_defaults(func=_cmd_learned)
    keys = sub.add_parser(
        "keys", help="generate CURVE certificates (NAME.key, NAME.key_secret); `keys add NODE`: enrol one"
    )
    keys.add_argument("--dir", help="directory for the certificate files (created 0700)")
    keys.add_argument("names", nargs="+", help="certificate names, e.g. controller node-1; or: add NODE")
    keys.add_argument("--clients", dest="clients_dir", help="add: the controller's clients directory")
    keys.add_argument("--key", help="add: the node's public certificate (default: DIR/NODE.key)")
    keys.set_defaults(func=_cmd_keys)
