"""The node's internal messages (between its own processes): types, schema version, the only
encode/decode, the endpoints; and the envelope and field checks the other two protocols share.

The other protocols have their own modules: `core.control` (enforcer <-> controller, over the network)
and `core.policy_input` (workloads and DNS answers -> the policy process).

A message is one ZeroMQ frame holding a msgpack array `[SCHEMA_VERSION, type, *fields]`. Packets travel
inside the batch as msgpack bin values (64 small packets per message move far faster than 64 frames).
`decode` never raises anything but `MessageError`, whose `anomaly` names what was wrong, so a receiver
counts and drops a bad message and goes on. No pickle: msgpack only knows plain data.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

import msgpack

from core import anomalies as A
from core.capture import MAX_CAPTURE_BYTES, MAX_CAPTURE_SECONDS, REPLY_TOKEN

SCHEMA_VERSION = 2  # 2: INSPECT items carry a flags field (NO_VERDICT)
POLICY_INPUT_VERSION = 1  # the policy inputs (`core.policy_input`) share the envelope, at their own version

# Bounds applied while unpacking, so a hostile or corrupt frame cannot make us allocate much.
MAX_MESSAGE_BYTES = 16 << 20
MAX_BATCH_ITEMS = 4096
MAX_PACKET_BYTES = 65535 + 64
MAX_EVENTS_PER_BATCH = 4096

# INSPECT item flags.
NO_VERDICT = 1  # the reader already let the packet through (no payload): the worker learns, never answers
ITEM_FLAGS = NO_VERDICT  # every flag bit defined; any other bit makes the item malformed


class MessageType(enum.IntEnum):
    INSPECT = 1  # reader → worker: packets to inspect
    VERDICTS = 2  # worker → reader: verdicts for inspected packets
    EVENTS = 3  # reader/worker/runtime → policy: events to report
    HEARTBEAT = 4  # child → supervisor: liveness and counters
    BLOCK_SOURCES = 5  # reader → supervisor: sources a block-source action cut off, to drop in the kernel
    EVIDENCE_REQUEST = 6  # `enforcer capture` → worker: the packets of an evidence snapshot
    EVIDENCE_REPLY = 7  # worker → `enforcer capture`: those packets (none: not held)
    CAPTURE_START = 8  # `enforcer capture` → reader: copy matching packets for a while
    CAPTURE_CHUNK = 9  # reader → `enforcer capture`: copied packets; the last one says done


class MessageError(ValueError):
    def __init__(self, anomaly: str, detail: str) -> None:
        super().__init__(f"{anomaly}: {detail}")
        self.anomaly = anomaly


@dataclass(frozen=True, slots=True)
class Inspect:
    """Packets of flows owned by `reader` for one worker; `items` are (ref, IP packet bytes, flags):
    flags `NO_VERDICT` marks a packet the reader has already let through (it carries no payload, so no
    verdict could change), sent for the worker's stream state (sequence numbers, handshake, close)."""

    reader: int
    items: list[tuple[int, bytes, int]]


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

Message: TypeAlias = "Inspect | Verdicts | Events | Heartbeat | BlockSources | CaptureMessage"


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
    elif isinstance(msg, CAPTURE_MESSAGES):
        body = [SCHEMA_VERSION, msg.TYPE, *msg.fields()]
    else:  # pragma: no cover - a programming error
        raise TypeError(f"not a message: {msg!r}")
    return msgpack.packb(body, use_bin_type=True)


def envelope(frame: bytes, min_len: int, version: int = SCHEMA_VERSION, **limits: int) -> list[Any]:
    """The body array of a node-internal frame (messages and policy inputs): size-checked, unpacked
    within `limits`, at `version`. Raises MessageError naming what was wrong."""
    if len(frame) > MAX_MESSAGE_BYTES:
        raise MessageError(A.MESSAGE_MALFORMED, f"{len(frame)} bytes is over the {MAX_MESSAGE_BYTES} limit")
    try:
        body = msgpack.unpackb(frame, raw=False, strict_map_key=True, **limits)
    except Exception as exc:  # msgpack raises several types for bad input
        raise MessageError(A.MESSAGE_MALFORMED, f"not msgpack: {exc}") from None
    if not isinstance(body, list) or len(body) < min_len:
        raise MessageError(A.MESSAGE_MALFORMED, "not a message array")
    if body[0] != version:
        raise MessageError(A.MESSAGE_BAD_VERSION, f"schema version {body[0]!r}, expected {version}")
    return body


