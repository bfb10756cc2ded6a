"""Microsoft SQL Server TDS: packet header (type, status, length), PRELOGIN option list, SQL batch text
(UTF-16LE after the ALL_HEADERS block)."""

from __future__ import annotations

from workers.dpi.events import ParserEvent, SqlQuery, TdsPacket
from workers.dpi.parsers.base import Parser, Side
from workers.dpi.parsers.framed import FramedParser
from workers.dpi.settings import DpiSettings

SQL_BATCH, RPC, RESPONSE, ATTENTION, BULK, TRANSACTION, LOGIN7, SSPI, PRELOGIN = 1, 3, 4, 6, 7, 14, 16, 17, 18
_TYPES = frozenset((SQL_BATCH, 2, RPC, RESPONSE, ATTENTION, BULK, 8, TRANSACTION, 15, LOGIN7, SSPI, PRELOGIN))
MAX_PRELOGIN_OPTIONS = 16


def _header(data: bytes) -> tuple[int, int, int] | None:
    if len(data) < 8:
        return None
    ptype, status = data[0], data[1]
    length = int.from_bytes(data[2:4], "big")
    if ptype not in _TYPES or status & ~0x1F or length < 8:
        return None
    return ptype, status, length


def probe(side: Side, head: bytes) -> bool:
    if len(head) < 8:
        return not head or head[0] in (PRELOGIN, LOGIN7, SQL_BATCH, RESPONSE)
    h = _header(head)
    if h is None:
        return False
    return h[0] in (PRELOGIN, LOGIN7, SQL_BATCH, RPC) if side is Side.CLIENT else h[0] == RESPONSE


def prelogin_ok(payload: bytes) -> bool:
    """PRELOGIN: option tokens (type, offset, length) ended by 0xFF, every option inside the payload."""
    off = 0
    for _ in range(MAX_PRELOGIN_OPTIONS):
        if off >= len(payload):
            return False
        if payload[off] == 0xFF:
            return off > 0
        if off + 5 > len(payload):
            return False
        start = int.from_bytes(payload[off + 1 : off + 3], "big")
        size = int.from_bytes(payload[off + 3 : off + 5], "big")
        if start + size > len(payload):
            return False
        off += 5
    return False


def frame_length(side: Side, data: bytes) -> int:
    if len(data) < 8:
        return 0
    h = _header(data)
    return -1 if h is None else h[2]


def make_on_frame(settings: DpiSettings):
    limit = settings.max_event_bytes

    def on_frame(side: Side, frame: bytes, total: int) -> tuple[bool, list[ParserEvent], bool]:
        h = _header(frame)
        assert h is not None
        ptype, status, length = h
        events: list[ParserEvent] = [TdsPacket(ptype, status, length)]
        payload = frame[8:]
        if side is Side.CLIENT and ptype == PRELOGIN:
            ok = len(frame) == length and prelogin_ok(payload)
            return ok, events, ok
        if side is Side.CLIENT and ptype == SQL_BATCH and len(payload) >= 4:
            headers_len = int.from_bytes(payload[:4], "little")
            start = headers_len if 4 <= headers_len <= len(payload) else 0
            raw = payload[start:]
            raw = raw[: len(raw) - len(raw) % 2]
            text = raw.decode("utf-16-le", "replace")[:limit]
            events.append(SqlQuery("mssql", text, "query", total > len(frame)))
        return True, events, False

    return on_frame


def factory(settings: DpiSettings) -> Parser:
    return FramedParser(settings, frame_length, make_on_frame(settings))
