"""Cassandra CQL native protocol v3–v5: frame header (version, flags, stream, opcode, length) and QUERY /
PREPARE text."""

from __future__ import annotations

from workers.dpi.events import CassandraFrame, ParserEvent, SqlQuery
from workers.dpi.parsers.base import Parser, Side
from workers.dpi.parsers.framed import FramedParser
from workers.dpi.settings import DpiSettings

STARTUP, OPTIONS, QUERY, PREPARE = 0x01, 0x05, 0x07, 0x09
MAX_FRAME = 256 * 1024 * 1024  # native_transport_max_frame_size upper bound
_VERSIONS = frozenset((3, 4, 5))
_OPCODES = frozenset(range(0x00, 0x11))


def _header(data: bytes) -> tuple[int, bool, int, int, int] | None:
    if len(data) < 9:
        return None
    version, response = data[0] & 0x7F, bool(data[0] & 0x80)
    opcode = data[4]
    length = int.from_bytes(data[5:9], "big")
    if version not in _VERSIONS or opcode not in _OPCODES or length > MAX_FRAME:
        return None
    return version, response, int.from_bytes(data[2:4], "big", signed=True), opcode, length


def probe(side: Side, head: bytes) -> bool:
    if len(head) < 9:
        return True
    h = _header(head)
    if h is None:
        return False
    return (not h[1] and h[3] in (STARTUP, OPTIONS)) if side is Side.CLIENT else h[1]


def frame_length(side: Side, data: bytes) -> int:
    if len(data) < 9:
        return 0
    h = _header(data)
    if h is None or h[1] != (side is Side.SERVER):
        return -1
    return 9 + h[4]


def _string_map_ok(body: bytes) -> bool:
    if len(body) < 2:
        return False
    count = int.from_bytes(body[:2], "big")
    off = 2
    for _ in range(count * 2):
        if off + 2 > len(body):
            return False
        off += 2 + int.from_bytes(body[off : off + 2], "big")
    return off == len(body)


def make_on_frame(settings: DpiSettings):
    limit = settings.max_event_bytes

    def on_frame(side: Side, frame: bytes, total: int) -> tuple[bool, list[ParserEvent], bool]:
        h = _header(frame)
        assert h is not None
        version, response, stream, opcode, length = h
        events: list[ParserEvent] = [CassandraFrame(version, response, opcode, stream, length)]
        body = frame[9:]
        proves = False
        ok = True
        if not response and opcode == STARTUP:
            ok = proves = len(body) == length and _string_map_ok(body)
        elif not response and opcode == OPTIONS:
            ok = proves = length == 0
        elif not response and opcode in (QUERY, PREPARE) and len(body) >= 4:
            size = int.from_bytes(body[:4], "big")
            text = body[4 : 4 + min(size, limit)]
            kind = "query" if opcode == QUERY else "prepare"
            events.append(SqlQuery("cql", text.decode("utf-8", "replace"), kind, size > limit))
        return ok, events, proves

    return on_frame


def factory(settings: DpiSettings) -> Parser:
    return FramedParser(settings, frame_length, make_on_frame(settings))
