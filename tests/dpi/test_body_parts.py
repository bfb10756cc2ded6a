"""HTTP bodies longer than `max_event_bytes`: the head event carries the first part, `HttpBodyPart`
events the rest. Every byte is in some part, parts are bounded, a value or an injection that straddles
a cut is whole in one part, and the parser never holds more than one part."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.dpi.drive import drive
from tests.dpi.drive import settings as dpi_settings
from workers.dpi import events as E
from workers.dpi.parsers import http, http2
from workers.dpi.parsers.base import Side

C, S = Side.CLIENT, Side.SERVER
FORM = b"application/x-www-form-urlencoded"


def request(body: bytes, ctype: bytes = b"text/plain", chunk: int = 0) -> bytes:
    if chunk:
        pieces = [body[i : i + chunk] for i in range(0, len(body), chunk)]
        framed = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
        return (
            b"POST /f?x=1 HTTP/1.1\r\nHost: h\r\nContent-Type: %s\r\nTransfer-Encoding: chunked\r\n\r\n%s"
            % (
                ctype,
                framed,
            )
        )
    head = b"POST /f?x=1 HTTP/1.1\r\nHost: h\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
    return head % (ctype, len(body)) + body


def pieces(events: list[E.ParserEvent]) -> list[tuple[int, bytes, bool]]:
    """(offset, bytes, last) of the head's body and every part after it, in order."""
    out: list[tuple[int, bytes, bool]] = []
    for ev in events:
        if isinstance(ev, E.HttpRequest | E.HttpResponse):
            out.append((0, ev.body, not ev.body_truncated))
        elif isinstance(ev, E.HttpBodyPart):
            out.append((ev.offset, ev.data, ev.last))
    return out


def assert_covers(parts: list[tuple[int, bytes, bool]], body: bytes, limit: int) -> None:
    """The parts are the body's own bytes at their offsets, leave no gap, each at most `limit`, and only
    the last is marked last."""
    end = 0
    for i, (offset, data, last) in enumerate(parts):
        assert len(data) <= limit
        assert body[offset : offset + len(data)] == data
        assert offset <= end, f"gap before byte {offset} (covered up to {end})"
        end = max(end, offset + len(data))
        assert last == (i == len(parts) - 1)
    assert end == len(body)


def test_a_long_body_arrives_whole_in_bounded_parts() -> None:
    body = bytes(range(256)) * 256  # 64 KiB, every byte value
    run = drive(http.HttpParser(dpi_settings()), [(C, request(body))], piece=1448)
    parts = pieces(run.events)
    assert len(parts) > 16
    assert_covers(parts, body, 4096)
    part = next(ev for ev in run.events if isinstance(ev, E.HttpBodyPart))
    assert part.request and part.uri == b"/f?x=1" and part.content_type == b"text/plain"


def test_a_body_of_exactly_one_part_is_the_head_event_alone() -> None:
    body = b"z" * 4096
    run = drive(http.HttpParser(dpi_settings()), [(C, request(body))])
    [ev] = run.events
    assert isinstance(ev, E.HttpRequest) and ev.body == body and not ev.body_truncated


def test_a_form_is_cut_after_an_ampersand_so_the_next_part_starts_with_a_whole_pair() -> None:
    pairs = [b"field%d=%s" % (i, b"v" * (i % 50)) for i in range(600)]
    body = b"&".join(pairs)
    run = drive(http.HttpParser(dpi_settings()), [(C, request(body, FORM))], piece=1000)
    parts = pieces(run.events)
    assert_covers(parts, body, 4096)
    for (offset, data, _), (nxt, _d, _l) in zip(parts, parts[1:], strict=False):
        assert data.endswith(b"&") and nxt == offset + len(data)  # no overlap needed
    for _offset, data, _ in parts[1:]:
        assert data.startswith(b"field")


def test_a_chunked_body_is_dechunked_into_parts() -> None:
    body = b"".join(b"%05d," % i for i in range(6000))  # 36,000 bytes
    run = drive(
        http.HttpParser(dpi_settings()), [(C, request(body, b"application/json", chunk=777))], piece=1300
    )
    assert_covers(pieces(run.events), body, 4096)


