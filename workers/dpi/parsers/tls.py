"""TLS and SSL (SSLv2-framed hellos, SSLv3, TLS 1.0–1.3): record layer, hellos, heartbeat, alerts.

Identification needs a whole, well-formed ClientHello or ServerHello (or an SSLv2 client/server hello).
After a side's ChangeCipherSpec its handshake, alert and heartbeat records are encrypted: heartbeats are
still reported (with `encrypted` set) because the record length alone tells a lot. Application data is
skipped without buffering.
"""

from __future__ import annotations

import struct

from core import anomalies as A
from workers.dpi.events import (
    ParseAnomaly,
    ParserEvent,
    TlsAlert,
    TlsClientHello,
    TlsHeartbeat,
    TlsServerHello,
)
from workers.dpi.parsers.base import FeedResult, Outcome, Side
from workers.dpi.settings import DpiSettings

CHANGE_CIPHER_SPEC, ALERT, HANDSHAKE, APPLICATION_DATA, HEARTBEAT = 20, 21, 22, 23, 24
_RECORD_TYPES = frozenset((CHANGE_CIPHER_SPEC, ALERT, HANDSHAKE, APPLICATION_DATA, HEARTBEAT))
MAX_RECORD = (1 << 14) + 2048  # RFC 5246: ciphertext length bound
MAX_HANDSHAKE_BYTES = 65536  # handshake bytes gathered across records to read one hello
EXT_SNI, EXT_ALPN, EXT_SUPPORTED_VERSIONS = 0, 16, 43


def probe(side: Side, head: bytes) -> bool:
    if not head:
        return True
    if head[0] == HANDSHAKE:
        return len(head) < 2 or head[1] == 3
    if head[0] & 0x80:  # SSLv2 record header (2-byte length)
        if len(head) < 3:
            return True
        return head[2] == (1 if side is Side.CLIENT else 4)
    return False


def _u16(b: bytes, off: int) -> int:
    return (b[off] << 8) | b[off + 1]


