"""http2_rapid_reset: a cleartext HTTP/2 client that opens streams and cancels each at once
(CVE-2023-44487), counted by the HTTP/2 parser per connection whatever the byte cuts; a browser's few
cancelled streams and a busy client's many completed ones are no finding."""

from __future__ import annotations

import hpack
import pytest

from core.verdict import WorkerVerdict
from tests.data.pcaps.generate import h2_frame
from tests.dpi.drive import drive
from tests.dpi.drive import settings as dpi_settings
from workers.dpi import events as E
from workers.dpi.parsers import http2
from workers.dpi.parsers.base import Side

from .test_body_parts import flow
from .test_engine import Lab

HEADERS, RST_STREAM, END_HEADERS, END_STREAM = 1, 3, 0x4, 0x1
CANCEL = (8).to_bytes(4, "big")


def client(requests: int, reset_every: int) -> bytes:
    """Preface and SETTINGS, then `requests` GETs on their own streams; every `reset_every`-th (0: none)
    is cancelled right after its HEADERS."""
    enc = hpack.Encoder()
    out = http2.PREFACE + h2_frame(4, 0, 0, b"")
    for i in range(requests):
        stream = 2 * i + 1
        block = enc.encode(
            [(":method", "GET"), (":scheme", "http"), (":authority", "a"), (":path", f"/p{i}")]
        )
        out += h2_frame(HEADERS, END_HEADERS | END_STREAM, stream, block)
        if reset_every and i % reset_every == 0:
            out += h2_frame(RST_STREAM, 0, stream, CANCEL)
    return out


def anomalies(data: bytes, piece: int) -> list[E.ParseAnomaly]:
    run = drive(http2.Http2Parser(dpi_settings()), [(Side.CLIENT, data)], piece=piece)
    return [e for e in run.events if isinstance(e, E.ParseAnomaly) and e.name == http2.RAPID_RESET]


@pytest.mark.parametrize("piece", [0, 7, 1448])
def test_streams_opened_and_cancelled_at_once_are_one_rapid_reset_whatever_the_cuts(piece: int) -> None:
    [found] = anomalies(client(300, 1), piece)
    assert found.detail == "100 of 100 streams reset by the client"


def test_a_browsers_few_cancels_and_a_busy_clients_completed_streams_are_none() -> None:
    assert anomalies(client(90, 1), 0) == []  # fewer than 100 resets
    assert anomalies(client(600, 4), 0) == []  # 150 resets of 600 streams: a quarter


def test_a_rapid_reset_is_reset_in_protect() -> None:
    lab = Lab()
    verdicts = lab.send(flow(client(300, 1), 43000))
    assert WorkerVerdict.RESET_FLOW in verdicts
    [event] = lab.threats("http2_rapid_reset")
    assert event["action"] == "reset" and event["group"] == "web"
    verdicts = lab.send(flow(client(300, 0), 43001))  # the same requests, none cancelled
    assert WorkerVerdict.RESET_FLOW not in verdicts and len(lab.threats()) == 1
