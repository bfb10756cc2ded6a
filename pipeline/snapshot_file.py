"""The policy in force, as the policy process persists it (last-known-good), re-read when it changes.

Readers and workers look up network decisions in the shared tables; the parts of a policy that are not
tables (threat settings and sensors for the workers, process profiles and file rules for the runtime
monitor) are taken from the snapshot the policy process writes after applying each policy.
"""

from __future__ import annotations

from pathlib import Path

from policy.model import PolicySnapshot


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
