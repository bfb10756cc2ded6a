"""Event relay pieces of the policy process: aggregation over a short window and the on-disk spool.

Sans-io apart from the spool's files: the policy process feeds events in, takes batches out and tells
the spool what the controller acknowledged. Nothing here blocks or talks to a socket.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from core.events import jsonable

log = logging.getLogger(__name__)

# Fields that differ between otherwise identical events and are not part of their identity.
_VOLATILE = frozenset({"time", "id", "count", "first_time", "last_time"})

DEFAULT_AGGREGATE_WINDOW_S = 1.0  # identical events within this window become one event with a count
DEFAULT_MAX_AGGREGATE_KEYS = 10_000  # distinct events held in one window before it is flushed early
DEFAULT_BATCH_MAX_EVENTS = 512  # events per batch to the controller (<= control.MAX_CONTROL_EVENTS)
DEFAULT_SPOOL_MAX_BYTES = 64 << 20  # disk spool of unacknowledged batches; oldest dropped beyond it
MAX_SPOOL_BATCH_BYTES = 8 << 20  # a single spooled batch larger than this is refused (a bug upstream)
# Batches that cannot be written (the state directory's file system full, an I/O error) wait in memory
# until acknowledged, up to this many encoded bytes; beyond it the oldest held batch is dropped (counted).
MAX_HELD_BYTES = 4 << 20

_BATCH_NAME = re.compile(r"^(\d{16})\.batch$")


def _key(event: dict[str, Any]) -> bytes:
    """The identity of an event for aggregation: every field but the volatile ones, canonically."""
    stable = {k: v for k, v in event.items() if k not in _VOLATILE}
    return json.dumps(stable, sort_keys=True, default=jsonable, separators=(",", ":")).encode()


class EventAggregator:
    """Folds identical events seen within `window` seconds into the first one, with a `count`.

    The first occurrence keeps its `id` and `time`; the emitted event carries `count` (occurrences in the
    window) and, when count > 1, `last_time`. Bounded: at `max_keys` distinct events the window is due.
    """

    def __init__(
        self, window: float = DEFAULT_AGGREGATE_WINDOW_S, max_keys: int = DEFAULT_MAX_AGGREGATE_KEYS
    ) -> None:
        self.window = window
        self.max_keys = max_keys
        self._pending: dict[bytes, dict[str, Any]] = {}
        self._opened = 0.0
        self.folded = 0  # events folded into an earlier identical one (counter)

    def add(self, event: dict[str, Any], now: float) -> None:
        if not self._pending:
            self._opened = now
        key = _key(event)
        first = self._pending.get(key)
        if first is None:
            event = dict(event)
            event.setdefault("count", 1)
            self._pending[key] = event
            return
        first["count"] = int(first.get("count", 1)) + int(event.get("count", 1))
        first["last_time"] = event.get("time", now)
        self.folded += 1

    def due(self, now: float) -> bool:
        return bool(self._pending) and (
            now - self._opened >= self.window or len(self._pending) >= self.max_keys
        )

    def flush(self) -> list[dict[str, Any]]:
        out = list(self._pending.values())
        self._pending = {}
        return out

    def __len__(self) -> int:
        return len(self._pending)


@dataclass
class SpoolStats:
    batches: int
    bytes: int
    dropped_events: int  # events lost because the spool was full (cumulative, persisted)
    dropped_batches: int


class EventSpool:
    """Batches not yet acknowledged by the controller, one file per batch, bounded in bytes.

    Batch files are named by their sequence number, so order and the next number survive restarts.
    When adding a batch would exceed `max_bytes`, the oldest batches are dropped and the loss counted
    (persisted in `state.json`) — the relay reports the count as an audit event, never silently.
    A batch the disk refuses (full, I/O error) is held in memory instead, bounded by `MAX_HELD_BYTES`, and
    sent like the others: a full disk costs no event until that bound, and never the process.
    """

    def __init__(self, directory: str | os.PathLike[str], max_bytes: int = DEFAULT_SPOOL_MAX_BYTES) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self._held: dict[int, list[dict[str, Any]]] = {}  # batches the disk refused, by sequence number
        self.write_errors = 0  # batch or state writes the disk refused (counter)
        self._sizes: dict[int, int] = {}
        self._events: dict[int, int] = {}
        for entry in self.dir.iterdir():
            m = _BATCH_NAME.match(entry.name)
            if m:
                self._sizes[int(m.group(1))] = entry.stat().st_size
                self._events[int(m.group(1))] = -1  # unknown until read
            elif entry.name.endswith(".tmp"):
                entry.unlink(missing_ok=True)
        state = self._read_state()
        self.dropped_events = int(state.get("dropped_events", 0))
        self.dropped_batches = int(state.get("dropped_batches", 0))
        self.reported_dropped = int(state.get("reported_dropped", 0))
        self.next_seq = max([int(state.get("next_seq", 1)), *(s + 1 for s in self._sizes)])

    def _read_state(self) -> dict[str, Any]:
        try:
            data = json.loads((self.dir / "state.json").read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def _write_state(self) -> None:
        tmp = self.dir / "state.json.tmp"
        state = {
            "next_seq": self.next_seq,
            "dropped_events": self.dropped_events,
            "dropped_batches": self.dropped_batches,
            "reported_dropped": self.reported_dropped,
        }
        try:
            tmp.write_text(json.dumps(state))
            os.replace(tmp, self.dir / "state.json")
        except OSError as exc:
            # The counts stay right in memory; only a restart while the disk refuses would forget them.
            self._write_failed(tmp, exc)

    def _write_failed(self, tmp: Path, exc: OSError) -> None:
        self.write_errors += 1
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if self.write_errors == 1 or self.write_errors % 100 == 0:
            log.error("event spool %s: cannot write (%s); holding batches in memory (%d failures so far)",
                      self.dir, exc.strerror or exc, self.write_errors)  # fmt: skip

    def _path(self, seq: int) -> Path:
        return self.dir / f"{seq:016d}.batch"

    def append(self, events: list[dict[str, Any]]) -> int:
        """Spool a batch; returns its sequence number."""
        blob = msgpack.packb(events, use_bin_type=True, default=jsonable)
        if len(blob) > MAX_SPOOL_BATCH_BYTES:
            raise ValueError(f"event batch of {len(blob)} bytes exceeds {MAX_SPOOL_BATCH_BYTES}")
        seq = self.next_seq
        self.next_seq += 1
        while self._sizes and self.bytes() + len(blob) > self.max_bytes:
            self._drop_oldest()
        if len(blob) > self.max_bytes:
            self.dropped_events += len(events)
            self.dropped_batches += 1
            self._write_state()
            return seq
        tmp = self.dir / f"{seq:016d}.tmp"
        try:
            with open(tmp, "wb") as f:
                f.write(blob)
            os.replace(tmp, self._path(seq))
        except OSError as exc:
            self._write_failed(tmp, exc)
            while self._held and self.held_bytes() + len(blob) > MAX_HELD_BYTES:
                self._drop_oldest(min(self._held))
            # Held as a read from disk would return it, so it is sent exactly like a spooled batch.
            self._held[seq] = msgpack.unpackb(blob, raw=False, strict_map_key=False)
        self._sizes[seq] = len(blob)
        self._events[seq] = len(events)
        self._write_state()
        return seq

    def _drop_oldest(self, seq: int | None = None) -> None:
        seq = min(self._sizes) if seq is None else seq
        count = self._events.get(seq, -1)
        if count < 0:
            batch = self.read(seq)
            count = len(batch) if batch is not None else 0
        if self._held.pop(seq, None) is None:
            self._path(seq).unlink(missing_ok=True)
        del self._sizes[seq]
        self._events.pop(seq, None)
        self.dropped_events += count
        self.dropped_batches += 1
        log.warning("event spool full: dropped batch %d of %d events", seq, count)

    def read(self, seq: int) -> list[dict[str, Any]] | None:
        held = self._held.get(seq)
        if held is not None:
            return held
        try:
            blob = self._path(seq).read_bytes()
            events = msgpack.unpackb(blob, raw=False, strict_map_key=False)
        except (OSError, ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
            return None
        return events if isinstance(events, list) else None

    def ack(self, seqs: Iterable[int]) -> int:
        """Forget acknowledged batches; returns how many were still spooled."""
        n = 0
        for seq in seqs:
            if seq in self._sizes:
                if self._held.pop(seq, None) is None:
                    self._path(seq).unlink(missing_ok=True)
                del self._sizes[seq]
                self._events.pop(seq, None)
                n += 1
        return n

    def pending(self) -> list[int]:
        """Sequence numbers still unacknowledged, oldest first."""
        return sorted(self._sizes)

    def bytes(self) -> int:
        return sum(self._sizes.values())

    def held_bytes(self) -> int:
        """Encoded bytes of the batches held in memory because the disk refused them."""
        return sum(self._sizes[seq] for seq in self._held)

    def unreported_drops(self) -> int:
        return self.dropped_events - self.reported_dropped

    def mark_drops_reported(self) -> None:
        self.reported_dropped = self.dropped_events
        self._write_state()

    def stats(self) -> SpoolStats:
        return SpoolStats(len(self._sizes), self.bytes(), self.dropped_events, self.dropped_batches)
