"""The replay's one stream: a line per event and per flow, then a summary; JSON lines or readable text.

JSON (`--json`): `{"kind": "event", ...}` (the event as the node sends it: violation, connection, threat
with its excerpt and evidence id, and `evidence_file` when `--evidence DIR` wrote it), `{"kind": "flow",
...}` (5-tuple, application, verdict, rule id, packets and bytes per direction, whether the kernel took the
connection over) and a final `{"kind": "summary", ...}`. The text output renders the same objects.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import socket
from typing import IO, Any

from node.replay_kernel import ACCEPTED, DROPPED, Connection

_PROTO_NAMES = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmp6"}
_BLOCKING_ACTS = frozenset(("block", "reset"))


def _json_default(value: Any) -> Any:
    """What `json` cannot encode itself: bytes as text, enums by name, dataclasses as mappings."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "backslashreplace")
    if isinstance(value, enum.Enum):
        return value.name
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            "type": type(value).__name__,
            **{f.name: getattr(value, f.name) for f in dataclasses.fields(value)},
        }
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def endpoint(addr: bytes, port: int) -> str:
    if len(addr) == 16:
        return f"[{socket.inet_ntop(socket.AF_INET6, addr)}]:{port}"
    return f"{socket.inet_ntop(socket.AF_INET, addr)}:{port}"


def verdict_of(conn: Connection) -> str:
    """allowed, blocked (the connection, in the kernel) or dropped (its last judged packet only)."""
    if conn.mark == DROPPED or conn.act in _BLOCKING_ACTS:
        return "blocked"
    if conn.mark == ACCEPTED or conn.act in ("pass", "allow"):
        return "allowed"
    if conn.act == "drop":
        return "dropped"
    return "blocked" if conn.kernel else "allowed"  # unmarked, yet dropped in the kernel: a source block


def flow_record(conn: Connection) -> dict[str, Any]:
    return {
        "kind": "flow",
        "proto": _PROTO_NAMES.get(conn.key.proto, str(conn.key.proto)),
        "client": endpoint(conn.client, conn.cport),
        "server": endpoint(conn.server, conn.sport),
        "app": conn.app or ("unknown" if conn.worker >= 0 else ""),
        "host": conn.host,
        "sni": conn.sni,
        "server_app": conn.server_app,
        "verdict": verdict_of(conn),
        "acts": dict(sorted(conn.acts.items())),
        "rule_id": conn.worker_rule or conn.rule_id,
        "packets": list(conn.packets),
        "bytes": list(conn.bytes),
        "offloaded": conn.mark != 0,
        "kernel_packets": conn.kernel,
        "worker": conn.worker,
        "first": conn.first,
        "last": conn.last,
    }


class Output:
    """Writes the stream; `flow` and `event` are the replay's sink."""

    def __init__(self, out: IO[str], as_json: bool) -> None:
        self.out = out
        self.as_json = as_json

    def _line(self, obj: dict[str, Any]) -> None:
        self.out.write(json.dumps(obj, sort_keys=True, default=_json_default) + "\n")

    def event(self, event: dict[str, Any]) -> None:
        if self.as_json:
            self._line({"kind": "event", **event})
            return
        flow = event.get("flow") or {}
        where = (
            f" {flow.get('src')}:{flow.get('sport')} -> {flow.get('dst')}:{flow.get('dport')}" if flow else ""
        )
        skip = ("id", "node", "time", "flow", "type", "name", "excerpt")
        fields = " ".join(
            f"{k}={_text(v)}" for k, v in sorted(event.items()) if k not in skip and v not in ("", None)
        )
        name = f" {event['name']}" if "name" in event else ""
        self.out.write(f"event {event.get('type')}{name}{where} {fields}\n")
        if event.get("excerpt"):
            self.out.write(f"  excerpt {_text(event['excerpt'])}\n")

    def flow(self, conn: Connection) -> None:
        rec = flow_record(conn)
        if self.as_json:
            self._line(rec)
            return
        extra = "".join(f" {k}={_text(rec[k])}" for k in ("host", "sni", "server_app") if rec[k])
        acts = ",".join(f"{k}={v}" for k, v in rec["acts"].items()) or "-"
        offload = f" offloaded(kernel={rec['kernel_packets']})" if rec["offloaded"] else ""
        self.out.write(
            f"flow {rec['proto']} {rec['client']} -> {rec['server']} app={rec['app'] or '-'} "
            f"verdict={rec['verdict']} rule={rec['rule_id']} packets={rec['packets'][0]}/{rec['packets'][1]} "
            f"bytes={rec['bytes'][0]}/{rec['bytes'][1]} acts={acts}{offload}{extra}\n"
        )

    def summary(self, summary: dict[str, Any]) -> None:
        if self.as_json:
            self._line(summary)
            return

        def pairs(d: dict[str, Any]) -> str:
            return ", ".join(f"{k}={v}" for k, v in d.items()) or "-"

        self.out.write(
            f"summary: {summary['packets']} packets, {summary['flows']} flows, {summary['events']} events, "
            f"{summary['offloaded']} packets offloaded, {summary['packets_per_s']} packets/s\n"
            f"  verdicts: {pairs(summary['verdicts'])}\n"
            f"  threats: {pairs(summary['threats'])}\n"
        )


def _text(value: Any) -> str:
    """One value as the text output shows it: the JSON rendering, without quotes around plain strings."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return json.dumps(value, sort_keys=True, default=_json_default)
