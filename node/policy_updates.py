"""Policy-derived updates for the packet processes: follow the derived document published with the
shared tables, and compile it when it changes.

The policy process publishes each generation's tables and derived document together
(`policy.document`); a consumer that notices a new generation compares the document's digest with the
one it compiled last, so a generation that only changed members (workloads, DNS answers) costs nothing,
and a new policy is compiled from exactly the document of the generation it came with.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Generic, TypeVar

from policy.document import decode_document
from policy.layout import TablesError
from policy.table_reader import PublishedDocument, SharedTables

T = TypeVar("T")
log = logging.getLogger(__name__)


class DocumentFollower:
    """Notices a new derived document in the shared tables: by generation first (one word), then by
    digest, so the document is copied out only when it changed."""

    def __init__(self, tables: SharedTables) -> None:
        self.tables = tables
        self.seen_generation = -1
        self.digest: int | None = None

    def changed(self) -> PublishedDocument | None:
        """The published document if it differs from the last one returned, else None. Raises
        TablesError if the tables cannot be read (retired with no new file, a corrupt half)."""
        if self.tables.generation() == self.seen_generation:
            return None
        generation, digest = self.tables.document_digest()
        if generation == 0:
            return None  # nothing published yet, or no consistent read: next time
        self.seen_generation = generation
        if digest == self.digest:
            return None
        published = self.tables.document()
        if published is None:
            self.seen_generation = -1  # read again next time
            return None
        self.seen_generation = published.generation
        self.digest = published.digest
        return published


class PublishedCompiler(Generic[T]):
    """`core.updates.Updates[T]`: compiles the derived document in force into what a process needs (the
    workers' threat policy, the readers' guard settings) in a thread whenever it changes, so a large
    policy never stalls a packet loop; `poll()`, called from the loop now and then, returns a new result
    once it is ready. `generation` is the tables generation whose document the last result came from.

    A failure is counted (`<what>.policy_error`, `<what>.policy_unreadable`) and logged, never raised:
    the policy process validated the document, so it means a bug that must not take the packet path
    down."""

    def __init__(
        self, tables: SharedTables, compile: Callable[[dict[str, Any]], T], counters: Counter[str], what: str
    ) -> None:
        self.follower = DocumentFollower(tables)
        self.compile = compile
        self.counters = counters
        self.what = what
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{what}-policy")
        self.pending: Future[T] | None = None
        self.pending_generation = 0
        self.generation = 0

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
                self.generation = self.pending_generation
                self.counters[f"{self.what}.policy_applied"] += 1
        if self.pending is None:
            try:
                published = self.follower.changed()
            except TablesError as exc:
                self.counters[f"{self.what}.policy_unreadable"] += 1
                log.error("%s: policy tables unreadable: %s", self.what, exc)
                return result
            if published is not None:
                self.pending_generation = published.generation
                self.pending = self.pool.submit(self._compile, published.data)
        return result

    def _compile(self, data: bytes) -> T:
        return self.compile(decode_document(data))

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
