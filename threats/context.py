"""One packet as the threat checks see it: built once per packet, passed to every check.

The reader's guard and the workers' packet detector both judge a packet with the settings of its
deciding group; the context carries the packet, its flow identity, the time and those settings, so a
check takes one argument instead of six.
"""

from __future__ import annotations

from typing import NamedTuple

from core.flow import Direction, FlowKey
from core.lookup import Mode
from core.packet import PacketMeta
from threats.catalogue import MAX_FINDING_EXCERPT, Finding, Threat
from threats.settings import ThreatSettings


class PacketContext(NamedTuple):
    """A decoded packet and whose threat settings judge it (the deciding group's, in its mode).
    Immutable; a named tuple because one is built for every packet judged (cheaper than a dataclass)."""

    meta: PacketMeta
    packet: bytes  # the IP packet (`meta` offsets index it)
    key: FlowKey
    direction: Direction | None  # None: a first packet judged before its flow exists (the guard)
    now: float
    settings: ThreatSettings
    group: str = ""
    mode: Mode = Mode.MONITOR

    def finding(self, threat: Threat, detail: str, excerpt: bool = True) -> Finding:
        """A finding about this packet; `excerpt` adds its first bytes (the event's evidence)."""
        meta = self.meta
        return Finding(
            threat, self.key, self.direction, meta.src, meta.dst, meta.sport, meta.dport, meta.proto, detail,
            bytes(self.packet[:MAX_FINDING_EXCERPT]) if excerpt else b"",
        )  # fmt: skip
