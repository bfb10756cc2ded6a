"""The one schema of the events the enforcer reports (DESIGN.md §3).

Every event has `type`, `time` (UNIX seconds, float), `node`, `id` (unique per node: node start time and
a sequence) and the fields of its type. Producers build events with `make_event`, which checks the
type's required fields, so a misspelt field is an error where it is made rather than a hole in the
controller's database. On the wire an event is a plain msgpack map (see `core.messages`).
"""

from __future__ import annotations

import enum
import itertools
import os
import time
from collections.abc import Mapping
from typing import Any


class EventType(enum.StrEnum):
    THREAT = "threat"
    VIOLATION = "violation"
    CONNECTION = "connection"
    PROCESS = "process"
    FILE = "file"
    AUDIT = "audit"


# Required fields per type; producers may add more (documented in the README's event table).
REQUIRED_FIELDS: Mapping[EventType, frozenset[str]] = {
    EventType.THREAT: frozenset({"name", "severity", "action", "flow"}),
    EventType.VIOLATION: frozenset({"rule_id", "flow", "action"}),
    EventType.CONNECTION: frozenset({"client_group", "server_group", "app", "port", "count"}),
    EventType.PROCESS: frozenset({"workload", "path", "action"}),
    EventType.FILE: frozenset({"workload", "path", "action"}),
    EventType.AUDIT: frozenset({"what"}),
}

# Bound on the packet excerpt carried by a threat event, so an event never carries a whole payload.
MAX_EXCERPT_BYTES = 256


class EventError(ValueError):
    """An event that does not follow the schema (a programming error in its producer)."""


_sequence = itertools.count(1)
_boot = f"{os.getpid():x}-{int(time.time()):x}"


def make_event(type_: EventType | str, node: str, now: float | None = None, **fields: Any) -> dict[str, Any]:
    """Build an event dict of `type_`, checking that the type's required fields are present."""
    try:
        etype = EventType(type_)
    except ValueError:
        raise EventError(f"unknown event type {type_!r}") from None
    missing = REQUIRED_FIELDS[etype] - fields.keys()
    if missing:
        raise EventError(f"{etype.value} event lacks {', '.join(sorted(missing))}")
    excerpt = fields.get("excerpt")
    if isinstance(excerpt, bytes | bytearray | memoryview) and len(excerpt) > MAX_EXCERPT_BYTES:
        fields["excerpt"] = bytes(excerpt[:MAX_EXCERPT_BYTES])
    event: dict[str, Any] = {
        "type": etype.value,
        "time": time.time() if now is None else now,
        "node": node,
        "id": f"{_boot}-{next(_sequence)}",
    }
    event.update(fields)
    return event


def flow_fields(family: int, proto: int, src: bytes, sport: int, dst: bytes, dport: int) -> dict[str, Any]:
    """The `flow` field of an event: addresses as text, so the controller need not know the wire form."""
    import ipaddress

    return {
        "family": family,
        "proto": proto,
        "src": str(ipaddress.ip_address(src)),
        "sport": sport,
        "dst": str(ipaddress.ip_address(dst)),
        "dport": dport,
    }


def jsonable(value: Any) -> Any:
    """The `default` hook for json.dumps and msgpack.packb over events: bytes (a threat's packet
    excerpt) as hex, anything else the encoder does not know (an enum, an address) as its text."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    return str(value)
