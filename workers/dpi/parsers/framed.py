"""Shared driver for length-framed binary protocols (MongoDB, Cassandra, Kafka, ZooKeeper, memcached
binary, Spark, Oracle TNS, MSSQL TDS).

A protocol module supplies `frame_length(side, data) -> int` (total frame size, 0 if the header is not
complete, -1 if it cannot be this protocol) and `on_frame(side, frame_head, total) -> (ok, events,
identified)`. Frames larger than `max_frame_head` are handed over by their first bytes and the rest is
skipped without buffering.
"""

from __future__ import annotations

from collections.abc import Callable

from workers.dpi.events import ParserEvent
from workers.dpi.parsers.base import FeedResult, Outcome, Side
from workers.dpi.settings import DpiSettings

FrameLength = Callable[[Side, bytes], int]
OnFrame = Callable[[Side, bytes, int], tuple[bool, list[ParserEvent], bool]]
MAX_FRAMES_PER_FEED = 256  # bound on work per call; the rest waits for the next call


class FramedParser:
    __slots__ = ("s", "frame_length", "on_frame", "identified", "skip", "max_head")

    def __init__(self, settings: DpiSettings, frame_length: FrameLength, on_frame: OnFrame) -> None:
        self.s = settings
        self.frame_length = frame_length
        self.on_frame = on_frame
        self.identified = False
        self.skip = [0, 0]
        self.max_head = settings.max_event_bytes + 64

    def feed(self, side: Side, data: bytes) -> FeedResult:
        events: list[ParserEvent] = []
        pos = 0
        n = len(data)
        newly = False
        for _ in range(MAX_FRAMES_PER_FEED):
            if pos >= n:
                break
            if self.skip[side]:
                take = min(self.skip[side], n - pos)
                self.skip[side] -= take
                pos += take
                continue
            total = self.frame_length(side, data[pos:])
            if total < 0:
                if self.identified:
                    return FeedResult(n, 0, events, Outcome.FINAL if newly else Outcome.GIVE_UP)
                return FeedResult(pos, 0, events, Outcome.GIVE_UP)
            if total == 0:
                break
            want = min(total, self.max_head)
            if n - pos < want:
                return FeedResult(pos, want - (n - pos), events, Outcome.FINAL if newly else Outcome.KEEP)
            ok, evs, proves = self.on_frame(side, data[pos : pos + want], total)
            if not ok and not self.identified:
                return FeedResult(pos, 0, events, Outcome.GIVE_UP)
            events.extend(evs)
            if proves and not self.identified:
                self.identified = newly = True
            self.skip[side] = total - want
            pos += want
        return FeedResult(pos, 0, events, Outcome.FINAL if newly else Outcome.KEEP)
