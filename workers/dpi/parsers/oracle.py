"""Oracle TNS: packet header (length, checksum, type), the CONNECT packet's connect descriptor, and SQL
text found in client DATA packets (a heuristic: the TTC encoding around the text is not decoded)."""

from __future__ import annotations

import re

from workers.dpi.events import ParserEvent, SqlQuery, TnsPacket
from workers.dpi.parsers.base import Parser, Side
from workers.dpi.parsers.framed import FramedParser
from workers.dpi.settings import DpiSettings

CONNECT, ACCEPT, REFUSE, REDIRECT, DATA, RESEND, MARKER = 1, 2, 4, 5, 6, 11, 12
_TYPES = frozenset((CONNECT, ACCEPT, 3, REFUSE, REDIRECT, DATA, 7, 9, RESEND, MARKER, 13, 14, 15))
_SQL = re.compile(
    rb"(?i)\b(select|insert|update|delete|merge|create|drop|alter|begin|declare|grant)\b[\x20-\x7e\t\r\n]{4,}"
)


def _header(data: bytes) -> tuple[int, int] | None:
    if len(data) < 8:
        return None
    length = int.from_bytes(data[:2], "big")
    ptype = data[4]
    if length < 8 or ptype not in _TYPES or data[5] != 0:
        return None
    return length, ptype


def probe(side: Side, head: bytes) -> bool:
    if len(head) < 8:
        return True
    h = _header(head)
    if h is None:
        return False
    return h[1] == CONNECT if side is Side.CLIENT else True


def frame_length(side: Side, data: bytes) -> int:
    if len(data) < 8:
        return 0
    h = _header(data)
    return -1 if h is None else h[0]


def make_on_frame(settings: DpiSettings):
    limit = settings.max_event_bytes

    def on_frame(side: Side, frame: bytes, total: int) -> tuple[bool, list[ParserEvent], bool]:
        h = _header(frame)
        assert h is not None
        length, ptype = h
        if ptype == CONNECT:
            if len(frame) < 28:
                return False, [], False
            version = int.from_bytes(frame[8:10], "big")
            data_len = int.from_bytes(frame[24:26], "big")
            data_off = int.from_bytes(frame[26:28], "big")
            data = frame[data_off : data_off + data_len]
            ok = 300 <= version <= 400 and (not data_len or b"(" in data)
            return ok, [TnsPacket(ptype, length, data[:limit])], ok and side is Side.CLIENT
        events: list[ParserEvent] = [TnsPacket(ptype, length)]
        if ptype == DATA and side is Side.CLIENT:
            m = _SQL.search(frame, 10)
            if m:
                text = m.group(0)[:limit]
                events.append(
                    SqlQuery(
                        "oracle", text.decode("ascii", "replace").strip(), "query", len(m.group(0)) > limit
                    )
                )
        return True, events, False

    return on_frame


def factory(settings: DpiSettings) -> Parser:
    return FramedParser(settings, frame_length, make_on_frame(settings))
