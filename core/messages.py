"""Every message that crosses a process boundary: types, schema version, the only encode/decode.

A message is one ZeroMQ frame holding a msgpack array `[SCHEMA_VERSION, type, *fields]`. Packets travel
inside the batch as msgpack bin values (64 small packets per message move far faster than 64 frames).
`decode` never raises anything but `MessageError`, whose `anomaly` names what was wrong, so a receiver
counts and drops a bad message and goes on. No pickle: msgpack only knows plain data.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from core import anomalies as A

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
    BLOCK_SOURCES = 5  # reader → supervisor: sources a block-source action cut off, to drop in the kernel


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
    """Events from a producer (`source` e.g. "worker 1"), dicts made by core.events.make_event."""

    source: str
    events: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Heartbeat:
    role: str  # "policy", "reader", "worker", "runtime"
    index: int
    pid: int
    counters: dict[str, int]


@dataclass(frozen=True, slots=True)
class BlockSources:
    """Sources to drop in the kernel: `items` are (raw 4- or 16-byte address, seconds)."""

    source: str
    items: list[tuple[bytes, float]]


MAX_BLOCK_SECONDS = 86400.0  # a block-source action lasts at most a day

Message = Inspect | Verdicts | Events | Heartbeat | BlockSources


def encode(msg: Message) -> bytes:
    if isinstance(msg, Inspect):
        body: list[Any] = [SCHEMA_VERSION, MessageType.INSPECT, msg.reader, msg.items]
    elif isinstance(msg, Verdicts):
        body = [SCHEMA_VERSION, MessageType.VERDICTS, msg.worker, msg.items]
    elif isinstance(msg, Events):
        body = [SCHEMA_VERSION, MessageType.EVENTS, msg.source, msg.events]
    elif isinstance(msg, Heartbeat):
        body = [SCHEMA_VERSION, MessageType.HEARTBEAT, msg.role, msg.index, msg.pid, msg.counters]
    elif isinstance(msg, BlockSources):
        body = [SCHEMA_VERSION, MessageType.BLOCK_SOURCES, msg.source, msg.items]
    else:  # pragma: no cover - a programming error
        raise TypeError(f"not a message: {msg!r}")
    return msgpack.packb(body, use_bin_type=True)


def _envelope(frame: bytes, min_len: int, **limits: int) -> list[Any]:
    """The body array of an internal message: size-checked, unpacked within `limits`, at our schema
    version. Raises MessageError naming what was wrong."""
    if len(frame) > MAX_MESSAGE_BYTES:
        raise MessageError(A.MESSAGE_MALFORMED, f"{len(frame)} bytes is over the {MAX_MESSAGE_BYTES} limit")
    try:
        body = msgpack.unpackb(frame, raw=False, strict_map_key=True, **limits)
    except Exception as exc:  # msgpack raises several types for bad input
        raise MessageError(A.MESSAGE_MALFORMED, f"not msgpack: {exc}") from None
    if not isinstance(body, list) or len(body) < min_len:
        raise MessageError(A.MESSAGE_MALFORMED, "not a message array")
    if body[0] != SCHEMA_VERSION:
        raise MessageError(A.MESSAGE_BAD_VERSION, f"schema version {body[0]!r}, expected {SCHEMA_VERSION}")
    return body


def decode(frame: bytes) -> Message:
    body = _envelope(
        frame, 2,
        max_bin_len=MAX_PACKET_BYTES, max_array_len=max(MAX_BATCH_ITEMS, MAX_EVENTS_PER_BATCH),
        max_str_len=1 << 20, max_map_len=1 << 12,
    )  # fmt: skip
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


def _decode_block_sources(body: list[Any]) -> BlockSources:
    _, _, source, items = body
    if not isinstance(source, str):
        raise TypeError("source is not a string")
    out = []
    for addr, seconds in items:
        if type(addr) is not bytes or len(addr) not in (4, 16):
            raise ValueError("address is not 4 or 16 bytes")
        if type(seconds) not in (int, float) or not 0 < seconds <= MAX_BLOCK_SECONDS:
            raise ValueError(f"block of {seconds!r} seconds")
        out.append((addr, float(seconds)))
    return BlockSources(source, out)


_DECODERS: dict[MessageType, Callable[[list[Any]], Message]] = {
    MessageType.INSPECT: _decode_inspect,
    MessageType.VERDICTS: _decode_verdicts,
    MessageType.EVENTS: _decode_events,
    MessageType.HEARTBEAT: _decode_heartbeat,
    MessageType.BLOCK_SOURCES: _decode_block_sources,
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


# ==== Controller protocol (enforcer ↔ controller, ZeroMQ DEALER/ROUTER over CURVE) ====================
# Owned by the policy package. Separate from the node-internal messages above: its own type enum,
# protocol version and bounds, because it crosses the network and a policy snapshot is far larger than
# any internal message. A message is one or two frames: frame 0 is a msgpack array
# `[CONTROL_PROTOCOL, type, *fields]`; a policy snapshot travels as frame 1 (msgpack of the native
# policy mapping, see policy.loader.policy_to_dict), so the header stays small and is checked first.

CONTROL_PROTOCOL = 1
MAX_CONTROL_HEADER_BYTES = 16 << 20  # an event batch header: 4096 events of a few hundred bytes
MAX_POLICY_BLOB_BYTES = 64 << 20  # a policy of 50,000 rules and 20,000 groups is ~8 MiB
MAX_CONTROL_EVENTS = MAX_EVENTS_PER_BATCH
MAX_CONTROL_STRING = 1 << 16
_POLICY_MAX_ITEMS = 100_000  # any list or map inside a policy snapshot


class ControlType(enum.IntEnum):
    HELLO = 1  # enforcer → controller: node, software version, capabilities, applied policy version
    WELCOME = 2  # controller → enforcer: accepted (heartbeat interval) or refused with a reason
    POLICY = 3  # controller → enforcer: a full snapshot (frame 1)
    POLICY_ACK = 4  # enforcer → controller: the version applied, or rejected with reasons
    EVENT_BATCH = 5  # enforcer → controller: sequence number and events
    EVENT_ACK = 6  # controller → enforcer: sequence numbers stored
    HEARTBEAT = 7  # both ways; from the enforcer with node counters
    POLICY_DELTA = 8  # controller → enforcer: changes from `base` to `version` (frame 1; see policy.delta)


@dataclass(frozen=True, slots=True)
class Hello:
    node: str
    version: str  # software version: components must run the same one
    capabilities: list[str]
    policy_version: int  # the version applied now (0: none)


@dataclass(frozen=True, slots=True)
class Welcome:
    ok: bool
    version: str
    heartbeat_s: float
    reason: str  # why the enforcer is refused (empty when ok)


@dataclass(frozen=True, slots=True)
class PolicyPush:
    version: int
    policy: dict[str, Any]  # the native policy mapping, validated by the receiver


@dataclass(frozen=True, slots=True)
class PolicyDelta:
    base: int  # the version the delta applies to; the enforcer answers a gap with a rejection
    version: int
    delta: dict[str, Any]


@dataclass(frozen=True, slots=True)
class PolicyAck:
    version: int
    ok: bool
    reasons: list[str]


@dataclass(frozen=True, slots=True)
class EventBatch:
    seq: int
    events: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class EventAck:
    seqs: list[int]


@dataclass(frozen=True, slots=True)
class ControlHeartbeat:
    node: str
    counters: dict[str, int]


ControlMessage = (
    Hello | Welcome | PolicyPush | PolicyDelta | PolicyAck | EventBatch | EventAck | ControlHeartbeat
)


def encode_control(msg: ControlMessage) -> list[bytes]:
    """The frames of a controller-protocol message."""
    p = CONTROL_PROTOCOL
    extra: list[bytes] = []
    if isinstance(msg, Hello):
        body: list[Any] = [p, ControlType.HELLO, msg.node, msg.version, msg.capabilities, msg.policy_version]
    elif isinstance(msg, Welcome):
        body = [p, ControlType.WELCOME, msg.ok, msg.version, msg.heartbeat_s, msg.reason]
    elif isinstance(msg, PolicyPush):
        body = [p, ControlType.POLICY, msg.version]
        extra = [msgpack.packb(msg.policy, use_bin_type=True)]
    elif isinstance(msg, PolicyDelta):
        body = [p, ControlType.POLICY_DELTA, msg.base, msg.version]
        extra = [msgpack.packb(msg.delta, use_bin_type=True)]
    elif isinstance(msg, PolicyAck):
        body = [p, ControlType.POLICY_ACK, msg.version, msg.ok, msg.reasons]
    elif isinstance(msg, EventBatch):
        body = [p, ControlType.EVENT_BATCH, msg.seq, msg.events]
    elif isinstance(msg, EventAck):
        body = [p, ControlType.EVENT_ACK, msg.seqs]
    elif isinstance(msg, ControlHeartbeat):
        body = [p, ControlType.HEARTBEAT, msg.node, msg.counters]
    else:  # pragma: no cover - a programming error
        raise TypeError(f"not a control message: {msg!r}")
    return [msgpack.packb(body, use_bin_type=True), *extra]


def _unpack(frame: bytes, what: str, max_items: int, max_bin: int) -> Any:
    try:
        return msgpack.unpackb(
            frame,
            raw=False,
            strict_map_key=True,
            max_bin_len=max_bin,
            max_str_len=MAX_CONTROL_STRING,
            max_array_len=max_items,
            max_map_len=max_items,
            max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises several types for bad input
        raise MessageError(A.CONTROL_MALFORMED, f"{what} is not msgpack: {exc}") from None


def _str_field(v: Any, what: str) -> str:
    if type(v) is not str:
        raise TypeError(f"{what} is not a string")
    return v


def _bool_field(v: Any, what: str) -> bool:
    if type(v) is not bool:
        raise TypeError(f"{what} is not a boolean")
    return v


def decode_control(frames: list[bytes]) -> ControlMessage:
    """Decode a controller-protocol message; raises only MessageError (with a control.* anomaly)."""
    if not frames or len(frames) > 2:
        raise MessageError(A.CONTROL_MALFORMED, f"{len(frames)} frames")
    if len(frames[0]) > MAX_CONTROL_HEADER_BYTES:
        raise MessageError(A.CONTROL_MALFORMED, f"header of {len(frames[0])} bytes")
    body = _unpack(frames[0], "header", MAX_CONTROL_EVENTS, MAX_EXCERPT_BIN)
    if not isinstance(body, list) or len(body) < 2:
        raise MessageError(A.CONTROL_MALFORMED, "not a message array")
    if body[0] != CONTROL_PROTOCOL:
        raise MessageError(A.CONTROL_BAD_VERSION, f"protocol {body[0]!r}, expected {CONTROL_PROTOCOL}")
    try:
        kind = ControlType(body[1])
    except (ValueError, TypeError):
        raise MessageError(A.CONTROL_UNKNOWN_TYPE, f"type {body[1]!r}") from None
    if (kind in (ControlType.POLICY, ControlType.POLICY_DELTA)) != (len(frames) == 2):
        raise MessageError(A.CONTROL_MALFORMED, f"{kind.name} with {len(frames)} frames")
    try:
        return _decode_control_body(kind, body, frames)
    except (ValueError, TypeError, IndexError) as exc:
        raise MessageError(A.CONTROL_MALFORMED, f"{kind.name}: {exc}") from None


MAX_EXCERPT_BIN = 4096  # bin values inside a control header (event packet excerpts are <= 256 bytes)


def _decode_control_body(kind: ControlType, body: list[Any], frames: list[bytes]) -> ControlMessage:
    if kind == ControlType.HELLO:
        _, _, node, version, caps, pver = body
        if not isinstance(caps, list) or not all(type(c) is str for c in caps):
            raise TypeError("capabilities are not strings")
        return Hello(_str_field(node, "node"), _str_field(version, "version"), caps, _int(pver))
    if kind == ControlType.WELCOME:
        _, _, ok, version, hb, reason = body
        if type(hb) not in (int, float) or not 0 < hb < 3600:
            raise ValueError("heartbeat interval out of range")
        return Welcome(
            _bool_field(ok, "ok"), _str_field(version, "version"), float(hb), _str_field(reason, "reason")
        )
    if kind == ControlType.POLICY:
        _, _, version = body
        if len(frames[1]) > MAX_POLICY_BLOB_BYTES:
            raise ValueError(f"policy of {len(frames[1])} bytes")
        policy = _unpack(frames[1], "policy", _POLICY_MAX_ITEMS, 0)
        if not isinstance(policy, dict):
            raise TypeError("policy is not a map")
        return PolicyPush(_int(version), policy)
    if kind == ControlType.POLICY_DELTA:
        _, _, base, version = body
        if len(frames[1]) > MAX_POLICY_BLOB_BYTES:
            raise ValueError(f"policy delta of {len(frames[1])} bytes")
        delta = _unpack(frames[1], "policy delta", _POLICY_MAX_ITEMS, 0)
        if not isinstance(delta, dict):
            raise TypeError("policy delta is not a map")
        return PolicyDelta(_int(base), _int(version), delta)
    if kind == ControlType.POLICY_ACK:
        _, _, version, ok, reasons = body
        if not isinstance(reasons, list) or not all(type(r) is str for r in reasons):
            raise TypeError("reasons are not strings")
        return PolicyAck(_int(version), _bool_field(ok, "ok"), reasons)
    if kind == ControlType.EVENT_BATCH:
        _, _, seq, events = body
        if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
            raise TypeError("events must be maps")
        return EventBatch(_int(seq), events)
    if kind == ControlType.EVENT_ACK:
        _, _, seqs = body
        if not isinstance(seqs, list):
            raise TypeError("seqs is not a list")
        return EventAck([_int(s) for s in seqs])
    _, _, node, counters = body
    if not isinstance(counters, dict):
        raise TypeError("counters is not a map")
    return ControlHeartbeat(_str_field(node, "node"), {str(k): _int(v) for k, v in counters.items()})


# ==== Policy inputs (node-internal, → policy process; owned by the policy package) =====================
# What the policy process needs besides the policy itself to resolve group members: the workloads on
# this node with their addresses and labels (from the runtime component) and DNS answers seen on the
# wire (from the workers' DNS parser) for FQDN groups. Sent as one frame to `policy_input_endpoint`,
# msgpack array `[SCHEMA_VERSION, kind, source, items]`.

MAX_POLICY_INPUT_ITEMS = 4096
MAX_ADDRESSES_PER_ITEM = 64


class PolicyInputType(enum.IntEnum):
    WORKLOADS = 1  # items: [workload id, [address bytes], {label: value}]; plus `full` and `removed`
    DNS_ANSWERS = 2  # items: [name, [address bytes], ttl seconds]


@dataclass(frozen=True, slots=True)
class WorkloadUpdate:
    source: str
    full: bool  # True: the complete inventory (workloads not listed are gone)
    workloads: list[tuple[str, list[bytes], dict[str, str]]]
    removed: list[str]


@dataclass(frozen=True, slots=True)
class DnsAnswers:
    source: str
    answers: list[tuple[str, list[bytes], int]]


PolicyInput = WorkloadUpdate | DnsAnswers


def encode_policy_input(msg: PolicyInput) -> bytes:
    if isinstance(msg, WorkloadUpdate):
        items: list[Any] = [[w, addrs, labels] for w, addrs, labels in msg.workloads]
        body: list[Any] = [
            SCHEMA_VERSION,
            PolicyInputType.WORKLOADS,
            msg.source,
            items,
            msg.full,
            msg.removed,
        ]
    else:
        items = [[name, addrs, ttl] for name, addrs, ttl in msg.answers]
        body = [SCHEMA_VERSION, PolicyInputType.DNS_ANSWERS, msg.source, items]
    return msgpack.packb(body, use_bin_type=True)


def _addresses(value: Any) -> list[bytes]:
    if not isinstance(value, list) or len(value) > MAX_ADDRESSES_PER_ITEM:
        raise TypeError("addresses must be a short list")
    for a in value:
        if type(a) is not bytes or len(a) not in (4, 16):
            raise TypeError("an address is not 4 or 16 bytes")
    return value


def decode_policy_input(frame: bytes) -> PolicyInput:
    """Decode a policy-input frame; raises only MessageError."""
    body = _envelope(
        frame, 4,
        max_bin_len=16, max_str_len=1024, max_array_len=MAX_POLICY_INPUT_ITEMS, max_map_len=256, max_ext_len=0,
    )  # fmt: skip
    try:
        kind = PolicyInputType(body[1])
    except (ValueError, TypeError):
        raise MessageError(A.MESSAGE_UNKNOWN_TYPE, f"policy input type {body[1]!r}") from None
    try:
        source = body[2]
        if type(source) is not str or not isinstance(body[3], list):
            raise TypeError("bad source or items")
        if kind == PolicyInputType.WORKLOADS:
            _, _, _, items, full, removed = body
            workloads = []
            for wid, addrs, labels in items:
                if type(wid) is not str or not isinstance(labels, dict):
                    raise TypeError("bad workload")
                if not all(type(k) is str and type(v) is str for k, v in labels.items()):
                    raise TypeError("labels must be strings")
                workloads.append((wid, _addresses(addrs), labels))
            if (
                type(full) is not bool
                or not isinstance(removed, list)
                or not all(type(r) is str for r in removed)
            ):
                raise TypeError("bad full/removed")
            return WorkloadUpdate(source, full, workloads, removed)
        answers = []
        for name, addrs, ttl in body[3]:
            if type(name) is not str:
                raise TypeError("name is not a string")
            answers.append((name, _addresses(addrs), _int(ttl)))
        return DnsAnswers(source, answers)
    except (ValueError, TypeError) as exc:
        raise MessageError(A.MESSAGE_MALFORMED, f"{kind.name}: {exc}") from None


def policy_input_endpoint(run_dir: str) -> str:
    return f"ipc://{run_dir}/policy-input.sock"
