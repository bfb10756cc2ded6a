"""Packet- and flow-level detectors: each threat fires on crafted traffic and stays quiet on benign."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.packet import TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, TCP_URG
from threats import catalogue as C
from threats.context import PacketContext
from threats.packets import PacketDetector, PacketLimits
from threats.settings import DEFAULT_SETTINGS, ThreatSettings, compile_threat_settings
from threats.tcp import illegal_tcp_flags, parse_tcp_options

from .build import (
    CLIENT,
    SERVER,
    addr,
    handshake,
    icmp,
    ipv4,
    ipv6,
    mss,
    packet,
    tcp,
    tcp4,
    udp,
    wscale,
)


def run(
    bufs: list[bytes],
    settings: ThreatSettings = DEFAULT_SETTINGS,
    det: PacketDetector | None = None,
    start: float = 1000.0,
    step: float = 0.0001,
) -> list[C.Finding]:
    det = det or PacketDetector()
    out: list[C.Finding] = []
    for i, buf in enumerate(bufs):
        meta, raw, key, direction = packet(buf)
        out += det.inspect(PacketContext(meta, raw, key, direction, start + i * step, settings))
    return out


def names(findings: list[C.Finding]) -> set[str]:
    return {f.threat.name for f in findings}


def benign_session(cport: int = 40000, sport: int = 80, client: str = CLIENT) -> list[bytes]:
    return [
        *handshake(client, cport, SERVER, sport, options=mss(1460) + wscale(7)),
        tcp4(
            client,
            cport,
            SERVER,
            sport,
            TCP_ACK | TCP_PSH,
            seq=1001,
            ack=5001,
            payload=b"GET / HTTP/1.1\r\n\r\n",
        ),
        tcp4(
            SERVER,
            sport,
            client,
            cport,
            TCP_ACK | TCP_PSH,
            seq=5001,
            ack=1019,
            window=512,
            payload=b"HTTP/1.1 200",
        ),
        tcp4(client, cport, SERVER, sport, TCP_ACK | TCP_FIN, seq=1019, ack=5013, window=500),
        tcp4(SERVER, sport, client, cport, TCP_ACK | TCP_FIN, seq=5013, ack=1020),
    ]


def test_benign_sessions_raise_nothing() -> None:
    bufs = [b for i in range(50) for b in benign_session(cport=40000 + i)]
    bufs += [
        ipv4(CLIENT, SERVER, 17, udp(5353, 53, b"x" * 30)),
        ipv4(CLIENT, SERVER, 1, icmp(8, payload=b"p" * 56)),
    ]
    bufs += [ipv4(SERVER, CLIENT, 1, icmp(0, payload=b"p" * 56))]
    assert run(bufs) == []


# -- volume ----------------------------------------------------------------------------------------------


def flood_settings(**over: int) -> ThreatSettings:
    return compile_threat_settings({"syn_flood": {"syns_per_window": 50}, **over})


def test_syn_flood_from_one_source_fires() -> None:
    syns = [tcp4(CLIENT, 1024 + i, SERVER, 80, TCP_SYN) for i in range(60)]
    found = [f for f in run(syns, flood_settings()) if f.threat is C.SYN_FLOOD]
    assert len(found) == 10  # SYNs 51..60
    assert "source" in found[0].detail


def test_syn_flood_spoofed_sources_fire_per_destination_and_spare_known_clients() -> None:
    det = PacketDetector()
    settings = flood_settings()
    legit = run(benign_session(cport=50000, client="198.18.9.9"), settings, det)
    syns = [tcp4(f"198.18.{2 + i // 200}.{i % 200 + 1}", 2000, SERVER, 80, TCP_SYN) for i in range(80)]
    flood = [f for f in run(syns, settings, det, start=1000.01) if f.threat is C.SYN_FLOOD]
    assert legit == []
    assert len(flood) == 30 and all("destination" in f.detail for f in flood)
    # a client that completed a handshake recently still gets its new connections through
    again = run([tcp4("198.18.9.9", 50001, SERVER, 80, TCP_SYN)], settings, det, start=1000.02)
    assert again == []


def test_completed_handshakes_do_not_count_as_syn_flood() -> None:
    bufs = [b for i in range(100) for b in handshake(CLIENT, 3000 + i, SERVER, 443)]
    assert C.SYN_FLOOD.name not in names(run(bufs, flood_settings()))


def test_syn_flood_window_resets() -> None:
    det = PacketDetector()
    settings = flood_settings()
    syns = [tcp4(CLIENT, 1024 + i, SERVER, 80, TCP_SYN) for i in range(40)]
    first = run(syns, settings, det, start=1000.0)
    later = run([tcp4(CLIENT, 5000 + i, SERVER, 80, TCP_SYN) for i in range(40)], settings, det, start=1002.0)
    assert first == [] and later == []


def test_icmp_flood_fires_and_ordinary_ping_does_not() -> None:
    settings = compile_threat_settings({"icmp_flood": {"echo_per_window": 20}})
    flood = [ipv4(CLIENT, SERVER, 1, icmp(8, ident=7, seq=i, payload=b"a" * 56)) for i in range(30)]
    assert sum(f.threat is C.ICMP_FLOOD for f in run(flood, settings)) == 10
    ping = [ipv4(CLIENT, SERVER, 1, icmp(8, ident=7, seq=i, payload=b"a" * 56)) for i in range(30)]
    assert run(ping, settings, step=1.0) == []


def test_source_session_flood_counts_udp_and_tcp() -> None:
    settings = compile_threat_settings(
        {"source_session_flood": {"sessions_per_window": 30}, "port_scan": {"enabled": False}}
    )
    bufs = [ipv4(CLIENT, SERVER, 17, udp(10000 + i, 53, b"q")) for i in range(20)]
    bufs += [tcp4(CLIENT, 20000 + i, SERVER, 80, TCP_SYN) for i in range(20)]
    assert sum(f.threat is C.SOURCE_SESSION_FLOOD for f in run(bufs, settings)) == 10
    # the same UDP flow repeated is one session
    same = [ipv4(CLIENT, SERVER, 17, udp(10000, 53, b"q")) for _ in range(100)]
    assert run(same, settings) == []


# -- packets ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags",
    [
        TCP_SYN | TCP_FIN,
        TCP_SYN | TCP_RST,
        TCP_FIN | TCP_RST | TCP_ACK,
        0,
        TCP_FIN | TCP_PSH | TCP_URG,
        TCP_FIN,
    ],
)
def test_illegal_flag_combinations_are_bad_packets(flags: int) -> None:
    found = run([tcp4(CLIENT, 1234, SERVER, 80, flags)])
    assert names(found) == {"bad_packet"}


@pytest.mark.parametrize(
    "flags", [TCP_SYN, TCP_SYN | TCP_ACK, TCP_ACK, TCP_RST, TCP_RST | TCP_ACK, TCP_FIN | TCP_ACK]
)
def test_legal_flags_pass(flags: int) -> None:
    assert illegal_tcp_flags(flags) == ""
    assert run([tcp4(CLIENT, 1234, SERVER, 80, flags)]) == []


def test_bad_tcp_option_length_and_decode_anomaly_are_bad_packets() -> None:
    bad_opt = tcp4(CLIENT, 1234, SERVER, 80, TCP_SYN, options=b"\x02\x08\x05\xb4")  # MSS with length 8
    truncated = ipv4(CLIENT, SERVER, 6, b"\x00\x50")
    land = tcp4(CLIENT, 80, CLIENT, 80, TCP_SYN)
    found = run([bad_opt, truncated, land])
    assert [f.threat for f in found] == [C.BAD_PACKET] * 3
    assert (
        "option" in found[0].detail
        and found[1].detail == "decode.tcp.truncated"
        and "land" in found[2].detail
    )


def test_tcp_option_parser() -> None:
    opts = parse_tcp_options(mss(1460) + b"\x01" + wscale(7) + b"\x04\x02" + b"\x08\x0a" + b"\x00" * 8)
    assert (opts.ok, opts.mss, opts.wscale, opts.fast_open) == (True, 1460, 7, False)
    assert not parse_tcp_options(b"\x05").ok  # kind without a length byte
    assert not parse_tcp_options(b"\x13\x01").ok  # length below 2
    assert not parse_tcp_options(b"\x13\x20\x00").ok  # length beyond the header


def test_teardrop_overlapping_fragments() -> None:
    first = ipv4(CLIENT, SERVER, 17, udp(1, 2, b"a" * 32), ident=9, more=True)  # bytes [0,40)
    overlap = ipv4(CLIENT, SERVER, 17, b"b" * 16, ident=9, frag_off=24)  # [24,40): inside the first
    assert names(run([first, overlap])) == {"ip_teardrop"}


def test_fragments_in_order_and_duplicates_are_not_teardrop() -> None:
    first = ipv4(CLIENT, SERVER, 17, udp(1, 2, b"a" * 32), ident=9, more=True)
    second = ipv4(CLIENT, SERVER, 17, b"b" * 16, ident=9, frag_off=40)
    other_id = ipv4(CLIENT, SERVER, 17, b"c" * 16, ident=10, frag_off=24)
    assert run([first, first, second, other_id]) == []


def test_too_many_fragments_is_bad_packet() -> None:
    det = PacketDetector(PacketLimits(max_fragments_per_datagram=4))
    frags = [ipv4(CLIENT, SERVER, 17, b"x" * 8, ident=3, frag_off=8 * i, more=True) for i in range(1, 6)]
    assert [f.detail for f in run(frags, det=det)] == ["too many fragments"]


def test_ping_of_death() -> None:
    last = ipv4(CLIENT, SERVER, 1, b"x" * 1000, ident=5, frag_off=65000)
    assert names(run([last])) == {"ping_of_death"}
    big_udp = ipv4(CLIENT, SERVER, 17, b"x" * 1000, ident=5, frag_off=65000)
    assert names(run([big_udp])) == {"bad_packet"}
    fine = ipv4(CLIENT, SERVER, 1, b"x" * 1000, ident=5, frag_off=63000)
    assert run([fine]) == []


def test_syn_with_data_fires_unless_fast_open() -> None:
    assert names(run([tcp4(CLIENT, 1, SERVER, 80, TCP_SYN, payload=b"hello")])) == {"tcp_syn_data"}
    tfo = tcp4(CLIENT, 1, SERVER, 80, TCP_SYN, options=b"\x22\x0a" + b"c" * 8, payload=b"hello")
    assert run([tfo]) == []
    strict = compile_threat_settings({"tcp_syn_data": {"allow_fast_open": 0}})
    assert names(run([tfo], strict)) == {"tcp_syn_data"}


def test_split_handshake() -> None:
    split = [tcp4(CLIENT, 1, SERVER, 80, TCP_SYN), tcp4(SERVER, 80, CLIENT, 1, TCP_SYN, seq=9)]
    assert names(run(split)) == {"tcp_split_handshake"}
    simultaneous_retry = [tcp4(CLIENT, 1, SERVER, 80, TCP_SYN), tcp4(CLIENT, 1, SERVER, 80, TCP_SYN)]
    assert run(simultaneous_retry) == []


def test_small_window_fires_on_tiny_window_and_respects_scaling() -> None:
    bufs = [*handshake(CLIENT, 1, SERVER, 80), tcp4(CLIENT, 1, SERVER, 80, TCP_ACK, window=8)]
    found = run(bufs)
    assert names(found) == {"tcp_small_window"} and found[0].detail == "window 8"
    scaled = [
        *handshake(CLIENT, 1, SERVER, 80, options=wscale(7)),
        tcp4(CLIENT, 1, SERVER, 80, TCP_ACK, window=8),
    ]
    assert run(scaled) == []  # 8 << 7 = 1024 bytes
    zero = [*handshake(CLIENT, 1, SERVER, 80), tcp4(CLIENT, 1, SERVER, 80, TCP_ACK, window=0)]
    assert run(zero) == []  # a zero window is ordinary flow control


def test_small_mss() -> None:
    assert names(run([tcp4(CLIENT, 1, SERVER, 80, TCP_SYN, options=mss(48))])) == {"tcp_small_mss"}
    assert run([tcp4(CLIENT, 1, SERVER, 80, TCP_SYN, options=mss(536))]) == []


def test_established_no_data_fires_after_timeout_by_packet_and_by_tick() -> None:
    det = PacketDetector()
    run(handshake(CLIENT, 1, SERVER, 80), det=det)
    assert run([tcp4(CLIENT, 1, SERVER, 80, TCP_ACK)], det=det, start=1010.0) == []
    found = run([tcp4(CLIENT, 1, SERVER, 80, TCP_ACK)], det=det, start=1031.0)
    assert names(found) == {"tcp_no_data"}
    det2 = PacketDetector()
    run(handshake(CLIENT, 2, SERVER, 80), det=det2)
    assert det2.tick(1005.0, lambda key: DEFAULT_SETTINGS) == []
    ticked = det2.tick(1031.0, lambda key: DEFAULT_SETTINGS)
    assert names(ticked) == {"tcp_no_data"} and ticked[0].src == addr(CLIENT) and ticked[0].dport == 80
    assert det2.tick(1032.0, lambda key: DEFAULT_SETTINGS) == []  # once per flow


def test_established_with_data_is_quiet_after_timeout() -> None:
    det = PacketDetector()
    run(benign_session(cport=7)[:4], det=det)
    assert run([tcp4(CLIENT, 7, SERVER, 80, TCP_ACK, window=600)], det=det, start=1100.0) == []
    assert det.tick(1100.0, lambda key: DEFAULT_SETTINGS) == []


def test_port_scan_many_ports_and_refusals() -> None:
    settings = compile_threat_settings({"port_scan": {"ports_per_window": 20, "resets_per_window": 10}})
    probes = [tcp4(CLIENT, 40000, SERVER, port, TCP_SYN) for port in range(1, 26)]
    assert sum(f.threat is C.PORT_SCAN for f in run(probes, settings)) == 6
    refused = []
    for i in range(12):
        host = f"198.18.2.{i + 1}"
        refused += [tcp4(CLIENT, 40000, host, 23, TCP_SYN), tcp4(host, 23, CLIENT, 40000, TCP_RST | TCP_ACK)]
    found = [f for f in run(refused, settings) if f.threat is C.PORT_SCAN]
    assert len(found) == 3 and "refused" in found[0].detail
    # seen on the resets, reported as the probes: from the scanner to the port it tried
    client = ipaddress.ip_address(CLIENT).packed
    assert {(f.src, f.dport, f.sport) for f in found} == {(client, 23, 40000)}
    assert {ipaddress.ip_address(f.dst) for f in found} == {
        ipaddress.ip_address(f"198.18.2.{i}") for i in (10, 11, 12)
    }
    udp_probes = [ipv4(CLIENT, SERVER, 17, udp(40000, p, b"")) for p in range(1, 12)]
    unreach = [ipv4(SERVER, CLIENT, 1, icmp(3, 3, 0, 0, b"\x45" + b"\x00" * 27)) for _ in range(11)]
    assert C.PORT_SCAN in {f.threat for f in run(udp_probes + unreach, settings)}


def test_many_connections_to_few_ports_are_not_a_scan() -> None:
    settings = compile_threat_settings({"port_scan": {"ports_per_window": 20}})
    bufs = [b for i in range(200) for b in benign_session(cport=30000 + i, sport=(80, 443, 8080)[i % 3])]
    assert run(bufs, settings) == []


def test_icmp_tunnel_reply_differs_from_request() -> None:
    req = ipv4(CLIENT, SERVER, 1, icmp(8, ident=4, seq=1, payload=b"GET /secret"))
    rep = ipv4(SERVER, CLIENT, 1, icmp(0, ident=4, seq=1, payload=b"the secret data"))
    assert names(run([req, rep])) == {"icmp_tunneling"}
    good = ipv4(SERVER, CLIENT, 1, icmp(0, ident=4, seq=1, payload=b"GET /secret"))
    assert run([req, good]) == []


def test_icmp_tunnel_volume() -> None:
    settings = compile_threat_settings({"icmp_tunneling": {"bytes_per_window": 10_000}})
    bulk = [ipv4(CLIENT, SERVER, 1, icmp(8, ident=4, seq=i, payload=b"z" * 1000)) for i in range(12)]
    assert sum(f.threat is C.ICMP_TUNNELING for f in run(bulk, settings)) == 2
    pings = [ipv4(CLIENT, SERVER, 1, icmp(8, ident=4, seq=i, payload=b"z" * 56)) for i in range(100)]
    assert run(pings, settings) == []


def test_icmpv6_echo_tunnel() -> None:
    req = ipv6("fd00::1", "fd00::2", 58, icmp(128, ident=1, seq=1, payload=b"abc"))
    rep = ipv6("fd00::2", "fd00::1", 58, icmp(129, ident=1, seq=1, payload=b"xyz"))
    assert names(run([req, rep])) == {"icmp_tunneling"}


def test_extip_mitm() -> None:
    settings = compile_threat_settings({"k8s_extip_mitm": {"external_ips": ["203.0.113.7"]}})
    inside = tcp4("10.1.2.3", 40000, "203.0.113.7", 443, TCP_SYN)
    found = run([inside], settings)
    assert names(found) == {"k8s_extip_mitm"} and found[0].dst == addr("203.0.113.7")
    outside = tcp4("8.8.8.8", 40000, "203.0.113.7", 443, TCP_SYN)
    other = tcp4("10.1.2.3", 40000, "203.0.113.8", 443, TCP_SYN)
    udp_in = ipv4("10.1.2.3", "203.0.113.7", 17, udp(5000, 53, b"q"))
    assert run([outside, other], settings) == []
    assert names(run([udp_in], settings)) == {"k8s_extip_mitm"}
    assert run([inside]) == []  # not configured: nothing to compare with


def test_disabled_threat_is_silent() -> None:
    settings = compile_threat_settings({"bad_packet": {"enabled": False}})
    assert run([tcp4(CLIENT, 1234, SERVER, 80, TCP_SYN | TCP_FIN)], settings) == []


def test_flow_table_is_bounded() -> None:
    det = PacketDetector(PacketLimits(max_flows=16, max_hosts=8))
    run([tcp4(f"198.18.3.{i % 250}", 1000 + i, SERVER, 80, TCP_SYN) for i in range(100)], det=det)
    sizes = det.table_sizes()
    assert sizes["flows"] == 16 and sizes["flows_evicted"] == 84


def test_tick_forgets_idle_flows() -> None:
    det = PacketDetector(PacketLimits(flow_idle_timeout=5.0))
    run([tcp4(CLIENT, 1, SERVER, 80, TCP_SYN)], det=det)
    det.tick(1010.0, lambda key: DEFAULT_SETTINGS)
    assert det.table_sizes()["flows"] == 0


def test_tcp_small_window_ipv6() -> None:
    c, s = "fd00::1", "fd00::2"
    bufs = [
        ipv6(c, s, 6, tcp(1, 80, TCP_SYN)),
        ipv6(s, c, 6, tcp(80, 1, TCP_SYN | TCP_ACK)),
        ipv6(c, s, 6, tcp(1, 80, TCP_ACK)),
        ipv6(c, s, 6, tcp(1, 80, TCP_ACK, window=3)),
    ]
    assert names(run(bufs)) == {"tcp_small_window"}


# -- fuzzing -----------------------------------------------------------------------------------------------

_PACKET_TEMPLATES = [
    tcp4(CLIENT, 1, SERVER, 80, TCP_SYN, options=mss(1460) + wscale(7)),
    ipv4(CLIENT, SERVER, 17, udp(5353, 53, b"q" * 20)),
    ipv4(CLIENT, SERVER, 1, icmp(8, payload=b"p" * 16)),
    ipv4(CLIENT, SERVER, 1, b"x" * 40, ident=5, frag_off=64),
    ipv6("fd00::1", "fd00::2", 6, tcp(1, 80, TCP_SYN | TCP_ACK)),
]


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(_PACKET_TEMPLATES), st.integers(0, 80), st.integers(0, 255), st.booleans()),
        min_size=1,
        max_size=12,
    )
)
def test_inspect_is_total_on_mutated_packets(mutations: list[tuple[bytes, int, int, bool]]) -> None:
    det = PacketDetector(PacketLimits(max_flows=8, max_hosts=8, max_datagrams=4))
    for i, (template, pos, value, truncate) in enumerate(mutations):
        buf = bytearray(template)
        if pos < len(buf):
            buf[pos] = value
        data = bytes(buf[: pos or 1]) if truncate else bytes(buf)
        meta, raw, key, direction = packet(data)
        for f in det.inspect(PacketContext(meta, raw, key, direction, 1000.0 + i, DEFAULT_SETTINGS)):
            assert isinstance(f.threat, C.Threat) and len(f.excerpt) <= C.MAX_FINDING_EXCERPT
    det.tick(2000.0, lambda key: DEFAULT_SETTINGS)
    sizes = det.table_sizes()
    assert sizes["flows"] <= 8 and sizes["datagrams"] <= 4


def test_server_banner_alone_does_not_count_as_client_data() -> None:
    det = PacketDetector()
    banner = tcp4(
        SERVER, 22, CLIENT, 9, TCP_ACK | TCP_PSH, seq=5001, ack=1001, payload=b"SSH-2.0-OpenSSH_9.6\r\n"
    )
    run([*handshake(CLIENT, 9, SERVER, 22), banner], det=det)
    ticked = det.tick(1031.0, lambda key: DEFAULT_SETTINGS)
    assert names(ticked) == {"tcp_no_data"} and ticked[0].detail == "established, no client data"
    det2 = PacketDetector()
    reply = tcp4(CLIENT, 9, SERVER, 22, TCP_ACK | TCP_PSH, seq=1001, ack=5023, payload=b"SSH-2.0-client\r\n")
    run([*handshake(CLIENT, 9, SERVER, 22), banner, reply], det=det2)
    assert det2.tick(1031.0, lambda key: DEFAULT_SETTINGS) == []


def test_sustained_syn_flood_stays_detected_across_windows_then_clears() -> None:
    det = PacketDetector()
    settings_ = flood_settings()  # 50 per 1 s window
    spoofed = [tcp4(f"203.0.{i // 250}.{i % 250 + 1}", 2000, SERVER, 80, TCP_SYN) for i in range(300)]
    # 100 SYNs/s for 3 s: only the first window lets its first 50 through
    found = run(spoofed, settings_, det, start=1000.0, step=0.01)
    assert len([f for f in found if f.threat is C.SYN_FLOOD]) == 250
    # the flood stops; a second later a new client is not taken for part of it
    assert run([tcp4("198.18.5.5", 3000, SERVER, 80, TCP_SYN)], settings_, det, start=1004.5) == []


def test_data_segment_options_fast_path_and_bad_options() -> None:
    ts = b"\x01\x01\x08\x0a" + b"\x00\x00\x00\x01\x00\x00\x00\x02"
    good = tcp4(CLIENT, 1, SERVER, 80, TCP_ACK | TCP_PSH, options=ts, payload=b"data")
    wrong_ts = b"\x01\x01\x08\x05" + b"\x00" * 8  # timestamps with length 5
    bad = tcp4(CLIENT, 1, SERVER, 80, TCP_ACK | TCP_PSH, options=wrong_ts, payload=b"data")
    assert run([good]) == []
    assert [f.detail for f in run([bad])] == ["bad TCP option length"]


def test_horizontal_scan_and_ping_sweep() -> None:
    settings_ = compile_threat_settings({"port_scan": {"hosts_per_window": 50}})
    sweep = [tcp4(CLIENT, 40000 + i, f"198.18.{3 + i // 250}.{i % 250 + 1}", 445, TCP_SYN) for i in range(60)]
    found = [f for f in run(sweep, settings_) if f.threat is C.PORT_SCAN]
    assert len(found) == 11 and found[0].detail == "50 hosts probed"
    pings = [ipv4(CLIENT, f"198.18.4.{i + 1}", 1, icmp(8, ident=i, payload=b"p" * 8)) for i in range(55)]
    assert len([f for f in run(pings, settings_) if f.threat is C.PORT_SCAN]) == 6
    # a monitoring client scraping 300 pods within the window is not a sweep at the default threshold
    fleet = [
        b
        for i in range(300)
        for b in handshake(CLIENT, 41000 + i, f"198.18.{5 + i // 250}.{i % 250 + 1}", 9090)
    ]
    assert run(fleet) == []


def reader(window: int, steps: list[tuple[float, int, int]], scale: int = -1) -> list[tuple[float, bytes]]:
    """A GET answered by a server that has more to send than the client takes: (time, packet). `steps`:
    (seconds after the request, bytes the client has acknowledged by then, the window it offers), the
    server sending what each window allows."""
    opts = wscale(scale) if scale >= 0 else b""
    out = [
        (0.0, tcp4(CLIENT, 41000, SERVER, 80, TCP_SYN, window=window, options=opts)),
        (0.0, tcp4(SERVER, 80, CLIENT, 41000, TCP_SYN | TCP_ACK, seq=5000, ack=1001, options=opts)),
        (0.0, tcp4(CLIENT, 41000, SERVER, 80, TCP_ACK, seq=1001, ack=5001, window=window)),
        (0.0, tcp4(CLIENT, 41000, SERVER, 80, TCP_ACK | TCP_PSH, seq=1001, ack=5001, window=window,
                   payload=b"GET /big HTTP/1.1\r\n\r\n")),
    ]  # fmt: skip
    sent = 0
    for at, acked, offered in steps:
        room = acked + (offered << max(scale, 0)) - sent
        if room > 0:  # the server fills the window it was offered
            out.append((at, tcp4(SERVER, 80, CLIENT, 41000, TCP_ACK | TCP_PSH, seq=5001 + sent, ack=1022,
                                 payload=b"x" * min(room, 1400))))  # fmt: skip
            sent += min(room, 1400)
        out.append((at + 0.001, tcp4(CLIENT, 41000, SERVER, 80, TCP_ACK, seq=1022, ack=5001 + acked,
                                     window=offered)))  # fmt: skip
    return out


def run_timed(timed: list[tuple[float, bytes]], det: PacketDetector | None = None) -> list[C.Finding]:
    det = det or PacketDetector()
    out: list[C.Finding] = []
    for at, buf in timed:
        meta, raw, key, direction = packet(buf)
        out += det.inspect(PacketContext(meta, raw, key, direction, 1000.0 + at, DEFAULT_SETTINGS))
    return out


# slowhttptest -X as recorded in the lab: a 1152-byte window taken at once, then shut; 32 bytes read
# every 5 s never open it again (a receiver does not offer a silly window); the server probes the shut
# window ever more rarely (0.3 s, 0.5 s, 0.9 s, … 14 s, 28 s)
SLOW_READ = [(0.1, 1152, 0), *((t, 1152, 0) for t in (0.3, 0.5, 0.9, 1.8, 3.5, 7.0, 13.9, 27.8))]


def test_a_slow_reader_behind_a_tiny_window_is_found_by_its_packets_and_by_the_sweep() -> None:
    found = run_timed(reader(1152, SLOW_READ))
    assert names(found) == {"tcp_slow_read"} and len(found) == 1
    assert found[0].src == addr(CLIENT) and found[0].dport == 80
    assert found[0].detail == "1152 bytes read in 28s behind a window of at most 1152"
    # the same connection gone quiet at 14 s: the sweep finds it once 20 s have passed
    det = PacketDetector()
    assert run_timed(reader(1152, SLOW_READ[:-1]), det) == []
    assert det.tick(1015.0, lambda key: DEFAULT_SETTINGS) == []
    swept = det.tick(1021.0, lambda key: DEFAULT_SETTINGS)
    assert names(swept) == {"tcp_slow_read"} and swept[0].src == addr(CLIENT)
    assert det.tick(1022.0, lambda key: DEFAULT_SETTINGS) == []  # once by the sweep ...
    later = run_timed([(25.0, tcp4(CLIENT, 41000, SERVER, 80, TCP_ACK, seq=1022, ack=6153, window=0))], det)
    assert names(later) == {"tcp_slow_read"}  # ... and once on the packet path, where Protect resets


def test_readers_that_are_not_slow_readers() -> None:
    # a browser that stops reading (a paused video): its window falls to zero, but it offered 64 KB
    paused = [(0.1, 0, 512), (0.2, 1400, 0), *((t, 1400, 0) for t in range(1, 60, 5))]
    assert run_timed(reader(512, paused, scale=7)) == []
    # a small stack with a tiny window that reads at once: everything acknowledged, the window open again
    quick = [(t / 10, int(t * 1152), 1152) for t in range(1, 400)]
    assert run_timed(reader(1152, quick)) == []
    # ... or that reads steadily, if slowly, at 200 bytes a second: a slow link, not a slow reader
    steady = [(t, 1152 + 200 * t, 0) for t in range(1, 40)]
    assert run_timed(reader(1152, steady)) == []
    off = compile_threat_settings({"tcp_slow_read": {"enabled": False}})
    det = PacketDetector()
    for at, buf in reader(1152, SLOW_READ):
        meta, raw, key, direction = packet(buf)
        assert det.inspect(PacketContext(meta, raw, key, direction, 1000.0 + at, off)) == []
