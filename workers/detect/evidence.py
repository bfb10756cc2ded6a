"""Evidence: a bounded ring of each flow's last packets, snapshotted into a capture when a threat fires.

`record` keeps the last `packets_per_flow` packets of each recent flow (each cut to `max_packet_bytes`;
the engine records packets that carry payload, so a flood of bare SYNs costs nothing here);
`snapshot` copies a flow's ring into the store of captures under a new evidence id (the threat event
carries the id); `records` returns a stored capture's packets (a live worker sends them to
`enforcer capture --threat ID`), `pcap` the same as a pcap file (`enforcer replay --evidence`). A live
worker sets `id_prefix` so that ids name the worker and its start (`w1-3fa9c2-ev7`): unique on the node,
and an id from before a restart is refused rather than answered with another flow's packets. Every table is
bounded and least-recently-used entries go first, so evidence costs at most
`max_flows × packets_per_flow × max_packet_bytes` plus `max_captures` snapshots of that size.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import deque
from collections.abc import Hashable

from core.pcapfile import Record, pcap_bytes
from threats.window import LruTable


@dataclasses.dataclass(frozen=True, slots=True)
class EvidenceLimits:
    max_flows: int = 2048  # flows whose recent packets are kept
    packets_per_flow: int = 8  # the ring's length
    max_packet_bytes: int = 512  # bytes kept of each packet (headers and the start of the payload)
    max_captures: int = 256  # snapshots kept for retrieval


Ring = deque[Record]  # (time, original length, kept bytes)


class EvidenceStore:
    def __init__(self, limits: EvidenceLimits | None = None) -> None:
        self.limits = lim = limits or EvidenceLimits()
        self._rings: LruTable[Hashable, Ring] = LruTable(lim.max_flows)
        self._captures: LruTable[str, tuple[tuple[float, int, bytes], ...]] = LruTable(lim.max_captures)
        self._ids = itertools.count(1)
        self._last: dict[Hashable, str] = {}  # flow -> its latest snapshot id (bounded with the rings)
        self.id_prefix = ""  # set by a live worker: ids then name the worker and its start

    def record(self, flow: Hashable, now: float, packet: bytes) -> None:
        ring = self._rings.get(flow)
        if ring is None:
            ring = deque(maxlen=self.limits.packets_per_flow)
            self._rings.put(flow, ring)
        ring.append((now, len(packet), bytes(packet[: self.limits.max_packet_bytes])))

    def snapshot(self, flow: Hashable, now: float = 0.0, packet: bytes = b"") -> str:
        """Store the flow's ring, plus `packet` (the offending one) if it is not its last entry, as a
        capture; returns its evidence id ("" if there is nothing). Several findings on the same packet
        share one snapshot."""
        ring = self._rings.get(flow)
        frozen = tuple(ring) if ring else ()
        if packet:
            entry = (now, len(packet), bytes(packet[: self.limits.max_packet_bytes]))
            if not frozen or frozen[-1] != entry:
                frozen += (entry,)
        if not frozen:
            return ""
        last = self._last.get(flow)
        if last is not None and self._captures.get(last) == frozen:
            return last
        evidence_id = f"{self.id_prefix}ev{next(self._ids)}"
        self._captures.put(evidence_id, frozen)
        if len(self._last) >= self.limits.max_flows:
            self._last.pop(next(iter(self._last)))
        self._last[flow] = evidence_id
        return evidence_id

    def records(self, evidence_id: str) -> tuple[Record, ...] | None:
        """The packets of a snapshot, or None if it is unknown or was evicted."""
        return self._captures.get(evidence_id)

    def pcap(self, evidence_id: str) -> bytes | None:
        """The capture of a snapshot as a pcap file, or None if it is unknown or was evicted."""
        packets = self._captures.get(evidence_id)
        return None if packets is None else pcap_bytes(packets)

    def __len__(self) -> int:
        return len(self._captures)

    def flows(self) -> int:
        """Flows whose ring is kept now (at most `max_flows`)."""
        return len(self._rings)
