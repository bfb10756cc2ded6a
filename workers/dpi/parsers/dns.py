"""DNS over UDP and TCP: header, questions, answers, compression pointers with loop protection.

`parse_message` is a pure function over one message; it never raises and reports what it could not
read as anomalies on the event (`dpi.dns.*`). Names are followed through compression pointers with a
hop bound (`max_dns_pointer_hops`) and a visited set, so a pointer loop ends with
`dpi.dns.pointer_loop` instead of spinning. Over TCP each message has a 2-byte length prefix.
"""

from __future__ import annotations

import struct

from core import anomalies as A
from workers.dpi.events import DnsAnswer, DnsMessage, DnsQuestion, ParserEvent
from workers.dpi.parsers.base import FeedResult, Outcome, Side
from workers.dpi.settings import DpiSettings

_HEADER = struct.Struct("!HHHHHH")
MAX_NAME = 255  # RFC 1035 §2.3.4
MAX_QUESTIONS = 16  # a message claiming more questions is not identified as DNS
_VALID_OPCODES = frozenset((0, 1, 2, 4, 5, 6))
TYPE_A, TYPE_NS, TYPE_CNAME, TYPE_PTR, TYPE_MX, TYPE_AAAA = 1, 2, 5, 12, 15, 28
_NAME_TYPES = frozenset((TYPE_NS, TYPE_CNAME, TYPE_PTR))


class _Bad(Exception):
    def __init__(self, anomaly: str) -> None:
        self.anomaly = anomaly


def _label_text(label: bytes) -> str:
    out = []
    for c in label:
        if 0x21 <= c <= 0x7E and c not in (0x2E, 0x5C):
            out.append(chr(c).lower())
        else:
            out.append(f"\\x{c:02x}")
    return "".join(out)


def read_name(msg: bytes, off: int, max_hops: int) -> tuple[str, int]:
    """Read a (possibly compressed) name at `off`; return (name, offset after it in the record)."""
    labels: list[str] = []
    end = -1
    hops = 0
    visited: set[int] = set()
    length = 0
    while True:
        if off >= len(msg):
            raise _Bad(A.DPI_DNS_TRUNCATED)
        c = msg[off]
        if c & 0xC0 == 0xC0:
            if off + 1 >= len(msg):
                raise _Bad(A.DPI_DNS_TRUNCATED)
            target = ((c & 0x3F) << 8) | msg[off + 1]
            if end < 0:
                end = off + 2
            hops += 1
            if target in visited or hops > max_hops:
                raise _Bad(A.DPI_DNS_POINTER_LOOP)
            if target >= len(msg):
                raise _Bad(A.DPI_DNS_BAD_POINTER)
            visited.add(target)
            off = target
            continue
        if c & 0xC0:
            raise _Bad(A.DPI_DNS_BAD_POINTER)  # extended label types are obsolete
        if c == 0:
            if end < 0:
                end = off + 1
            return ".".join(labels), end
        label = msg[off + 1 : off + 1 + c]
        if len(label) != c:
            raise _Bad(A.DPI_DNS_TRUNCATED)
        length += c + 1
        if length > MAX_NAME:
            raise _Bad(A.DPI_DNS_NAME_TOO_LONG)
        labels.append(_label_text(label))
        off += 1 + c


