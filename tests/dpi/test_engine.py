"""Engine tests (trace style: packets in, verdicts and events out), stream and fragment layers, bounds."""

from __future__ import annotations

import struct
import tracemalloc

import pytest

from core import anomalies as A
from core.config import WorkersConfig
from core.flow import flow_key
from core.lookup import Action, Decision, Mode, Report
from core.packet import decode
from core.verdict import WorkerVerdict
from tests.dpi.conftest import load_generator
from tests.dpi.drive import settings
from workers.detect.engine import DetectingEngine
from workers.dpi import events as E
from workers.dpi.context import Detector, FlowContext
from workers.dpi.defrag import Defragmenter
from workers.dpi.engine import DpiEngine
from workers.dpi.events import Finding, HttpRequest, ParserEvent
from workers.dpi.fqdn import FqdnCache
from workers.dpi.parsers.base import ParserSpec, Side
from workers.dpi.registry import PARSERS, validate
from workers.dpi.settings import DpiSettings
from workers.dpi.stream import TcpStream
from workers.settings import WorkerConfig
from workers.worker import build_engine as build_worker_engine

gen = load_generator()
V = WorkerVerdict


class FakeTables:
    """Tables with one app-aware rule: `allowed_app` toward the server, everything else denied."""

    def __init__(self, allowed_app: str = "HTTP", mode: Mode = Mode.PROTECT, l4_final: bool = False) -> None:
        self.allowed_app = allowed_app
        self.mode = mode
        self.l4_final = l4_final
        self.asked: list[str] = []

    def generation(self) -> int:
        return 1

    def decide(self, family, src, dst, proto, dport) -> Decision:
        return Decision(Action.ALLOW, self.l4_final, 7, self.mode, Report.NONE, "client", "server", 1)

    def decide_app(self, family, src, dst, proto, dport, app, host="", server_app="") -> Decision:
        self.asked.append(app)
        if app == self.allowed_app:
            return Decision(Action.ALLOW, True, 7, self.mode, Report.NONE, "client", "server", 1)
        action = Action.DENY if self.mode is Mode.PROTECT else Action.ALLOW
        return Decision(action, True, 9, self.mode, Report.VIOLATION, "client", "server", 1)


def run(engine: DpiEngine, packets: list[tuple[float, bytes]]) -> list[V]:
    out = []
    for ts, pkt in packets:
        meta = decode(pkt)
        key, direction = flow_key(meta)
        out.append(engine.on_packet(pkt, meta, key, direction, ts)[0])
    return out


def http_flow(port: int = 80, cport: int = 40000) -> list[tuple[float, bytes]]:
    out: list[tuple[float, bytes]] = []
    req, resp = gen.http_get()
    gen.TcpConversation(out, gen.C4, cport, gen.S4, port, 10.0).handshake().send(0, req).send(1, resp)
    return out


def ssh_flow(port: int = 80) -> list[tuple[float, bytes]]:
    out: list[tuple[float, bytes]] = []
    c = gen.TcpConversation(out, gen.C4, 40001, gen.S4, port, 10.0).handshake()
    c.send(1, b"SSH-2.0-OpenSSH_9.6\r\n").send(0, b"SSH-2.0-OpenSSH_9.2\r\n")
    return out


# ---------------------------------------------------------------------------------------- decisions


def test_allowed_app_is_offloaded_denied_app_is_reset_with_a_violation() -> None:
    events: list[dict] = []
    tables = FakeTables("HTTP")
    engine = DpiEngine(settings(), tables, events.append, "n1")
    verdicts = run(engine, http_flow())
    assert verdicts[:3] == [V.PASS, V.PASS, V.PASS]  # handshake: nothing known yet
    assert verdicts[3] is V.ALLOW_FLOW  # the request identifies HTTP
    assert events == []
    verdicts = run(engine, ssh_flow())
    assert verdicts[3] is V.RESET_FLOW  # the server banner identifies SSH: denied
    (ev,) = events
    assert ev["type"] == "violation" and ev["rule_id"] == 9 and ev["action"] == "deny" and ev["app"] == "SSH"
    assert ev["flow"]["dport"] == 80 and ev["flow"]["src"] == "198.18.0.1"
    assert tables.asked == ["HTTP", "SSH"]


