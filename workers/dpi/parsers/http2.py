"""HTTP/2 (cleartext, prior knowledge) and gRPC: client preface, frame headers, HPACK-decoded HEADERS.

One parser class serves two registry entries. Both wait for the client's first HEADERS block after the
preface: the gRPC entry finalizes when its content-type is `application/grpc*`, the HTTP/2 entry when
it is anything else (or when HPACK cannot decode it). HPACK state is per direction (the `hpack`
package, with its header-list bound set from `max_header_bytes`). HEADERS split over CONTINUATION
frames are joined up to `max_header_bytes`.

DATA frames (padding removed) are handed to the detectors as `HttpBodyPart` events of their stream,
cut as HTTP/1 bodies are (`workers.dpi.parsers.http.cut_part`), with the content type and `:path` of
the stream's HEADERS; END_STREAM (or trailers) ends the body. Memory stays bounded with many streams
in flight: at the end of each DATA frame its stream's held bytes go out as a part and only the overlap
is kept (so a value split across two of its frames, whatever came between them, is whole in one part),
for at most `MAX_BODY_STREAMS` open bodies per direction (beyond that the oldest is ended early and
counted as `dpi.http2.body_streams_full`).

The client's HEADERS and RST_STREAM frames are counted per connection: a client that has reset
`RAPID_RESET_STREAMS` streams, at least half of those it opened, is reported as a rapid reset
(`dpi.http2.rapid_reset`, CVE-2023-44487), once.

The client's control frames that make a server work without a request are counted per connection too:
PING and SETTINGS (not their acknowledgements), PRIORITY, and empty frames that end nothing (a DATA or
HEADERS frame of no bytes without END_STREAM, a CONTINUATION of none without END_HEADERS). Every
`CONTROL_BATCH` of one kind is reported (`dpi.http2.control_frames`, the kind as detail): the parser has
no clock, the detector times the batches against its per-group rate (CVE-2019-9512, -9515, -9518). A
header block the client spreads over `CONTINUATION_FLOOD_FRAMES` CONTINUATION frames is reported at once
(`dpi.http2.continuation_flood`, the 2024 CONTINUATION flood: a server holds every frame of a block until
it ends, and a block that never ends holds them all).
"""

from __future__ import annotations

from typing import Any

import hpack

from workers.dpi.events import Http2Frame, Http2Headers, HttpBodyPart, ParseAnomaly, ParserEvent
from workers.dpi.parsers.base import FeedResult, Outcome, Side
from workers.dpi.parsers.http import cut_part, part_overlap
from workers.dpi.settings import DpiSettings

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = (
    range(10)
)
FLAG_END_STREAM, FLAG_END_HEADERS, FLAG_PADDED, FLAG_PRIORITY = 0x1, 0x4, 0x8, 0x20
MAX_FRAME = 1 << 24
MAX_FRAME_EVENTS = 64  # Http2Frame events per feed call (the rest are counted, not reported)
# Streams per direction whose body is being inspected at once (each keeps up to a part's overlap; a
# client opens ~100 streams at most, a handful with bodies in practice).
MAX_BODY_STREAMS = 32
BODY_STREAMS_FULL = "dpi.http2.body_streams_full"
# Rapid reset (CVE-2023-44487): a client that opens streams and cancels each at once makes the server start
# work it never finishes, as fast as the client sends two frames. A browser cancels a few (a page left, a
# search typed on). At this many RST_STREAM frames from the client on one connection, at least half as many
# as the streams it opened, the parser reports `RAPID_RESET` (once per connection).
RAPID_RESET_STREAMS = 100
RAPID_RESET = "dpi.http2.rapid_reset"
# Control frames of one kind per report (`CONTROL_FRAMES`, detail: the kind). A client sends a SETTINGS
# frame or two per connection, a PING now and then (gRPC's keep-alive: one per 10 s at the most a server
# allows), a PRIORITY per stream at most, and empty frames hardly ever.
CONTROL_BATCH = 100
CONTROL_FRAMES = "dpi.http2.control_frames"
# CONTINUATION frames in one header block: a 64 KiB block takes 4 at the default frame size
CONTINUATION_FLOOD_FRAMES = 100
CONTINUATION_FLOOD = "dpi.http2.continuation_flood"
FLAG_ACK = 0x1


