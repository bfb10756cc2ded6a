"""`enforcer threats list|check|replay`: the threat catalogue, policy validation and detection on captures.

    enforcer threats list [--json]                       the built-in threats, ids, defaults
    enforcer threats check FILE                          validate threat settings and sensors
    enforcer threats replay CAPTURE [--policy FILE] [--json] [--evidence DIR]

FILE is YAML or JSON: either a whole policy (the native format: `version`, `groups`, … `threats`,
`sensors`) or a detection document `{threat_settings: {default: …, groups: …}, sensors: [...]}`.
`replay` runs the capture through the worker's detection core (packet threats, DPI and its hooks) and
prints the threat events (JSON lines with `--json`) and totals; with a whole policy its groups and modes
apply (Protect acts, Discover/Monitor alert), without one every flow is judged in monitor mode and only
sensors without groups apply; `--evidence DIR` writes each event's
packet capture as DIR/<evidence id>.pcap. Exit status 2 for bad input, naming the problem.
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


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _replay(args: argparse.Namespace, out: IO[str]) -> int:
    from node.replay import CaptureError, read_capture
    from node.threats_replay import replay_threats, threat_totals

    policy, tables = _load(args.policy) if args.policy else (compile_threat_policy(1), None)
    evidence_dir = Path(args.evidence) if args.evidence else None
    if evidence_dir is not None and not evidence_dir.is_dir():
        raise InputError(f"--evidence {args.evidence}: not a directory")
    try:
        result = replay_threats(read_capture(args.capture), policy, tables)
    except CaptureError as exc:
        raise InputError(str(exc)) from None
    threats = [e for e in result.events if e.get("type") == "threat"]
    for event in threats:
        if args.json:
            out.write(json.dumps({"kind": "event", **_jsonable(event)}, sort_keys=True) + "\n")
        else:
            flow = event["flow"]
            why = event.get("message") or event.get("detail", "")
            out.write(
                f"threat {event['name']} action={event['action']} count={event.get('count', 1)} "
                f"{flow['src']}:{flow['sport']} -> {flow['dst']}:{flow['dport']} {why}\n"
            )
        evidence = event.get("evidence")
        if evidence_dir is not None and evidence:
            pcap = result.threats.evidence_pcap(str(evidence))
            if pcap is not None:
                (evidence_dir / f"{evidence}.pcap").write_bytes(pcap)
    totals = threat_totals(result.events)
    if args.json:
        out.write(
            json.dumps({"kind": "summary", "threats": totals, "verdicts": dict(result.verdicts)}) + "\n"
        )
    else:
        out.write(f"summary: {sum(result.verdicts.values())} packets, threats: "
                  f"{', '.join(f'{k}={v}' for k, v in totals.items()) or '-'}\n")  # fmt: skip
    return 0


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
    rp = sub.add_parser("replay", help="run threat detection over a pcap/pcapng capture")
    rp.add_argument("capture", help="pcap or pcapng file")
    rp.add_argument(
        "--policy", metavar="FILE", help="policy or detection document (default: built-in defaults)"
    )
    rp.add_argument("--json", action="store_true", help="JSON lines output")
    rp.add_argument("--evidence", metavar="DIR", help="write each event's packet capture into DIR")
    handler: Callable[[argparse.Namespace], int] = _handler
    p.set_defaults(func=handler)
