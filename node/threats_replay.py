"""The worker's threat-detection core alone over a packet capture (detector benchmarks and tests).

`replay_threats(packets, policy)` runs (time, IP packet) pairs through `build_engine` (packet-level
threats in front of the DPI engine with the threat hooks), with the capture's timestamps as the clock,
and returns every event emitted (threat events aggregated as in the worker). No reader, guard or kernel
chain: what the node as a whole decides over a capture is `enforcer replay` (`node/replay_run.py`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any, NamedTuple

from core.flow import flow_key
from core.lookup import PolicyTables
from core.packet import decode
from workers.detect.engine import EMPTY_POLICY, ThreatEngine, ThreatPolicy, build_engine

NODE = "replay"
TICK_EVERY = 1.0  # capture seconds between expire()/tick() calls, as a worker's timer would


class ReplayResult(NamedTuple):
    events: list[dict[str, Any]]  # every event emitted, in order
    verdicts: Counter[str]  # packet verdicts by name
    threats: ThreatEngine  # for evidence captures (`threats.evidence_pcap(id)`) and counters


def replay_threats(
    packets: Iterable[tuple[float, bytes]],
    policy: ThreatPolicy = EMPTY_POLICY,
    tables: PolicyTables | None = None,
    dpi_settings: Any = None,
) -> ReplayResult:
    """All events the detection core emits for the capture, the packet verdict counts and the engine."""
    from workers.dpi.settings import DpiSettings

    events: list[dict[str, Any]] = []
    engine = build_engine(dpi_settings or DpiSettings(), tables, events.append, NODE, policy)
    verdicts: Counter[str] = Counter()
    last_tick: float | None = None
    now = 0.0
    for now, ip in packets:
        meta = decode(ip)
        key, direction = flow_key(meta)
        verdict, _rule = engine.on_packet(ip, meta, key, direction, now)
        verdicts[verdict.name] += 1
        if last_tick is None:
            last_tick = now
        elif now - last_tick >= TICK_EVERY:
            engine.expire(now)
            last_tick = now
    engine.expire(now)
    engine.close_all()
    return ReplayResult(events, verdicts, engine.threats)


def threat_totals(events: Iterable[dict[str, Any]]) -> dict[str, int]:
    """Findings per threat name, counting aggregated repeats."""
    totals: Counter[str] = Counter()
    for event in events:
        if event.get("type") == "threat":
            totals[str(event["name"])] += int(event.get("count", 1))
    return dict(sorted(totals.items()))