def parse_client_hello(body: bytes, record_version: int) -> TlsClientHello | None:
    """Body of a ClientHello handshake message (after the 4-byte handshake header)."""
    try:
        version = _u16(body, 0)
        off = 2 + 32
        sid_len = body[off]
        off += 1 + sid_len
        cs_len = _u16(body, off)
        if cs_len % 2:
            return None
        off += 2 + cs_len
        comp_len = body[off]
        off += 1 + comp_len
        if off > len(body):
            return None
        sni = b""
        alpn: list[bytes] = []
        versions: list[int] = []
        if off + 2 <= len(body):
            ext_total = _u16(body, off)
            off += 2
            end = off + ext_total
            if end > len(body):
                return None
            while off + 4 <= end:
                etype, elen = _u16(body, off), _u16(body, off + 2)
                off += 4
                ext = body[off : off + elen]
                if len(ext) != elen:
                    return None
                off += elen
                if etype == EXT_SNI and len(ext) >= 5:
                    # server_name_list: u16 len, then (type u8, u16 len, name)
                    p = 2
                    while p + 3 <= len(ext):
                        ntype, nlen = ext[p], _u16(ext, p + 1)
                        name = ext[p + 3 : p + 3 + nlen]
                        if ntype == 0 and not sni:
                            sni = name
                        p += 3 + nlen
                elif etype == EXT_ALPN and len(ext) >= 2:
                    p = 2
                    while p < len(ext):
                        plen = ext[p]
                        alpn.append(ext[p + 1 : p + 1 + plen])
                        p += 1 + plen
                elif etype == EXT_SUPPORTED_VERSIONS and ext:
                    versions = [_u16(ext, 1 + i) for i in range(0, ext[0] - 1, 2) if 2 + i < len(ext)]
        return TlsClientHello(record_version, version, sni, tuple(alpn), cs_len // 2, tuple(versions))
    except IndexError:
        return None


def parse_server_hello(body: bytes, record_version: int) -> TlsServerHello | None:
    try:
        version = _u16(body, 0)
        off = 2 + 32
        sid_len = body[off]
        off += 1 + sid_len
        cipher = _u16(body, off)
        off += 3  # cipher + compression
        if off > len(body):
            return None
        selected = version
        alpn = b""
        if off + 2 <= len(body):
            end = off + 2 + _u16(body, off)
            off += 2
            while off + 4 <= min(end, len(body)):
                etype, elen = _u16(body, off), _u16(body, off + 2)
                ext = body[off + 4 : off + 4 + elen]
                off += 4 + elen
                if etype == EXT_SUPPORTED_VERSIONS and len(ext) == 2:
                    selected = _u16(ext, 0)
                elif etype == EXT_ALPN and len(ext) >= 3:
                    alpn = ext[3 : 3 + ext[2]]
        return TlsServerHello(record_version, version, cipher, selected, alpn)
    except IndexError:
        return None


def parse_sslv2_hello(side: Side, data: bytes) -> tuple[int, ParserEvent | None]:
    """(record length incl. header, event) for an SSLv2-framed record at the start of `data`;
    length 0 when incomplete, -1 when malformed."""
    if len(data) < 2:
        return 0, None
    length = ((data[0] & 0x7F) << 8) | data[1]
    total = 2 + length
    if len(data) < total:
        return 0, None
    body = data[2:total]
    if side is Side.CLIENT:
        if len(body) < 9 or body[0] != 1:
            return -1, None
        version = _u16(body, 1)
        cs_len, sid_len, ch_len = struct.unpack_from("!HHH", body, 3)
        if cs_len % 3 or 9 + cs_len + sid_len + ch_len > len(body) or not (16 <= ch_len <= 32):
            return -1, None
        return total, TlsClientHello(0x0002, version, b"", (), cs_len // 3, (), True)
    if len(body) < 11 or body[0] != 4:
        return -1, None
    version = _u16(body, 3)
    return total, TlsServerHello(0x0002, version, 0, version)


class TlsParser:
    __slots__ = ("s", "identified", "encrypted", "hs", "hello_done", "skip", "first")

    def __init__(self, settings: DpiSettings) -> None:
        self.s = settings
        self.identified = False
        self.encrypted = [False, False]
        self.hs = [bytearray(), bytearray()]  # handshake bytes gathered until the hello is read
        self.hello_done = [False, False]
        self.skip = [0, 0]  # application-data bytes still to skip
        self.first = [True, True]

    def feed(self, side: Side, data: bytes) -> FeedResult:
        events: list[ParserEvent] = []
        pos = 0
        n = len(data)
        newly = False
        while pos < n:
            if self.skip[side]:
                take = min(self.skip[side], n - pos)
                self.skip[side] -= take
                pos += take
                continue
            if self.first[side] and data[pos] & 0x80 and not self.identified:
                used, v2 = parse_sslv2_hello(side, data[pos:])
                if used < 0:
                    return FeedResult(pos, 0, events, Outcome.GIVE_UP)
                if used == 0:
                    return self._result(pos, 0, events, newly)
                self.first[side] = False
                self.hello_done[side] = True
                pos += used
                if v2 is not None:
                    events.append(v2)
                    self.identified = newly = True
                continue
            if n - pos < 5:
                return self._result(pos, 5 - (n - pos), events, newly)
            rtype, major, minor, length = data[pos], data[pos + 1], data[pos + 2], _u16(data, pos + 3)
            if rtype not in _RECORD_TYPES or major != 3 or minor > 4 or length > MAX_RECORD:
                if not self.identified:
                    return FeedResult(pos, 0, events, Outcome.GIVE_UP)
                events.append(ParseAnomaly(A.DPI_TLS_BAD_RECORD, "TLS/SSL", data[pos : pos + 5].hex()))
                return FeedResult(n, 0, events, Outcome.GIVE_UP)
            if self.first[side] and rtype != HANDSHAKE and not self.identified:
                return FeedResult(pos, 0, events, Outcome.GIVE_UP)
            self.first[side] = False
            record_version = (major << 8) | minor
            if rtype == APPLICATION_DATA:
                pos += 5
                self.skip[side] = length
                continue
            if n - pos < 5 + length:
                return self._result(pos, 5 + length - (n - pos), events, newly)
            body = data[pos + 5 : pos + 5 + length]
            pos += 5 + length
            if rtype == CHANGE_CIPHER_SPEC:
                self.encrypted[side] = True
            elif rtype == HEARTBEAT:
                enc = self.encrypted[side]
                mtype = body[0] if body else 0
                declared = _u16(body, 1) if len(body) >= 3 else 0
                events.append(TlsHeartbeat(record_version, mtype, declared, length, enc))
            elif rtype == ALERT:
                if not self.encrypted[side] and length == 2:
                    events.append(TlsAlert(body[0], body[1]))
                else:
                    events.append(TlsAlert(0, 0, True))
            elif rtype == HANDSHAKE and not self.encrypted[side] and not self.hello_done[side]:
                hs = self.hs[side]
                hs += body
                if len(hs) < 4:
                    continue
                htype = hs[0]
                hlen = (hs[1] << 16) | (hs[2] << 8) | hs[3]
                if htype not in (1, 2) or hlen > MAX_HANDSHAKE_BYTES:
                    if not self.identified:
                        return FeedResult(pos, 0, events, Outcome.GIVE_UP)
                    self.hello_done[side] = True
                    self.hs[side] = bytearray()
                    continue
                if len(hs) < 4 + hlen:
                    continue
                hello_body = bytes(hs[4 : 4 + hlen])
                self.hs[side] = bytearray()
                self.hello_done[side] = True
                ev: ParserEvent | None
                if htype == 1:
                    ev = parse_client_hello(hello_body, record_version)
                else:
                    ev = parse_server_hello(hello_body, record_version)
                if ev is None:
                    if not self.identified:
                        return FeedResult(pos, 0, events, Outcome.GIVE_UP)
                    events.append(ParseAnomaly(A.DPI_TLS_BAD_RECORD, "TLS/SSL", "bad hello"))
                    continue
                events.append(ev)
                if not self.identified:
                    self.identified = newly = True
        return self._result(pos, 0, events, newly)

    def _result(self, pos: int, needed: int, events: list[ParserEvent], newly: bool) -> FeedResult:
        return FeedResult(pos, needed, events, Outcome.FINAL if newly else Outcome.KEEP)