def test_monitor_mode_allows_and_reports() -> None:
    events: list[dict] = []
    engine = DpiEngine(settings(), FakeTables("HTTP", Mode.MONITOR), events.append, "n1")
    assert run(engine, ssh_flow())[3] is V.ALLOW_FLOW
    assert [e["action"] for e in events] == ["allow"]


def test_unidentified_stream_uses_the_policy_fallback() -> None:
    events: list[dict] = []
    out: list[tuple[float, bytes]] = []
    gen.TcpConversation(out, gen.C4, 40002, gen.S4, 80, 1.0).handshake().send(0, b"\x00\x01garbage" * 10)
    tables = FakeTables("HTTP")
    engine = DpiEngine(settings(), tables, events.append, "n1")
    assert run(engine, out)[-1] is V.RESET_FLOW
    assert tables.asked == [""]
    assert engine.stats()[A.DPI_UNIDENTIFIED] == 1


@pytest.mark.parametrize(
    ("fallback", "verdict"), [("allow", V.ALLOW_FLOW), ("block", V.BLOCK_FLOW), ("reset", V.RESET_FLOW)]
)
def test_identification_budget_fallbacks(fallback: str, verdict: V) -> None:
    """A stream that stays plausible HTTP but never completes a request line: the packet budget ends it."""
    s = settings(identify_packets=3, unidentified_fallback=fallback)
    events: list[dict] = []
    engine = DpiEngine(s, None, events.append, "n1")
    out: list[tuple[float, bytes]] = []
    c = gen.TcpConversation(out, gen.C4, 40003, gen.S4, 80, 1.0).handshake()
    for _ in range(5):
        c.send(0, b"GET")  # never a full line
    verdicts = run(engine, out)
    assert verdicts[3:6] == [V.PASS, V.PASS, V.PASS]
    assert verdicts[6] is verdict
    assert engine.stats()[A.DPI_UNIDENTIFIED] == 1
    assert engine.stats()["fallback." + fallback] == 1
    assert len(events) == (0 if fallback == "allow" else 1)


def test_l4_final_decision_stands_and_parsing_goes_on() -> None:
    seen: list[str] = []
    engine = DpiEngine(
        settings(), FakeTables("HTTP", l4_final=True), lambda e: None, "n1",
        on_event=lambda ctx, ev: None, on_flow_end=lambda ctx: seen.append(ctx.app),
    )  # fmt: skip
    assert run(engine, ssh_flow())[0] is V.ALLOW_FLOW
    engine.close_all()
    assert seen == ["SSH"]


def test_no_tables_identifies_and_allows() -> None:
    engine = DpiEngine(settings(), None, lambda e: None, "n1")
    assert run(engine, http_flow())[3] is V.ALLOW_FLOW
    assert engine.stats()["app.HTTP"] == 1


# ---------------------------------------------------------------------------------------- detectors


def test_detector_hooks_get_context_and_events_and_can_block_in_protect() -> None:
    events: list[dict] = []
    seen: list[tuple[str, bytes]] = []

    def on_event(ctx: FlowContext, ev: ParserEvent, now: float) -> list[Finding]:
        if isinstance(ev, HttpRequest):
            seen.append((ctx.app, ev.uri))
            assert ctx.side is Side.CLIENT and ctx.host == b"www.example.test"
            return [Finding("http.test", "high", block=True, message="bad uri", excerpt=ev.uri)]
        return []

    packets: list[int] = []

    def on_packet(ctx, meta, packet, now) -> list[Finding]:
        packets.append(meta.payload_len)
        return []

    det = Detector("t", on_packet=on_packet, on_event=on_event)
    engine = DpiEngine(settings(), FakeTables("HTTP"), events.append, "n1", detectors=[det])
    verdicts = run(engine, http_flow())
    assert seen == [("HTTP", b"/index.html?q=1")]
    assert verdicts[3] is V.RESET_FLOW
    (ev,) = events
    assert ev["type"] == "threat" and ev["name"] == "http.test" and ev["action"] == "reset"
    assert len(packets) == len(verdicts)


def test_detector_alerts_only_outside_protect_and_keeps_inspecting() -> None:
    events: list[dict] = []
    det = Detector("t", on_event=lambda ctx, ev, now: [Finding("x", "low", block=True)])
    engine = DpiEngine(settings(), FakeTables("HTTP", Mode.MONITOR), events.append, "n1", detectors=[det])
    verdicts = run(engine, http_flow())
    assert verdicts[3] is V.PASS  # allowed, but detectors still want the flow
    assert {e["action"] for e in events} == {"alert"}


