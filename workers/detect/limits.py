"""Every bound of a worker's threat engine, overridable from the `[detect]` table (`workers.detect.config`)."""

from __future__ import annotations

import dataclasses

from threats.packets import PacketLimits
from workers.detect.evidence import EvidenceLimits


@dataclasses.dataclass(frozen=True, slots=True)
class DetectLimits:
    """Caps of the threat engine's own tables (the packet detector's are in `packet`)."""

    packet: PacketLimits = PacketLimits()
    max_clients: int = 65536  # per-client counters (DNS unusual types, MySQL denials)
    max_flow_groups: int = 65536  # flows whose group/mode is cached on the raw packet path
    max_blocked_sources: int = 16384  # sources blocked by a block-source action
    aggregate_window: float = 5.0  # identical threat events within this are counted, not repeated
    max_aggregate_keys: int = 4096  # distinct threat events held in one aggregation window
    evidence: EvidenceLimits = EvidenceLimits()  # packet rings per flow, snapshotted on findings
    # Hyperscan stream states for packet-context sensors (~0.8 KB each with 2,000 patterns); beyond
    # this, packets are scanned one by one (detect.sensor.streams_full)
    max_sensor_streams: int = 16384