def parse_message(msg: bytes, settings: DpiSettings, transport: str = "udp") -> DnsMessage | None:
    """Decode one DNS message. None when even the header or question section is unreadable."""
    if len(msg) < 12:
        return None
    ident, flags, qd, an, ns, ar = _HEADER.unpack_from(msg)
    qr = bool(flags & 0x8000)
    opcode = (flags >> 11) & 0xF
    rcode = flags & 0xF
    if opcode not in _VALID_OPCODES or qd > MAX_QUESTIONS:
        return None
    anomalies: list[str] = []
    off = 12
    questions: list[DnsQuestion] = []
    hops = settings.max_dns_pointer_hops
    try:
        for _ in range(qd):
            name, off = read_name(msg, off, hops)
            if off + 4 > len(msg):
                raise _Bad(A.DPI_DNS_TRUNCATED)
            qtype, qclass = struct.unpack_from("!HH", msg, off)
            off += 4
            questions.append(DnsQuestion(name, qtype, qclass))
    except _Bad:
        return None
    answers: list[DnsAnswer] = []
    try:
        if an > settings.max_dns_records:
            anomalies.append(A.DPI_DNS_TOO_MANY_RECORDS)
        for _ in range(min(an, settings.max_dns_records)):
            name, off = read_name(msg, off, hops)
            if off + 10 > len(msg):
                raise _Bad(A.DPI_DNS_TRUNCATED)
            rtype, rclass, ttl, rdlen = struct.unpack_from("!HHIH", msg, off)
            off += 10
            rdata = msg[off : off + rdlen]
            if len(rdata) != rdlen:
                raise _Bad(A.DPI_DNS_TRUNCATED)
            target = ""
            if rtype in _NAME_TYPES:
                target, _ = read_name(msg, off, hops)
            elif rtype == TYPE_MX and rdlen > 2:
                target, _ = read_name(msg, off + 2, hops)
            off += rdlen
            answers.append(DnsAnswer(name, rtype, rclass, ttl, rdata, target))
    except _Bad as bad:
        anomalies.append(bad.anomaly)
    return DnsMessage(
        ident, qr, opcode, rcode, flags, tuple(questions), tuple(answers), ns, ar, len(msg), transport,
        tuple(anomalies),
    )  # fmt: skip


def probe(side: Side, head: bytes) -> bool:
    """UDP: the first datagram must hold a plausible header."""
    if len(head) < 12:
        return False
    _ident, flags, qd, an, _ns, _ar = _HEADER.unpack_from(head)
    opcode = (flags >> 11) & 0xF
    if opcode not in _VALID_OPCODES or qd > MAX_QUESTIONS:
        return False
    if side is Side.CLIENT and (flags & 0x8000 or qd == 0 or an > 0):
        return False
    return True


def probe_tcp(side: Side, head: bytes) -> bool:
    if len(head) < 2:
        return True
    size = (head[0] << 8) | head[1]
    if size < 12:
        return False
    return len(head) < 14 or probe(side, head[2:])


class DnsParser:
    __slots__ = ("s", "transport", "identified")

    """One parser for both transports: UDP feeds one datagram per call; TCP is length-prefixed."""

    def __init__(self, settings: DpiSettings, transport: str = "udp") -> None:
        self.s = settings
        self.transport = transport
        self.identified = False

    def feed(self, side: Side, data: bytes) -> FeedResult:
        if self.transport == "udp":
            return self._message(side, data, len(data), [], False)
        events: list[ParserEvent] = []
        pos = 0
        newly = False
        while len(data) - pos >= 2:
            size = (data[pos] << 8) | data[pos + 1]
            if len(data) - pos < 2 + size:
                return FeedResult(pos, 2 + size - (len(data) - pos), events, self._outcome(newly))
            res = self._message(side, data[pos + 2 : pos + 2 + size], 0, events, newly)
            if res.outcome is Outcome.GIVE_UP:
                return FeedResult(pos, 0, events, Outcome.GIVE_UP)
            newly = newly or res.outcome is Outcome.FINAL
            pos += 2 + size
        return FeedResult(pos, 0, events, self._outcome(newly))

    def _outcome(self, newly: bool) -> Outcome:
        return Outcome.FINAL if newly else Outcome.KEEP

    def _message(
        self, side: Side, msg: bytes, consumed: int, events: list[ParserEvent], newly: bool
    ) -> FeedResult:
        ev = parse_message(msg, self.s, self.transport)
        if ev is None or (not self.identified and side is Side.CLIENT and ev.qr):
            if self.identified:
                return FeedResult(consumed, 0, events, Outcome.KEEP)
            return FeedResult(consumed, 0, events, Outcome.GIVE_UP)
        events.append(ev)
        if not self.identified:
            self.identified = True
            return FeedResult(consumed, 0, events, Outcome.FINAL)
        return FeedResult(consumed, 0, events, self._outcome(newly))
