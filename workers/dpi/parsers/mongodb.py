"""MongoDB wire protocol: message header (length, request id, response to, opcode) and the command name
of OP_MSG / OP_QUERY bodies."""

from __future__ import annotations

import struct

from workers.dpi.events import MongoMessage, ParserEvent
from workers.dpi.parsers.base import Parser, Side
from workers.dpi.parsers.framed import FramedParser
from workers.dpi.settings import DpiSettings

OP_REPLY, OP_UPDATE, OP_INSERT, OP_QUERY, OP_GET_MORE, OP_DELETE, OP_KILL_CURSORS = (
    1,
    2001,
    2002,
    2004,
    2005,
    2006,
    2007,
)
OP_COMPRESSED, OP_MSG = 2012, 2013
OPCODES = frozenset(
    (OP_REPLY, OP_UPDATE, OP_INSERT, OP_QUERY, OP_GET_MORE, OP_DELETE, OP_KILL_CURSORS, OP_COMPRESSED, OP_MSG)
)
MAX_MESSAGE = 48 * 1000 * 1000  # maxMessageSizeBytes
_HEAD = struct.Struct("<iiii")


def _header(data: bytes) -> tuple[int, int, int, int] | None:
    if len(data) < 16:
        return None
    length, req, resp, op = _HEAD.unpack_from(data)
    if not 16 <= length <= MAX_MESSAGE or op not in OPCODES:
        return None
    return length, req, resp, op


def probe(side: Side, head: bytes) -> bool:
    if len(head) < 16:
        return True
    h = _header(head)
    return h is not None and (side is Side.SERVER or h[2] == 0)


def _first_key(doc: bytes) -> str:
    """The first element name of a BSON document (the command name)."""
    if len(doc) < 6:
        return ""
    size = int.from_bytes(doc[:4], "little")
    if size < 5 or doc[4] == 0:
        return ""
    end = doc.find(b"\x00", 5, 5 + 128)
    return doc[5:end].decode("utf-8", "replace") if end > 5 else ""


def frame_length(side: Side, data: bytes) -> int:
    if len(data) < 16:
        return 0
    h = _header(data)
    return -1 if h is None else h[0]


def on_frame(side: Side, frame: bytes, total: int) -> tuple[bool, list[ParserEvent], bool]:
    h = _header(frame)
    assert h is not None
    length, req, resp, op = h
    body = frame[16:]
    command = ""
    if op == OP_MSG and len(body) >= 5 and body[4] == 0:
        command = _first_key(body[5:])
    elif op == OP_QUERY and len(body) > 4:
        end = body.find(b"\x00", 4)
        if end > 0:
            command = _first_key(body[end + 1 + 8 :])
    valid = op != OP_MSG or (len(body) >= 5 and body[4] in (0, 1))
    if side is Side.CLIENT and resp != 0:
        valid = False
    return valid, [MongoMessage(op, req, resp, length, command)], valid and side is Side.CLIENT


def factory(settings: DpiSettings) -> Parser:
    return FramedParser(settings, frame_length, on_frame)
