"""The worker's detecting engine: packet-level threats in front of the DPI engine, whose detector hooks
are the application threats and the DLP/WAF sensors.

`build_engine(...)` wires it (`DetectingEngine(DpiEngine(..., detectors=[threats.detector()]), threats)`)
and keeps the worker's `on_packet/expire/stats` interface (`workers.engine.Engine`). The parts live in
their own modules: `threat_engine` (the raw packet path and the shared state), `hooks` (the DPI hooks),
`policy` (the compiled detection part of a policy generation and the snapshot adapters), `limits`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from core import anomalies as A
from core.flow import Direction, FlowKey
from core.lookup import PolicyTables
from core.packet import PacketMeta
from core.verdict import WorkerVerdict
from workers.detect.hooks import DETECTOR_NAME
from workers.detect.limits import DetectLimits
from workers.detect.policy import (
    EMPTY_POLICY,
    ThreatPolicy,
    compile_threat_policy,
    sensor_documents_from_snapshot,
    threat_document_from_snapshot,
    threat_document_problem,
    threat_documents_from_snapshot,
    threat_policy_from_document,
    threat_policy_from_snapshot,
    threat_policy_problem,
    threat_settings_from_document,
    threat_settings_from_snapshot,
)
from workers.detect.threat_engine import ThreatEngine
from workers.dpi.context import FlowContext
from workers.engine import Engine

__all__ = [
    "DETECTOR_NAME",
    "EMPTY_POLICY",
    "DetectLimits",
    "DetectingEngine",
    "Engine",
    "ThreatEngine",
    "ThreatPolicy",
    "build_engine",
    "compile_threat_policy",
    "sensor_documents_from_snapshot",
    "threat_document_from_snapshot",
    "threat_document_problem",
    "threat_documents_from_snapshot",
    "threat_policy_from_document",
    "threat_policy_from_snapshot",
    "threat_policy_problem",
    "threat_settings_from_document",
    "threat_settings_from_snapshot",
]


class DetectingEngine:
    """A worker engine that runs the packet-level threats on every packet before the inner engine."""

    def __init__(self, inner: Engine, threats: ThreatEngine) -> None:
        self.inner = inner
        self.threats = threats

    def on_packet(
        self, packet: bytes, meta: PacketMeta, key: FlowKey, direction: Direction, now: float
    ) -> tuple[WorkerVerdict, int]:
        try:
            verdict = self.threats.inspect_packet(packet, meta, key, direction, now)
        except Exception:  # a detector bug must not take the packet path down: counted, DPI decides
            self.threats.counters[A.DETECT_EXCEPTION] += 1
            verdict = None
        if verdict is not None and verdict is not WorkerVerdict.PASS:
            return verdict, 0
        return self.inner.on_packet(packet, meta, key, direction, now)

    def expire(self, now: float) -> None:
        self.threats.tick(now)
        self.inner.expire(now)

    def stats(self) -> dict[str, int]:
        """The inner engine's counters, the threat counters (`threats.<name>`) and the detection
        anomalies (table evictions, blocked-source drops) under their catalogue names."""
        out = dict(self.inner.stats())
        out.update(self.threats.stats())
        return out

    def table_fill(self) -> dict[str, int]:
        """Entries in the threat engine's filling tables (live workers report them with their counters)."""
        return self.threats.table_fill()

    def close_all(self) -> None:
        """End every flow of the inner engine (replay end, worker shutdown) and send pending summaries."""
        close = getattr(self.inner, "close_all", None)
        if close is not None:
            close()
        self.threats.aggregator.flush(0.0, force=True)

    def set_tables(self, tables: PolicyTables | None) -> None:
        """New policy tables for both engines (the threat settings stay; see `set_policy`)."""
        if tables is not None:
            self.threats.set_policy(self.threats.policy, tables)
        set_tables = getattr(self.inner, "set_tables", None)
        if set_tables is not None:
            set_tables(tables)

    def set_policy(self, policy: ThreatPolicy, tables: PolicyTables | None = None) -> None:
        """A new policy generation: threat settings and sensors, and the tables for both engines."""
        self.threats.set_policy(policy, tables)
        set_tables = getattr(self.inner, "set_tables", None)
        if tables is not None and set_tables is not None:
            set_tables(tables)


def build_engine(
    dpi_settings: Any,
    tables: PolicyTables | None,
    emit: Callable[[dict[str, Any]], None],
    node: str,
    policy: ThreatPolicy = EMPTY_POLICY,
    limits: DetectLimits | None = None,
    on_event: Callable[[FlowContext, Any], None] | None = None,
    on_flow_end: Callable[[FlowContext], None] | None = None,
    report_l4: bool = False,
    on_fqdn: Callable[[list[tuple[str, bytes, float]]], None] | None = None,
    count_attempts: bool = True,
) -> DetectingEngine:
    """The worker's engine with threat detection: packet-level threats in front of a DpiEngine whose
    detector hooks are the threat engine's. Every event (the DPI engine's too) goes through the threat
    aggregator to `emit`. `count_attempts`: count connection attempts (floods, scans) here too, where no
    reader's guard stands in front (a capture replay); a live worker leaves them to the readers."""
    from workers.dpi.engine import DpiEngine

    threats = ThreatEngine(node, emit, policy, tables, limits, count_attempts)

    def flow_end(ctx: FlowContext) -> None:
        threats.on_flow_end(ctx)
        if on_flow_end is not None:
            on_flow_end(ctx)

    dpi = DpiEngine(
        dpi_settings,
        tables,
        threats.aggregator.emit,
        node,
        detectors=[threats.detector()],
        on_event=on_event,
        on_flow_end=flow_end,
        report_l4=report_l4,
        on_fqdn=on_fqdn,
    )
    return DetectingEngine(dpi, threats)