def test_finding_fields_cannot_override_event_keys() -> None:
    events: list[dict] = []
    det = Detector(
        "t", on_event=lambda ctx, ev, now: [Finding("x", "low", fields={"action": "none", "rule": 5})]
    )
    engine = DpiEngine(settings(), None, events.append, "n1", detectors=[det])
    run(engine, http_flow())
    assert events and all(e["action"] == "alert" and e["rule"] == 5 for e in events)
    assert engine.stats()["dpi.detector.reserved_field"] == len(events)


def test_detector_exception_is_counted_not_raised() -> None:
    def boom(ctx, ev, now):
        raise RuntimeError("bug")

    engine = DpiEngine(settings(), None, lambda e: None, "n1", detectors=[Detector("b", on_event=boom)])
    run(engine, http_flow())
    assert engine.stats()[A.DPI_DETECTOR_EXCEPTION] >= 1


def test_parser_exception_gives_the_parser_up() -> None:
    class Broken:
        def __init__(self, s: DpiSettings) -> None:
            pass

        def feed(self, side, data):
            raise ValueError("bug")

    spec = ParserSpec("HTTP", "tcp", (80,), "broken", lambda side, head: True, Broken)
    engine = DpiEngine(settings(parser_error_fallback="block"), None, lambda e: None, "n1", parsers=(spec,))
    verdicts = run(engine, http_flow())
    assert engine.stats()[A.DPI_PARSER_EXCEPTION] == 1
    assert verdicts[3] is V.ALLOW_FLOW  # no candidate left: unidentified → policy fallback (no tables: allow)


# ------------------------------------------------------------------------------- flows and bounds


def test_flow_cap_evicts_the_oldest() -> None:
    ended: list[int] = []
    engine = DpiEngine(
        settings(max_flows=2), None, lambda e: None, "n1", on_flow_end=lambda c: ended.append(c.client_port)
    )
    for port in (40010, 40011, 40012):
        run(engine, http_flow(cport=port)[:1])
    assert engine.stats()["flows"] == 2
    assert engine.stats()[A.DPI_FLOW_EVICTED] == 1
    assert ended == [40010]


def test_expire_uses_state_timeouts() -> None:
    s = settings(tcp_embryonic_timeout=5.0, tcp_idle_timeout=100.0, udp_timeout=20.0)
    engine = DpiEngine(s, None, lambda e: None, "n1")
    run(engine, http_flow()[:1])  # SYN only at t=10.001
    run(engine, http_flow(cport=40020))  # established, last packet ~t=10.01
    engine.expire(16.0)
    assert engine.stats()["flows"] == 1 and engine.stats()[A.FLOW_EXPIRED] == 1
    engine.expire(50.0)
    assert engine.stats()["flows"] == 1
    engine.expire(111.0)
    assert engine.stats()["flows"] == 0


def test_a_blocked_flow_is_forgotten_like_a_closed_one() -> None:
    # its later packets end in the kernel, so no FIN or RST ever reaches the worker
    s = settings(tcp_closed_timeout=10.0, tcp_offloaded_timeout=60.0, tcp_idle_timeout=3600.0)
    engine = DpiEngine(s, FakeTables("HTTP"), lambda e: None, "n1")
    assert run(engine, ssh_flow())[3] is V.RESET_FLOW  # denied: reset, last packet ~t=10.01
    assert run(engine, http_flow(cport=40021))[3] is V.ALLOW_FLOW  # allowed and offloaded
    engine.expire(25.0)
    assert engine.stats()["flows"] == 1 and engine.stats()[A.FLOW_EXPIRED] == 1
    engine.expire(75.0)  # the offloaded one after its own timeout, long before the idle hour
    assert engine.stats()["flows"] == 0


@pytest.mark.parametrize(("inspect", "kept"), [("new", 60.0), ("app", 60.0), ("all", 3600.0)])
def test_a_worker_keeps_allowed_flows_for_the_idle_hour_only_where_nothing_is_offloaded(
    inspect: str, kept: float
) -> None:
    config = WorkerConfig(workers=WorkersConfig(inspect=inspect))
    engine = build_worker_engine(config, FakeTables("HTTP"), "n1", lambda e: None)
    assert isinstance(engine, DetectingEngine) and isinstance(engine.inner, DpiEngine)
    assert engine.inner.s.tcp_offloaded_timeout == kept


