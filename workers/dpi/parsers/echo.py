"""Echo (RFC 862), TCP and UDP: identified when the server sends back exactly what the client sent.

Echo cannot be told from the first bytes, so its probe accepts anything from the client; the parser
keeps at most `ECHO_WINDOW` client bytes and gives up as soon as the server says something else.
"""

from __future__ import annotations

from workers.dpi.events import EchoData, ParserEvent
from workers.dpi.parsers.base import FeedResult, Outcome, Side
from workers.dpi.settings import DpiSettings

ECHO_WINDOW = 256  # client bytes kept to compare with the server's answer
MIN_ECHO = 4  # bytes that must come back before we call it echo


def probe(side: Side, head: bytes) -> bool:
    return True  # nothing in the first bytes can prove or disprove echo


class EchoParser:
    __slots__ = ("sent", "matched", "identified")

    def __init__(self, settings: DpiSettings) -> None:
        self.sent = b""
        self.matched = 0
        self.identified = False

    def feed(self, side: Side, data: bytes) -> FeedResult:
        n = len(data)
        if self.identified:
            return FeedResult(n, 0, [], Outcome.KEEP)
        if side is Side.CLIENT:
            room = ECHO_WINDOW - len(self.sent)
            if room > 0:
                self.sent += data[:room]
            return FeedResult(n, 0, [], Outcome.KEEP)
        expect = self.sent[self.matched : self.matched + n]
        if not data or data[: len(expect)] != expect or len(expect) < min(n, ECHO_WINDOW - self.matched):
            return FeedResult(n, 0, [], Outcome.GIVE_UP)
        self.matched += len(expect)
        if self.matched == len(self.sent) and self.matched >= MIN_ECHO:  # all the client said came back
            self.identified = True
            events: list[ParserEvent] = [EchoData(self.matched)]
            return FeedResult(n, 0, events, Outcome.FINAL)
        return FeedResult(n, 0, [], Outcome.KEEP)
