"""SSH: the identification string each side sends first ("SSH-2.0-OpenSSH_9.6p1 comment\r\n").

RFC 4253 lets a server send other lines before its banner; those are skipped (a bounded number of
bytes). After the banner the binary packet protocol is not parsed: the parser only consumes.
"""

from __future__ import annotations

from workers.dpi.events import ParserEvent, SshBanner
from workers.dpi.parsers.base import FeedResult, Outcome, Side
from workers.dpi.settings import DpiSettings

MAX_BANNER = 255  # RFC 4253 §4.2: the identification line is at most 255 bytes including CR LF
MAX_PRELUDE = 1024  # server lines before the banner we are willing to skip

_PREFIX = b"SSH-"


def probe(side: Side, head: bytes) -> bool:
    n = min(len(head), 4)
    return head[:n] == _PREFIX[:n]


def parse_banner(line: bytes) -> SshBanner | None:
    if not line.startswith(_PREFIX):
        return None
    rest = line[4:]
    version, sep, tail = rest.partition(b"-")
    if not sep or not version or not all(0x30 <= c <= 0x39 or c == 0x2E for c in version):
        return None
    software, _, comments = tail.partition(b" ")
    if not software or any(c < 0x21 or c > 0x7E for c in software):
        return None
    return SshBanner(version, software, comments)


class SshParser:
    __slots__ = ("s", "done", "identified", "skipped")

    def __init__(self, settings: DpiSettings) -> None:
        self.s = settings
        self.done = [False, False]
        self.identified = False
        self.skipped = [0, 0]

    def feed(self, side: Side, data: bytes) -> FeedResult:
        if self.done[side]:
            return FeedResult(len(data), 0, [], Outcome.KEEP)
        events: list[ParserEvent] = []
        pos = 0
        while True:
            nl = data.find(b"\n", pos)
            if nl < 0:
                if len(data) - pos > MAX_BANNER:
                    return FeedResult(pos, 0, events, Outcome.GIVE_UP)
                if not self.identified and not probe(side, data[pos:]) and side is Side.CLIENT:
                    return FeedResult(pos, 0, events, Outcome.GIVE_UP)
                return FeedResult(pos, 0, events, Outcome.KEEP)
            line = data[pos:nl].rstrip(b"\r")
            if len(line) > MAX_BANNER:
                return FeedResult(pos, 0, events, Outcome.GIVE_UP)
            banner = parse_banner(line)
            pos = nl + 1
            if banner is None:
                self.skipped[side] += len(line) + 1
                if side is Side.CLIENT or self.skipped[side] > MAX_PRELUDE or line.startswith(_PREFIX):
                    return FeedResult(pos, 0, events, Outcome.GIVE_UP)
                continue
            events.append(banner)
            self.done[side] = True
            newly = not self.identified
            self.identified = True
            return FeedResult(len(data), 0, events, Outcome.FINAL if newly else Outcome.KEEP)
