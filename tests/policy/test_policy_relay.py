"""Event aggregation and the bounded on-disk spool."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.events import EventType, make_event
from policy.events_relay import EventAggregator, EventSpool

FLOW = {"family": 4, "proto": 6, "src": "198.18.1.5", "sport": 4000, "dst": "198.18.2.5", "dport": 22}


def violation(rule: int = 0, t: float = 100.0) -> dict:
    return make_event(EventType.VIOLATION, "n1", now=t, rule_id=rule, flow=FLOW, action="deny")


def test_identical_events_in_a_window_fold_with_a_count() -> None:
    agg = EventAggregator(window=1.0)
    first = violation(t=100.0)
    agg.add(first, now=100.0)
    for i in range(4):
        agg.add(violation(t=100.1 + i * 0.1), now=100.1 + i * 0.1)
    agg.add(violation(rule=7, t=100.2), now=100.2)
    assert not agg.due(100.5)
    assert agg.due(101.0)
    out = agg.flush()
    assert len(out) == 2
    folded = next(e for e in out if e["rule_id"] == 0)
    assert folded["count"] == 5
    assert folded["id"] == first["id"] and folded["time"] == 100.0
    assert folded["last_time"] == pytest.approx(100.4)
    assert next(e for e in out if e["rule_id"] == 7)["count"] == 1
    assert agg.folded == 4
    assert agg.flush() == []


def test_aggregator_is_bounded_by_distinct_keys() -> None:
    agg = EventAggregator(window=60.0, max_keys=10)
    for i in range(10):
        agg.add(violation(rule=i), now=0.0)
    assert agg.due(0.0)  # full: flushed early, never grows past the bound
    assert len(agg.flush()) == 10


def test_spool_survives_restart_and_acks_remove(tmp_path: Path) -> None:
    spool = EventSpool(tmp_path / "spool", max_bytes=1 << 20)
    seqs = [spool.append([violation(rule=i)]) for i in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    assert spool.ack([2, 4, 99]) == 2
    again = EventSpool(tmp_path / "spool", max_bytes=1 << 20)
    assert again.pending() == [1, 3, 5]
    batch = again.read(3)
    assert batch is not None and batch[0]["rule_id"] == 2
    assert again.append([violation()]) == 6  # numbering continues after a restart
    again.ack([1, 3, 5, 6])
    assert EventSpool(tmp_path / "spool").append([violation()]) == 7  # even with an empty spool


def test_full_spool_drops_oldest_and_counts_every_lost_event(tmp_path: Path) -> None:
    spool = EventSpool(tmp_path / "spool", max_bytes=4000)
    for i in range(40):
        spool.append([violation(rule=i), violation(rule=i + 1000)])
    assert spool.bytes() <= 4000
    kept = spool.pending()
    assert kept[-1] == 40 and kept[0] > 1
    dropped_batches = kept[0] - 1
    assert spool.dropped_batches == dropped_batches
    assert spool.dropped_events == 2 * dropped_batches
    assert spool.unreported_drops() == spool.dropped_events
    spool.mark_drops_reported()
    reopened = EventSpool(tmp_path / "spool", max_bytes=4000)
    assert reopened.dropped_events == spool.dropped_events
    assert reopened.unreported_drops() == 0


def test_unreadable_batch_reads_as_none(tmp_path: Path) -> None:
    spool = EventSpool(tmp_path / "spool")
    seq = spool.append([violation()])
    (tmp_path / "spool" / f"{seq:016d}.batch").write_bytes(b"\xc1garbage")
    assert spool.read(seq) is None


def test_a_full_disk_holds_batches_in_memory_and_loses_none(tmp_path: Path) -> None:
    spool = EventSpool(tmp_path / "spool", max_bytes=1 << 20)
    assert spool.append([violation(rule=1)]) == 1
    # /dev/full refuses every write with ENOSPC: the next two batches and the state file cannot be written.
    for name in ("0000000000000002.tmp", "0000000000000003.tmp", "state.json.tmp"):
        (tmp_path / "spool" / name).symlink_to("/dev/full")
    assert spool.append([violation(rule=2)]) == 2
    assert spool.append([violation(rule=3), violation(rule=4)]) == 3
    assert spool.write_errors == 3  # two batches and the state file after the first
    assert spool.pending() == [1, 2, 3]
    assert not (tmp_path / "spool" / "0000000000000002.batch").exists()
    held = spool.read(3)
    assert held is not None and [e["rule_id"] for e in held] == [3, 4]
    assert spool.dropped_events == 0
    assert spool.append([violation(rule=5)]) == 4  # room again: written to disk as before
    assert (tmp_path / "spool" / "0000000000000004.batch").exists()
    assert spool.ack([2, 3]) == 2
    assert spool.pending() == [1, 4]


def test_memory_held_batches_are_bounded_and_their_loss_counted(tmp_path: Path) -> None:
    from policy import events_relay

    spool = EventSpool(tmp_path / "spool", max_bytes=64 << 20)
    big = [violation(rule=i) for i in range(200)]
    size = len(events_relay.msgpack.packb(big, use_bin_type=True, default=events_relay.jsonable))
    fits = events_relay.MAX_HELD_BYTES // size
    for seq in range(1, fits + 3):
        (tmp_path / "spool" / f"{seq:016d}.tmp").symlink_to("/dev/full")
        spool.append(big)
    assert spool.held_bytes() <= events_relay.MAX_HELD_BYTES
    assert spool.dropped_events == 2 * len(big) and spool.dropped_batches == 2
    assert spool.pending()[0] == 3  # the oldest went first
