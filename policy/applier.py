"""Applying a policy snapshot: validate, derive, compile, publish by generation, persist, audit.

Applying is atomic (compile aside, publish the tables and the derived document as one generation) and
never partial: a snapshot that fails validation, is older than the one in force, whose derived document
would not compile in its consumers, or that does not fit the tables is rejected whole, reported as an
`audit` event, and the previous one stays in force. Every applied snapshot is persisted as the new
last-known-good before it is acknowledged.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core import anomalies as A
from core.events import EventType, make_event
from policy.document import DocumentError, decode_document, encode_document
from policy.last_known_good import LastKnownGood
from policy.layout import TablesFull
from policy.loader import parse_policy
from policy.members import Members
from policy.model import PolicyError, PolicySnapshot, mode_name
from policy.settings import Derive, Validate
from policy.table_writer import TablesWriter
from policy.tables import compile_policy

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ApplyResult:
    ok: bool
    version: int
    generation: int
    reasons: tuple[str, ...] = ()


class PolicyApplier:
    """Validates, compiles, publishes and persists snapshots; emits audit events through `emit`."""

    def __init__(
        self,
        writer: TablesWriter,
        lkg: LastKnownGood,
        node: str,
        emit: Callable[[dict[str, Any]], None],
        counters: Counter[str],
        members: Members | None = None,
        validate: Validate = lambda document: "",
        derive: Derive = lambda snapshot: {},
    ) -> None:
        self.members = members
        self.validate = validate
        self.derive = derive
        self.writer = writer
        self.lkg = lkg
        self.node = node
        self.emit = emit
        self.counters = counters
        self.current: PolicySnapshot | None = None
        self.document = b""  # the encoded derived document of the policy in force
        self.source = ""

    @property
    def version(self) -> int:
        return self.current.version if self.current else 0

    def reject(self, version: int, reason: str, source: str, anomaly: str) -> ApplyResult:
        self.counters[anomaly] += 1
        log.error("policy version %s from %s rejected: %s", version, source, reason)
        self.emit(
            make_event(
                EventType.AUDIT,
                self.node,
                what="policy rejected",
                version=version,
                source=source,
                reason=reason,
                in_force=self.version,
            )
        )
        return ApplyResult(False, version, self.writer.generation(), (reason,))

    def apply_doc(self, doc: object, source: str) -> ApplyResult:
        version = doc.get("version", 0) if isinstance(doc, dict) else 0
        try:
            snapshot = parse_policy(doc)
        except PolicyError as exc:
            return self.reject(version if isinstance(version, int) else 0, str(exc), source, A.POLICY_REJECTED)
        return self.apply(snapshot, source)

    def apply(self, snapshot: PolicySnapshot, source: str, persist: bool = True) -> ApplyResult:
        cur = self.current
        if cur is not None and snapshot.version <= cur.version and cur.version > 0:
            if snapshot == cur:
                return ApplyResult(True, cur.version, self.writer.generation())
            why = (
                f"version {snapshot.version} is not newer than the version in force ({cur.version})"
                if snapshot.version < cur.version
                else f"version {snapshot.version} is already in force with other content; raise the version"
            )
            return self.reject(snapshot.version, why, source, A.POLICY_STALE)
        try:
            document = encode_document(self.derive(snapshot))
            # Checked as the consumers will see it: decoded from what is published.
            problem = self.validate(decode_document(document))
        except DocumentError as exc:
            problem = str(exc)
        if problem:
            return self.reject(snapshot.version, problem, source, A.POLICY_REJECTED)
        try:
            generation = self._publish(snapshot, document)
        except TablesFull as exc:
            return self.reject(snapshot.version, str(exc), source, A.POLICY_TABLES_FULL)
        changes = self._mode_changes(cur, snapshot)
        self.current = snapshot
        self.document = document
        self.source = source
        if persist and not self.lkg.save(snapshot):
            self.counters["policy.lkg_unsaved"] += 1  # in force, not persisted (disk refused)
        self.counters["policy.applied"] += 1
        log.info(
            "policy version %d from %s applied as generation %d (%d groups, %d rules)",
            snapshot.version,
            source,
            generation,
            len(snapshot.groups),
            len(snapshot.rules),
        )
        self.emit(
            make_event(
                EventType.AUDIT,
                self.node,
                what="policy applied",
                version=snapshot.version,
                generation=generation,
                source=source,
                groups=len(snapshot.groups),
                rules=len(snapshot.rules),
                mode_changes=changes,
            )
        )
        return ApplyResult(True, snapshot.version, generation)

    def _publish(self, snapshot: PolicySnapshot, document: bytes) -> int:
        workloads, fqdns = self.members.current() if self.members is not None else ([], {})
        return self.writer.publish(compile_policy(snapshot, workloads, fqdns), document)

    def republish(self) -> bool:
        """Recompile the policy in force with the current members (workloads, DNS answers); the derived
        document goes with it unchanged (same digest: its consumers have nothing to redo)."""
        if self.current is None:
            return False
        try:
            self._publish(self.current, self.document)
        except TablesFull as exc:
            self.counters[A.POLICY_TABLES_FULL] += 1
            log.error("members update not applied: %s", exc)
            return False
        self.counters["policy.republished"] += 1
        return True

    @staticmethod
    def _mode_changes(old: PolicySnapshot | None, new: PolicySnapshot) -> list[str]:
        if old is None:
            return []
        before = {g.name: g.mode for g in old.groups}
        return [
            f"{g.name}: {mode_name(before[g.name])} -> {mode_name(g.mode)}"
            for g in new.groups
            if g.name in before and before[g.name] != g.mode
        ]