_CONTROL_KINDS = {PING: "PING", SETTINGS: "SETTINGS", PRIORITY: "PRIORITY"}


def _control_kind(ftype: int, flags: int, length: int) -> str:
    """The kind of control frame a client's frame is ("": none): PING and SETTINGS but their
    acknowledgements, PRIORITY, and an empty frame that ends nothing."""
    if ftype in _CONTROL_KINDS:
        return "" if ftype != PRIORITY and flags & FLAG_ACK else _CONTROL_KINDS[ftype]
    if length:
        return ""
    if ftype == CONTINUATION:
        return "" if flags & FLAG_END_HEADERS else "empty"
    return "empty" if ftype in (DATA, HEADERS) and not flags & FLAG_END_STREAM else ""


class _Body:
    """The inspected body of one stream in one direction."""

    __slots__ = ("content_type", "uri", "offset", "held")

    def __init__(self, content_type: bytes, uri: bytes) -> None:
        self.content_type = content_type
        self.uri = uri
        self.offset = 0  # body position of held[0]
        self.held = b""


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
        "bodies",
        "data_stream",
        "data_left",
        "data_pad",
        "data_end",
        "paths",
        "opened",
        "resets",
        "rapid_reported",
        "control",
        "continuations",
        "continuation_reported",
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
        # per direction: stream id → its body (insertion order: the oldest first)
        self.bodies: list[dict[int, _Body]] = [{}, {}]
        self.data_stream = [0, 0]  # the stream of the DATA frame being read
        self.data_left = [0, 0]  # its content bytes still to come
        self.data_pad = [0, 0]  # its padding after them
        self.data_end = [False, False]  # END_STREAM on it
        self.paths: dict[int, bytes] = {}  # :path of client streams with a body in either direction
        self.opened = 0  # HEADERS frames from the client (streams opened, trailers aside)
        self.resets = 0  # RST_STREAM frames from the client
        self.rapid_reported = False
        self.control: dict[str, int] = {}  # the client's control frames by kind (`_count`)
        self.continuations = 0  # CONTINUATION frames of the client's current header block
        self.continuation_reported = False

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
            if self.data_left[side]:
                take = min(self.data_left[side], n - pos)
                self._data(side, data[pos : pos + take], events)
                self.data_left[side] -= take
                pos += take
                if not self.data_left[side]:
                    self._data_done(side, events)
                continue
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
            if (
                side is Side.CLIENT
                and (ftype != DATA or not length)
                and self._count(ftype, flags, length, events)
            ):
                # a flood before any header block ends is HTTP/2 all the same: the HTTP/2 entry finalizes,
                # so its findings reach the detectors
                newly = self._decide(side, None) or newly
            if ftype == DATA and self.identified and stream:
                pad = 0
                if flags & FLAG_PADDED and length:
                    if n - pos < 10:
                        return FeedResult(pos, 10 - (n - pos), events, self._out(newly))
                    pad = data[pos + 9]
                content = length - (1 if flags & FLAG_PADDED and length else 0) - pad
                if content < 0:
                    events.append(ParseAnomaly("dpi.http2.bad_padding", "HTTP2"))
                    pos += 9
                    self.skip[side] = length
                    continue
                pos += 9 + length - content - pad
                self.data_stream[side] = stream
                self.data_left[side] = content
                self.data_pad[side] = pad
                self.data_end[side] = bool(flags & FLAG_END_STREAM)
                if not content:
                    self._data_done(side, events)
                continue
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
                    self._headers_seen(side, ev, events)
                newly = self._decide(side, ev) or newly
                if not self.identified and side is Side.CLIENT:
                    return FeedResult(pos, 0, events, Outcome.GIVE_UP)
        return FeedResult(pos, 0, events, self._out(newly))

    def _count(self, ftype: int, flags: int, length: int, events: list[ParserEvent]) -> bool:
        """A client's frame other than a DATA frame with bytes, counted once (its header is consumed
        here): streams opened and reset, a header block's CONTINUATION frames, and control frames by kind
        (each batch reported). Whether a control flood was reported."""
        reported = False
        if ftype == HEADERS:
            self.opened += 1
            self.continuations = 0
        elif ftype == RST_STREAM:
            self.resets += 1
            if (
                not self.rapid_reported
                and self.resets >= RAPID_RESET_STREAMS
                and 2 * self.resets >= self.opened
            ):
                self.rapid_reported = True
                detail = f"{self.resets} of {self.opened} streams reset by the client"
                events.append(ParseAnomaly(RAPID_RESET, "HTTP2", detail))
        elif ftype == CONTINUATION:
            self.continuations += 1
            if self.continuations == CONTINUATION_FLOOD_FRAMES and not self.continuation_reported:
                self.continuation_reported = reported = True
                detail = f"{self.continuations} CONTINUATION frames in one header block"
                events.append(ParseAnomaly(CONTINUATION_FLOOD, "HTTP2", detail))
        kind = _control_kind(ftype, flags, length)
        if kind:
            n = self.control[kind] = self.control.get(kind, 0) + 1
            if n % CONTROL_BATCH == 0:
                events.append(ParseAnomaly(CONTROL_FRAMES, "HTTP2", kind))
                reported = True
        return reported

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

    def _headers_seen(self, side: Side, ev: Http2Headers, events: list[ParserEvent]) -> None:
        """A stream's HEADERS: the context of the body that follows, or (trailers) the end of one."""
        stream = ev.stream_id
        bodies = self.bodies[side]
        if stream in bodies:
            if ev.end_stream:  # trailers end the body
                self._end_body(side, stream, events)
            return
        if ev.end_stream:
            return  # no body follows
        ctype = next((v for n, v in ev.headers if n.lower() == b"content-type"), b"")
        if side is Side.CLIENT:
            path = next((v for n, v in ev.headers if n == b":path"), b"")
            self.paths[stream] = path
        if len(bodies) >= MAX_BODY_STREAMS:
            oldest = next(iter(bodies))
            self._end_body(side, oldest, events)
            events.append(ParseAnomaly(BODY_STREAMS_FULL, "HTTP2", str(oldest)))
        bodies[stream] = _Body(ctype, self.paths.get(stream, b""))

    def _data(self, side: Side, chunk: bytes, events: list[ParserEvent]) -> None:
        """Content bytes of the DATA frame being read: full parts go out, the rest is held."""
        stream = self.data_stream[side]
        bodies = self.bodies[side]
        body = bodies.get(stream)
        if body is None:
            if len(bodies) >= MAX_BODY_STREAMS:
                oldest = next(iter(bodies))
                self._end_body(side, oldest, events)
                events.append(ParseAnomaly(BODY_STREAMS_FULL, "HTTP2", str(oldest)))
            body = bodies[stream] = _Body(b"", self.paths.get(stream, b""))
        limit = max(1, self.s.max_event_bytes)
        held = body.held + chunk if body.held else chunk
        while len(held) > limit:
            end, nxt = cut_part(held, limit, False)
            events.append(self._part(side, body, held[:end], False))
            body.offset += nxt
            held = held[nxt:]
        body.held = held

    def _data_done(self, side: Side, events: list[ParserEvent]) -> None:
        """The DATA frame's content is read: skip its padding; end the body, or keep only the overlap of
        what the stream holds (another stream's DATA may come next)."""
        self.skip[side] = self.data_pad[side]
        self.data_pad[side] = 0
        stream = self.data_stream[side]
        if self.data_end[side]:
            self._end_body(side, stream, events)
            return
        body = self.bodies[side].get(stream)
        overlap = part_overlap(max(1, self.s.max_event_bytes))
        if body is not None and len(body.held) > overlap:
            events.append(self._part(side, body, body.held, False))
            cut = len(body.held) - overlap
            body.offset += cut
            body.held = body.held[cut:]

    def _end_body(self, side: Side, stream: int, events: list[ParserEvent]) -> None:
        body = self.bodies[side].pop(stream, None)
        if body is not None:
            events.append(self._part(side, body, body.held, True))
        if stream not in self.bodies[0] and stream not in self.bodies[1]:
            self.paths.pop(stream, None)

    @staticmethod
    def _part(side: Side, body: _Body, data: bytes, last: bool) -> HttpBodyPart:
        return HttpBodyPart(
            body.offset, data, last, side is Side.CLIENT, body.content_type, body.uri, "HTTP2"
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
