"""Counts the node's workers keep together: refused logins per client and server, and DNS query rates
per client and per server, summed over workers.

The readers hash each connection to a worker by its 5-tuple, so a guesser's connections spread over
the workers, and a count kept by each worker reaches a threshold at its share only: with four workers
a guesser could try four times `failures_per_window` and never be found. So refused logins are counted
in one table every worker maps (`COUNTS_FILE` in the run directory: 0700, the file 0600, reachable by
root only). It has `BUCKETS` rows (a key's row: a hash of the threat and the key) and a pair of cells per
worker in each row; a worker writes only its own cells, and reads the whole row to learn the node's
count. No locks: each cell is one aligned 64-bit word (its window number and count) with one writer,
read whole by the others.

Windows are aligned on the clock every worker reads (packet time): a worker's pair holds the counts of
its current window and of the one before, and the node's count is the current windows' sum plus the
previous windows' sum weighted by how much of it the sliding window still covers. Two keys sharing a row
add up (a row is 1 in `BUCKETS` of the keys with refused logins at that moment: rare, and it errs
towards reporting). Where there is no file (a capture replay), the workers of one process share a table in
memory, counted alike. A worker without the table counts alone, in `LocalCounts`: the same `add`, over
its own flows.
"""

from __future__ import annotations

import mmap
import os
import zlib
from pathlib import Path

from threats.window import WindowCounter

COUNTS_FILE = "counts"
BUCKETS = 16384
_CELL = 8  # bytes: window number << COUNT_BITS | count
COUNT_BITS = 24
_COUNT_MASK = (1 << COUNT_BITS) - 1
_WINDOW_MASK = (1 << (64 - COUNT_BITS)) - 1


def table_bytes(workers: int) -> int:
    return BUCKETS * workers * 2 * _CELL


class SharedCounts:
    """The table (a mapped file, or memory one process's workers share) seen by worker `index`."""

    def __init__(self, buffer: mmap.mmap | bytearray, workers: int, index: int) -> None:
        if not 0 <= index < workers or len(buffer) < table_bytes(workers):
            raise ValueError(f"counts table of {len(buffer)} bytes for worker {index} of {workers}")
        self.words = memoryview(buffer).cast("Q")  # (a bytearray or mmap: 8-byte aligned)
        self.workers = workers
        self.index = index

    @classmethod
    def in_memory(cls, workers: int) -> list[SharedCounts]:
        """One table for `workers` workers of this process, as each of them sees it."""
        buffer = bytearray(table_bytes(workers))
        return [cls(buffer, workers, i) for i in range(workers)]

    def add(self, threat_id: int, key: bytes, now: float, window: float) -> float:
        """Count one for `key` at `now`; the node's count over the sliding `window` ending at `now`."""
        if window <= 0:
            return 1.0
        row = (zlib.crc32(key, threat_id) % BUCKETS) * self.workers * 2
        number = int(now // window) & _WINDOW_MASK
        words = self.words
        own = row + 2 * self.index
        current = words[own]
        mine = current >> COUNT_BITS
        if mine == number:
            words[own] = current + 1 if current & _COUNT_MASK < _COUNT_MASK else current
        else:
            words[own + 1] = current if mine == (number - 1) & _WINDOW_MASK else 0
            words[own] = number << COUNT_BITS | 1
        return self._sum(row, number, now / window - int(now // window))

    def _sum(self, row: int, number: int, elapsed: float) -> float:
        before = (number - 1) & _WINDOW_MASK
        now_total = then_total = 0
        words = self.words
        for cell in range(row, row + 2 * self.workers):
            word = words[cell]
            window = word >> COUNT_BITS
            if window == number:
                now_total += word & _COUNT_MASK
            elif window == before:
                then_total += word & _COUNT_MASK
        return now_total + then_total * (1.0 - elapsed)


class LocalCounts:
    """One worker's own counts of one kind, behind `SharedCounts`' `add` (the threat is the instance's):
    a window from each key's first count, bounded by `capacity` keys."""

    __slots__ = ("_counts",)

    def __init__(self, capacity: int) -> None:
        self._counts: WindowCounter[bytes] = WindowCounter(capacity)

    def add(self, threat_id: int, key: bytes, now: float, window: float) -> float:
        return self._counts.hit(key, now, window)


Counts = SharedCounts | LocalCounts


def open_shared_counts(run_dir: str, workers: int, index: int) -> SharedCounts:
    """Map the node's counts table (made by the first worker to open it; the supervisor removes an old
    one at start-up). Raises OSError or ValueError if it cannot be mapped."""
    path = Path(run_dir) / COUNTS_FILE
    size = table_bytes(workers)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if os.fstat(fd).st_size < size:
            os.ftruncate(fd, size)  # (zeros; every worker asks for the same size)
        mapped = mmap.mmap(fd, size)
    finally:
        os.close(fd)
    return SharedCounts(mapped, workers, index)
