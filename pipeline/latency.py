"""The reader's inspected-packet latency: from taking a packet from its queue to issuing its verdict.

Only packets that waited for a worker are observed (the time the issue of protection-by-default costs
each of them); packets verdicted in the reader, and those a timeout or a dead worker decided, are not.
Counts go out in the heartbeat as `inspect_latency_us_le_<bound>` (per bucket, not cumulative) and
`inspect_latency_us_sum`; the supervisor's metrics turn them into the Prometheus histogram
`enforcer_reader_inspect_latency_seconds` (`node.metrics`).
"""

from __future__ import annotations

import bisect

# Upper bounds in microseconds: fine where a round trip should be (tens to hundreds of µs), coarse up to
# the default verdict timeout (250 ms), where a packet is no longer waited for.
BUCKETS_US = (25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000)
PREFIX = "inspect_latency_us_le_"
SUM = "inspect_latency_us_sum"


class LatencyHistogram:
    __slots__ = ("counts", "sum_us")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS_US) + 1)  # the last one is +Inf
        self.sum_us = 0.0

    def observe_since(self, taken: list[float], now: float) -> None:
        """One observation per packet taken from the queue at each time in `taken` (monotonic seconds)."""
        counts = self.counts
        total = 0.0
        for t in taken:
            us = (now - t) * 1e6
            counts[bisect.bisect_left(BUCKETS_US, us)] += 1
            total += us
        self.sum_us += total

    def counters(self) -> dict[str, int]:
        out = {f"{PREFIX}{bound}": n for bound, n in zip(BUCKETS_US, self.counts, strict=False)}
        out[f"{PREFIX}inf"] = self.counts[-1]
        out[SUM] = int(self.sum_us)
        return out
