"""Shared-memory tables: same answers as the in-process tables, generation switch, writer life cycle,
and the torture test (a writer swapping policies while reader processes check every answer)."""

from __future__ import annotations

import ipaddress
import multiprocessing as mp
import os
import stat
import time
from pathlib import Path

import pytest

from core.lookup import Action, Mode
from policy.layout import MAX_READER_SLOTS, TablesError, TablesFull
from policy.loader import parse_policy_text
from policy.synth import sample_queries, synthetic_policy
from policy.table_reader import SharedTables, wait_for_tables
from policy.table_writer import TablesWriter
from policy.tables import DictTables, compile_policy

ctx = mp.get_context("fork")


def ip(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def answer(tables, q):
    if q.app is None:
        return tables.decide(q.family, q.src, q.dst, q.proto, q.dport)
    return tables.decide_app(q.family, q.src, q.dst, q.proto, q.dport, q.app, q.host, q.server_app)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_shared_tables_answer_like_dict_tables(private_dir: Path, seed: int) -> None:
    snap = synthetic_policy(groups=300, rules=800, seed=seed)
    compiled = compile_policy(snap)
    writer = TablesWriter(private_dir / "policy.tables", table_bytes=1 << 20)
    try:
        gen = writer.publish(compiled)
        expected = DictTables(compiled, generation=gen)
        uncached = SharedTables(writer.path, slot=0, cache=False)
        cached = SharedTables(writer.path, slot=1)
        queries = sample_queries(snap, 3000, seed=seed)
        for q in queries + queries:  # the second pass answers from the cached reader's caches
            want = answer(expected, q)
            assert answer(uncached, q) == want, q
            assert answer(cached, q) == want, q
        assert uncached.version() == 1
        uncached.close()
        cached.close()
    finally:
        writer.close(unlink=True)


DOC = """
version: %d
groups:
  - {name: c, members: [198.18.1.0/24]}
  - {name: s, mode: %s, members: [198.18.2.0/24]}
rules:
  - {id: 1, from: c, to: s, ports: [tcp/80], action: allow}
"""


def _compiled(version: int, mode: str):
    return compile_policy(parse_policy_text(DOC % (version, mode)))


def test_generation_switch_and_acknowledgements(private_dir: Path) -> None:
    writer = TablesWriter(private_dir / "policy.tables", table_bytes=1 << 19)
    reader = SharedTables(writer.path, slot=3)
    try:
        assert stat.S_IMODE(os.stat(writer.path).st_mode) == 0o600
        # nothing published: a non-final fallback in the reader's configured mode
        d = reader.decide(4, ip("198.18.1.1"), ip("198.18.2.1"), 6, 22)
        assert (d.final, d.generation, d.action) == (False, 0, Action.ALLOW)
        protect = SharedTables(writer.path, slot=4, fallback_mode=Mode.PROTECT)
        assert protect.decide(4, ip("198.18.1.1"), ip("198.18.2.1"), 6, 22).action == Action.DENY
        protect.close()

        assert writer.publish(_compiled(1, "protect")) == 1
        d = reader.decide(4, ip("198.18.1.1"), ip("198.18.2.1"), 6, 22)
        assert (d.action, d.generation, d.final) == (Action.DENY, 1, True)
        assert writer.readers() == [(3, os.getpid(), 1)]
        assert writer.publish(_compiled(2, "monitor")) == 2
        d = reader.decide(4, ip("198.18.1.1"), ip("198.18.2.1"), 6, 22)  # cached at gen 1: must not be reused
        assert (d.action, d.generation, d.mode) == (Action.ALLOW, 2, Mode.MONITOR)
        assert reader.version() == 2
        assert writer.readers() == [(3, os.getpid(), 2)]
        # a third publish reuses half 1: the reader acknowledged 2, so no forced reuse
        writer.publish(_compiled(3, "protect"))
        assert writer.forced_reuses() == 0
        assert reader.generation() == 3
    finally:
        reader.close()
        writer.close(unlink=True)


def test_idle_reader_costs_a_bounded_wait_and_a_counted_forced_reuse(private_dir: Path) -> None:
    writer = TablesWriter(private_dir / "policy.tables", table_bytes=1 << 19, reuse_wait=0.02)
    reader = SharedTables(writer.path, slot=0)
    try:
        writer.publish(_compiled(1, "protect"))
        reader.generation()
        writer.publish(_compiled(2, "protect"))  # reader still on 1 (idle)
        t0 = time.monotonic()
        writer.publish(_compiled(3, "protect"))  # must reuse the half of generation 1
        assert time.monotonic() - t0 >= 0.02
        assert writer.forced_reuses() == 1
        assert reader.decide(4, ip("198.18.1.1"), ip("198.18.2.1"), 6, 80).generation == 3
    finally:
        reader.close()
        writer.close(unlink=True)


def test_dead_reader_slot_does_not_block_the_writer(private_dir: Path) -> None:
    writer = TablesWriter(private_dir / "policy.tables", table_bytes=1 << 19, reuse_wait=5.0)
    try:
        writer.publish(_compiled(1, "protect"))

        def attach_and_die() -> None:
            r = SharedTables(writer.path, slot=7)
            r.generation()
            os._exit(0)  # no close: the slot stays claimed by a dead pid

        p = ctx.Process(target=attach_and_die)
        p.start()
        p.join(10)
        assert p.exitcode == 0
        writer.publish(_compiled(2, "protect"))
        t0 = time.monotonic()
        writer.publish(_compiled(3, "protect"))
        assert time.monotonic() - t0 < 1.0
        assert writer.forced_reuses() == 0
        assert writer.path.exists()  # a reader's exit never removes the tables
    finally:
        writer.close(unlink=True)


def test_second_writer_is_refused_and_restart_continues(private_dir: Path) -> None:
    path = private_dir / "policy.tables"
    writer = TablesWriter(path, table_bytes=1 << 19)
    writer.publish(_compiled(1, "protect"))
    with pytest.raises(TablesError, match="another policy process"):
        TablesWriter(path, table_bytes=1 << 19)
    reader = SharedTables(path, slot=0)
    assert reader.generation() == 1
    writer.close()
    writer = TablesWriter(path, table_bytes=1 << 19)  # restarted policy process reattaches
    try:
        assert writer.generation() == 1
        assert reader.decide(4, ip("198.18.1.1"), ip("198.18.2.1"), 6, 22).action == Action.DENY
        assert writer.publish(_compiled(2, "monitor")) == 2
        assert reader.decide(4, ip("198.18.1.1"), ip("198.18.2.1"), 6, 22).action == Action.ALLOW
    finally:
        reader.close()
        writer.close(unlink=True)


def test_resized_tables_retire_the_old_file_and_readers_follow(private_dir: Path) -> None:
    path = private_dir / "policy.tables"
    writer = TablesWriter(path, table_bytes=1 << 19)
    writer.publish(_compiled(1, "protect"))
    reader = SharedTables(path, slot=0)
    assert reader.generation() == 1
    writer.close()
    writer = TablesWriter(path, table_bytes=1 << 20)
    try:
        assert writer.generation() == 0
        writer.publish(_compiled(5, "monitor"))
        d = reader.decide(4, ip("198.18.1.1"), ip("198.18.2.1"), 6, 22)
        assert (d.action, d.generation) == (Action.ALLOW, 1)
        assert reader.version() == 5
        assert writer.readers() == [(0, os.getpid(), 1)]
    finally:
        reader.close()
        writer.close(unlink=True)
    assert not path.exists()


def test_policy_too_large_for_the_region_is_refused(private_dir: Path) -> None:
    writer = TablesWriter(private_dir / "policy.tables", table_bytes=4096)
    try:
        with pytest.raises(TablesFull, match="table_bytes"):
            writer.publish(compile_policy(synthetic_policy(groups=200, rules=300)))
        assert writer.generation() == 0
    finally:
        writer.close(unlink=True)


def test_reader_slot_bounds_and_bad_files(private_dir: Path) -> None:
    bogus = private_dir / "bogus"
    bogus.write_bytes(b"\0" * 8192)
    with pytest.raises(TablesError, match="not a policy tables file"):
        SharedTables(bogus, slot=0)
    with pytest.raises(TablesError, match="slot"):
        SharedTables(bogus, slot=MAX_READER_SLOTS)
    assert not wait_for_tables(private_dir / "absent", timeout=0.05)


# ---- torture ---------------------------------------------------------------------------------------

VARIANTS = 4  # generation g holds variant g % VARIANTS
SWAPS = 2000


def _variant(v: int):
    # Every variant renames its groups, renumbers its rules and moves its CIDRs, so a lookup that mixed
    # two variants would give an answer equal to neither.
    return synthetic_policy(groups=60, rules=150, seed=100 + v, version=v + 1, name_suffix=f"v{v}")


def _reader_proc(path: str, slot: int, cache: bool, stop, result) -> None:
    variants = [compile_policy(_variant(v)) for v in range(VARIANTS)]
    queries = sample_queries(_variant(0), 400, seed=slot) + sample_queries(_variant(1), 400, seed=slot)
    expected = [[answer(DictTables(c, generation=0), q) for q in queries] for c in variants]
    tables = SharedTables(path, slot=slot, cache=cache)
    bad = checked = 0
    gens: set[int] = set()
    deadline = time.monotonic() + 60
    i = 0
    while not stop.is_set() and time.monotonic() < deadline:
        q = queries[i % len(queries)]
        want = expected[0][0]
        d = answer(tables, q)
        if d.generation:
            want = expected[d.generation % VARIANTS][i % len(queries)]
            if d._replace(generation=0) != want:
                bad += 1
            checked += 1
            gens.add(d.generation)
        i += 1
    result.put((slot, checked, bad, len(gens), tables.retries, tables.gave_up))
    tables.close()


def _writer_proc(path: str, ready, stop) -> None:
    variants = [compile_policy(_variant(v)) for v in range(VARIANTS)]
    writer = TablesWriter(path, table_bytes=1 << 19, reuse_wait=0.0005)
    writer.publish(variants[1])
    ready.set()
    deadline = time.monotonic() + 60
    n = 0
    while n < SWAPS and time.monotonic() < deadline:
        gen = writer.generation() + 1
        writer.publish(variants[gen % VARIANTS])
        n += 1
    stop.set()
    writer.close()


def test_torture_writer_swaps_while_readers_verify(private_dir: Path) -> None:
    path = str(private_dir / "policy.tables")
    ready, stop = ctx.Event(), ctx.Event()
    result = ctx.Queue()
    writer = ctx.Process(target=_writer_proc, args=(path, ready, stop))
    writer.start()
    readers = []
    try:
        assert ready.wait(30)
        readers = [
            ctx.Process(target=_reader_proc, args=(path, slot, slot == 1, stop, result)) for slot in (0, 1)
        ]
        for r in readers:
            r.start()
        writer.join(90)
        assert writer.exitcode == 0
        stats = [result.get(timeout=30) for _ in readers]
        for r in readers:
            r.join(30)
    finally:
        for p in [writer, *readers]:
            if p.is_alive():
                p.kill()
                p.join(5)
        Path(path).unlink(missing_ok=True)
    for slot, checked, bad, generations, _retries, gave_up in stats:
        assert bad == 0, f"reader {slot}: {bad} torn or mixed answers of {checked}"
        assert gave_up == 0
        assert checked > 1000
        assert generations > 50, f"reader {slot} saw only {generations} generations"
    print("torture:", stats)


NESTED = """
version: 1
groups:
  - {name: all, mode: protect, members: [198.18.0.0/15, "fd00::/8"]}
  - {name: a16, mode: protect, members: [198.18.0.0/16, "fd00:198::/32"]}
  - {name: a20, mode: protect, members: [198.19.16.0/20, "fd00:198:18::/48"]}
  - {name: a22, mode: protect, members: [198.18.4.0/22, "fd00:198:18:4::/64"]}
  - {name: a24, mode: protect, members: [198.18.5.0/24, "fd00:198:18:4:1::/80"]}
  - {name: a25, mode: protect, members: [198.18.5.128/25, "fd00:198:18:4:1::80/121"]}
  - {name: a30, mode: protect, members: [198.18.5.132/30, 198.18.4.0/31, "fd00:198:18:4:1::84/126"]}
  - {name: host, mode: protect, members: [198.18.5.133, 198.19.16.1, "fd00:198:18:4:1::85"]}
  - {name: other, mode: monitor, members: [198.20.0.0/14]}
"""


def test_prefix_nesting_at_every_trie_level(private_dir: Path) -> None:
    compiled = compile_policy(parse_policy_text(NESTED))
    writer = TablesWriter(private_dir / "policy.tables", table_bytes=1 << 20)
    try:
        writer.publish(compiled)
        expected = DictTables(compiled, generation=1)
        shared = SharedTables(writer.path, slot=0, cache=False)
        seen = set()
        addrs = [ipaddress.ip_address("198.18.4.0") + i for i in range(0, 512)]
        addrs += [
            ipaddress.ip_address(a)
            for a in (
                "198.17.255.255",
                "198.18.0.0",
                "198.19.16.0",
                "198.19.31.255",
                "198.19.32.0",
                "198.20.0.1",
                "198.23.255.255",
                "198.24.0.0",
            )
        ]
        addrs += [ipaddress.ip_address("fd00:198:18:4:1::") + i for i in range(0, 160)]
        addrs += [ipaddress.ip_address(a) for a in ("fd00::1", "fd00:198:18::1", "fdff::1", "fe80::1")]
        for a in addrs:
            fam = 4 if a.version == 4 else 6
            other = ip("198.18.5.133") if fam == 4 else ip("fd00:198:18:4:1::85")
            want = expected.decide(fam, a.packed, other, 6, 80)
            assert shared.decide(fam, a.packed, other, 6, 80) == want, a
            seen.add(want.src_group)
        assert seen == {"all", "a16", "a20", "a22", "a24", "a25", "a30", "host", "other", "external"}
        shared.close()
    finally:
        writer.close(unlink=True)
