"""The worker tables that traffic fills (the soak waits for them): each stops growing at its cap, in
entries and in bytes, and the engine reports how full they are."""

from __future__ import annotations

import dataclasses
import gc
import tracemalloc
from collections.abc import Iterator

import pytest

from core.flow import FlowKey
from workers.detect import injection
from workers.detect.engine import build_engine, compile_threat_policy
from workers.detect.evidence import EvidenceLimits, EvidenceStore
from workers.detect.limits import DetectLimits
from workers.dpi.settings import DpiSettings

from .build import packet
from .test_engine import CLIENT, WEB, StubTables, http_flow

SMALL = EvidenceLimits(max_flows=64, packets_per_flow=4, max_packet_bytes=128, max_captures=16)


def flow(i: int) -> FlowKey:
    return FlowKey(6, bytes([198, 18, i >> 8 & 255, i & 255]), 40000 + i % 20000, bytes([198, 19, 0, 1]), 80)


def packet_of(i: int, size: int = 1500) -> bytes:
    return bytes(size - 1) + bytes([i & 255])


@pytest.fixture
def traced() -> Iterator[None]:
    assert not tracemalloc.is_tracing()
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


def heap() -> int:
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


def fill_rings(store: EvidenceStore, first: int, flows: int) -> None:
    for i in range(first, first + flows):
        for n in range(store.limits.packets_per_flow * 2):  # twice the ring: it keeps the last ones
            store.record(flow(i), float(n), packet_of(i))


def test_rings_stop_at_their_caps_in_flows_packets_and_bytes() -> None:
    store = EvidenceStore(SMALL)
    fill_rings(store, 0, SMALL.max_flows * 3)
    assert store.flows() == SMALL.max_flows
    kept = store._rings.get(flow(SMALL.max_flows * 3 - 1))
    assert kept is not None and len(kept) == SMALL.packets_per_flow
    assert all(len(data) == SMALL.max_packet_bytes and length == 1500 for _t, length, data in kept)
    assert store._rings.get(flow(0)) is None  # the least recently used went first


def test_the_rings_memory_stops_growing_once_full(traced: None) -> None:
    store = EvidenceStore(SMALL)
    empty = heap()
    fill_rings(store, 0, SMALL.max_flows)
    per_flow = (heap() - empty) / SMALL.max_flows
    assert per_flow >= SMALL.packets_per_flow * SMALL.max_packet_bytes  # the payload is really held
    # the first turnover grows the LRU's dict table once (deleted slots until it resizes): a bounded,
    # one-off cost that stays under the table's own size
    fill_rings(store, SMALL.max_flows, SMALL.max_flows)
    turned = heap()
    assert turned - empty < per_flow * SMALL.max_flows * 1.5
    fill_rings(store, SMALL.max_flows * 2, SMALL.max_flows * 4)  # four tables' worth of new flows
    assert heap() - turned < per_flow  # replacing flows costs nothing more than the flows it evicts


def test_captures_stop_at_their_cap_oldest_first(traced: None) -> None:
    store = EvidenceStore(dataclasses.replace(SMALL, max_flows=1))  # one ring: only the captures grow
    cap = SMALL.max_captures
    ids = ["", ""]  # the first and the latest (a list of every id would grow by itself)

    def capture(i: int) -> None:
        store.record(flow(0), float(i), packet_of(i))
        ids[min(i, 1)] = store.snapshot(flow(0), float(i), packet_of(i + 1))

    capture(0)
    empty = heap()
    for i in range(1, cap + 1):
        capture(i)
    per_capture = (heap() - empty) / cap
    assert per_capture >= 2 * SMALL.max_packet_bytes  # two packets held per snapshot
    for i in range(cap + 1, 2 * cap + 1):  # one turnover (the LRU's dict table grows once)
        capture(i)
    turned = heap()
    for i in range(2 * cap + 1, 6 * cap + 1):
        capture(i)
    assert len(store) == cap
    assert store.records(ids[0]) is None and store.records(ids[-1]) is not None
    assert heap() - turned < per_capture


def test_value_cache_stops_at_its_cap() -> None:
    injection._value_hits.cache_clear()
    for i in range(injection.VALUE_CACHE_ENTRIES + 100):
        injection._value_hits(f"v{i}", False)
    assert injection.value_cache_entries() == injection.VALUE_CACHE_ENTRIES
    injection._value_hits.cache_clear()
    assert injection.value_cache_entries() == 0


def test_the_engine_tells_how_full_its_filling_tables_are() -> None:
    injection._value_hits.cache_clear()
    events: list[dict[str, object]] = []
    limits = DetectLimits(evidence=dataclasses.replace(SMALL, max_flows=3))
    engine = build_engine(DpiSettings(), StubTables(), events.append, "n1", compile_threat_policy(1), limits)
    counts = []
    for i in range(5):
        request = f"GET /n/{i}?page={i} HTTP/1.1\r\nHost: web\r\n\r\n".encode()
        for buf in http_flow(CLIENT, 41000 + i, WEB, request):
            meta, raw, key, direction = packet(buf)
            engine.on_packet(raw, meta, key, direction, 1000.0 + i)
        fill = engine.table_fill()
        counts.append((fill["detect.evidence_flows"], fill["detect.value_cache"] > 0))
    assert counts == [(1, True), (2, True), (3, True), (3, True), (3, True)]
    # not among the counters a replay prints: the value cache is the process's, not the replay's
    assert not set(engine.stats()) & set(engine.table_fill())
