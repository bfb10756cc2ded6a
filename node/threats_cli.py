"""`enforcer threats list|check|replay`: the threat catalogue, policy validation and detection on captures.

    enforcer threats list [--json]                       the built-in threats, ids, defaults
    enforcer threats check FILE                          validate threat settings and sensors
    enforcer threats replay CAPTURE ...                  deprecated: `enforcer replay` (the same stream)

FILE is YAML or JSON: either a whole policy (the native format: `version`, `groups`, … `threats`,
`sensors`) or a detection document `{threat_settings: {default: …, groups: …}, sensors: [...]}`.
`replay` is kept as an alias of `enforcer replay` (which runs the readers' judge and guard and the
workers over a capture) and prints a deprecation note; with a detection document its threat settings and
sensors apply over the start-up policy. Exit status 2 for bad input, naming the problem.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

from threats.catalogue import THREATS
from workers.detect.engine import ThreatPolicy, compile_threat_policy, threat_policy_from_snapshot

_DETECTION_KEYS = frozenset({"threat_settings", "sensors"})


class InputError(Exception):
    """Bad command input: the message names the file and the problem."""


def load_policy(path: str) -> ThreatPolicy:
    """Compile the detection part of FILE (a whole policy or a detection document)."""
    return _load(path)[0]


def _load(path: str) -> tuple[ThreatPolicy, Any]:
    """The detection policy of FILE, and for a whole policy also its compiled tables (groups, modes)."""
    import yaml

    try:
        text = Path(path).read_text("utf-8")
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from None
    try:
        doc = yaml.safe_load(text)  # JSON is YAML
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: not YAML or JSON: {exc}") from None
    if not isinstance(doc, Mapping):
        raise InputError(f"{path}: expected a mapping at the top")
    try:
        if "version" in doc and "groups" in doc:
            from policy.loader import parse_policy
            from policy.tables import DictTables, compile_policy

            snapshot = parse_policy(doc)
            return threat_policy_from_snapshot(snapshot), DictTables(compile_policy(snapshot))
        unknown = set(doc) - _DETECTION_KEYS
        if unknown:
            raise InputError(
                f"{path}: unknown key {sorted(map(str, unknown))[0]!r} (known: sensors, threat_settings)"
            )
        return compile_threat_policy(1, doc.get("threat_settings"), doc.get("sensors")), None
    except ValueError as exc:  # ThreatSettingsError, SensorError, PolicyError
        raise InputError(f"{path}: {exc}") from None


def _list(args: argparse.Namespace, out: IO[str]) -> int:
    for t in THREATS:
        if args.json:
            row = {
                "id": t.id,
                "name": t.name,
                "severity": str(t.severity),
                "action": str(t.action),
                "enabled": t.enabled,
                "thresholds": dict(t.thresholds),
                "description": t.description,
            }
            out.write(json.dumps(row) + "\n")
        else:
            thresholds = " ".join(f"{k}={v}" for k, v in t.thresholds.items())
            state = "on " if t.enabled else "off"
            out.write(f"{t.id} {t.name:<22} {t.severity:<8} {t.action:<12} {state} {thresholds}\n")
    return 0


def _check(args: argparse.Namespace, out: IO[str]) -> int:
    policy = load_policy(args.file)
    groups = ", ".join(sorted(policy.settings.groups)) or "-"
    rules = sum(len(s.rules) for s in policy.sensors.sensors)
    out.write(
        f"ok: {len(policy.settings.default.on)} threats enabled by default, "
        f"per-group settings for: {groups}; "
        f"{len(policy.sensors.sensors)} sensors, {rules} patterns "
        f"({'Hyperscan' if policy.sensors.hyperscan else 'Python re'})\n"
    )
    for warning in policy.sensors.warnings:
        out.write(f"warning: {warning}\n")
    return 0


def _replay(args: argparse.Namespace, out: IO[str]) -> int:
    """The former `threats replay`: now `enforcer replay`, which runs the whole node (readers' judge and
    guard, workers) over the capture. A detection document still sets the workers' threat policy, over
    the start-up policy's tables."""
    from node.config import load_config
    from node.replay import CaptureError, load_policy_snapshot, policy_of, read_capture, replay

    print(DEPRECATED, file=sys.stderr)
    evidence_dir = Path(args.evidence) if args.evidence else None
    if evidence_dir is not None and not evidence_dir.is_dir():
        raise InputError(f"--evidence {args.evidence}: not a directory")
    config = load_config(None)
    threat_policy, tables = _load(args.policy) if args.policy else (None, None)
    if tables is None:
        tables, own = policy_of(load_policy_snapshot(None, config))
        threat_policy = threat_policy or own
    assert threat_policy is not None
    try:
        replay(read_capture(args.capture), out, args.json, config, tables, threat_policy, evidence_dir)
    except CaptureError as exc:
        raise InputError(str(exc)) from None
    return 0


DEPRECATED = (
    "threats replay: deprecated, use `enforcer replay CAPTURE [--policy FILE] [--json] [--evidence DIR]`"
)


def _handler(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    stream = out if out is not None else sys.stdout
    actions: dict[str, Callable[[argparse.Namespace, IO[str]], int]] = {
        "list": _list,
        "check": _check,
        "replay": _replay,
    }
    try:
        return actions[args.threats_command](args, stream)
    except InputError as exc:
        print(f"threats {args.threats_command}: {exc}", file=sys.stderr)
        return 2


def register(subparsers: Any) -> None:
    """Add `threats list|check|replay` to the `enforcer` command."""
    p = subparsers.add_parser(
        "threats", help="threat catalogue, detection-policy check, detection on captures"
    )
    sub = p.add_subparsers(dest="threats_command", required=True)
    ls = sub.add_parser("list", help="list the built-in threats with ids and defaults")
    ls.add_argument("--json", action="store_true", help="JSON lines output")
    check = sub.add_parser("check", help="validate threat settings and DLP/WAF sensors")
    check.add_argument("file", help="policy or detection document (YAML or JSON)")
    rp = sub.add_parser("replay", help="deprecated: use `enforcer replay`")
    rp.add_argument("capture", help="pcap or pcapng file")
    rp.add_argument(
        "--policy", metavar="FILE", help="policy or detection document (default: built-in defaults)"
    )
    rp.add_argument("--json", action="store_true", help="JSON lines output")
    rp.add_argument("--evidence", metavar="DIR", help="write each event's packet capture into DIR")
    handler: Callable[[argparse.Namespace], int] = _handler
    p.set_defaults(func=handler)
