"""Apache Spark network-common RPC framing: an 8-byte frame length (including itself), a message type,
then the message. Identified on a whole client RpcRequest/OneWayMessage frame whose inner body length
agrees with the frame."""

from __future__ import annotations

from workers.dpi.events import ParserEvent, SparkMessage
from workers.dpi.parsers.base import Parser, Side
from workers.dpi.parsers.framed import FramedParser
from workers.dpi.settings import DpiSettings

RPC_REQUEST, RPC_RESPONSE, ONE_WAY = 3, 4, 9
MAX_TYPE = 10
MAX_FRAME = 256 * 1024 * 1024


def _header(data: bytes) -> tuple[int, int] | None:
    if len(data) < 9:
        return None
    length = int.from_bytes(data[:8], "big")
    mtype = data[8]
    if not 9 <= length <= MAX_FRAME or mtype > MAX_TYPE:
        return None
    return length, mtype


def probe(side: Side, head: bytes) -> bool:
    if len(head) < 9:
        return head[: min(len(head), 4)] == b"\x00" * min(len(head), 4)
    h = _header(head)
    return h is not None and (side is Side.SERVER or h[1] in (RPC_REQUEST, ONE_WAY))


def frame_length(side: Side, data: bytes) -> int:
    if len(data) < 9:
        return 0
    h = _header(data)
    return -1 if h is None else h[0]


def on_frame(side: Side, frame: bytes, total: int) -> tuple[bool, list[ParserEvent], bool]:
    h = _header(frame)
    assert h is not None
    length, mtype = h
    proves = False
    if side is Side.CLIENT and mtype == RPC_REQUEST and len(frame) >= 21:
        # requestId (8) then the body length as an int32 (encoded by the message itself)
        body_len = int.from_bytes(frame[17:21], "big")
        proves = 21 + body_len == length
    elif side is Side.CLIENT and mtype == ONE_WAY and len(frame) >= 13:
        proves = 13 + int.from_bytes(frame[9:13], "big") == length
    return True, [SparkMessage(length, mtype)], proves


def factory(settings: DpiSettings) -> Parser:
    return FramedParser(settings, frame_length, on_frame)
