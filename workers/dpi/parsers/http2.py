"""HTTP/2 (cleartext, prior knowledge) and gRPC: client preface, frame headers, HPACK-decoded HEADERS.

One parser class serves two registry entries. Both wait for the client's first HEADERS block after the
preface: the gRPC entry finalizes when its content-type is `application/grpc*`, the HTTP/2 entry when
it is anything else (or when HPACK cannot decode it). HPACK state is per direction (the `hpack`
package, with its header-list bound set from `max_header_bytes`). HEADERS split over CONTINUATION
frames are joined up to `max_header_bytes`.
"""

from __future__ import annotations

from typing import Any

import hpack

from workers.dpi.events import Http2Frame, Http2Headers, ParseAnomaly, ParserEvent
from workers.dpi.parsers.base import FeedResult, Outcome, Side
from workers.dpi.settings import DpiSettings

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = (
    range(10)
)
FLAG_END_STREAM, FLAG_END_HEADERS, FLAG_PADDED, FLAG_PRIORITY = 0x1, 0x4, 0x8, 0x20
MAX_FRAME = 1 << 24
MAX_FRAME_EVENTS = 64  # Http2Frame events per feed call (the rest are counted, not reported)


def probe(side: Side, head: bytes) -> bool:
    if side is Side.SERVER:  # the server's first frame: a known frame type (SETTINGS in practice)
        return len(head) < 9 or head[3] <= CONTINUATION
    n = min(len(head), len(PREFACE))
    return head[:n] == PREFACE[:n]


def _text_headers(raw: Any) -> tuple[tuple[bytes, bytes], ...]:
    out = []
    for name, value in raw:
        n = name if isinstance(name, bytes) else str(name).encode()
        v = value if isinstance(value, bytes) else str(value).encode()
        out.append((n, v))
    return tuple(out)


class Http2Parser:
    __slots__ = (
        "s",
        "grpc",
        "preface_seen",
        "identified",
        "decoders",
        "block",
        "block_stream",
        "block_end",
        "hpack_broken",
        "skip",
    )

    def __init__(self, settings: DpiSettings, grpc: bool = False) -> None:
        self.s = settings
        self.grpc = grpc
        self.preface_seen = False
        self.identified = False
        self.decoders = [hpack.Decoder(), hpack.Decoder()]
        for d in self.decoders:
            d.max_header_list_size = settings.max_header_bytes
        self.block = [bytearray(), bytearray()]
        self.block_stream = [0, 0]
        self.block_end = [False, False]
        self.hpack_broken = [False, False]
        self.skip = [0, 0]

    def feed(self, side: Side, data: bytes) -> FeedResult:
        events: list[ParserEvent] = []
        pos = 0
        n = len(data)
        newly = False
        if side is Side.CLIENT and not self.preface_seen:
            k = min(n, len(PREFACE))
            if data[:k] != PREFACE[:k]:
                return FeedResult(0, 0, events, Outcome.GIVE_UP)
            if n < len(PREFACE):
                return FeedResult(0, len(PREFACE) - n, events, Outcome.KEEP)
            self.preface_seen = True
            pos = len(PREFACE)
        if side is Side.SERVER and not self.preface_seen:
            return FeedResult(n, 0, events, Outcome.KEEP)
        frames = 0
        while pos < n:
            if self.skip[side]:
                take = min(self.skip[side], n - pos)
                self.skip[side] -= take
                pos += take
                continue
            if n - pos < 9:
                return FeedResult(pos, 9 - (n - pos), events, self._out(newly))
            length = int.from_bytes(data[pos : pos + 3], "big")
            ftype, flags = data[pos + 3], data[pos + 4]
            stream = int.from_bytes(data[pos + 5 : pos + 9], "big") & 0x7FFFFFFF
            if not self.identified and (ftype > CONTINUATION or length > MAX_FRAME):
                return FeedResult(pos, 0, events, Outcome.GIVE_UP)
            header_block = ftype in (HEADERS, CONTINUATION) and not self.hpack_broken[side]
            if header_block and n - pos < 9 + length:
                return FeedResult(pos, 9 + length - (n - pos), events, self._out(newly))
            frames += 1
            if frames <= MAX_FRAME_EVENTS:
                events.append(Http2Frame(ftype, flags, stream, length))
            if not header_block:
                pos += 9
                self.skip[side] = length
                continue
            payload = data[pos + 9 : pos + 9 + length]
            pos += 9 + length
            if ftype == HEADERS:
                off = 0
                pad = 0
                if flags & FLAG_PADDED and payload:
                    pad = payload[0]
                    off = 1
                if flags & FLAG_PRIORITY:
                    off += 5
                fragment = payload[off : len(payload) - pad if pad else len(payload)]
                self.block[side] = bytearray(fragment)
                self.block_stream[side] = stream
                self.block_end[side] = bool(flags & FLAG_END_STREAM)
            else:
                self.block[side] += payload
            if len(self.block[side]) > self.s.max_header_bytes:
                events.append(ParseAnomaly("dpi.http2.header_block_too_long", "HTTP2"))
                self.hpack_broken[side] = True
                newly = self._decide(side, None) or newly
                continue
            if flags & FLAG_END_HEADERS:
                ev = self._decode(side)
                if ev is None:
                    events.append(ParseAnomaly("dpi.http2.hpack_error", "HTTP2"))
                else:
                    events.append(ev)
                newly = self._decide(side, ev) or newly
                if not self.identified and side is Side.CLIENT:
                    return FeedResult(pos, 0, events, Outcome.GIVE_UP)
        return FeedResult(pos, 0, events, self._out(newly))

    def _decode(self, side: Side) -> Http2Headers | None:
        block = bytes(self.block[side])
        self.block[side] = bytearray()
        try:
            raw = self.decoders[side].decode(block, raw=True)
        except Exception:  # hpack raises several exception types on hostile input; all mean "undecodable"
            self.hpack_broken[side] = True
            return None
        headers = _text_headers(raw)[: self.s.max_headers]
        ctype = b""
        for name, value in headers:
            if name.lower() == b"content-type":
                ctype = value.lower()
        return Http2Headers(
            self.block_stream[side], headers, self.block_end[side], ctype.startswith(b"application/grpc")
        )

    def _decide(self, side: Side, ev: Http2Headers | None) -> bool:
        """On the client's first header block: finalize if it matches this entry (gRPC or not)."""
        if self.identified or side is Side.SERVER:
            return False
        is_grpc = ev is not None and ev.grpc
        if is_grpc == self.grpc:
            self.identified = True
            return True
        return False

    def _out(self, newly: bool) -> Outcome:
        return Outcome.FINAL if newly else Outcome.KEEP
