"""http2_control_flood: a cleartext HTTP/2 client's PING, SETTINGS, PRIORITY and empty frames counted by
the parser per connection (whatever the byte cuts) and timed by the detector against the group's rate;
one header block spread over 100 CONTINUATION frames is reported at once. A client's keep-alive pings,
acknowledgements and a large header block in a few CONTINUATIONs are no finding."""

from __future__ import annotations

import hpack
import pytest

from core.packet import TCP_ACK, TCP_PSH
from core.verdict import WorkerVerdict
from tests.data.pcaps.generate import h2_frame
from tests.dpi.drive import drive
from tests.dpi.drive import settings as dpi_settings
from threats.settings import DEFAULT_SETTINGS, compile_threat_settings
from workers.detect.http2flood import ControlFrames
from workers.dpi import events as E
from workers.dpi.parsers import http2
from workers.dpi.parsers.base import Side

from .build import handshake, tcp4
from .test_body_parts import flow
from .test_engine import CLIENT, WEB, Lab

DATA, HEADERS, PRIORITY, SETTINGS, PING, CONTINUATION = 0, 1, 2, 4, 6, 9
ACK, END_STREAM, END_HEADERS = 0x1, 0x1, 0x4
OPENING = http2.PREFACE + h2_frame(SETTINGS, 0, 0, b"")


def ping(ack: bool = False) -> bytes:
    return h2_frame(PING, ACK if ack else 0, 0, b"\x00" * 8)


def get(stream: int, end_headers: bool = True) -> bytes:
    block = hpack.Encoder().encode(
        [(":method", "GET"), (":scheme", "http"), (":authority", "a"), (":path", "/")]
    )
    return h2_frame(HEADERS, END_STREAM | (END_HEADERS if end_headers else 0), stream, block)


def anomalies(data: bytes, piece: int = 0) -> list[E.ParseAnomaly]:
    run = drive(http2.Http2Parser(dpi_settings()), [(Side.CLIENT, data)], piece=piece)
    names = (http2.CONTROL_FRAMES, http2.CONTINUATION_FLOOD)
    return [e for e in run.events if isinstance(e, E.ParseAnomaly) and e.name in names]


@pytest.mark.parametrize("piece", [0, 5, 1448])
def test_control_frames_are_reported_in_batches_of_a_kind_whatever_the_cuts(piece: int) -> None:
    data = OPENING + get(1) + ping() * 250 + h2_frame(SETTINGS, 0, 0, b"") * 100
    found = anomalies(data, piece)
    assert [(e.name, e.detail) for e in found] == [(http2.CONTROL_FRAMES, "PING")] * 2 + [
        (http2.CONTROL_FRAMES, "SETTINGS")
    ]  # 250 PINGs: two batches; 101 SETTINGS (the opening one too): one


def test_empty_frames_and_priorities_are_control_frames_too() -> None:
    empty_data = h2_frame(DATA, 0, 1, b"")  # no bytes, no END_STREAM: it ends nothing
    priority = h2_frame(PRIORITY, 0, 3, b"\x00\x00\x00\x01\x10")
    found = anomalies(OPENING + get(1) + empty_data * 100 + priority * 100)
    assert [e.detail for e in found] == ["empty", "PRIORITY"]


def test_acknowledgements_and_ordinary_frames_are_not_counted() -> None:
    acks = ping(ack=True) * 300 + h2_frame(SETTINGS, ACK, 0, b"") * 300
    ended = h2_frame(DATA, END_STREAM, 1, b"") * 300  # an empty DATA frame that ends its stream
    requests = b"".join(get(2 * i + 1) for i in range(300))
    assert anomalies(OPENING + acks + ended + requests) == []


def test_a_header_block_in_100_continuations_is_reported_once() -> None:
    piece = h2_frame(CONTINUATION, 0, 1, b"\x00")  # (hpack bytes that never decode: the count goes on)
    [found] = anomalies(OPENING + get(1, end_headers=False) + piece * 250)
    assert found.name == http2.CONTINUATION_FLOOD and found.detail.startswith("100 CONTINUATION")
    # a 64 KiB block in four 16 KiB frames is how a client sends a large one
    block = hpack.Encoder().encode([(":method", "GET"), (":path", "/"), ("cookie", "c" * 60000)])
    head, rest = block[:16384], block[16384:]
    frames = h2_frame(HEADERS, END_STREAM, 1, head)
    while rest:
        last = len(rest) <= 16384
        frames += h2_frame(CONTINUATION, END_HEADERS if last else 0, 1, rest[:16384])
        rest = rest[16384:]
    assert anomalies(OPENING + frames) == []


def test_the_detector_times_batches_against_the_groups_rate() -> None:
    flood = ControlFrames()
    hits = [flood.batch("PING", 100.0 + i * 0.01, DEFAULT_SETTINGS) for i in range(12)]
    # 1,000 frames (ten batches after the first) within 10 s: one finding, on the eleventh batch
    assert [i for i, h in enumerate(hits) if h is not None] == [10]
    assert hits[10] is not None and hits[10].detail == "1000 PING frames from the client in 0.1 s"
    keepalive = ControlFrames()  # a batch every 20 s: a client pinging five times a second at most
    assert all(keepalive.batch("PING", 100.0 + i * 20, DEFAULT_SETTINGS) is None for i in range(50))
    strict = compile_threat_settings({"http2_control_flood": {"frames_per_window": 200, "window": 60}})
    assert [ControlFrames().batch("PING", 0.0, strict)] == [None]
    tight = ControlFrames()
    assert [tight.batch("SETTINGS", t, strict) is not None for t in (0.0, 20.0, 40.0)] == [False, False, True]


def test_a_ping_flood_is_reset_in_protect_and_keepalive_pings_are_not() -> None:
    lab = Lab()
    verdicts = lab.send(flow(OPENING + get(1) + ping() * 1200, 43100))
    assert WorkerVerdict.RESET_FLOW in verdicts
    [event] = lab.threats("http2_control_flood")
    assert event["action"] == "reset" and event["group"] == "web" and "PING" in event["message"]
    # the same 1,200 pings one every 2 s, each in a packet of its own: a keep-alive, never a flood
    slow = list(handshake(CLIENT, 43101, WEB, 80))
    payloads = [OPENING + get(1)] + [ping()] * 1200
    seq = 1001
    for payload in payloads:
        slow.append(tcp4(CLIENT, 43101, WEB, 80, TCP_ACK | TCP_PSH, seq=seq, ack=5001, payload=payload))
        seq += len(payload)
    verdicts = lab.send(slow, step=2.0)
    assert WorkerVerdict.RESET_FLOW not in verdicts and len(lab.threats()) == 1


def test_a_flood_before_any_request_is_http2_all_the_same() -> None:
    lab = Lab()  # the preface, then pings only: no header block ever names the application
    verdicts = lab.send(flow(OPENING + ping() * 1200, 43103))
    assert WorkerVerdict.RESET_FLOW in verdicts
    [event] = lab.threats("http2_control_flood")
    assert event["app"] == "HTTP2", event


def test_a_continuation_flood_is_reset_in_protect() -> None:
    lab = Lab()
    piece = h2_frame(CONTINUATION, 0, 1, b"\x00")
    verdicts = lab.send(flow(OPENING + get(1, end_headers=False) + piece * 150, 43102))
    assert WorkerVerdict.RESET_FLOW in verdicts
    [event] = lab.threats("http2_control_flood")
    assert event["action"] == "reset" and "CONTINUATION" in event["message"]
