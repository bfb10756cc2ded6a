"""The threat engine wired to the DPI engine: parser events and packets in, verdicts and threat events out."""

from __future__ import annotations

import ipaddress
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.lookup import Action, Decision, Mode, Report
from core.packet import TCP_ACK, TCP_PSH, TCP_SYN
from core.verdict import WorkerVerdict
from workers.detect.engine import DetectingEngine, build_engine, compile_threat_policy
from workers.dpi.settings import DpiSettings

from .build import handshake, ipv4, packet, tcp4, udp

WEB = "198.18.1.10"  # group web (protect)
DB = "198.18.2.10"  # group db (monitor)
CLIENT = "198.18.9.1"  # group clients (monitor)

GROUPS = {
    ipaddress.ip_network("198.18.1.0/24"): ("web", Mode.PROTECT),
    ipaddress.ip_network("198.18.2.0/24"): ("db", Mode.MONITOR),
    ipaddress.ip_network("198.18.9.0/24"): ("clients", Mode.MONITOR),
}


class StubTables:
    """Groups by subnet; every flow allowed; the destination's group decides the mode."""

    def _group(self, addr: bytes) -> tuple[str, Mode]:
        ip = ipaddress.ip_address(addr)
        for net, group in GROUPS.items():
            if ip in net:
                return group
        return "external", Mode.MONITOR

    def generation(self) -> int:
        return 1

    def decide(self, family: int, src: bytes, dst: bytes, proto: int, dport: int) -> Decision:
        sg, _ = self._group(src)
        dg, mode = self._group(dst)
        return Decision(Action.ALLOW, False, 0, mode, Report.NONE, sg, dg, 1)

    def decide_app(
        self, family: int, src: bytes, dst: bytes, proto: int, dport: int, app: str, *rest: object
    ) -> Decision:
        return self.decide(family, src, dst, proto, dport)._replace(final=True)


class Lab:
    def __init__(self, threat_settings: Any = None, sensors: Any = None) -> None:
        self.events: list[dict[str, Any]] = []
        policy = compile_threat_policy(1, threat_settings, sensors)
        self.engine: DetectingEngine = build_engine(
            DpiSettings(), StubTables(), self.events.append, "n1", policy
        )
        self.now = 1000.0

    def send(self, bufs: list[bytes], step: float = 0.001) -> list[WorkerVerdict]:
        out = []
        for buf in bufs:
            meta, raw, key, direction = packet(buf)
            verdict, _rule = self.engine.on_packet(raw, meta, key, direction, self.now)
            out.append(verdict)
            self.now += step
        return out

    def threats(self, name: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == "threat" and (name is None or e["name"] == name)]


def http_flow(client: str, cport: int, server: str, request: bytes, sport: int = 80) -> list[bytes]:
    return [
        *handshake(client, cport, server, sport),
        tcp4(client, cport, server, sport, TCP_ACK | TCP_PSH, seq=1001, ack=5001, payload=request),
    ]


SQLI_GET = b"GET /search?q=%27%20or%201%3D1--%20 HTTP/1.1\r\nHost: web\r\n\r\n"
BENIGN_GET = b"GET /search?q=O%27Brien+pizza&page=2 HTTP/1.1\r\nHost: web\r\nUser-Agent: curl/8\r\n\r\n"


def test_sqli_in_protect_resets_the_flow() -> None:
    lab = Lab()
    verdicts = lab.send(http_flow(CLIENT, 40000, WEB, SQLI_GET))
    assert verdicts[-1] is WorkerVerdict.RESET_FLOW
    [event] = lab.threats("sql_injection")
    assert event["action"] == "reset" and event["group"] == "web" and event["threat_id"] == 1027
    assert event["flow"]["dst"] == WEB and event["flow"]["dport"] == 80
    assert b"or 1=1" in event["excerpt"] and len(event["excerpt"]) <= 256


