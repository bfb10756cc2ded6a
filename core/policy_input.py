"""Policy inputs (node-internal, -> the policy process): types, the only encode/decode, the endpoint.

What the policy process needs besides the policy itself to resolve group members: the workloads on this
node with their addresses and labels (from the runtime component) and DNS answers seen on the wire (from
the workers' DNS parser) for FQDN groups. Sent as one frame to `policy_input_endpoint`, msgpack array
`[SCHEMA_VERSION, kind, source, items]`, in the envelope of the internal messages (`core.messages`).
`decode_policy_input` raises only `core.messages.MessageError`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import msgpack

from core import anomalies as A
from core.messages import POLICY_INPUT_VERSION as SCHEMA_VERSION
from core.messages import MessageError, envelope, int_field

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
    body = envelope(
        frame, 4, SCHEMA_VERSION,
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
            answers.append((name, _addresses(addrs), int_field(ttl)))
        return DnsAnswers(source, answers)
    except (ValueError, TypeError) as exc:
        raise MessageError(A.MESSAGE_MALFORMED, f"{kind.name}: {exc}") from None


def policy_input_endpoint(run_dir: str) -> str:
    return f"ipc://{run_dir}/policy-input.sock"
