"""The reader's inspected-packet latency histogram: buckets, sum, and the heartbeat keys metrics reads."""

from __future__ import annotations

from pipeline.latency import BUCKETS_US, PREFIX, SUM, LatencyHistogram


def test_each_packet_lands_in_the_first_bucket_that_holds_it() -> None:
    h = LatencyHistogram()
    now = 10.0
    # 20 µs, exactly 50 µs, 60 µs, 3 ms, 1 s (beyond the last bound)
    h.observe_since([now - 20e-6, now - 50e-6, now - 60e-6, now - 3e-3, now - 1.0], now)
    c = h.counters()
    assert c[f"{PREFIX}25"] == 1
    assert c[f"{PREFIX}50"] == 1
    assert c[f"{PREFIX}100"] == 1
    assert c[f"{PREFIX}5000"] == 1
    assert c[f"{PREFIX}inf"] == 1
    assert sum(v for k, v in c.items() if k.startswith(PREFIX)) == 5
    assert abs(c[SUM] - (20 + 50 + 60 + 3000 + 1_000_000)) <= 1


def test_every_bound_is_reported_even_when_empty() -> None:
    c = LatencyHistogram().counters()
    assert [k for k in c if k.startswith(PREFIX)] == [f"{PREFIX}{b}" for b in BUCKETS_US] + [f"{PREFIX}inf"]
    assert c[SUM] == 0 and all(v == 0 for v in c.values())
