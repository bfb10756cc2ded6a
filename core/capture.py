"""On-demand capture inside the enforcer (`enforcer capture --flow/--group`): what to copy, and how much.

Sans-io: a reader offers each queued packet to the capture sessions it holds; a session copies the
packets its filter matches, within its byte budget and until its deadline, and hands them out in chunks
that fit one message. Only packets that reach a reader are seen: a connection the kernel handles after
its verdict (offloaded, or blocked by connmark) is not queued again, so its later packets are not
captured.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from core.packet import PacketMeta
from core.pcapfile import Record

MAX_CAPTURE_SECONDS = 600.0  # longest on-demand capture
MAX_CAPTURE_BYTES = 64 << 20  # most packet bytes one capture copies (per reader)
MAX_SESSIONS = 4  # captures a reader runs at once; more are refused ("busy")
CHUNK_BYTES = 1 << 20  # packet bytes per message sent back (well inside the message bounds)
CHUNK_PACKETS = 1024  # packets per message sent back
RECORD_OVERHEAD = 16  # a pcap record header: counted in the budget so the file stays within it

# The name of the requester's reply socket in the run directory (random hex from the requester).
REPLY_TOKEN = re.compile(r"[0-9a-f]{16,64}")

GroupsOf = Callable[[PacketMeta], tuple[str, str]]  # (group of the source, group of the destination)


@dataclass(frozen=True, slots=True)
class CaptureFilter:
    """What to copy: a flow (either direction; empty address or port 0 matches any) and/or a group
    (a packet whose source or destination is in it)."""

    proto: int = 0  # 0: any protocol
    a_addr: bytes = b""
    a_port: int = 0
    b_addr: bytes = b""
    b_port: int = 0
    group: str = ""

    def problem(self) -> str:
        """Why the filter is unusable ("" if it is fine)."""
        for addr in (self.a_addr, self.b_addr):
            if len(addr) not in (0, 4, 16):
                return "an address is not 4 or 16 bytes"
        if self.a_addr and self.b_addr and len(self.a_addr) != len(self.b_addr):
            return "the two addresses are of different families"
        if not all(0 <= p <= 65535 for p in (self.a_port, self.b_port)) or not 0 <= self.proto <= 255:
            return "a port or the protocol is out of range"
        if len(self.group) > 256:
            return "the group name is too long"
        if not (self.proto or self.a_addr or self.b_addr or self.a_port or self.b_port or self.group):
            return "the filter matches everything"
        return ""

    def matches(self, meta: PacketMeta, groups_of: GroupsOf) -> bool:
        if self.proto and meta.proto != self.proto:
            return False
        if self.a_addr or self.b_addr or self.a_port or self.b_port:
            forward = _end(self.a_addr, self.a_port, meta.src, meta.sport) and _end(
                self.b_addr, self.b_port, meta.dst, meta.dport
            )
            backward = _end(self.a_addr, self.a_port, meta.dst, meta.dport) and _end(
                self.b_addr, self.b_port, meta.src, meta.sport
            )
            if not (forward or backward):
                return False
        return not self.group or self.group in groups_of(meta)


def _end(addr: bytes, port: int, seen_addr: bytes, seen_port: int) -> bool:
    return (not addr or addr == seen_addr) and (not port or port == seen_port)


@dataclass
class CaptureSession:
    """One capture in one reader: copies matching packets until `deadline` (monotonic) or its budget."""

    token: str
    filter: CaptureFilter
    deadline: float
    max_bytes: int
    pending: list[Record] = field(default_factory=list)
    copied_bytes: int = 0
    copied: int = 0
    over_budget: int = 0  # matching packets left out because the budget was spent

    def offer(self, packet: bytes, meta: PacketMeta, wall: float, groups_of: GroupsOf) -> None:
        if not self.filter.matches(meta, groups_of):
            return
        cost = len(packet) + RECORD_OVERHEAD
        if self.copied_bytes + cost > self.max_bytes:
            self.over_budget += 1
            return
        self.copied_bytes += cost
        self.copied += 1
        self.pending.append((wall, len(packet), bytes(packet)))

    def take_chunk(self) -> list[Record]:
        """The oldest pending packets, at most one message's worth."""
        size = n = 0
        for n, (_, _, data) in enumerate(self.pending, 1):
            size += len(data)
            if size >= CHUNK_BYTES or n >= CHUNK_PACKETS:
                break
        chunk, self.pending = self.pending[:n], self.pending[n:]
        return chunk

    def expired(self, now: float) -> bool:
        return now >= self.deadline


REPLY_HWM = 128  # messages queued towards a requester (chunks of at most CHUNK_BYTES)
REPLY_LINGER_MS = 2000  # a closing reply socket still delivers what it queued for this long
