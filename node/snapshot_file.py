"""The policy in force, as the policy process persists it (last-known-good), re-read when it changes.

Readers and workers look up network decisions in the shared tables; the parts of a policy that are not
tables (threat settings and sensors for the workers, process profiles and file rules for the runtime
monitor) are taken from the snapshot the policy process writes after applying each policy.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Generic, TypeVar

from policy.model import PolicySnapshot

T = TypeVar("T")
log = logging.getLogger(__name__)


class SnapshotFile:
    def __init__(self, state_dir: str) -> None:
        from policy.service import LKG_FILE

        self.path = Path(state_dir) / "policy" / LKG_FILE
        self._signature: tuple[int, int] | None = None

    def changed(self) -> PolicySnapshot | None:
        """The snapshot if the file changed since the last call, else None. A file that does not parse
        raises PolicyError (the policy process validated it, so that means a partial write: try later)."""
        from policy.loader import load_policy

        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        signature = (st.st_mtime_ns, st.st_size)
        if signature == self._signature:
            return None
        snapshot = load_policy(self.path)
        self._signature = signature
        return snapshot


class SnapshotCompiler(Generic[T]):
    """Compiles the policy in force into what a process needs (the workers' threat policy, the readers'
    threat settings) in a thread whenever the snapshot file changes, so a large policy never stalls a
    packet loop; `poll()`, called from the loop now and then, returns a new result once it is ready.

    A failure is counted (`<what>.policy_error`, `<what>.policy_unreadable`) and logged, never raised:
    the policy process validated the snapshot, so it means a partial write (read again next time) or a
    bug that must not take the packet path down."""

    def __init__(
        self, state_dir: str, compile: Callable[[PolicySnapshot], T], counters: Counter[str], what: str
    ) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.snapshots = SnapshotFile(state_dir)
        self.compile = compile
        self.counters = counters
        self.what = what
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{what}-policy")
        self.pending: Future[T] | None = None

    def poll(self) -> T | None:
        result: T | None = None
        if self.pending is not None and self.pending.done():
            future, self.pending = self.pending, None
            try:
                result = future.result()
            except Exception as exc:
                self.counters[f"{self.what}.policy_error"] += 1
                log.error("%s settings of the new policy not applied: %s", self.what, exc)
            else:
                self.counters[f"{self.what}.policy_applied"] += 1
        if self.pending is None:
            try:
                snapshot = self.snapshots.changed()
            except Exception:  # written as we read it: next time
                self.counters[f"{self.what}.policy_unreadable"] += 1
                return result
            if snapshot is not None:
                self.pending = self.pool.submit(self.compile, snapshot)
        return result

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
