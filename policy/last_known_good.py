"""The last applied policy on disk: what the policy process publishes first after a restart.

Only the policy process reads this file; every other process takes the policy in force from the shared
tables (the tables and the derived document of one generation).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import Counter
from pathlib import Path

from core import anomalies as A
from core.lookup import Mode
from policy.loader import dump_policy, load_policy
from policy.model import PolicyError, PolicySnapshot, mode_name, startup_snapshot

LKG_FILE = "last-known-good.yaml"

log = logging.getLogger(__name__)


class LastKnownGood:
    """The last applied snapshot, persisted in native YAML (atomic replace, 0600)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = self.dir / LKG_FILE

    def load(self) -> PolicySnapshot | None:
        if not self.path.exists():
            return None
        return load_policy(self.path)

    def save(self, snapshot: PolicySnapshot) -> bool:
        """Persist `snapshot`; False when the disk refuses (full, I/O error): the policy stays in force
        and the previous file stays whole, so a restart meanwhile comes back with the older policy."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(dump_policy(snapshot))
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            log.error("cannot persist policy version %d as last-known-good: %s", snapshot.version, exc)
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            return False
        return True


def initial_policy(startup_mode: Mode, lkg: LastKnownGood, counters: Counter[str]) -> tuple[PolicySnapshot, str]:
    """The policy to publish before anything else: last-known-good, else the start-up policy."""
    try:
        snapshot = lkg.load()
    except PolicyError as exc:
        counters[A.POLICY_LKG_UNREADABLE] += 1
        log.error("last-known-good policy unusable, using the start-up policy: %s", exc)
        snapshot = None
    if snapshot is not None:
        return snapshot, "last-known-good"
    return startup_snapshot(startup_mode), f"start-up ({mode_name(startup_mode)})"
