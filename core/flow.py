"""Flow identity and the symmetric, seeded flow hash.

A flow is named by a `FlowKey` in canonical order (the lower endpoint first), so both directions of a
connection share one key; `Direction` says which way a packet goes relative to that order. Routing a
flow to a worker uses `flow_hash`, seeded per node and symmetric by construction; never the builtin
`hash()`, which is randomised per process for bytes and would send a flow to different workers from
different processes.
"""

from __future__ import annotations

import enum
import struct
import zlib
from typing import NamedTuple

from core.packet import PacketMeta


class Direction(enum.IntEnum):
    """A packet's direction relative to its FlowKey's canonical order."""

    A_TO_B = 0  # from the lower endpoint (addr_a, port_a) to the higher
    B_TO_A = 1


_A_TO_B, _B_TO_A = Direction.A_TO_B, Direction.B_TO_A


class FlowKey(NamedTuple):
    """A flow's identity, endpoints in canonical (sorted) order. Hashable and immutable."""

    proto: int
    addr_a: bytes
    port_a: int
    addr_b: bytes
    port_b: int

    def to_bytes(self) -> bytes:
        return _KEY_HEAD.pack(self.proto, self.port_a, self.port_b) + self.addr_a + self.addr_b


_KEY_HEAD = struct.Struct("!BHH")
_key = tuple.__new__  # builds a FlowKey without the NamedTuple's Python-level __new__ (one per packet)


def flow_key(meta: PacketMeta) -> tuple[FlowKey, Direction]:
    """The canonical key of the packet's flow and the packet's direction in it."""
    src, dst = meta.src, meta.dst
    sport, dport = meta.sport, meta.dport
    # (src, sport) <= (dst, dport), without building the two tuples
    if src < dst or (src == dst and sport <= dport):
        return _key(FlowKey, (meta.proto, src, sport, dst, dport)), _A_TO_B
    return _key(FlowKey, (meta.proto, dst, dport, src, sport)), _B_TO_A


def flow_hash(key: FlowKey, seed: int) -> int:
    """A 32-bit hash of the flow, the same for both directions (the key is canonical) and every process
    that shares `seed`."""
    return zlib.crc32(key.to_bytes(), seed & 0xFFFFFFFF)


def worker_for(key: FlowKey, seed: int, workers: int) -> int:
    """The index of the worker that owns `key`'s flow."""
    return flow_hash(key, seed) % workers