def test_midstream_pickup_guesses_the_server_by_port() -> None:
    ends: list[FlowContext] = []
    engine = DpiEngine(settings(), None, lambda e: None, "n1", on_flow_end=ends.append)
    out: list[tuple[float, bytes]] = []
    c = gen.TcpConversation(out, gen.C4, 40030, gen.S4, 6379, 1.0)
    c.send(1, b"+OK\r\n").send(0, b"*1\r\n$4\r\nPING\r\n")  # the server's packet is seen first
    run(engine, out)
    engine.close_all()
    (ctx,) = ends
    assert ctx.midstream and ctx.server_port == 6379 and ctx.app == "Redis"
    assert engine.stats()[A.DPI_STREAM_MIDSTREAM] == 1


def test_stream_buffer_cap_is_an_anomaly_and_the_fallback_decides() -> None:
    s = settings(max_buffered_bytes=100, buffer_full_fallback="block")
    engine = DpiEngine(s, None, lambda e: None, "n1")
    out: list[tuple[float, bytes]] = []
    c = gen.TcpConversation(out, gen.C4, 40040, gen.S4, 80, 1.0).handshake()
    c.send(0, b"GE")
    base = c.seq[0]
    for i in range(3):  # a hole of 10 bytes, then 3 × 60 bytes held out of order
        c._emit(0, gen.PSH | gen.ACK, b"x" * 60, seq=base + 10 + 60 * i)
    verdicts = run(engine, out)
    assert engine.stats()[A.DPI_STREAM_BUFFER_FULL] == 1 and engine.stats()[A.DPI_STREAM_GAP] == 1
    assert verdicts[-1] is V.BLOCK_FLOW


def test_stream_overlap_first_seen_wins() -> None:
    st = TcpStream(1000, 10)
    st.syn(99)
    assert st.segment(105, b"WORLD") == b""
    assert st.segment(105, b"EVIL!") == b""  # same place, other bytes: kept the first
    assert A.DPI_STREAM_OVERLAP_MISMATCH in st.anomalies
    assert st.segment(100, b"HELLO") == b"HELLOWORLD"
    assert st.segment(103, b"LOWOR") == b""  # wholly old
    assert st.anomalies == [A.DPI_STREAM_RETRANSMISSION]
    assert st.segment(108, b"LD!!") == b"!!"  # partly old: only the new part
    assert st.anomalies == [A.DPI_STREAM_OVERLAP]


# ------------------------------------------------------------------------------------ defragmentation