def test_a_response_body_is_parted_too() -> None:
    p = http.HttpParser(dpi_settings(max_event_bytes=512))
    p.feed(C, b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")
    body = b"r" * 5000
    res = p.feed(S, b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + body)
    assert_covers(pieces(res.events), body, 512)
    assert not any(isinstance(ev, E.HttpBodyPart) and ev.request for ev in res.events)


@settings(max_examples=60, deadline=None)
@given(
    limit=st.integers(min_value=16, max_value=600),
    at=st.integers(min_value=0, max_value=3000),
    piece=st.integers(min_value=1, max_value=2000),
    form=st.booleans(),
)
def test_an_injection_straddling_any_cut_is_whole_in_one_part(
    limit: int, at: int, piece: int, form: bool
) -> None:
    needle = b"'OR'1'='1"[: http.part_overlap(limit)]
    body = b"k=" + b"a" * at + b"&q=" + needle + b"&z=" + b"b" * 1500
    run = drive(
        http.HttpParser(dpi_settings(max_event_bytes=limit)),
        [(C, request(body, FORM if form else b""))],
        piece,
    )
    parts = pieces(run.events)
    assert_covers(parts, body, limit)
    assert any(needle in data for _o, data, _l in parts)


def test_the_parser_holds_at_most_one_part_of_a_body() -> None:
    p = http.HttpParser(dpi_settings(max_event_bytes=1024))
    size = 1 << 20
    p.feed(C, b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % size)
    seen = 0
    for _ in range(size // 9000 + 1):
        chunk = b"m" * min(9000, size - seen)
        res = p.feed(C, chunk)
        seen += len(chunk)
        assert res.consumed == len(chunk)
        assert len(p.client.body) <= 1024
        assert all(len(pieces([ev])[0][1]) <= 1024 for ev in res.events)
    assert seen == size and p.client.pending is None  # the message ended with its last part


def h2_request(path: str, ctype: str, frames: list[tuple[int, bytes, bool]], padded: bool = False) -> bytes:
    """Preface, SETTINGS, a HEADERS per stream, then DATA frames (stream, content, END_STREAM)."""
    import hpack

    from tests.data.pcaps.generate import h2_frame

    enc = hpack.Encoder()
    out = http2.PREFACE + h2_frame(4, 0, 0, b"")
    for stream in sorted({s for s, _d, _e in frames}):
        block = enc.encode([(":method", "POST"), (":scheme", "http"), (":authority", "a"), (":path", path),
                            ("content-type", ctype)])  # fmt: skip
        out += h2_frame(1, 0x4, stream, block)
    for stream, content, end in frames:
        flags = 0x1 if end else 0
        if padded:
            out += h2_frame(0, flags | 0x8, stream, bytes([5]) + content + b"\0" * 5)
        else:
            out += h2_frame(0, flags, stream, content)
    return out


def h2_parts(events: list[E.ParserEvent], stream_bodies: dict[int, bytes]) -> None:
    """Each stream's parts (told apart by their bodies) cover its body; one last part each."""
    parts = [ev for ev in events if isinstance(ev, E.HttpBodyPart)]
    assert all(p.protocol == "HTTP2" and p.request and p.uri == b"/api" for p in parts)
    for body in stream_bodies.values():
        mine = [(p.offset, p.data, p.last) for p in parts if p.data and body.startswith(p.data, p.offset)]
        lasts = [p for p in parts if p.last and body.startswith(p.data, p.offset)]
        assert len(lasts) == 1
        ordered = sorted(mine, key=lambda t: t[0])
        end = 0
        for offset, data, _last in ordered:
            assert offset <= end and len(data) <= 4096
            end = max(end, offset + len(data))
        assert end == len(body)


def test_http2_data_frames_of_interleaved_streams_arrive_whole_in_parts() -> None:
    one, three = bytes(range(97, 123)) * 800, b"Z" * 9000 + b"'OR'1'='1" + b"Q" * 9000
    frames = []
    for i in range(0, 20800, 5000):
        frames.append((1, one[i : i + 5000], i + 5000 >= len(one)))
        frames.append((3, three[i : i + 5000], i + 5000 >= len(three)))
    data = h2_request("/api", "application/json", frames, padded=True)
    run = drive(http2.Http2Parser(dpi_settings()), [(C, data)], piece=1400)
    h2_parts(run.events, {1: one, 3: three})
    parts = [ev for ev in run.events if isinstance(ev, E.HttpBodyPart)]
    assert any(b"'OR'1'='1" in p.data for p in parts)
    assert {p.content_type for p in parts} == {b"application/json"}


def test_http2_open_bodies_are_bounded_and_counted() -> None:
    streams = list(range(1, 2 * (http2.MAX_BODY_STREAMS + 4), 2))
    frames = [(s, b"x" * 10, False) for s in streams]
    p = http2.Http2Parser(dpi_settings())
    res = p.feed(C, h2_request("/api", "text/plain", frames))
    assert len(p.bodies[C]) <= http2.MAX_BODY_STREAMS
    full = [ev for ev in res.events if isinstance(ev, E.ParseAnomaly) and ev.name == http2.BODY_STREAMS_FULL]
    assert len(full) >= 4  # (a stream evicted at its HEADERS evicts another at its DATA)
    # every stream's bytes went out in a part or are still held for its next frame: none dropped unseen
    out = sum(ev.data == b"x" * 10 for ev in res.events if isinstance(ev, E.HttpBodyPart))
    held = sum(body.held == b"x" * 10 for body in p.bodies[C].values())
    assert out + held == len(streams) and out >= 4
