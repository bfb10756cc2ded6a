"""The node's counts of refused logins and DNS queries, summed over workers: a guesser whose connections
the flow hash spreads over the workers is counted whole, in one table every worker maps (a file in the run directory,
written by real processes here) or, in a replay, shares in memory."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.detect.test_app import dns_query
from threats import catalogue as C
from threats.settings import DEFAULT_SETTINGS
from workers.detect.database import AccessDeniedTracker
from workers.detect.dns import DnsDetector
from workers.detect.http import LoginFailures
from workers.detect.shared_counts import COUNTS_FILE, SharedCounts, open_shared_counts, table_bytes

SSH = C.SSH_BRUTE_FORCE.id
CLIENT, SERVER = bytes([198, 18, 1, 11]), bytes([198, 18, 2, 11])


def test_workers_add_to_one_count_per_key() -> None:
    a, b, c = SharedCounts.in_memory(3)
    assert a.add(SSH, b"k", 120.0, 60.0) == 1
    assert b.add(SSH, b"k", 121.0, 60.0) == 2
    assert c.add(SSH, b"k", 122.0, 60.0) == 3
    assert a.add(SSH, b"other", 122.0, 60.0) == 1  # another key (or threat) counts apart
    assert a.add(C.HTTP_BRUTE_FORCE.id, b"k", 122.0, 60.0) == 1


def test_the_window_slides_over_the_previous_one_by_what_it_still_covers() -> None:
    a, b = SharedCounts.in_memory(2)
    for t in range(10):
        a.add(SSH, b"k", 60.0 + t, 60.0)  # ten in the window 60..120
        b.add(SSH, b"k", 60.0 + t, 60.0)  # ... and ten more from the other worker
    # at 150 half of the previous window is still covered: 20 / 2, plus this one
    assert a.add(SSH, b"k", 150.0, 60.0) == pytest.approx(11.0)
    # two windows on, nothing of the first is left
    assert b.add(SSH, b"k", 240.5, 60.0) == pytest.approx(1.0)


def test_login_failures_of_two_workers_reach_the_threshold_together() -> None:
    shared = SharedCounts.in_memory(2)
    workers = [LoginFailures(threat=C.SSH_BRUTE_FORCE) for _ in shared]
    for failures, counts in zip(workers, shared, strict=True):
        failures.counts = counts
    hits = [workers[i % 2].on_failure(CLIENT, SERVER, b"", 1000.0 + i, DEFAULT_SETTINGS) for i in range(21)]
    # 20 allowed (the threshold), the 21st over it, though each worker saw 10 or 11
    assert [i for i, h in enumerate(hits) if h is not None] == [20]
    alone = LoginFailures(threat=C.SSH_BRUTE_FORCE)  # a worker without the table counts its share only
    assert all(alone.on_failure(CLIENT, SERVER, b"", 1000.0 + i, DEFAULT_SETTINGS) is None for i in range(11))


def test_database_denials_of_two_workers_reach_the_threshold_together() -> None:
    shared = SharedCounts.in_memory(2)
    trackers = [AccessDeniedTracker() for _ in shared]
    for tracker, counts in zip(trackers, shared, strict=True):
        tracker.counts = counts
    hits = [trackers[i % 2].on_error(CLIENT, 1045, 100.0 + i, DEFAULT_SETTINGS) for i in range(12)]
    assert [i for i, h in enumerate(hits) if h is not None] == [9, 10, 11]  # the tenth denial on


def test_dns_query_rates_of_two_workers_add_up() -> None:
    shared = SharedCounts.in_memory(2)
    detectors = [DnsDetector() for _ in shared]
    for detector, counts in zip(detectors, shared, strict=True):
        detector.query_counts = counts
    hits = [
        h
        for i in range(1200)  # 600 queries to each worker within 0.6 s: the node's client asks 1,200
        for h in detectors[i % 2].inspect(
            dns_query(f"www{i % 5}.example.com"), CLIENT, False, 10.0 + i * 0.0005, DEFAULT_SETTINGS, SERVER
        )  # fmt: skip
    ]
    assert len(hits) == 200 and "queries from one client" in hits[0].detail


def test_the_table_file_is_shared_by_worker_processes_and_private(tmp_path: Path) -> None:
    mine = open_shared_counts(str(tmp_path), 2, 0)
    assert mine.add(SSH, b"k", 100.0, 60.0) == 1
    code = (
        "import sys; from workers.detect.shared_counts import open_shared_counts;"
        f"t = open_shared_counts({str(tmp_path)!r}, 2, 1);"
        f"print(max(t.add({SSH}, b'k', 101.0, 60.0) for _ in range(5)))"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert float(out.stdout) == 6  # the other process saw this one's count and added its five
    assert mine.add(SSH, b"k", 102.0, 60.0) == 7  # ... and this one sees its five
    path = tmp_path / COUNTS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.stat().st_size == table_bytes(2)


def test_a_table_too_small_or_a_worker_out_of_range_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        SharedCounts(bytearray(table_bytes(1)), 2, 0)
    with pytest.raises(ValueError):
        SharedCounts(bytearray(table_bytes(2)), 2, 2)
    # a table a larger worker count made is opened as it is (the supervisor removes it at start-up)
    open_shared_counts(str(tmp_path), 4, 3)
    assert open_shared_counts(str(tmp_path), 2, 1).add(SSH, b"k", 1.0, 60.0) == 1


def test_a_count_saturates_instead_of_spilling_into_its_window() -> None:
    (counts,) = SharedCounts.in_memory(1)
    words = counts.words
    counts.add(SSH, b"k", 65.0, 60.0)  # window number 1
    [own] = [i for i, w in enumerate(words) if w]
    words[own] = 1 << 24 | (1 << 24) - 1  # its count at the top
    assert counts.add(SSH, b"k", 66.0, 60.0) == (1 << 24) - 1  # stays at the top ...
    assert words[own] >> 24 == 1  # ... and the window number is intact
