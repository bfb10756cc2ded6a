"""The controller protocol (enforcer <-> controller, ZeroMQ DEALER/ROUTER over CURVE): types, protocol
version, bounds, the only encode/decode.

Separate from the node-internal messages (`core.messages`): its own type enum, protocol version and
bounds, because it crosses the network and a policy snapshot is far larger than any internal message. A
message is one or two frames: frame 0 is a msgpack array `[CONTROL_PROTOCOL, type, *fields]`; a policy
snapshot or delta travels as frame 1 (msgpack of the native policy mapping, see
policy.loader.policy_to_dict), so the header stays small and is checked first. `decode_control` raises
only `core.messages.MessageError`, with a `control.*` anomaly.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import msgpack

from core import anomalies as A
from core.messages import MAX_EVENTS_PER_BATCH, MessageError, int_field

CONTROL_PROTOCOL = 1
MAX_CONTROL_HEADER_BYTES = 16 << 20  # an event batch header: 4096 events of a few hundred bytes
MAX_POLICY_BLOB_BYTES = 64 << 20  # a policy of 50,000 rules and 20,000 groups is ~8 MiB
MAX_CONTROL_EVENTS = MAX_EVENTS_PER_BATCH
MAX_CONTROL_STRING = 1 << 16
_POLICY_MAX_ITEMS = 100_000  # any list or map inside a policy snapshot
MAX_EXCERPT_BIN = 4096  # bin values inside a control header (event packet excerpts are <= 256 bytes)


class ControlType(enum.IntEnum):
    HELLO = 1  # enforcer → controller: node, software version, capabilities, applied policy version
    WELCOME = 2  # controller → enforcer: accepted (heartbeat interval) or refused with a reason
    POLICY = 3  # controller → enforcer: a full snapshot (frame 1)
    POLICY_ACK = 4  # enforcer → controller: the version applied, or rejected with reasons
    EVENT_BATCH = 5  # enforcer → controller: sequence number and events
    EVENT_ACK = 6  # controller → enforcer: sequence numbers stored
    HEARTBEAT = 7  # both ways; from the enforcer with node counters
    POLICY_DELTA = 8  # controller → enforcer: changes from `base` to `version` (frame 1; see policy.delta)
    WORKLOADS = 9  # enforcer → controller: its node's workloads (a full report, then deltas; `seq`)
    WORKLOADS_ACK = 10  # controller → enforcer: report `seq` taken, or refused (then a full report is due)
    MEMBERSHIP = 11  # controller → enforcer: other nodes' workloads its groups need (full or delta)
    MEMBERSHIP_ACK = 12  # enforcer → controller: membership `generation` taken, or refused (resync)


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


# Workload reports and membership: bounded per message; more goes in several messages (a full one,
# then deltas), so no message nears the header limit.
MAX_WORKLOADS_PER_MESSAGE = 2048
MAX_WORKLOAD_ADDRESSES = 64  # addresses of one workload (a pod has one or two)
MAX_WORKLOAD_LABELS = 256  # labels of one workload (Kubernetes labels plus our identity keys)
MAX_WORKLOAD_ID = 512  # characters of a workload id


# A node's workload: (id, addresses as 4- or 16-byte strings, labels).
ReportedWorkload = tuple[str, list[bytes], dict[str, str]]
# Another node's workload: (id unique in the cluster, node, addresses, labels).
RemoteWorkload = tuple[str, str, list[bytes], dict[str, str]]


@dataclass(frozen=True, slots=True)
class WorkloadReport:
    seq: int  # consecutive per connection; a full report may start anywhere
    full: bool  # True: the node's complete inventory (anything not listed is gone)
    workloads: list[ReportedWorkload]  # new or changed
    removed: list[str]


@dataclass(frozen=True, slots=True)
class WorkloadReportAck:
    seq: int
    ok: bool  # False: the controller missed a report; send a full one


@dataclass(frozen=True, slots=True)
class Membership:
    generation: int
    base: int  # the generation a delta applies to (0 with `full`)
    full: bool
    workloads: list[RemoteWorkload]  # new or changed
    removed: list[str]


@dataclass(frozen=True, slots=True)
class MembershipAck:
    generation: int
    ok: bool  # False: the delta did not fit what the enforcer holds; send a full membership


ControlMessage = (
    Hello | Welcome | PolicyPush | PolicyDelta | PolicyAck | EventBatch | EventAck | ControlHeartbeat
    | WorkloadReport | WorkloadReportAck | Membership | MembershipAck
)  # fmt: skip


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
    elif isinstance(msg, WorkloadReport):
        items: list[Any] = [list(w) for w in msg.workloads]
        body = [p, ControlType.WORKLOADS, msg.seq, msg.full, items, msg.removed]
    elif isinstance(msg, WorkloadReportAck):
        body = [p, ControlType.WORKLOADS_ACK, msg.seq, msg.ok]
    elif isinstance(msg, Membership):
        items = [list(w) for w in msg.workloads]
        body = [p, ControlType.MEMBERSHIP, msg.generation, msg.base, msg.full, items, msg.removed]
    elif isinstance(msg, MembershipAck):
        body = [p, ControlType.MEMBERSHIP_ACK, msg.generation, msg.ok]
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


def _workload(item: Any) -> ReportedWorkload:
    if not isinstance(item, list) or len(item) != 3:
        raise TypeError("a workload is not [id, addresses, labels]")
    wid, addrs, labels = item
    if type(wid) is not str or not wid or len(wid) > MAX_WORKLOAD_ID:
        raise TypeError("bad workload id")
    if not isinstance(addrs, list) or len(addrs) > MAX_WORKLOAD_ADDRESSES:
        raise TypeError(f"workload {wid!r}: addresses must be a list of at most {MAX_WORKLOAD_ADDRESSES}")
    if not all(type(a) is bytes and len(a) in (4, 16) for a in addrs):
        raise TypeError(f"workload {wid!r}: an address is not 4 or 16 bytes")
    if not isinstance(labels, dict) or len(labels) > MAX_WORKLOAD_LABELS:
        raise TypeError(f"workload {wid!r}: labels must be a map of at most {MAX_WORKLOAD_LABELS}")
    if not all(type(k) is str and type(v) is str for k, v in labels.items()):
        raise TypeError(f"workload {wid!r}: labels must be strings")
    return wid, addrs, labels


def _ids(value: Any) -> list[str]:
    if not isinstance(value, list) or len(value) > MAX_WORKLOADS_PER_MESSAGE:
        raise TypeError("removed must be a bounded list")
    if not all(type(r) is str and len(r) <= MAX_WORKLOAD_ID for r in value):
        raise TypeError("removed ids must be strings")
    return value


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


def _decode_control_body(kind: ControlType, body: list[Any], frames: list[bytes]) -> ControlMessage:
    if kind == ControlType.HELLO:
        _, _, node, version, caps, pver = body
        if not isinstance(caps, list) or not all(type(c) is str for c in caps):
            raise TypeError("capabilities are not strings")
        return Hello(_str_field(node, "node"), _str_field(version, "version"), caps, int_field(pver))
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
        return PolicyPush(int_field(version), policy)
    if kind == ControlType.POLICY_DELTA:
        _, _, base, version = body
        if len(frames[1]) > MAX_POLICY_BLOB_BYTES:
            raise ValueError(f"policy delta of {len(frames[1])} bytes")
        delta = _unpack(frames[1], "policy delta", _POLICY_MAX_ITEMS, 0)
        if not isinstance(delta, dict):
            raise TypeError("policy delta is not a map")
        return PolicyDelta(int_field(base), int_field(version), delta)
    if kind == ControlType.POLICY_ACK:
        _, _, version, ok, reasons = body
        if not isinstance(reasons, list) or not all(type(r) is str for r in reasons):
            raise TypeError("reasons are not strings")
        return PolicyAck(int_field(version), _bool_field(ok, "ok"), reasons)
    if kind == ControlType.EVENT_BATCH:
        _, _, seq, events = body
        if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
            raise TypeError("events must be maps")
        return EventBatch(int_field(seq), events)
    if kind == ControlType.EVENT_ACK:
        _, _, seqs = body
        if not isinstance(seqs, list):
            raise TypeError("seqs is not a list")
        return EventAck([int_field(s) for s in seqs])
    if kind == ControlType.WORKLOADS:
        _, _, seq, full, items, removed = body
        if not isinstance(items, list) or len(items) > MAX_WORKLOADS_PER_MESSAGE:
            raise ValueError("too many workloads")
        reported = [_workload(w) for w in items]
        return WorkloadReport(int_field(seq), _bool_field(full, "full"), reported, _ids(removed))
    if kind == ControlType.WORKLOADS_ACK:
        _, _, seq, ok = body
        return WorkloadReportAck(int_field(seq), _bool_field(ok, "ok"))
    if kind == ControlType.MEMBERSHIP:
        _, _, generation, base, full, items, removed = body
        if not isinstance(items, list) or len(items) > MAX_WORKLOADS_PER_MESSAGE:
            raise ValueError("too many workloads")
        remote = []
        for w in items:
            if not isinstance(w, list) or len(w) != 4:
                raise TypeError("a remote workload is not [id, node, addresses, labels]")
            wid, addrs, labels = _workload([w[0], w[2], w[3]])
            remote.append((wid, _str_field(w[1], "node"), addrs, labels))
        return Membership(
            int_field(generation), int_field(base), _bool_field(full, "full"), remote, _ids(removed)
        )
    if kind == ControlType.MEMBERSHIP_ACK:
        _, _, generation, ok = body
        return MembershipAck(int_field(generation), _bool_field(ok, "ok"))
    _, _, node, counters = body
    if not isinstance(counters, dict):
        raise TypeError("counters is not a map")
    return ControlHeartbeat(_str_field(node, "node"), {str(k): int_field(v) for k, v in counters.items()})