def decode(frame: bytes) -> Message:
    body = envelope(
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


def int_field(v: Any) -> int:
    """`v` if it is an integer (not a bool); TypeError otherwise (a decoder turns it into MessageError)."""
    if type(v) is not int:
        raise TypeError(f"expected an integer, got {type(v).__name__}")
    return v


def _decode_inspect(body: list[Any]) -> Inspect:
    _, _, reader, items = body
    out = []
    for ref, packet, flags in items:
        if type(packet) is not bytes:
            raise TypeError("packet is not bytes")
        if int_field(flags) & ~ITEM_FLAGS:
            raise ValueError(f"unknown item flags {flags:#x}")
        out.append((int_field(ref), packet, flags))
    return Inspect(int_field(reader), out)


def _decode_verdicts(body: list[Any]) -> Verdicts:
    _, _, worker, items = body
    answers = [(int_field(r), int_field(v), int_field(rule)) for r, v, rule in items]
    return Verdicts(int_field(worker), answers)


def _decode_events(body: list[Any]) -> Events:
    _, _, source, events = body
    if not isinstance(source, str) or not all(isinstance(e, dict) for e in events):
        raise TypeError("events must be maps")
    return Events(source, events)


def _decode_heartbeat(body: list[Any]) -> Heartbeat:
    _, _, role, index, pid, counters = body
    if not isinstance(role, str) or not isinstance(counters, dict):
        raise TypeError("bad heartbeat")
    counts = {str(k): int_field(v) for k, v in counters.items()}
    return Heartbeat(role, int_field(index), int_field(pid), counts)


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


# ---- capture and evidence (`enforcer capture`) ------------------------------------------------------
# The requester binds a PULL socket `capture-<token>.sock` in the run directory (0700: root only) and
# names only its token; the answering process builds the path itself, so a request cannot point it at
# any other socket. Packets travel as records (UNIX time, original length, bytes).

MAX_RECORDS = 4096  # packet records in one reply or chunk


def capture_reply_endpoint(run_dir: str, token: str) -> str:
    return f"ipc://{run_dir}/capture-{token}.sock"


def _token(v: Any) -> str:
    if not isinstance(v, str) or not REPLY_TOKEN.fullmatch(v):
        raise ValueError("bad reply token")
    return v


def _records(items: Any) -> list[tuple[float, int, bytes]]:
    if not isinstance(items, list) or len(items) > MAX_RECORDS:
        raise ValueError("records are not a bounded list")
    out = []
    for ts, length, data in items:
        if type(ts) not in (int, float) or type(data) is not bytes or int_field(length) < len(data):
            raise ValueError("bad packet record")
        out.append((float(ts), length, data))
    return out


def _str(v: Any, limit: int = 256) -> str:
    if not isinstance(v, str) or len(v) > limit:
        raise ValueError("bad string field")
    return v


@dataclass(frozen=True, slots=True)
class EvidenceRequest:
    """The packets a worker snapshotted under `evidence_id` (the `evidence` field of a threat event)."""

    TYPE = MessageType.EVIDENCE_REQUEST
    reply: str  # token of the requester's reply socket
    evidence_id: str

    def fields(self) -> list[Any]:
        return [self.reply, self.evidence_id]


@dataclass(frozen=True, slots=True)
class EvidenceReply:
    TYPE = MessageType.EVIDENCE_REPLY
    worker: int
    evidence_id: str
    records: list[tuple[float, int, bytes]]  # empty: not held (unknown, evicted, or an earlier run)

    def fields(self) -> list[Any]:
        return [self.worker, self.evidence_id, self.records]


@dataclass(frozen=True, slots=True)
class CaptureStart:
    """Copy packets matching a flow and/or a group for `seconds`, at most `max_bytes` (core.capture)."""

    TYPE = MessageType.CAPTURE_START
    reply: str
    proto: int
    a_addr: bytes
    a_port: int
    b_addr: bytes
    b_port: int
    group: str
    seconds: float
    max_bytes: int

    def fields(self) -> list[Any]:
        return [self.reply, self.proto, self.a_addr, self.a_port, self.b_addr, self.b_port, self.group,
                self.seconds, self.max_bytes]  # fmt: skip


@dataclass(frozen=True, slots=True)
class CaptureChunk:
    """Packets a reader copied; `done` ends its part of the capture, `note` says why it ended early
    (e.g. "busy"), `over_budget` counts matching packets left out once the byte budget was spent."""

    TYPE = MessageType.CAPTURE_CHUNK
    reader: int
    reply: str
    records: list[tuple[float, int, bytes]]
    done: bool
    over_budget: int
    note: str

    def fields(self) -> list[Any]:
        return [self.reader, self.reply, self.records, self.done, self.over_budget, self.note]


CaptureMessage = EvidenceRequest | EvidenceReply | CaptureStart | CaptureChunk
CAPTURE_MESSAGES = (EvidenceRequest, EvidenceReply, CaptureStart, CaptureChunk)


def _decode_evidence_request(body: list[Any]) -> EvidenceRequest:
    _, _, reply, evidence_id = body
    return EvidenceRequest(_token(reply), _str(evidence_id))


def _decode_evidence_reply(body: list[Any]) -> EvidenceReply:
    _, _, worker, evidence_id, records = body
    return EvidenceReply(int_field(worker), _str(evidence_id), _records(records))


def _decode_capture_start(body: list[Any]) -> CaptureStart:
    _, _, reply, proto, a_addr, a_port, b_addr, b_port, group, seconds, max_bytes = body
    if type(a_addr) is not bytes or type(b_addr) is not bytes:
        raise TypeError("addresses are not bytes")
    if type(seconds) not in (int, float) or not 0 < seconds <= MAX_CAPTURE_SECONDS:
        raise ValueError(f"capture of {seconds!r} seconds")
    if not 0 < int_field(max_bytes) <= MAX_CAPTURE_BYTES:
        raise ValueError(f"capture of {max_bytes!r} bytes")
    return CaptureStart(_token(reply), int_field(proto), a_addr, int_field(a_port), b_addr,
                        int_field(b_port), _str(group), float(seconds), max_bytes)  # fmt: skip


def _decode_capture_chunk(body: list[Any]) -> CaptureChunk:
    _, _, reader, reply, records, done, over_budget, note = body
    if type(done) is not bool:
        raise TypeError("done is not a bool")
    return CaptureChunk(int_field(reader), _token(reply), _records(records), done, int_field(over_budget),
                        _str(note))  # fmt: skip


_DECODERS.update({
    MessageType.EVIDENCE_REQUEST: _decode_evidence_request,
    MessageType.EVIDENCE_REPLY: _decode_evidence_reply,
    MessageType.CAPTURE_START: _decode_capture_start,
    MessageType.CAPTURE_CHUNK: _decode_capture_chunk,
})  # fmt: skip
