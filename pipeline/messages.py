"""Every message that crosses a process boundary: types, schema version, the only encode/decode.

A message is one ZeroMQ frame holding a msgpack array `[SCHEMA_VERSION, type, *fields]`. Packets travel
inside the batch as msgpack bin values (64 small packets per message move far faster than 64 frames).
`decode` never raises anything but `MessageError`, whose `anomaly` names what was wrong, so a receiver
counts and drops a bad message and goes on. No pickle: msgpack only knows plain data.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import msgpack

from pipeline import anomalies as A

SCHEMA_VERSION = 1

# Bounds applied while unpacking, so a hostile or corrupt frame cannot make us allocate much.
MAX_MESSAGE_BYTES = 16 << 20
MAX_BATCH_ITEMS = 4096
MAX_PACKET_BYTES = 65535 + 64
MAX_EVENTS_PER_BATCH = 4096


class MessageType(enum.IntEnum):
    INSPECT = 1  # reader → worker: packets to inspect
    VERDICTS = 2  # worker → reader: verdicts for inspected packets
    EVENTS = 3  # reader/worker/runtime → policy: events to report
    HEARTBEAT = 4  # child → supervisor: liveness and counters


class MessageError(ValueError):
    def __init__(self, anomaly: str, detail: str) -> None:
        super().__init__(f"{anomaly}: {detail}")
        self.anomaly = anomaly


@dataclass(frozen=True, slots=True)
class Inspect:
    """Packets of flows owned by `reader` for one worker; `items` are (ref, IP packet bytes)."""

    reader: int
    items: list[tuple[int, bytes]]


@dataclass(frozen=True, slots=True)
class Verdicts:
    """Answers from `worker`; `items` are (ref, WorkerVerdict value, rule id)."""

    worker: int
    items: list[tuple[int, int, int]]


@dataclass(frozen=True, slots=True)
class Events:
    """Events from a producer (`source` e.g. "worker 1"), dicts made by policy.events.make_event."""

    source: str
    events: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Heartbeat:
    role: str  # "policy", "reader", "worker", "runtime"
    index: int
    pid: int
    counters: dict[str, int]


Message = Inspect | Verdicts | Events | Heartbeat


def encode(msg: Message) -> bytes:
    if isinstance(msg, Inspect):
        body: list[Any] = [SCHEMA_VERSION, MessageType.INSPECT, msg.reader, msg.items]
    elif isinstance(msg, Verdicts):
        body = [SCHEMA_VERSION, MessageType.VERDICTS, msg.worker, msg.items]
    elif isinstance(msg, Events):
        body = [SCHEMA_VERSION, MessageType.EVENTS, msg.source, msg.events]
    elif isinstance(msg, Heartbeat):
        body = [SCHEMA_VERSION, MessageType.HEARTBEAT, msg.role, msg.index, msg.pid, msg.counters]
    else:  # pragma: no cover - a programming error
        raise TypeError(f"not a message: {msg!r}")
    return msgpack.packb(body, use_bin_type=True)


def decode(frame: bytes) -> Message:
    if len(frame) > MAX_MESSAGE_BYTES:
        raise MessageError(A.MESSAGE_MALFORMED, f"{len(frame)} bytes is over the {MAX_MESSAGE_BYTES} limit")
    try:
        body = msgpack.unpackb(
            frame,
            raw=False,
            strict_map_key=True,
            max_bin_len=MAX_PACKET_BYTES,
            max_array_len=max(MAX_BATCH_ITEMS, MAX_EVENTS_PER_BATCH),
            max_str_len=1 << 20,
            max_map_len=1 << 12,
        )
    except Exception as exc:  # msgpack raises several types for bad input
        raise MessageError(A.MESSAGE_MALFORMED, f"not msgpack: {exc}") from None
    if not isinstance(body, list) or len(body) < 2:
        raise MessageError(A.MESSAGE_MALFORMED, "not a message array")
    if body[0] != SCHEMA_VERSION:
        raise MessageError(A.MESSAGE_BAD_VERSION, f"schema version {body[0]!r}, expected {SCHEMA_VERSION}")
    try:
        kind = MessageType(body[1])
    except (ValueError, TypeError):
        raise MessageError(A.MESSAGE_UNKNOWN_TYPE, f"type {body[1]!r}") from None
    try:
        return _DECODERS[kind](body)
    except (ValueError, TypeError, IndexError) as exc:
        raise MessageError(A.MESSAGE_MALFORMED, f"{kind.name}: {exc}") from None


def _int(v: Any) -> int:
    if type(v) is not int:
        raise TypeError(f"expected an integer, got {type(v).__name__}")
    return v


def _decode_inspect(body: list[Any]) -> Inspect:
    _, _, reader, items = body
    out = []
    for ref, packet in items:
        if type(packet) is not bytes:
            raise TypeError("packet is not bytes")
        out.append((_int(ref), packet))
    return Inspect(_int(reader), out)


def _decode_verdicts(body: list[Any]) -> Verdicts:
    _, _, worker, items = body
    return Verdicts(_int(worker), [(_int(r), _int(v), _int(rule)) for r, v, rule in items])


def _decode_events(body: list[Any]) -> Events:
    _, _, source, events = body
    if not isinstance(source, str) or not all(isinstance(e, dict) for e in events):
        raise TypeError("events must be maps")
    return Events(source, events)


def _decode_heartbeat(body: list[Any]) -> Heartbeat:
    _, _, role, index, pid, counters = body
    if not isinstance(role, str) or not isinstance(counters, dict):
        raise TypeError("bad heartbeat")
    return Heartbeat(role, _int(index), _int(pid), {str(k): _int(v) for k, v in counters.items()})


_DECODERS = {
    MessageType.INSPECT: _decode_inspect,
    MessageType.VERDICTS: _decode_verdicts,
    MessageType.EVENTS: _decode_events,
    MessageType.HEARTBEAT: _decode_heartbeat,
}


# Endpoint names inside the runtime directory (created 0700 by the supervisor).
def worker_endpoint(run_dir: str, index: int) -> str:
    return f"ipc://{run_dir}/worker-{index}.sock"


def reader_endpoint(run_dir: str, index: int) -> str:
    return f"ipc://{run_dir}/reader-{index}.sock"


def events_endpoint(run_dir: str) -> str:
    return f"ipc://{run_dir}/events.sock"


def supervisor_endpoint(run_dir: str) -> str:
    return f"ipc://{run_dir}/supervisor.sock"
