"""NTP over UDP: version and mode of each message (mode 6 control and mode 7 private — monlist — too)."""

from __future__ import annotations

from workers.dpi.events import NtpMessage, ParserEvent
from workers.dpi.parsers.base import FeedResult, Outcome, Side
from workers.dpi.settings import DpiSettings

_PLAIN_SIZES = frozenset((48, 60, 68, 72))  # header, + key id and MD5 / SHA-1 MAC (RFC 5905)
MAX_POLL = 17  # RFC 5905 maximum poll exponent


def parse(msg: bytes) -> NtpMessage | None:
    if len(msg) < 8:
        return None
    version = (msg[0] >> 3) & 7
    mode = msg[0] & 7
    if not 1 <= version <= 4:
        return None
    if 1 <= mode <= 5:
        stratum, poll = msg[1], msg[2]
        if len(msg) not in _PLAIN_SIZES or stratum > 16 or poll > MAX_POLL:
            return None
        return NtpMessage(version, mode, stratum, len(msg))
    if mode == 6:  # control: opcode 1..31 in the low bits of byte 1, data length within the message
        count = int.from_bytes(msg[10:12], "big") if len(msg) >= 12 else -1
        if len(msg) < 12 or not 1 <= msg[1] & 0x1F <= 31 or 12 + count > len(msg):
            return None
        return NtpMessage(version, mode, 0, len(msg))
    if mode == 7:  # private: implementation 0 (universal), 2 (xntpd old) or 3 (xntpd)
        if msg[2] not in (0, 2, 3):
            return None
        return NtpMessage(version, mode, 0, len(msg))
    return None


def probe(side: Side, head: bytes) -> bool:
    return parse(head) is not None


class NtpParser:
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
