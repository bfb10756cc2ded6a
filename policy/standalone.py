"""Standalone mode (no controller): the local policy file, watched for changes, and the event log."""

from __future__ import annotations

import json
import os
import sys
from typing import IO, Any

from core.events import jsonable

EVENT_LOG_MAX_BYTES = 16 << 20  # standalone JSON-lines event log, rotated once beyond this


class PolicyFileWatch:
    """Notices changes of the local policy file (by stat signature)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.signature: tuple[int, int, int] | None = None

    def changed(self) -> bool:
        try:
            st = os.stat(self.path)
        except OSError:
            sig = None
        else:
            sig = (st.st_ino, st.st_size, st.st_mtime_ns)
        if sig == self.signature:
            return False
        self.signature = sig
        return sig is not None


class JsonLinesLog:
    """Event sink: JSON lines to a file (rotated once) or stdout."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._out: IO[str] = sys.stdout if path == "-" else open(path, "a", buffering=1)

    def write(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            self._out.write(json.dumps(event, default=jsonable) + "\n")
        if self.path != "-" and self._out.tell() > EVENT_LOG_MAX_BYTES:
            self._out.close()
            os.replace(self.path, self.path + ".1")
            self._out = open(self.path, "a", buffering=1)
        self._out.flush()

    def close(self) -> None:
        if self.path != "-":
            self._out.close()
