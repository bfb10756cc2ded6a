"""DHCP (BOOTP with the DHCP magic cookie) over UDP: message type, transaction, client hardware address,
host name and requested address options."""

from __future__ import annotations

from workers.dpi.events import DhcpMessage, ParserEvent
from workers.dpi.parsers.base import FeedResult, Outcome, Side
from workers.dpi.settings import DpiSettings

MAGIC = b"\x63\x82\x53\x63"
FIXED = 236  # BOOTP fixed part, before the cookie
MAX_OPTIONS = 128  # options walked per message


def probe(side: Side, head: bytes) -> bool:
    return len(head) < 8 or (head[0] in (1, 2) and head[1] == 1 and head[2] == 6)


def parse(msg: bytes) -> DhcpMessage | None:
    if (
        len(msg) < FIXED + 4
        or msg[0] not in (1, 2)
        or msg[1] != 1
        or msg[2] != 6
        or msg[FIXED : FIXED + 4] != MAGIC
    ):
        return None
    xid = int.from_bytes(msg[4:8], "big")
    mac = msg[28:34]
    mtype = 0
    hostname = b""
    requested = b""
    off = FIXED + 4
    for _ in range(MAX_OPTIONS):
        if off >= len(msg):
            break
        code = msg[off]
        if code == 255:
            break
        if code == 0:
            off += 1
            continue
        if off + 1 >= len(msg):
            return None
        length = msg[off + 1]
        value = msg[off + 2 : off + 2 + length]
        if len(value) != length:
            return None
        if code == 53 and length == 1:
            mtype = value[0]
        elif code == 12:
            hostname = value
        elif code == 50 and length == 4:
            requested = value
        off += 2 + length
    return DhcpMessage(msg[0], mtype, xid, mac, hostname, requested)


class DhcpParser:
    __slots__ = ("identified",)

    def __init__(self, settings: DpiSettings) -> None:
        self.identified = False

    def feed(self, side: Side, data: bytes) -> FeedResult:
        ev = parse(data)
        if ev is None:
            return FeedResult(len(data), 0, [], Outcome.KEEP if self.identified else Outcome.GIVE_UP)
        events: list[ParserEvent] = [ev]
        newly = not self.identified
        self.identified = True
        return FeedResult(len(data), 0, events, Outcome.FINAL if newly else Outcome.KEEP)
