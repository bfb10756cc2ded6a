"""TFTP read and write requests over UDP (RFC 1350): opcode, file name, transfer mode."""

from __future__ import annotations

from workers.dpi.events import ParserEvent, TftpRequest
from workers.dpi.parsers.base import FeedResult, Outcome, Side
from workers.dpi.settings import DpiSettings

MODES = frozenset((b"netascii", b"octet", b"mail"))
MAX_FILENAME = 512


def parse(msg: bytes) -> TftpRequest | None:
    if len(msg) < 4 or msg[0] != 0 or msg[1] not in (1, 2):
        return None
    parts = msg[2:].split(b"\x00")
    if len(parts) < 3 or not parts[0] or len(parts[0]) > MAX_FILENAME or parts[1].lower() not in MODES:
        return None
    if any(c < 0x20 or c > 0x7E for c in parts[0]):
        return None
    return TftpRequest(msg[1], parts[0], parts[1].lower())


def probe(side: Side, head: bytes) -> bool:
    return side is Side.CLIENT and len(head) >= 2 and head[0] == 0 and head[1] in (1, 2)


class TftpParser:
    __slots__ = ("identified",)

    def __init__(self, settings: DpiSettings) -> None:
        self.identified = False

    def feed(self, side: Side, data: bytes) -> FeedResult:
        if self.identified:
            return FeedResult(len(data), 0, [], Outcome.KEEP)
        ev = parse(data) if side is Side.CLIENT else None
        if ev is None:
            return FeedResult(len(data), 0, [], Outcome.GIVE_UP)
        self.identified = True
        events: list[ParserEvent] = [ev]
        return FeedResult(len(data), 0, events, Outcome.FINAL)
