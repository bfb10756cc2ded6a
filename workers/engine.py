"""The worker engine interface: what `workers.worker.Worker` drives and every engine (the detecting DPI
engine, the lab's payload-pattern rule, a replay) offers."""

from __future__ import annotations

from typing import Protocol

from core.flow import Direction, FlowKey
from core.packet import PacketMeta
from core.verdict import WorkerVerdict


class Engine(Protocol):
    def on_packet(
        self, packet: bytes, meta: PacketMeta, key: FlowKey, direction: Direction, now: float
    ) -> tuple[WorkerVerdict, int]: ...

    def expire(self, now: float) -> None: ...

    def stats(self) -> dict[str, int]: ...
