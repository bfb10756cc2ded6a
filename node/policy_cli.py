"""`enforcer policy check FILE` and `enforcer policy import CRD.yaml`."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from policy.crd import CrdError, convert_crds
from policy.loader import MAX_POLICY_FILE_BYTES, dump_policy, load_policy, parse_policy, yaml_load_all
from policy.model import PolicyError, PolicySnapshot, mode_name


def summary(snapshot: PolicySnapshot) -> str:
    modes = Counter(mode_name(g.mode) for g in snapshot.groups)
    app_rules = sum(1 for r in snapshot.rules if r.applications)
    host_rules = sum(1 for r in snapshot.rules if r.hosts)
    actions = Counter(r.action.value for r in snapshot.rules)
    cidrs = sum(len(g.cidrs) for g in snapshot.groups)
    lines = [
        f"policy version {snapshot.version}: valid",
        f"  groups: {len(snapshot.groups)} ("
        + ", ".join(f"{n} {m}" for m, n in sorted(modes.items()))
        + f"), {cidrs} CIDRs, {sum(len(g.selectors) for g in snapshot.groups)} label selectors, "
        f"{sum(len(g.fqdns) for g in snapshot.groups)} FQDN patterns",
        f"  rules: {len(snapshot.rules)} ({actions.get('allow', 0)} allow, {actions.get('deny', 0)} deny, "
        f"{app_rules} need the application, {host_rules} name hosts)",
        f"  default mode: {mode_name(snapshot.default_mode)}",
        f"  process profiles: {len(snapshot.process_profiles)}, file rules: {len(snapshot.file_rules)}, "
        f"sensors: {len(snapshot.sensors)}, threat settings: {len(snapshot.threats)}",
    ]
    return "\n".join(lines) + "\n"


def _cmd_check(args: argparse.Namespace) -> int:
    try:
        snapshot = load_policy(args.file)
    except PolicyError as exc:
        print(f"enforcer policy check: {exc}", file=sys.stderr)
        return 2
    from node.policy_document import derive_document, document_problem

    problem = document_problem(derive_document(snapshot))  # what the policy process checks before it applies
    if problem:
        print(f"enforcer policy check: {args.file}: {problem}", file=sys.stderr)
        return 2
    sys.stdout.write(summary(snapshot))
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        data = path.read_bytes()
        if len(data) > MAX_POLICY_FILE_BYTES:
            raise PolicyError(f"larger than {MAX_POLICY_FILE_BYTES} bytes")
        docs: list[Any] = yaml_load_all(data)
        native, warnings = convert_crds(docs, version=args.version)
        if args.default_mode:
            native["default_mode"] = args.default_mode
        snapshot = parse_policy(native)
    except OSError as exc:
        print(f"enforcer policy import: {path}: cannot read: {exc.strerror}", file=sys.stderr)
        return 2
    except yaml.YAMLError as exc:
        print(f"enforcer policy import: {path}: not valid YAML: {exc}", file=sys.stderr)
        return 2
    except (CrdError, PolicyError) as exc:
        print(f"enforcer policy import: {path}: {exc}", file=sys.stderr)
        return 2
    for w in warnings:
        print(f"enforcer policy import: warning: {w}", file=sys.stderr)
    text = f"# Imported from {path.name} by `enforcer policy import`\n" + dump_policy(snapshot)
    if args.output and args.output != "-":
        Path(args.output).write_text(text)
        sys.stderr.write(summary(snapshot))
    else:
        sys.stdout.write(text)
    return 0


def register(subparsers: Any) -> None:
    """Add `enforcer policy check|import` to the `enforcer` command."""
    p = subparsers.add_parser("policy", help="validate and convert policies")
    sub = p.add_subparsers(dest="policy_command", required=True, metavar="ACTION")
    check = sub.add_parser("check", help="validate a native policy file and print a summary")
    check.add_argument("file")
    check.set_defaults(func=_cmd_check)
    imp = sub.add_parser(
        "import", help="convert NeuVector NvSecurityRule/NvClusterSecurityRule YAML to native"
    )
    imp.add_argument("file", help="CRD export (one or more documents, or a List)")
    imp.add_argument("-o", "--output", help="write the native policy here (default stdout)")
    imp.add_argument("--version", type=int, default=1, help="version of the produced policy (default 1)")
    imp.add_argument("--default-mode", choices=["discover", "monitor", "protect"])
    imp.set_defaults(func=_cmd_import)
