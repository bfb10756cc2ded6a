"""Garbage-collector settings for the packet processes (readers, workers, replay).

They allocate per packet and per flow and almost never in cycles, so reference counting frees nearly
everything. Python's default cyclic collector still runs a young-generation pass every 700 allocations
and, now and then, a full pass over every live object — a worker's whole flow table: ~15% of a
worker's throughput on short flows (`scripts/bench_detect.py`), and latency spikes in a reader. After
start-up the objects built so far (modules, the compiled policy and sensors) are frozen out of the
collector's view, and collections run far less often; cyclic garbage is still collected.
"""

from __future__ import annotations

import gc

PACKET_GC_THRESHOLD = (50_000, 20, 100)  # allocations before a young pass; young passes per older pass


def tune_for_packets() -> None:
    """Call once a packet process is set up, before its loop."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*PACKET_GC_THRESHOLD)