def test_sqli_in_monitor_only_alerts() -> None:
    lab = Lab()
    verdicts = lab.send(http_flow(CLIENT, 40001, DB, SQLI_GET))
    assert WorkerVerdict.RESET_FLOW not in verdicts
    [event] = lab.threats("sql_injection")
    assert event["action"] == "alert" and event["group"] == "db"


def test_benign_http_raises_nothing() -> None:
    lab = Lab()
    verdicts = lab.send(http_flow(CLIENT, 40002, WEB, BENIGN_GET))
    assert lab.threats() == [] and WorkerVerdict.RESET_FLOW not in verdicts


def test_smuggling_xss_and_struts_through_the_parser() -> None:
    lab = Lab()
    smuggle = (
        b"POST / HTTP/1.1\r\nHost: web\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    )
    xss = b"GET /p?name=%3Cscript%3Ealert(1)%3C/script%3E HTTP/1.1\r\nHost: web\r\n\r\n"
    lab.send(http_flow(CLIENT, 40003, DB, smuggle))
    lab.send(http_flow(CLIENT, 40004, DB, xss))
    assert {e["name"] for e in lab.threats()} == {"http_smuggling", "xss"}


def test_per_group_settings_disable_and_change_action() -> None:
    lab = Lab(
        {
            "groups": {
                "web": {"sql_injection": {"action": "alert"}},
                "db": {"sql_injection": {"enabled": False}},
            }
        }
    )
    verdicts = lab.send(http_flow(CLIENT, 40005, WEB, SQLI_GET))
    assert WorkerVerdict.RESET_FLOW not in verdicts
    assert [e["action"] for e in lab.threats()] == ["alert"]
    lab.send(http_flow(CLIENT, 40006, DB, SQLI_GET))
    assert len(lab.threats()) == 1  # disabled for db


def test_new_policy_generation_applies_to_new_flows() -> None:
    lab = Lab()
    lab.engine.set_policy(compile_threat_policy(2, {"default": {"sql_injection": {"enabled": False}}}))
    lab.send(http_flow(CLIENT, 40007, WEB, SQLI_GET))
    assert lab.threats() == []


def test_syn_flood_dropped_in_protect_and_aggregated() -> None:
    lab = Lab({"default": {"syn_flood": {"syns_per_window": 100}, "port_scan": {"enabled": False}}})
    legit = lab.send(http_flow("198.18.9.200", 50000, WEB, BENIGN_GET))
    flood = [tcp4(f"203.0.{i // 250}.{i % 250 + 1}", 1024 + i % 60000, WEB, 80, TCP_SYN) for i in range(600)]
    verdicts = lab.send(flood, step=0.0005)
    assert verdicts[:100].count(WorkerVerdict.DROP) == 0
    assert verdicts[100:].count(WorkerVerdict.DROP) == 500
    # a client that completed a handshake before still connects during the flood
    again = lab.send([tcp4("198.18.9.200", 50001, WEB, 80, TCP_SYN)])
    assert again == [WorkerVerdict.PASS] and WorkerVerdict.RESET_FLOW not in legit
    lab.engine.expire(lab.now + 10)
    events = lab.threats("syn_flood")
    assert len(events) == 2 and events[0]["count"] == 1 and events[1]["count"] == 499
    assert events[1]["aggregated"] and events[0]["action"] == "drop"


def test_a_worker_behind_readers_leaves_connection_attempts_to_their_guard() -> None:
    # Every connection's first packet reaches a reader, whose guard counts floods and scans; the worker's
    # engine (count_attempts=False) must not count them a second time, but keeps the flow-state threats.
    from workers.settings import WorkerConfig
    from workers.worker import build_engine as build_worker_engine

    events: list[dict[str, Any]] = []
    policy = compile_threat_policy(
        1, {"default": {"syn_flood": {"syns_per_window": 10}, "port_scan": {"ports_per_window": 5}}}
    )
    engine = build_worker_engine(WorkerConfig(), StubTables(), "n1", events.append)  # type: ignore[arg-type]
    assert isinstance(engine, DetectingEngine) and engine.threats.packets.attempts is None
    engine.set_policy(policy)
    now = 1000.0
    flood = [tcp4(f"203.0.9.{i + 1}", 1024 + i, WEB, 80 + i % 20, TCP_SYN) for i in range(100)]
    split = [tcp4(CLIENT, 7000, WEB, 22, TCP_SYN), tcp4(WEB, 22, CLIENT, 7000, TCP_SYN)]
    verdicts = []
    for buf in flood + split:
        meta, raw, key, direction = packet(buf)
        verdicts.append(engine.on_packet(raw, meta, key, direction, now)[0])
        now += 0.0001
    engine.close_all()
    names = {e["name"] for e in events if e["type"] == "threat"}
    assert names == {"tcp_split_handshake"} and WorkerVerdict.DROP not in verdicts
    # the same engine where no reader stands in front (a replay) counts them
    replay = Lab({"default": {"syn_flood": {"syns_per_window": 10}}})
    replay.send(flood)
    assert replay.threats("syn_flood")


def test_block_source_after_port_scan() -> None:
    lab = Lab({"default": {"port_scan": {"ports_per_window": 10}}})
    probes = [tcp4(CLIENT, 41000, WEB, port, TCP_SYN) for port in range(1, 15)]
    verdicts = lab.send(probes)
    assert verdicts[9] is WorkerVerdict.BLOCK_FLOW
    # the source stays blocked for block_seconds, whatever it sends: packet by packet, so no connection
    # mark keeps a connection attempted meanwhile refused after the block ends
    assert lab.send([tcp4(CLIENT, 41001, WEB, 443, TCP_SYN)]) == [WorkerVerdict.DROP]
    lab.now += 61
    assert lab.send([tcp4(CLIENT, 41002, WEB, 443, TCP_SYN)]) == [WorkerVerdict.PASS]


def test_bad_packet_never_reaches_dpi_but_is_reported() -> None:
    lab = Lab()
    verdicts = lab.send([tcp4(CLIENT, 1, WEB, 80, TCP_SYN | 0x01)])
    assert verdicts == [WorkerVerdict.DROP]
    assert [e["name"] for e in lab.threats()] == ["bad_packet"]


def dns_query(name: str, qtype: int) -> bytes:
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00"
    return struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", qtype, 1)


def test_dns_over_udp_through_the_packet_hook() -> None:
    lab = Lab()
    lab.send([ipv4(CLIENT, "198.18.2.53", 17, udp(5353, 53, dns_query("t.example.com", 10)))])
    lab.send([ipv4(CLIENT, "198.18.2.53", 17, udp(5354, 53, dns_query("www.example.com", 1)))])
    assert [e["name"] for e in lab.threats()] == ["dns_null_type"]


def test_dlp_sensor_blocks_in_protect_with_masked_excerpt() -> None:
    sensors = [
        {"name": "cards", "predefined": "credit_card", "action": "block", "groups": ["web"]},
        {"name": "waf", "predefined": "waf", "action": "alert", "groups": ["web", "db"]},
    ]
    lab = Lab(sensors=sensors)
    body = b"name=bob&card=4111+1111+1111+1111"
    post = (
        b"POST /pay HTTP/1.1\r\nHost: web\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    verdicts = lab.send(http_flow(CLIENT, 40010, WEB, post))
    assert verdicts[-1] is WorkerVerdict.RESET_FLOW
    [event] = lab.threats("dlp_sensor")
    assert event["sensor"] == "cards" and event["excerpt"] == b"**** **** **** 1111"
    assert b"4111 1111 1111 1111" not in repr(lab.events).encode()
    lab.send(http_flow(CLIENT, 40011, DB, b"GET /x/../../etc/passwd HTTP/1.1\r\nHost: db\r\n\r\n"))
    traversal = [e for e in lab.threats("dlp_sensor") if e["sensor"] == "waf"]
    assert {e["rule"] for e in traversal} == {"path-traversal", "etc-passwd"}
    assert all(e["action"] == "alert" for e in traversal)


def test_slowloris_fires_on_a_slow_head() -> None:
    lab = Lab()
    start = [
        *handshake(CLIENT, 40020, WEB, 80),
        tcp4(CLIENT, 40020, WEB, 80, TCP_ACK, seq=1001, payload=b"GET / HTTP/1.1\r\n"),
    ]
    lab.send(start)
    lab.now += 25
    verdicts = lab.send([tcp4(CLIENT, 40020, WEB, 80, TCP_ACK, seq=1017, payload=b"X-a: b\r\n")])
    assert verdicts == [WorkerVerdict.RESET_FLOW]
    assert [e["name"] for e in lab.threats()] == ["http_slowloris"]


def test_quick_requests_are_not_slowloris() -> None:
    lab = Lab()
    for i in range(3):
        lab.send(http_flow(CLIENT, 40030 + i, WEB, BENIGN_GET))
        lab.now += 30
    assert lab.threats() == []


@pytest.mark.parametrize(
    "threat_settings", [{"default": {"nope": {}}}, {"groups": {"web": {"syn_flood": {"x": 1}}}}]
)
def test_bad_threat_policy_is_rejected(threat_settings: Any) -> None:
    with pytest.raises(ValueError):
        compile_threat_policy(3, threat_settings)


def test_threat_event_carries_evidence_capture() -> None:
    import io

    import dpkt

    lab = Lab()
    flow = http_flow(CLIENT, 40040, WEB, SQLI_GET)
    lab.send(flow)
    [event] = lab.threats("sql_injection")
    pcap = lab.engine.threats.evidence_pcap(event["evidence"])
    assert pcap is not None
    packets = [bytes(buf) for _ts, buf in dpkt.pcap.Reader(io.BytesIO(pcap))]
    assert packets == flow[-1:]  # the ring keeps packets with payload: here the request
    assert lab.engine.threats.evidence_pcap("ev-unknown") is None


def test_evidence_store_is_bounded() -> None:
    from workers.detect.evidence import EvidenceLimits, EvidenceStore

    store = EvidenceStore(
        EvidenceLimits(max_flows=2, packets_per_flow=3, max_packet_bytes=10, max_captures=2)
    )
    for i in range(5):
        store.record("a", float(i), bytes([i]) * 50)
    assert store.snapshot("z") == "" and store.snapshot("z", 1.0, b"syn") != ""  # the offending packet alone
    first = store.snapshot("a")
    assert store.snapshot("a") == first  # nothing new recorded: same capture
    pcap = store.pcap(first)
    assert pcap is not None and len(pcap) == 24 + 3 * (16 + 10)
    store.record("b", 9.0, b"b")
    store.record("c", 9.0, b"c")
    assert store.snapshot("a") == ""  # flow a's ring was evicted by b and c
    second, third = store.snapshot("b"), store.snapshot("c")
    assert store.pcap(first) is None and store.pcap(second) is not None and store.pcap(third) is not None


def test_policy_snapshot_adapter() -> None:
    from policy.loader import parse_policy
    from threats.settings import ThreatSettingsError
    from workers.detect.engine import threat_policy_from_snapshot

    sensor = {"name": "cc", "kind": "dlp", "context": "body", "patterns": ["tok_[0-9]{6}"], "action": "block"}
    doc = {
        "version": 7,
        "groups": [{"name": "web", "mode": "protect", "members": ["198.18.1.0/24"]}],
        "sensors": [sensor],
        "threats": {
            "tcp.syn_flood": {"enabled": True, "action": "drop", "thresholds": {"syns_per_window": 5}},
            "tls_1_0": {"enabled": True},
        },
    }
    policy = threat_policy_from_snapshot(parse_policy(doc))
    s = policy.settings.for_group("web")
    from threats import catalogue as C
    from workers.detect.sensors import Context

    assert (
        policy.generation == 7 and s.threshold(C.SYN_FLOOD, "syns_per_window") == 5 and s.enabled(C.TLS_1_0)
    )
    [match] = policy.sensors.scan(Context.BODY, b"x tok_123456", "any-group")  # no groups: all groups
    assert match.sensor == "cc" and match.action.value == "block"
    bad = dict(doc, threats={"tcp.syn_flood": {"thresholds": {"rate": 1}}})
    with pytest.raises(ThreatSettingsError, match="syn_flood.rate: unknown setting"):
        threat_policy_from_snapshot(parse_policy(bad))


def test_stats_name_evictions_and_blocked_sources() -> None:
    from core import anomalies as A
    from threats.packets import PacketLimits
    from workers.detect.engine import DetectLimits, ThreatEngine

    events: list[dict[str, Any]] = []
    limits = DetectLimits(packet=PacketLimits(max_flows=4), max_aggregate_keys=2)
    policy = compile_threat_policy(1, {"default": {"port_scan": {"ports_per_window": 3}}})
    threats = ThreatEngine("n1", events.append, policy, StubTables(), limits)
    engine = DetectingEngine(build_engine(DpiSettings(), StubTables(), events.append, "n1").inner, threats)
    for port in range(1, 11):
        meta, raw, key, direction = packet(tcp4(CLIENT, 42000, WEB, port, TCP_SYN))
        engine.on_packet(raw, meta, key, direction, 1000.0 + port * 0.001)
    stats = engine.stats()
    assert stats[A.DETECT_FLOWS_EVICTED] == 0  # the scanner was blocked after 3 probes: no more flows
    assert stats[A.DETECT_SOURCE_BLOCKED] == 7 and stats["threats.port_scan"] == 1
    for i in range(10):
        meta, raw, key, direction = packet(tcp4(f"198.18.9.{i + 2}", 42000, WEB, 80, TCP_SYN))
        engine.on_packet(raw, meta, key, direction, 1001.0)
    assert engine.stats()[A.DETECT_FLOWS_EVICTED] == 9  # 3 flows + 10 new in a table of 4


def mysql_packet(seq: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "little") + bytes([seq]) + payload


def test_mysql_brute_force_through_the_parser() -> None:
    greeting = (
        b"\x0a8.0.36\x00"
        + b"\x01\x00\x00\x00"
        + b"abcdefgh\x00"
        + b"\xff\xf7\x21\x02\x00\xff\xc1\x15"
        + b"\x00" * 10
        + b"ijklmnopqrst\x00mysql_native_password\x00"
    )
    login = (
        b"\x85\xa6\xff\x01\x00\x00\x00\x01\x21"
        + b"\x00" * 23
        + b"root\x00\x14"
        + b"p" * 20
        + b"mysql_native_password\x00"
    )
    denied = b"\xff\x15\x04#28000Access denied for user 'root'@'198.18.9.1'"
    lab = Lab({"default": {"mysql_access_denied": {"denials_per_window": 5}}})
    g, lg = mysql_packet(0, greeting), mysql_packet(1, login)
    for i in range(7):
        port = 43000 + i
        conv = [
            *handshake(CLIENT, port, DB, 3306),
            tcp4(DB, 3306, CLIENT, port, TCP_ACK | TCP_PSH, seq=5001, ack=1001, payload=g),
            tcp4(CLIENT, port, DB, 3306, TCP_ACK | TCP_PSH, seq=1001, ack=5001 + len(g), payload=lg),
            tcp4(DB, 3306, CLIENT, port, TCP_ACK | TCP_PSH, seq=5001 + len(g), ack=1001 + len(lg),
                 payload=mysql_packet(2, denied)),
        ]  # fmt: skip
        lab.send(conv)
    lab.engine.expire(lab.now + 10)
    events = lab.threats("mysql_access_denied")
    assert sum(e["count"] for e in events) == 3  # attempts 5, 6 and 7
    assert events[0]["action"] == "alert" and events[0]["group"] == "db"


def conversation(client_port: int, server_port: int, messages: list[tuple[int, bytes]]) -> list[bytes]:
    from .pcaps.generate import Tcp

    out: list[tuple[float, bytes]] = []
    conv = Tcp(out, 0.0, CLIENT, client_port, DB, server_port).handshake()
    for side, data in messages:
        conv.send(side, data)
    return [buf for _t, buf in out]


def tds(ptype: int, payload: bytes) -> bytes:
    return struct.pack("!BBHHBB", ptype, 1, 8 + len(payload), 0, 1, 0) + payload


def tds_session(sql: str) -> list[tuple[int, bytes]]:
    prelogin = b"\x00" + struct.pack("!HH", 11, 6) + b"\x01" + struct.pack("!HH", 17, 1) + b"\xff"
    prelogin += bytes([15, 0, 0x07, 0xD0, 0, 0]) + b"\x02"
    all_headers = struct.pack("<IIH", 22, 18, 2) + b"\x00" * 8 + struct.pack("<I", 1)
    return [(0, tds(18, prelogin)), (1, tds(4, prelogin)), (0, tds(1, all_headers + sql.encode("utf-16-le")))]


def tns(ptype: int, payload: bytes) -> bytes:
    return struct.pack("!HHBBH", 8 + len(payload), 0, ptype, 0, 0) + payload


def tns_session(sql: str) -> list[tuple[int, bytes]]:
    data = b"(DESCRIPTION=(CONNECT_DATA=(SERVICE_NAME=ORCL))(ADDRESS=(PROTOCOL=TCP)(HOST=198.18.2.10)))"
    offset = 58
    fields = struct.pack("!HHHHHHHHHH", 314, 300, 0x0C41, 8192, 32767, 0x7F08, 0, 0x0100, len(data), offset)
    connect = (
        struct.pack("!HHBBH", offset + len(data), 0, 1, 0, 0) + fields + b"\x00" * (offset - 8 - len(fields))
    )
    connect += data
    accept = tns(2, b"\x01\x3a" + b"\x00" * 22)
    query = tns(6, b"\x00\x00" + b"\x11\x69\x00\x01\x01\x01" + sql.encode() + b"\x00\x01")
    return [(0, connect), (1, accept), (0, query)]


@pytest.mark.parametrize(("session", "port"), [(tds_session, 1433), (tns_session, 1521)])
def test_sql_injection_in_tds_and_tns(session: Any, port: int) -> None:
    lab = Lab()
    lab.send(conversation(44000, port, session("SELECT * FROM users WHERE name = '' OR 'a'='a'")))
    lab.send(conversation(44001, port, session("SELECT name FROM users WHERE id = 42")))
    events = lab.threats()
    assert [(e["name"], e["flow"]["sport"]) for e in events] == [("sql_injection", 44000)]


@settings(max_examples=60, deadline=None)
@given(
    st.binary(max_size=120),
    st.binary(max_size=200),
    st.sampled_from([b"application/json", b"application/x-www-form-urlencoded", b"text/xml", b""]),
)
def test_hooks_never_raise_on_hostile_requests(uri: bytes, body: bytes, ctype: bytes) -> None:
    from core import anomalies as A

    lab = Lab(sensors=[{"name": "waf", "predefined": "waf"}, {"name": "cc", "predefined": "credit_card"}])
    clean_uri = b"/" + bytes(c for c in uri if 0x21 <= c < 0x7F)
    request = (
        b"POST " + clean_uri + b" HTTP/1.1\r\nHost: web\r\nContent-Type: " + ctype + b"\r\nCookie: "
        + bytes(c for c in uri if 0x20 <= c < 0x7F and c != 0x3B) + b"\r\nContent-Length: "
        + str(len(body)).encode() + b"\r\n\r\n" + body
    )  # fmt: skip
    lab.send(http_flow(CLIENT, 45000, DB, request))
    assert lab.engine.stats().get(A.DPI_DETECTOR_EXCEPTION, 0) == 0


def test_dns_over_tcp_events() -> None:
    lab = Lab()
    name = "p2mwsg3l5a4i7bpnjvwygm4k3lh7yyk6dqjgyvlhjhtoo5sbbc3qabgn6s6etx.t.example.com"
    axfr, tunnel = dns_query("example.com", 252), dns_query(name, 16)
    lab.send(conversation(46000, 53, [(0, struct.pack("!H", len(axfr)) + axfr)]))
    lab.send(conversation(46001, 53, [(0, struct.pack("!H", len(tunnel)) + tunnel)]))
    assert [e["name"] for e in lab.threats()] == ["dns_zone_transfer", "dns_tunneling"]


def test_sensor_streams_are_capped_and_released() -> None:
    from core import anomalies as A
    from workers.detect.engine import DetectLimits

    events: list[dict[str, Any]] = []
    policy = compile_threat_policy(
        1,
        None,
        [{"name": "beacon", "rules": [{"name": "b", "pattern": "BEACON-[0-9]{4}", "context": "packet"}]}],
    )
    engine = build_engine(
        DpiSettings(), StubTables(), events.append, "n1", policy, DetectLimits(max_sensor_streams=2)
    )
    for i in range(3):
        flow = http_flow(CLIENT, 47000 + i, WEB, b"GET /?x=BEACON-1234 HTTP/1.1\r\nHost: web\r\n\r\n")
        for buf in flow:
            meta, raw, key, direction = packet(buf)
            engine.on_packet(raw, meta, key, direction, 1000.0)
    stats = engine.stats()
    assert stats["detect.sensor_streams"] == 2 and stats[A.DETECT_SENSOR_STREAMS_FULL] == 1
    assert len([e for e in events if e.get("sensor") == "beacon"]) >= 1
    engine.close_all()
    assert engine.stats()["detect.sensor_streams"] == 0


def test_set_tables_switches_modes_for_new_flows() -> None:
    class AllMonitor(StubTables):
        def decide(self, family: int, src: bytes, dst: bytes, proto: int, dport: int) -> Decision:
            d = super().decide(family, src, dst, proto, dport)
            return d._replace(mode=Mode.MONITOR)

    lab = Lab()
    lab.engine.set_tables(AllMonitor())
    verdicts = lab.send(http_flow(CLIENT, 48000, WEB, SQLI_GET))
    assert WorkerVerdict.RESET_FLOW not in verdicts and [e["action"] for e in lab.threats()] == ["alert"]


def test_block_source_from_a_dpi_threat_blocks_the_client_in_protect() -> None:
    lab = Lab({"default": {"xss": {"action": "block-source"}}})
    xss = b"GET /p?name=%3Cscript%3Ealert(1)%3C/script%3E HTTP/1.1\r\nHost: web\r\n\r\n"
    verdicts = lab.send(http_flow(CLIENT, 49000, WEB, xss))
    assert verdicts[-1] is WorkerVerdict.RESET_FLOW
    # the client's next connection, even a harmless one, is refused for block_seconds (default 0: none)
    assert lab.send([tcp4(CLIENT, 49001, WEB, 80, TCP_SYN)]) == [WorkerVerdict.PASS]


def test_block_source_with_a_period_blocks_later_flows() -> None:
    lab = Lab({"default": {"mysql_access_denied": {"denials_per_window": 1}}})
    denied = b"\xff\x15\x04#28000Access denied"
    greeting = b"\x0a8.0.36\x00" + b"\x01\x00\x00\x00" + b"abcdefgh\x00" + b"\xff\xf7\x21\x02\x00\xff\xc1\x15"
    greeting += b"\x00" * 10 + b"ijklmnopqrst\x00mysql_native_password\x00"
    login = b"\x85\xa6\xff\x01\x00\x00\x00\x01\x21" + b"\x00" * 23 + b"root\x00\x14" + b"p" * 20
    login += b"mysql_native_password\x00"
    g, lg = mysql_packet(0, greeting), mysql_packet(1, login)
    flow = [
        *handshake(CLIENT, 49100, "198.18.1.33", 3306),
        tcp4("198.18.1.33", 3306, CLIENT, 49100, TCP_ACK | TCP_PSH, seq=5001, ack=1001, payload=g),
        tcp4(CLIENT, 49100, "198.18.1.33", 3306, TCP_ACK | TCP_PSH, seq=1001, ack=5001 + len(g), payload=lg),
        tcp4("198.18.1.33", 3306, CLIENT, 49100, TCP_ACK | TCP_PSH, seq=5001 + len(g), ack=1001 + len(lg),
             payload=mysql_packet(2, denied)),
    ]  # fmt: skip
    verdicts = lab.send(flow)
    assert verdicts[-1] is WorkerVerdict.RESET_FLOW  # web (198.18.1.0/24) is in protect mode
    assert lab.send([tcp4(CLIENT, 49101, WEB, 80, TCP_SYN)]) == [WorkerVerdict.DROP]  # packet by packet
    # and the worker hands the block to the supervisor, which drops the source in the kernel
    from threats.catalogue import MYSQL_ACCESS_DENIED

    seconds = MYSQL_ACCESS_DENIED.thresholds["block_seconds"]
    assert lab.engine.threats.new_blocks == [(ipaddress.ip_address(CLIENT).packed, float(seconds))]
    lab.now += 301
    assert lab.send([tcp4(CLIENT, 49102, WEB, 80, TCP_SYN)]) == [WorkerVerdict.PASS]


def test_undecodable_packets_are_reported_without_a_policy_lookup() -> None:
    class Strict(StubTables):
        def decide(self, family: int, src: bytes, dst: bytes, proto: int, dport: int) -> Decision:
            assert len(src) in (4, 16) and len(dst) in (4, 16), "lookup with a broken address"
            return super().decide(family, src, dst, proto, dport)

    events: list[dict[str, Any]] = []
    engine = build_engine(DpiSettings(), Strict(), events.append, "n1")
    for buf in (b"", b"\x45\x00", b"\x60" + b"\x00" * 10, b"\x99" * 30):
        meta, raw, key, direction = packet(buf)
        engine.on_packet(raw, meta, key, direction, 1.0)
    engine.close_all()  # sends the aggregated summary
    threats = [e for e in events if e["type"] == "threat"]
    assert {e["name"] for e in threats} == {"bad_packet"} and sum(e["count"] for e in threats) == 4
    assert threats[0]["flow"]["src"] == ""


def test_a_detector_exception_is_counted_and_the_packet_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    from core import anomalies as A

    lab = Lab()

    def broken(*_args: object) -> list[object]:
        raise RuntimeError("bug")

    monkeypatch.setattr(lab.engine.threats.packets, "inspect", broken)
    verdicts = lab.send(http_flow(CLIENT, 50100, WEB, SQLI_GET))
    assert lab.engine.stats()[A.DETECT_EXCEPTION] == len(verdicts)
    assert verdicts[-1] is WorkerVerdict.RESET_FLOW  # the DPI hooks still caught the injection


_TEMPLATES = [
    *http_flow(CLIENT, 51000, WEB, SQLI_GET),
    ipv4(CLIENT, "198.18.2.53", 17, udp(5353, 53, dns_query("t.example.com", 10))),
    tcp4(
        CLIENT, 51001, WEB, 443, TCP_ACK | TCP_PSH, seq=1, payload=b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x03"
    ),
    tcp4(CLIENT, 51002, WEB, 443, TCP_ACK | TCP_PSH, seq=1, payload=b"\x18\x03\x02\x00\x03\x01\x40\x00"),
]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(_TEMPLATES), st.integers(0, 120), st.integers(0, 255)), max_size=10)
)
def test_engine_never_raises_on_mutated_traffic(mutations: list[tuple[bytes, int, int]]) -> None:
    from core import anomalies as A

    lab = Lab(sensors=[{"name": "waf", "predefined": "waf"}])
    for template, pos, value in mutations:
        buf = bytearray(template)
        if pos < len(buf):
            buf[pos] = value
        lab.send([bytes(buf)])
    lab.engine.expire(lab.now + 100)
    stats = lab.engine.stats()
    assert stats.get(A.DETECT_EXCEPTION, 0) == 0 and stats.get(A.DPI_DETECTOR_EXCEPTION, 0) == 0
