"""Redis RESP: client commands (arrays of bulk strings) and server error replies.

Identification is a whole client command array. Inline commands ("PING\\r\\n") are too ambiguous to
identify on. The server side is read as a flat stream of RESP tokens (nesting needs no stack: an array
header is just a line), which finds `-ERR` replies without building values.
"""

from __future__ import annotations

from workers.dpi.events import ParserEvent, RedisCommand, RedisError
from workers.dpi.parsers.base import FeedResult, Outcome, Side
from workers.dpi.settings import DpiSettings

MAX_ARGS = 1024  # arguments kept per command event (the rest are skipped)
MAX_LINE = 64  # a RESP length line longer than this is not RESP
MAX_BULK = 512 * 1024 * 1024  # Redis's own proto-max-bulk-len default


def probe(side: Side, head: bytes) -> bool:
    if side is Side.SERVER:  # replies: a RESP type byte (seen first when a flow is picked up mid-stream)
        return not head or head[:1] in (b"+", b"-", b":", b"$", b"*")
    return head[:1] == b"*" or not head


def _line(data: bytes, pos: int) -> tuple[bytes, int] | None:
    """The line at pos (without CRLF) and the offset after it; None if incomplete."""
    nl = data.find(b"\r\n", pos, pos + MAX_LINE + 2)
    if nl < 0:
        return None
    return data[pos:nl], nl + 2


def _int(b: bytes) -> int | None:
    if not b or len(b) > 18 or not (b.isdigit() or (b[:1] == b"-" and b[1:].isdigit())):
        return None
    return int(b)


class RedisParser:
    __slots__ = ("s", "identified", "server_skip")

    def __init__(self, settings: DpiSettings) -> None:
        self.s = settings
        self.identified = False
        self.server_skip = 0

    def feed(self, side: Side, data: bytes) -> FeedResult:
        if side is Side.SERVER:
            return self._server(data)
        events: list[ParserEvent] = []
        pos = 0
        newly = False
        n = len(data)
        while pos < n:
            got = self._command(data, pos)
            if got is None:
                if n - pos > MAX_LINE and data.find(b"\r\n", pos, pos + MAX_LINE + 2) < 0:
                    return self._bad(pos, events, newly)
                break
            if got == -1:
                return self._bad(pos, events, newly)
            assert isinstance(got, tuple)
            ev, pos = got
            events.append(ev)
            if not self.identified:
                self.identified = newly = True
        return FeedResult(pos, 0, events, Outcome.FINAL if newly else Outcome.KEEP)

    def _bad(self, pos: int, events: list[ParserEvent], newly: bool) -> FeedResult:
        if self.identified:
            return FeedResult(pos, 0, events, Outcome.FINAL if newly else Outcome.GIVE_UP)
        return FeedResult(pos, 0, events, Outcome.GIVE_UP)

    def _command(self, data: bytes, pos: int) -> tuple[RedisCommand, int] | int | None:
        if data[pos : pos + 1] != b"*":
            return -1
        head = _line(data, pos + 1)
        if head is None:
            return None
        count = _int(head[0])
        if count is None or count < 1 or count > 1024 * 1024:
            return -1
        p = head[1]
        args: list[bytes] = []
        budget = self.s.max_event_bytes
        truncated = False
        for _ in range(count):
            if p >= len(data):
                return None
            if data[p : p + 1] != b"$":
                return -1
            ln = _line(data, p + 1)
            if ln is None:
                return None if len(data) - p <= MAX_LINE else -1
            size = _int(ln[0])
            if size is None or size < 0 or size > MAX_BULK:
                return -1
            start = ln[1]
            if len(data) < start + size + 2:
                return None
            if data[start + size : start + size + 2] != b"\r\n":
                return -1
            if len(args) < MAX_ARGS and budget > 0:
                arg = data[start : start + min(size, budget)]
                truncated = truncated or len(arg) < size
                budget -= len(arg)
                args.append(arg)
            else:
                truncated = True
            p = start + size + 2
        return RedisCommand(tuple(args), truncated), p

    def _server(self, data: bytes) -> FeedResult:
        events: list[ParserEvent] = []
        pos = 0
        n = len(data)
        while pos < n:
            if self.server_skip:
                take = min(self.server_skip, n - pos)
                self.server_skip -= take
                pos += take
                continue
            nl = data.find(b"\r\n", pos)
            if nl < 0:
                if n - pos > self.s.max_event_bytes:
                    return FeedResult(n, 0, events, Outcome.KEEP)  # an oversized line: skip it
                break
            kind = data[pos : pos + 1]
            line = data[pos + 1 : nl]
            pos = nl + 2
            if kind == b"-":
                events.append(RedisError(line[: self.s.max_event_bytes]))
            elif kind == b"$":
                size = _int(line)
                if size is not None and size >= 0:
                    self.server_skip = size + 2
        return FeedResult(pos, 0, events, Outcome.KEEP)
