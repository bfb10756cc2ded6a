"""`enforcer replay CAPTURE [--policy FILE] [--config FILE] [--json] [--evidence DIR]`: the node's core
over a packet capture.

Exactly the live decision code (`node/replay_run.py`): our kernel chain, the reader's judge and guard,
the worker engines the flow hash picks, with the node's configuration (`--config`, the environment) and
the policy in `--policy FILE` (default: the start-up policy, `policy.startup`). Only the packet source
(a pcap or pcapng file) and the clock (its timestamps) differ from a running enforcer. Output: one line
per event and per flow and a summary (`node/replay_output.py`); `--evidence DIR` writes the packets behind
each threat event as DIR/<evidence id>.pcap. Exit status 2 for bad input, naming the problem.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

from core.lookup import PolicyTables
from node.config import Config, ConfigError, load_config
from node.replay_capture import CaptureError, read_capture
from node.replay_kernel import Connection
from node.replay_output import Output, flow_record
from node.replay_run import NodeReplay
from workers.detect.engine import ThreatPolicy, threat_policy_from_snapshot

__all__ = [
    "CaptureError",
    "Recorder",
    "load_policy_snapshot",
    "policy_of",
    "read_capture",
    "replay",
    "replay_records",
]


class InputError(Exception):
    """Bad command input: the message names the file and the problem."""


def load_policy_snapshot(path: str | None, config: Config) -> Any:
    """The policy FILE (validated), or the start-up policy the node runs before it has one."""
    from policy.loader import load_policy
    from policy.model import parse_mode, startup_snapshot

    if path is None:
        return startup_snapshot(parse_mode(config.policy.startup), version=1)
    try:
        return load_policy(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot load policy {path!r}: {exc}") from None


def policy_of(snapshot: Any) -> tuple[PolicyTables, ThreatPolicy]:
    """The tables the readers and workers look up, and the workers' threat policy, of one snapshot."""
    from policy.tables import DictTables, compile_policy

    try:
        return DictTables(compile_policy(snapshot)), threat_policy_from_snapshot(snapshot)
    except ValueError as exc:
        raise InputError(f"policy: {exc}") from None


def replay(
    packets: Iterable[tuple[float, bytes]],
    out: IO[str],
    as_json: bool,
    config: Config,
    tables: PolicyTables,
    threat_policy: ThreatPolicy,
    evidence_dir: Path | None = None,
) -> dict[str, Any]:
    """Replay the packets, writing the stream to `out`; the summary."""
    output = Output(out, as_json)
    summary = NodeReplay(config, tables, threat_policy, output, evidence_dir).run(packets)
    output.summary(summary)
    return summary


class Recorder:
    """A sink that keeps the stream's objects (tests, scripts): events and flow records, in order."""

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    def event(self, event: dict[str, Any]) -> None:
        self.lines.append({"kind": "event", **event})

    def flow(self, conn: Connection) -> None:
        self.lines.append(flow_record(conn))


def replay_records(
    packets: Iterable[tuple[float, bytes]],
    config: Config | None = None,
    policy: str | None = None,
    threat_policy: ThreatPolicy | None = None,
) -> list[dict[str, Any]]:
    """The replay's objects (events, flows, then the summary) for a capture; `threat_policy` replaces the
    policy's own threat settings (detection documents)."""
    config = config or load_config(None, environ={})
    tables, own = policy_of(load_policy_snapshot(policy, config))
    recorder = Recorder()
    summary = NodeReplay(config, tables, threat_policy or own, recorder).run(packets)
    return [*recorder.lines, summary]


def _handler(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    stream = out if out is not None else sys.stdout
    try:
        config = load_config(args.config)
        evidence_dir = Path(args.evidence) if args.evidence else None
        if evidence_dir is not None and not evidence_dir.is_dir():
            raise InputError(f"--evidence {args.evidence}: not a directory")
        tables, threat_policy = policy_of(load_policy_snapshot(args.policy, config))
        replay(read_capture(args.capture), stream, args.json, config, tables, threat_policy, evidence_dir)
    except (InputError, CaptureError, ConfigError) as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 2
    return 0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("capture", help="pcap or pcapng file")
    p.add_argument("--policy", metavar="FILE", help="native policy file (default: the start-up policy)")
    p.add_argument("--config", help="TOML file (default: $ENFORCER_CONFIG or the packaged default)")
    p.add_argument("--json", action="store_true", help="JSON lines output")
    p.add_argument("--evidence", metavar="DIR", help="write each threat event's packets into DIR")


def register(subparsers: Any) -> None:
    """Add `replay CAPTURE [--policy FILE] [--config FILE] [--json] [--evidence DIR]` to `enforcer`."""
    p = subparsers.add_parser(
        "replay",
        help="run the node's decisions (reader, guard, workers) over a pcap/pcapng capture",
        description="Replay a capture through the live decision code (kernel chain, reader judge and guard, "
        "DPI and threat workers) with the capture's clock; print each event, each flow's verdict, a summary.",
    )
    add_arguments(p)
    handler: Callable[[argparse.Namespace], int] = _handler
    p.set_defaults(func=handler)
