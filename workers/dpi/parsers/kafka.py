"""Kafka wire protocol requests: size, API key and version, correlation id, client id; topic names of
Metadata requests (v0–v8, non-flexible encoding)."""

from __future__ import annotations

import struct

from workers.dpi.events import KafkaRequest, ParserEvent
from workers.dpi.parsers.base import Parser, Side
from workers.dpi.parsers.framed import FramedParser
from workers.dpi.settings import DpiSettings

MAX_API_KEY = 80  # API keys defined so far are below this
MAX_API_VERSION = 20
MAX_REQUEST = 100 * 1024 * 1024  # socket.request.max.bytes default
METADATA = 3
MAX_TOPICS = 64  # topic names kept per event
_HEAD = struct.Struct("!ihhih")


def _header(data: bytes) -> tuple[int, int, int, int, int] | None:
    if len(data) < 14:
        return None
    size, key, version, corr, cid_len = _HEAD.unpack_from(data)
    if not 10 <= size <= MAX_REQUEST or not 0 <= key <= MAX_API_KEY or not 0 <= version <= MAX_API_VERSION:
        return None
    if cid_len < 1 or 10 + cid_len > size:  # clients always name themselves (client.id)
        return None
    return size, key, version, corr, cid_len


def probe(side: Side, head: bytes) -> bool:
    if side is Side.SERVER:  # responses: size and correlation id only
        return len(head) < 8 or 4 <= int.from_bytes(head[:4], "big", signed=True) <= MAX_REQUEST
    return len(head) < 14 or _header(head) is not None


def frame_length(side: Side, data: bytes) -> int:
    if len(data) < (14 if side is Side.CLIENT else 4):
        return 0
    if side is Side.SERVER:
        size = int.from_bytes(data[:4], "big", signed=True)
        return 4 + size if 4 <= size <= MAX_REQUEST else -1
    h = _header(data)
    return -1 if h is None else 4 + h[0]


def on_frame(side: Side, frame: bytes, total: int) -> tuple[bool, list[ParserEvent], bool]:
    if side is Side.SERVER:
        return True, [], False
    h = _header(frame)
    assert h is not None
    size, key, version, corr, cid_len = h
    client_id = frame[14 : 14 + cid_len]
    if any(c < 0x20 or c > 0x7E for c in client_id):
        return False, [], False
    topics: list[bytes] = []
    if key == METADATA and version <= 8:
        off = 14 + cid_len
        if off + 4 <= len(frame):
            count = int.from_bytes(frame[off : off + 4], "big", signed=True)
            off += 4
            for _ in range(min(max(count, 0), MAX_TOPICS)):
                if off + 2 > len(frame):
                    break
                tlen = int.from_bytes(frame[off : off + 2], "big")
                topics.append(frame[off + 2 : off + 2 + tlen])
                off += 2 + tlen
    return True, [KafkaRequest(key, version, corr, client_id, tuple(topics))], True


def factory(settings: DpiSettings) -> Parser:
    return FramedParser(settings, frame_length, on_frame)