def _v4_fragments(payload: bytes, cut: int, ident: int = 5) -> list[bytes]:
    udp = struct.pack("!HHHH", 53, 5353, 8 + len(payload), 0) + payload
    return [
        gen.ip_packet(gen.R4, gen.C4, 17, udp[:cut], ident=ident, frag=0x2000),
        gen.ip_packet(gen.R4, gen.C4, 17, udp[cut:], ident=ident, frag=cut // 8),
    ]


def _v6_fragments(l4: bytes, cut: int, ident: int = 9) -> list[bytes]:
    out = []
    for off, part, more in ((0, l4[:cut], 1), (cut, l4[cut:], 0)):
        frag_hdr = struct.pack("!BBHI", 17, 0, off | more, ident)
        hdr = struct.pack("!IHBB", 6 << 28, 8 + len(part), 44, 64) + gen.S6 + gen.C6
        out.append(hdr + frag_hdr + part)
    return out


def test_ipv4_fragments_in_any_order() -> None:
    resp = gen.dns_response_cname(3)
    first, second = _v4_fragments(resp, 40)
    d = Defragmenter(settings(), lambda n: None)
    assert d.add(second, decode(second), 1.0) is None
    whole = d.add(first, decode(first), 1.1)
    assert whole is not None
    meta = decode(whole)
    assert meta.anomaly == "" and meta.fragment.name == "NONE" and whole[meta.payload_offset :] == resp
    assert len(d) == 0


def test_ipv6_fragments_reassemble_into_a_dns_flow() -> None:
    resp = gen.dns_response_aaaa(4)
    udp = struct.pack("!HHHH", 53, 5354, 8 + len(resp), 0) + resp
    ends: list[FlowContext] = []
    engine = DpiEngine(settings(), None, lambda e: None, "n1", on_flow_end=ends.append)
    for pkt in _v6_fragments(udp, 32)[::-1]:
        meta = decode(pkt)
        key, direction = flow_key(meta)
        engine.on_packet(pkt, meta, key, direction, 1.0)
    engine.close_all()
    assert [c.app for c in ends] == ["DNS"]
    assert engine.fqdn.names(gen.S6, 2.0) == ("v6.example.test",)


def test_fragment_timeout_and_caps() -> None:
    counts: list[str] = []
    d = Defragmenter(settings(frag_timeout=5.0, max_frag_datagrams=2, max_frag_bytes=64), counts.append)
    for ident in (1, 2, 3):
        first, _ = _v4_fragments(b"x" * 40, 24, ident)
        d.add(first, decode(first), 1.0)
    assert counts == [A.DPI_FRAG_TABLE_FULL] and len(d) == 2
    d.expire(10.0)
    assert counts.count(A.DPI_FRAG_TIMEOUT) == 2 and len(d) == 0
    _, second = _v4_fragments(b"x" * 100, 64, 4)
    assert d.add(second, decode(second), 11.0) is None
    assert A.DPI_FRAG_TOO_BIG in counts


def test_overlapping_fragments_first_wins() -> None:
    payload = b"A" * 32
    first, second = _v4_fragments(payload, 24)  # first: UDP bytes 0..23, second: 24..39
    evil = gen.ip_packet(gen.R4, gen.C4, 17, b"B" * 16, ident=5, frag=0x2000 | 1)  # bytes 8..23 again
    counts: list[str] = []
    d = Defragmenter(settings(), counts.append)
    d.add(first, decode(first), 1.0)
    d.add(evil, decode(evil), 1.0)
    whole = d.add(second, decode(second), 1.0)
    assert whole is not None and whole[28:] == b"A" * 32
    assert A.DPI_FRAG_OVERLAP in counts


# ----------------------------------------------------------------------------------------- FQDN cache


def test_fqdn_cache_ttl_and_cap() -> None:
    counts: list[str] = []
    cache = FqdnCache(settings(max_fqdn_entries=2, min_fqdn_ttl=1.0, max_fqdn_ttl=100.0), counts.append)
    cache.add(b"\x01\x01\x01\x01", "a.test", 10, 0.0)
    cache.add(b"\x02\x02\x02\x02", "b.test", 1000, 0.0)  # clamped to 100
    assert cache.names(b"\x01\x01\x01\x01", 5.0) == ("a.test",)
    assert cache.names(b"\x01\x01\x01\x01", 11.0) == ()
    assert cache.names(b"\x02\x02\x02\x02", 99.0) == ("b.test",)
    cache.add(b"\x03\x03\x03\x03", "c.test", 10, 0.0)
    cache.add(b"\x04\x04\x04\x04", "d.test", 10, 0.0)
    assert len(cache) == 2 and counts == [A.DPI_FQDN_EVICTED]


def test_dns_answers_feed_the_cache_and_later_flows_see_names() -> None:
    ends: list[FlowContext] = []
    learnt: list[tuple[str, bytes, float]] = []
    engine = DpiEngine(settings(), None, lambda e: None, "n1", on_flow_end=ends.append, on_fqdn=learnt.extend)
    run(engine, [(t + 0.0, p) for t, p in gen.cap_dns()])
    engine.close_all()
    http = [c for c in ends if c.app == "HTTP"]
    assert http[0].server_names == ("web.example.test", "www.example.test")
    assert ("www.example.test", gen.S4, 60.0) in learnt and ("v6.example.test", gen.S6, 120.0) in learnt


# ------------------------------------------------------------------------------------- settings, registry


def test_settings_errors_name_the_key() -> None:
    with pytest.raises(ValueError, match="dpi.max_flows"):
        DpiSettings.from_mapping({"max_flows": "many"})
    with pytest.raises(ValueError, match="dpi.nope: unknown key"):
        DpiSettings.from_mapping({"nope": 1})
    with pytest.raises(ValueError, match="dpi.unidentified_fallback"):
        DpiSettings(unidentified_fallback="maybe")
    with pytest.raises(ValueError, match="dpi.frag_timeout"):
        DpiSettings(frag_timeout=0)
    assert DpiSettings.from_mapping({"frag_timeout": 3}).frag_timeout == 3.0


def test_registry_validation() -> None:
    validate()
    with pytest.raises(ValueError, match="registered twice"):
        validate((PARSERS[0], PARSERS[0]))


N_FLOWS = 2000  # enough that the flow table's fixed costs are spread thin


@pytest.mark.parametrize("with_detector", [False, True])
def test_memory_per_idle_flow_is_under_2kb(with_detector: bool) -> None:
    """Idle HTTP flows (handshake, request, response seen): Python heap growth per flow. Without detectors
    a decided flow keeps only its verdict; with one, its streams and parser stay (inspection goes on)."""
    detectors = [Detector("d", on_event=lambda ctx, ev, now: [])] if with_detector else []
    engine = DpiEngine(settings(), None, lambda e: None, "n1", detectors=detectors)
    flows = [http_flow(cport=20000 + i) for i in range(N_FLOWS)]
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for pkts in flows:
        run(engine, pkts)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    per_flow = grown / N_FLOWS
    assert engine.stats()["flows"] == N_FLOWS
    print(f"memory per idle flow (detector={with_detector}): {per_flow:.0f} B")
    assert per_flow <= 2048, per_flow


def test_port_reuse_after_close_starts_a_new_flow() -> None:
    ends: list[FlowContext] = []
    engine = DpiEngine(settings(), None, lambda e: None, "n1", on_flow_end=ends.append)
    out: list[tuple[float, bytes]] = []
    req = gen.http_get()[0]
    gen.TcpConversation(out, gen.C4, 40050, gen.S4, 80, 1.0).handshake().send(0, req).close()
    c = gen.TcpConversation(out, gen.C4, 40050, gen.S4, 80, 2.0).handshake()
    c.send(1, b"SSH-2.0-OpenSSH_9.6\r\n")
    run(engine, out)
    engine.close_all()
    assert [c.app for c in ends] == ["HTTP", "SSH"]
    assert engine.stats()[A.DPI_FLOW_REUSED] == 1


def test_a_syn_on_the_ports_of_a_reset_flow_starts_a_new_flow() -> None:
    # The reader resets a blocked flow itself (the worker sees no RST) and sends the SYN of a connection
    # reusing its ports only once it started a new flow: the old verdict must not answer it.
    engine = DpiEngine(settings(), FakeTables("HTTP"), lambda e: None, "n1")
    assert run(engine, ssh_flow())[3] is V.RESET_FLOW
    out: list[tuple[float, bytes]] = []
    req = gen.http_get()[0]
    gen.TcpConversation(out, gen.C4, 40001, gen.S4, 80, 20.0).handshake().send(0, req)
    verdicts = run(engine, out)
    assert verdicts[0] is V.PASS and verdicts[-1] is V.ALLOW_FLOW
    assert engine.stats()[A.DPI_FLOW_REUSED] == 1


def test_event_types_are_frozen_and_slotted() -> None:
    import dataclasses
    import typing

    for cls in typing.get_args(E.ParserEvent):
        assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen, cls  # type: ignore[attr-defined]
        assert "__slots__" in cls.__dict__, cls


def test_icmp_flows_get_the_fallback_at_once() -> None:
    icmp = struct.pack("!BBHHH", 8, 0, 0, 77, 1) + b"payload"
    pkt = gen.ip_packet(gen.C4, gen.S4, 1, icmp)
    engine = DpiEngine(settings(unidentified_fallback="block"), None, lambda e: None, "n1")
    assert run(engine, [(1.0, pkt)]) == [V.BLOCK_FLOW]


def test_ipv6_fragments_after_a_hop_by_hop_header() -> None:
    resp = gen.dns_response_aaaa(5)
    udp = struct.pack("!HHHH", 53, 5355, 8 + len(resp), 0) + resp
    hbh = bytes([44, 0]) + b"\x01\x04\x00\x00\x00\x00"  # next header: Fragment; PadN option
    frags = []
    for off, part, more in ((0, udp[:24], 1), (24, udp[24:], 0)):
        frag_hdr = struct.pack("!BBHI", 17, 0, off | more, 77)
        hdr = struct.pack("!IHBB", 6 << 28, 8 + 8 + len(part), 0, 64) + gen.S6 + gen.C6
        frags.append(hdr + hbh + frag_hdr + part)
    d = Defragmenter(settings(), lambda n: None)
    assert d.add(frags[0], decode(frags[0]), 1.0) is None
    whole = d.add(frags[1], decode(frags[1]), 1.0)
    assert whole is not None
    meta = decode(whole)
    assert meta.anomaly == "" and meta.proto == 17 and whole[meta.payload_offset :] == resp
    assert whole[40] == 17  # the hop-by-hop header now points at UDP
