"""The single writer of the shared policy tables (the policy process): owns the file, publishes by generation.

The writer compiles generation G+1 into the half G does not use, in one copy (tables and derived document
together), and then stores the generation word: that store publishes it. Before it overwrites a half it
waits (bounded by `reuse_wait`) until every live reader has acknowledged a generation newer than the one
the half held; readers re-check the generation after each read, so a forced reuse (counted) is safe.

The file is created, resized and unlinked only by the writer. It is a plain file (not
`multiprocessing.shared_memory`), so Python's resource tracker never sees it and cannot unlink it
behind our back; readers hold nothing but a mapping. A writer restarted by the supervisor reattaches
to the existing file and continues its generation count, so readers keep their tables across restarts.
When the writer must replace the file (another size), it marks the old one retired (a bit in the
generation word) and readers reopen the path.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import time
from pathlib import Path

from policy.layout import (
    CONTROL_BYTES,
    DEFAULT_REUSE_WAIT,
    DEFAULT_TABLE_BYTES,
    LAYOUT_VERSION,
    MAGIC,
    MAX_READER_SLOTS,
    RETIRED,
    SLOT_BASE,
    W_FORCED,
    W_GEN,
    W_HALF,
    W_LAYOUT,
    W_MAGIC,
    W_SLOTS,
    W_WRITER,
    TablesError,
    TablesFull,
    align8,
    serialize,
)
from policy.tables import CompiledPolicy


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class TablesWriter:
    """The single writer: owns the tables file, publishes compiled policies by generation."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        table_bytes: int = DEFAULT_TABLE_BYTES,
        reuse_wait: float = DEFAULT_REUSE_WAIT,
    ) -> None:
        self.path = Path(path)
        self.table_bytes = align8(table_bytes)
        self.reuse_wait = reuse_wait
        self.size = CONTROL_BYTES + 2 * self.table_bytes
        self._fd = -1
        self._open()

    def _open(self) -> None:
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(self.path, flags, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise TablesError(f"{self.path}: another policy process is writing these tables") from None
        st = os.fstat(fd)
        reuse = st.st_size == self.size
        if reuse:
            with mmap.mmap(fd, CONTROL_BYTES) as probe:
                words = memoryview(probe).cast("Q")
                reuse = (
                    words[W_MAGIC] == MAGIC
                    and words[W_LAYOUT] == LAYOUT_VERSION
                    and words[W_HALF] == self.table_bytes
                    and not words[W_GEN] & RETIRED
                )
                words.release()
        if not reuse and st.st_size:
            # Someone may still map the old file: retire it and start a fresh inode at the same path.
            self._retire_fd(fd)
            os.close(fd)
            tmp = self.path.with_name(self.path.name + ".new")
            tmp.unlink(missing_ok=True)
            fd = os.open(tmp, flags | os.O_EXCL, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.ftruncate(fd, self.size)
            os.replace(tmp, self.path)
        elif not reuse:
            os.ftruncate(fd, self.size)
        self._fd = fd
        self._mm = mmap.mmap(fd, self.size)
        self._q = memoryview(self._mm).cast("Q")
        if not reuse:
            self._q[W_LAYOUT] = LAYOUT_VERSION
            self._q[W_HALF] = self.table_bytes
            self._q[W_SLOTS] = MAX_READER_SLOTS
            self._q[W_GEN] = 0
            self._q[W_MAGIC] = MAGIC
        self._q[W_WRITER] = os.getpid()

    @staticmethod
    def _retire_fd(fd: int) -> None:
        size = os.fstat(fd).st_size
        if size < CONTROL_BYTES:
            return
        with mmap.mmap(fd, CONTROL_BYTES) as old:
            words = memoryview(old).cast("Q")
            if words[W_MAGIC] == MAGIC:
                words[W_GEN] = words[W_GEN] | RETIRED
            words.release()

    def generation(self) -> int:
        return int(self._q[W_GEN])

    def forced_reuses(self) -> int:
        return int(self._q[W_FORCED])

    def readers(self) -> list[tuple[int, int, int]]:
        """(slot, pid, acknowledged generation) of every registered reader."""
        out = []
        for i in range(MAX_READER_SLOTS):
            pid = self._q[SLOT_BASE + 2 * i]
            if pid:
                out.append((i, int(pid), int(self._q[SLOT_BASE + 2 * i + 1])))
        return out

    def _wait_for_readers(self, need: int) -> bool:
        """Wait until every live reader acknowledged generation >= need; False if the wait ran out."""
        deadline = time.monotonic() + self.reuse_wait
        q = self._q
        while True:
            lagging = False
            for i in range(MAX_READER_SLOTS):
                pid = q[SLOT_BASE + 2 * i]
                if pid and q[SLOT_BASE + 2 * i + 1] < need:
                    if not _pid_alive(int(pid)):
                        q[SLOT_BASE + 2 * i] = 0
                        continue
                    lagging = True
                    break
            if not lagging:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.0002)

    def publish(self, compiled: CompiledPolicy, document: bytes = b"") -> int:
        """Write `compiled` and its encoded derived document (`policy.document`) into the inactive half
        and publish both as one new generation, which is returned."""
        current = int(self._q[W_GEN])
        new = current + 1
        blob = serialize(compiled, new, document)
        if len(blob) > self.table_bytes:
            raise TablesFull(
                f"compiled policy and its derived document need {len(blob)} bytes, "
                f"table_bytes is {self.table_bytes} per half"
            )
        # The half we overwrite held generation current - 1: readers must have moved past it.
        if current >= 1 and not self._wait_for_readers(current):
            self._q[W_FORCED] += 1
        start = CONTROL_BYTES + (new & 1) * self.table_bytes
        self._mm[start : start + len(blob)] = blob
        self._q[W_GEN] = new
        return new

    def close(self, unlink: bool = False) -> None:
        if self._fd < 0:
            return
        if unlink:
            self._q[W_GEN] = self._q[W_GEN] | RETIRED
        self._q[W_WRITER] = 0
        self._q.release()
        self._mm.close()
        if unlink:
            self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = -1
