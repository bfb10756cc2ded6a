"""ZooKeeper client protocol: the ConnectRequest that opens a session, and the four-letter admin words
("ruok", "stat" …) answered in text."""

from __future__ import annotations

import struct

from workers.dpi.events import ParserEvent, ZooKeeperConnect
from workers.dpi.parsers.base import FeedResult, Outcome, Side
from workers.dpi.settings import DpiSettings

FOUR_LETTER_WORDS = frozenset(
    (b"ruok", b"stat", b"srvr", b"mntr", b"conf", b"envi", b"cons", b"crst", b"dump", b"wchs", b"wchc",
     b"wchp", b"isro", b"dirs", b"gtmk", b"stmk", b"srst")
)  # fmt: skip
_CONNECT = struct.Struct(
    "!iiqiqi"
)  # length, protocolVersion, lastZxidSeen, timeOut, sessionId, passwd length
MAX_TIMEOUT_MS = 24 * 3600 * 1000


def parse_connect(data: bytes) -> ZooKeeperConnect | None:
    if len(data) < _CONNECT.size:
        return None
    length, proto, _zxid, timeout, session, pw_len = _CONNECT.unpack_from(data)
    if length not in (44, 45) or proto != 0 or not 0 < timeout <= MAX_TIMEOUT_MS or pw_len != 16:
        return None
    return ZooKeeperConnect(proto, timeout, session)


def probe(side: Side, head: bytes) -> bool:
    if side is Side.SERVER:
        return True  # replies only matter after the client's request
    if head[:4] in FOUR_LETTER_WORDS:
        return True
    return len(head) < 8 or head[:8] in (
        b"\x00\x00\x00\x2c\x00\x00\x00\x00",
        b"\x00\x00\x00\x2d\x00\x00\x00\x00",
    )


class ZooKeeperParser:
    __slots__ = ("identified", "four_letter")

    def __init__(self, settings: DpiSettings) -> None:
        self.identified = False
        self.four_letter = False

    def feed(self, side: Side, data: bytes) -> FeedResult:
        if self.identified:
            return FeedResult(len(data), 0, [], Outcome.KEEP)
        if side is Side.SERVER:
            if self.four_letter and data:
                self.identified = True  # a text answer to a four-letter word
                return FeedResult(len(data), 0, [], Outcome.FINAL)
            return FeedResult(len(data), 0, [], Outcome.KEEP)
        if data[:4] in FOUR_LETTER_WORDS and len(data) == 4:
            self.four_letter = True
            return FeedResult(4, 0, [], Outcome.KEEP)
        if len(data) < 4:
            return FeedResult(0, 4 - len(data), [], Outcome.KEEP)
        total = 4 + int.from_bytes(data[:4], "big")
        if total not in (48, 49):
            return FeedResult(0, 0, [], Outcome.GIVE_UP)
        if len(data) < total:
            return FeedResult(0, total - len(data), [], Outcome.KEEP)
        ev = parse_connect(data)
        if ev is None:
            return FeedResult(0, 0, [], Outcome.GIVE_UP)
        self.identified = True
        events: list[ParserEvent] = [ev]
        return FeedResult(len(data), 0, events, Outcome.FINAL)
