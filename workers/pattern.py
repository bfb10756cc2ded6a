"""The payload-pattern rule: a flow whose payload carries the configured bytes is blocked.

It sits in front of the DPI engine in the worker (`workers.payload_pattern`), so the lab and the tests
can prove with one byte string that packets really pass through a worker and that a worker's verdict
cuts a connection mid-stream. Everything else goes to the wrapped engine.
"""

from __future__ import annotations

from collections import Counter

from core.flow import Direction, FlowKey
from core.packet import IPPROTO_TCP, PacketMeta
from core.verdict import WorkerVerdict
from workers.engine import Engine


class PatternRule:
    def __init__(self, engine: Engine, pattern: bytes) -> None:
        self.engine = engine
        self.pattern = pattern
        self.blocked = 0

    def on_packet(
        self, packet: bytes, meta: PacketMeta, key: FlowKey, direction: Direction, now: float
    ) -> tuple[WorkerVerdict, int]:
        if self.pattern in packet[meta.payload_offset :]:
            self.blocked += 1
            return (WorkerVerdict.RESET_FLOW if meta.proto == IPPROTO_TCP else WorkerVerdict.BLOCK_FLOW), 0
        verdict, rule = self.engine.on_packet(packet, meta, key, direction, now)
        if verdict is WorkerVerdict.ALLOW_FLOW:
            # Offloading would take the rest of the flow out of the pattern's sight.
            return WorkerVerdict.PASS, rule
        return verdict, rule

    def expire(self, now: float) -> None:
        self.engine.expire(now)

    def stats(self) -> dict[str, int]:
        stats = Counter(self.engine.stats())
        stats["pattern.blocked"] = self.blocked
        return dict(stats)
