"""The refused-SYN memory of a flooded destination: fixed memory, and a flood forgets a real client's SYN
only by chance, never in order."""

from __future__ import annotations

import math

import pytest

from threats.challenges import TICKS_PER_S, RefusedSyns


def syn(i: int, seq: int = 1000) -> tuple[bytes, int, bytes, int, int]:
    return (i.to_bytes(4, "big"), 40000 + i % 20000, b"\xc6\x12\x02\x0b", 80, seq)


def test_a_refused_syn_is_remembered_with_its_time_and_taken_once() -> None:
    table = RefusedSyns(1024)
    assert table.take(syn(1)) is None and len(table) == 0  # nothing allocated yet
    table.remember(syn(1), 100.0)
    table.remember(syn(2), 100.5)
    assert len(table) == 2
    assert table.take(syn(1, seq=999)) is None  # another SYN of the same ports: not a retransmission
    assert table.take(syn(1)) == pytest.approx(100.0, abs=1 / TICKS_PER_S)
    assert table.take(syn(1)) is None and len(table) == 1
    table.remember(syn(2), 101.5)  # refused again: its pause starts afresh
    assert table.take(syn(2)) == pytest.approx(101.5, abs=1 / TICKS_PER_S)


def test_the_table_is_a_power_of_two_of_slots_and_never_holds_more() -> None:
    table = RefusedSyns(1000)
    assert table.slots == 1024
    for i in range(5000):
        table.remember(syn(i), 1.0 + i * 1e-4)
    assert len(table) <= 1024 and table.overwritten > 0
    assert len(table) + table.overwritten == 5000  # each SYN either took a free slot or another's
    with pytest.raises(ValueError):
        RefusedSyns(0)


def test_a_flood_many_times_the_table_forgets_a_real_clients_syn_only_by_chance() -> None:
    # 2,000 real clients refused, then as many forged SYNs as the table has slots: an oldest-first table
    # would have forgotten every client; here each survives with probability exp(-forged/slots).
    slots, flood = 1 << 14, 1 << 14
    table = RefusedSyns(slots)
    clients = [syn(i) for i in range(2000)]
    for c in clients:
        table.remember(c, 10.0)
    for i in range(flood):
        table.remember(syn(10_000 + i, seq=i), 10.0 + i * 1e-5)
    kept = sum(table.take(c) is not None for c in clients)
    expected = 2000 * math.exp(-flood / slots)  # 736: the binomial's spread is 22, so 600 is 6 spreads off
    assert kept > 600, (kept, expected)


def test_times_stay_exact_across_a_long_uptime_and_start_afresh_past_the_counter() -> None:
    table = RefusedSyns(64)
    table.remember(syn(1), 5.0)
    table.remember(syn(2), 5.0 + 400 * 86400)  # 400 days later: still within the 32-bit count
    assert table.take(syn(2)) == pytest.approx(5.0 + 400 * 86400, abs=1 / TICKS_PER_S)
    table.remember(syn(3), 5.0 + 600 * 86400)  # past it: the table starts afresh (old SYNs are stale)
    assert table.take(syn(1)) is None
    assert table.take(syn(3)) == pytest.approx(5.0 + 600 * 86400, abs=1 / TICKS_PER_S)
