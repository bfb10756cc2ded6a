"""HTTP bodies longer than `max_event_bytes`: the head event carries the first part, `HttpBodyPart`
events the rest. Every byte is in some part, parts are bounded, a value or an injection that straddles
a cut is whole in one part, and the parser never holds more than one part."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.dpi.drive import drive
from tests.dpi.drive import settings as dpi_settings
from workers.dpi import events as E
from workers.dpi.parsers import http
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
