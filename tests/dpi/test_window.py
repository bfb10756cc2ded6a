"""Inspection windows: an allowed flow stays inspected (PASS) while its protocol's window is open, then
ALLOW_FLOW offloads it; every HTTP request of a keep-alive connection is inspected up to the named cap."""

from __future__ import annotations

import dataclasses

from core import anomalies as A
from core.verdict import WorkerVerdict
from tests.dpi.conftest import load_generator
from tests.dpi.test_engine import FakeTables, run
from workers.dpi.context import Detector
from workers.dpi.engine import DpiEngine
from workers.dpi.events import HttpRequest
from workers.dpi.settings import DpiSettings

gen = load_generator()
V = WorkerVerdict


def engine(seen: list[bytes], **limits: int) -> DpiEngine:
    """An engine with an L4-final allow (the default inspection of every new flow) and a detector that
    records the URI of every request it is shown."""

    def on_event(ctx, ev, now):  # type: ignore[no-untyped-def]
        if isinstance(ev, HttpRequest):
            seen.append(ev.uri)
        return []

    s = dataclasses.replace(DpiSettings(), **limits)
    return DpiEngine(s, FakeTables(l4_final=True), lambda e: None, "n", [Detector("uris", on_event=on_event)])


def keep_alive(requests: int, port: int = 80) -> list[tuple[float, bytes]]:
    out: list[tuple[float, bytes]] = []
    c = gen.TcpConversation(out, gen.C4, 40000, gen.S4, port, 10.0).handshake()
    for i in range(requests):
        c.send(0, f"GET /r{i} HTTP/1.1\r\nHost: web\r\n\r\n".encode())
        c.send(1, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    return out


def test_every_request_of_a_keep_alive_connection_is_inspected() -> None:
    seen: list[bytes] = []
    e = engine(seen)
    verdicts = run(e, keep_alive(8))
    assert seen == [f"/r{i}".encode() for i in range(8)]  # request 5 is checked like request 1
    assert set(verdicts) == {V.PASS}  # never offloaded while the window is open
    assert e.counters[A.DPI_WINDOW_REQUEST_CAP] == 0


def test_the_request_cap_offloads_the_flow_and_is_counted() -> None:
    seen: list[bytes] = []
    e = engine(seen, request_window_requests=3)
    verdicts = run(e, keep_alive(6))
    assert seen == [b"/r0", b"/r1", b"/r2", b"/r3"]  # the 4th crosses the cap: offloaded after it
    assert verdicts[-1] is V.ALLOW_FLOW and V.PASS in verdicts
    assert e.counters[A.DPI_WINDOW_REQUEST_CAP] == 1


def _ssh(port: int, sends: list[tuple[int, bytes]]) -> tuple[DpiEngine, list[WorkerVerdict]]:
    """An SSH connection to port 22 sending `sends` (side, bytes) in order: the engine and its verdicts."""
    out: list[tuple[float, bytes]] = []
    c = gen.TcpConversation(out, gen.C4, port, gen.S4, 22, 10.0).handshake()
    for side, data in sends:
        c.send(side, data)
    e = engine([])
    return e, run(e, out)


def test_ssh_is_offloaded_once_no_ssh_2_packet_follows_the_banners() -> None:
    e, verdicts = _ssh(
        40001,
        [(1, b"SSH-2.0-OpenSSH_9.6\r\n"), (0, b"SSH-2.0-OpenSSH_9.2\r\n"),
         (0, b"\x00" * 200)],  # no SSH-2 packet: nothing left to follow
    )  # fmt: skip
    assert verdicts[-2] is V.PASS and verdicts[-1] is V.ALLOW_FLOW
    assert e.counters[A.DPI_WINDOW_CLOSED] == 1


def test_ssh_is_offloaded_once_its_authentication_phase_is_over() -> None:
    from tests.detect.build import ssh_conversation
    from tests.dpi.test_parsers import NONE, SERVICE

    e, verdicts = _ssh(
        40004,
        [*ssh_conversation(SERVICE, NONE, (84, 52), (84, 28)),  # one refusal, then a success
         (0, b"\xcc" * 96),  # the session's first request: the success is answered, the phase over
         (1, b"\xdd" * 44)],
    )  # fmt: skip
    assert verdicts[-3] is V.PASS and verdicts[-2] is V.ALLOW_FLOW
    assert e.counters[A.DPI_WINDOW_CLOSED] == 1


def test_an_unknown_protocol_is_inspected_for_its_first_bytes_only() -> None:
    out: list[tuple[float, bytes]] = []
    c = gen.TcpConversation(out, gen.C4, 40002, gen.S4, 7777, 10.0).handshake()
    for _ in range(6):
        c.send(0, b"\x17\x42" * 500)  # 1000 bytes of nothing we know
    e = engine([], unknown_window_bytes=3000)
    verdicts = run(e, out)
    payload_verdicts = verdicts[3:]
    assert payload_verdicts[:3] == [V.PASS] * 3  # 3000 bytes: still open
    assert payload_verdicts[3] is V.ALLOW_FLOW  # the 4th crosses unknown_window_bytes
    assert e.counters[A.DPI_WINDOW_CLOSED] == 1


def test_tls_is_inspected_through_its_window() -> None:
    out: list[tuple[float, bytes]] = []
    c = gen.TcpConversation(out, gen.C4, 40003, gen.S4, 443, 10.0).handshake()
    c.send(0, gen.tls_client_hello(b"shop.example.test", [b"h2"]))
    c.send(1, gen.tls_server_hello())
    e = engine([], tls_window_bytes=1000)
    for _ in range(3):
        c.send(0, b"\x17\x03\x03\x01\xf4" + b"\x00" * 500)  # application data records
    verdicts = run(e, out)
    assert e.flows and next(iter(e.flows.values())).ctx.app == "TLS/SSL"
    assert V.PASS in verdicts and verdicts[-1] is V.ALLOW_FLOW
    assert e.counters[A.DPI_WINDOW_CLOSED] == 1
