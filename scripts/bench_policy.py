#!/usr/bin/env python3
"""Benchmark the policy tables: compile/publish cost and lookup cost, shared memory vs in-process dicts.

    python scripts/bench_policy.py [--groups 5000] [--rules 10000] [--lookups 200000]

Prints, for a synthetic policy of the given size:
  - validation (native mapping → snapshot), compilation and publication times;
  - ns per lookup (median of batches of 100) for: in-process dict tables, shared tables with no reader
    cache (every lookup walks the shared tables: a new flow from new addresses), and shared tables with
    the reader's generation-tagged caches warm (a new flow between known addresses);
  - how long after publication another process sees the new generation.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.lookup import PolicyTables
from policy.loader import parse_policy, policy_to_dict
from policy.synth import Query, sample_queries, synthetic_policy
from policy.table_reader import SharedTables
from policy.table_writer import TablesWriter
from policy.tables import DictTables, compile_policy

BATCH = 100


def _lookup_ns(tables: PolicyTables, queries: list[Query], total: int) -> tuple[float, float]:
    """(median, mean) ns per lookup over batches of BATCH queries."""
    decide = tables.decide
    batches = []
    n = 0
    qi = 0
    clock = time.perf_counter_ns
    while n < total:
        batch = queries[qi : qi + BATCH]
        if len(batch) < BATCH:
            qi = 0
            continue
        qi += BATCH
        t0 = clock()
        for q in batch:
            decide(q.family, q.src, q.dst, q.proto, q.dport)
        batches.append((clock() - t0) / BATCH)
        n += BATCH
    return statistics.median(batches), statistics.fmean(batches)


def _watch(path: str, count: int, seen: mp.Queue) -> None:
    tables = SharedTables(path, slot=1)
    last = tables.generation()
    got = 0
    deadline = time.monotonic() + 60
    while got < count and time.monotonic() < deadline:
        g = tables.generation()
        if g != last:
            seen.put((g, time.monotonic()))
            last = g
            got += 1
    tables.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--groups", type=int, default=5000)
    ap.add_argument("--rules", type=int, default=10000)
    ap.add_argument("--lookups", type=int, default=200_000)
    ap.add_argument("--swaps", type=int, default=20, help="publications timed for visibility in a reader")
    args = ap.parse_args()

    snap = synthetic_policy(args.groups, args.rules)
    doc = policy_to_dict(snap)
    t0 = time.perf_counter()
    snap = parse_policy(doc)
    t1 = time.perf_counter()
    compiled = compile_policy(snap)
    t2 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp).chmod(0o700)
        path = str(Path(tmp) / "policy.tables")
        writer = TablesWriter(path, table_bytes=16 << 20)
        t3 = time.perf_counter()
        writer.publish(compiled)
        t4 = time.perf_counter()
        print(
            f"policy: {len(snap.groups)} groups, {len(snap.rules)} rules, {compiled.prefix_count()} prefixes"
        )
        print(
            f"validate {1e3 * (t1 - t0):.1f} ms, compile {1e3 * (t2 - t1):.1f} ms, "
            f"publish {1e3 * (t4 - t3):.1f} ms"
        )
        print(f"compile + publish: {1e3 * (t4 - t1):.1f} ms (target <= 1000 ms)")

        queries = sample_queries(snap, 20_000)
        dict_tables = DictTables(compiled, cache=False)
        cold = SharedTables(path, slot=2, cache=False)
        warm = SharedTables(path, slot=3)
        for name, tables in (("dict (in-process), no cache", dict_tables), ("shm, no reader cache", cold)):
            med, mean = _lookup_ns(tables, queries, args.lookups)
            print(f"{name:32s} {med:8.0f} ns/lookup median  {mean:8.0f} mean")
        _lookup_ns(warm, queries, len(queries))  # fill the caches
        med, mean = _lookup_ns(warm, queries, args.lookups)
        print(f"{'shm, reader caches warm':32s} {med:8.0f} ns/lookup median  {mean:8.0f} mean")
        cold.close()
        warm.close()

        seen: mp.Queue = mp.get_context("fork").Queue()
        watcher = mp.get_context("fork").Process(target=_watch, args=(path, args.swaps, seen))
        watcher.start()
        time.sleep(0.5)
        delays = []
        publish_ms = []
        for _ in range(args.swaps):
            p0 = time.perf_counter()
            gen = writer.publish(compiled)
            done = time.monotonic()
            publish_ms.append(1e3 * (time.perf_counter() - p0))
            g, at = seen.get(timeout=10)
            if g == gen:
                delays.append(1e3 * (at - done))
            time.sleep(0.02)
        watcher.join(10)
        writer.close(unlink=True)
    print(
        f"publish (compiled policy) median {statistics.median(publish_ms):.1f} ms; "
        f"seen by another process {statistics.median(delays):.3f} ms median, {max(delays):.3f} ms max "
        "after publication (target <= 10 ms)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
