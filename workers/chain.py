"""The minimal inspection chain: proves the worker path until the DPI engine takes its place.

It follows the DPI engine's interface (`on_packet` → verdict and rule id) so the worker process does
not change when the engine arrives. It decides flows from the L3/L4 policy and blocks a flow whose
payload carries the configured byte pattern (the lab's check that packets really pass through a worker).
"""

from __future__ import annotations

from collections import Counter

from pipeline.flow import Direction, FlowKey
from pipeline.packet import IPPROTO_TCP, PacketMeta
from policy.lookup import Action, PolicyTables
from workers.verdict import WorkerVerdict

# Packets with payload a flow shows the chain before it is finalized; then it is offloaded.
INSPECT_PACKETS = 8
# Flows the chain remembers; the oldest is forgotten beyond this.
MAX_FLOWS = 65536


class MinimalChain:
    def __init__(self, tables: PolicyTables, pattern: bytes = b"") -> None:
        self.tables = tables
        self.pattern = pattern
        # per flow: [client direction, packets with payload seen]
        self._flows: dict[FlowKey, list[int]] = {}
        self.counters: Counter[str] = Counter()

    def on_packet(
        self, packet: bytes, meta: PacketMeta, key: FlowKey, direction: Direction, now: float
    ) -> tuple[WorkerVerdict, int]:
        blocked = WorkerVerdict.RESET_FLOW if meta.proto == IPPROTO_TCP else WorkerVerdict.BLOCK_FLOW
        if self.pattern and self.pattern in packet[meta.payload_offset :]:
            self.counters["chain.pattern_blocked"] += 1
            return blocked, 0
        state = self._flows.get(key)
        if state is None:
            if len(self._flows) >= MAX_FLOWS:
                del self._flows[next(iter(self._flows))]
            state = self._flows[key] = [direction, 0]
        if direction == state[0]:
            decision = self.tables.decide(meta.family, meta.src, meta.dst, meta.proto, meta.dport)
        else:
            decision = self.tables.decide(meta.family, meta.dst, meta.src, meta.proto, meta.sport)
        if decision.action is Action.DENY:
            del self._flows[key]
            return blocked, decision.rule_id
        if meta.payload_len:
            state[1] += 1
        if not self.pattern or state[1] >= INSPECT_PACKETS:
            del self._flows[key]
            return WorkerVerdict.ALLOW_FLOW, decision.rule_id
        return WorkerVerdict.PASS, decision.rule_id

    def expire(self, now: float) -> None:
        pass

    def stats(self) -> dict[str, int]:
        return dict(self.counters)
