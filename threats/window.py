"""Bounded, time-windowed counters shared by the detectors.

Every table here has a capacity: when full, the least recently touched key is evicted and counted in
`evicted`, so a flood of distinct keys costs memory up to the cap and no further. Windows are fixed
(a key's window starts at its first hit and resets once `window` seconds have passed): cheaper than a
sliding window and good enough for thresholds that are orders of magnitude above normal traffic.
Time is always passed in (`now`), never read from a clock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class WindowCounter(Generic[K]):
    """Counts per key within a fixed window; `hit` returns the count after adding."""

    __slots__ = ("_table", "capacity", "evicted")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._table: OrderedDict[K, list[float]] = OrderedDict()
        self.capacity = capacity
        self.evicted = 0

    def hit(self, key: K, now: float, window: float, n: float = 1) -> float:
        table = self._table
        slot = table.get(key)
        if slot is None or now - slot[0] >= window:
            if slot is None and len(table) >= self.capacity:
                table.popitem(last=False)
                self.evicted += 1
            slot = [now, 0.0]
            table[key] = slot
        else:
            table.move_to_end(key)
        slot[1] += n
        return slot[1]

    def get(self, key: K, now: float, window: float) -> float:
        slot = self._table.get(key)
        if slot is None or now - slot[0] >= window:
            return 0.0
        return slot[1]

    def forget(self, key: K) -> None:
        """Drop what was counted for `key` (its next hit starts afresh)."""
        self._table.pop(key, None)

    def __len__(self) -> int:
        return len(self._table)


class LruTable(Generic[K, V]):
    """A dict with a capacity: inserting into a full table evicts the least recently used entry."""

    __slots__ = ("_table", "capacity", "evicted")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._table: OrderedDict[K, V] = OrderedDict()
        self.capacity = capacity
        self.evicted = 0

    def get(self, key: K) -> V | None:
        value = self._table.get(key)
        if value is not None:
            self._table.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        table = self._table
        if key in table:
            table.move_to_end(key)
        elif len(table) >= self.capacity:
            table.popitem(last=False)
            self.evicted += 1
        table[key] = value

    def pop(self, key: K) -> V | None:
        return self._table.pop(key, None)

    def oldest(self, n: int) -> list[tuple[K, V]]:
        """Up to `n` least recently used entries, oldest first (for bounded sweeps)."""
        out: list[tuple[K, V]] = []
        for item in self._table.items():
            if len(out) >= n:
                break
            out.append(item)
        return out

    def __contains__(self, key: object) -> bool:
        return key in self._table

    def __len__(self) -> int:
        return len(self._table)
