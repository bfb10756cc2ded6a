"""The header decoder on well-formed packets, every anomaly it names, and random input."""

from __future__ import annotations

import struct

import dpkt
from hypothesis import given, settings
from hypothesis import strategies as st

from core import anomalies as A
from core.packet import Fragment, PacketMeta, _decode_ipv4, decode
from tests.pipeline.packets import a4, a6, icmp4_echo, tcp4, tcp6, udp4


def test_ipv4_tcp_fields() -> None:
    m = decode(tcp4(flags=dpkt.tcp.TH_SYN | dpkt.tcp.TH_ACK, data=b"hello", seq=7, ack=9))
    assert (m.family, m.proto, m.src, m.dst, m.sport, m.dport) == (
        4,
        6,
        a4("198.18.1.11"),
        a4("198.18.2.11"),
        40000,
        80,
    )
    assert (m.tcp_flags, m.seq, m.ack, m.anomaly) == (0x12, 7, 9, "")
    assert m.payload_len == 5 and m.payload_offset == 40


def test_ipv4_udp_and_icmp_echo() -> None:
    u = decode(udp4(data=b"abc"))
    assert (u.proto, u.sport, u.dport, u.payload_len) == (17, 5000, 53, 3)
    req, rep = (
        decode(icmp4_echo(ident=77)),
        decode(icmp4_echo(ident=77, reply=True, src="198.18.2.11", dst="198.18.1.11")),
    )
    # Echo request and reply share the identifier as both "ports", so they form one flow.
    assert (req.icmp_type, req.sport, req.dport) == (8, 77, 77)
    assert (rep.icmp_type, rep.sport, rep.dport) == (0, 77, 77)


def test_ipv6_walks_extension_headers() -> None:
    hop_by_hop = bytes([6, 0]) + b"\x01\x04\x00\x00\x00\x00"  # next=TCP, 8 bytes, PadN option
    m = decode(tcp6(ext=hop_by_hop, first_nh=0, dport=443))
    assert (m.family, m.proto, m.dport, m.anomaly) == (6, 6, 443, "")
    assert m.l4_offset == 48 and m.src == a6("fd00:198:18:1::b")


def test_ipv6_fragments() -> None:
    first = bytes([6, 0, 0x00, 0x01]) + struct.pack("!I", 99)  # offset 0, more fragments
    m = decode(tcp6(ext=first, first_nh=44))
    assert (m.fragment, m.frag_id, m.dport) == (Fragment.FIRST, 99, 80)
    later = bytes([6, 0, 0x05, 0x00]) + struct.pack("!I", 99)  # offset 160 bytes, no transport header
    m = decode(tcp6(ext=later, first_nh=44))
    assert (m.fragment, m.frag_offset, m.sport, m.dport, m.anomaly) == (
        Fragment.LATER,
        0x500 & 0xFFF8,
        0,
        0,
        "",
    )


def test_ipv4_later_fragment_has_no_ports() -> None:
    pkt = bytearray(udp4())
    pkt[6:8] = struct.pack("!H", 0x2000 | 3)  # more fragments, offset 24 bytes
    m = decode(bytes(pkt))
    assert (m.fragment, m.frag_offset, m.sport, m.anomaly) == (Fragment.LATER, 24, 0, "")


def _set(buf: bytes, offset: int, fmt: str, value: int) -> bytes:
    b = bytearray(buf)
    struct.pack_into(fmt, b, offset, value)
    return bytes(b)


def test_every_anomaly_is_named() -> None:
    cases = {
        A.DECODE_EMPTY: b"",
        A.DECODE_BAD_VERSION: b"\x70" + bytes(39),
        A.DECODE_IPV4_TRUNCATED: tcp4()[:12],
        A.DECODE_IPV4_BAD_IHL: _set(tcp4(), 0, "!B", 0x43),
        A.DECODE_IPV4_BAD_LENGTH: _set(tcp4(), 2, "!H", 10),
        A.DECODE_IPV6_TRUNCATED: tcp6()[:30],
        A.DECODE_IPV6_EXT_TRUNCATED: tcp6(ext=b"", first_nh=0)[:40],
        A.DECODE_TCP_TRUNCATED: tcp4()[:30],
        A.DECODE_TCP_BAD_OFFSET: _set(tcp4(), 32, "!B", 0x20),
        A.DECODE_UDP_TRUNCATED: udp4()[:24],
        A.DECODE_UDP_BAD_LENGTH: _set(udp4(), 24, "!H", 4),
        A.DECODE_ICMP_TRUNCATED: icmp4_echo()[:24],
    }
    for anomaly, packet in cases.items():
        assert decode(packet).anomaly == anomaly, anomaly
    assert set(cases) <= set(A.DECODE_ANOMALIES)


def test_too_many_extension_headers() -> None:
    chain = b"".join(bytes([0, 0]) + bytes(6) for _ in range(12))  # hop-by-hop headers pointing at themselves
    assert decode(tcp6(ext=chain, first_nh=0)).anomaly == A.DECODE_IPV6_EXT_TOO_MANY


def test_truncated_copy_still_decodes_headers() -> None:
    # NFQUEUE copies at most copy_range bytes: a long packet cut short keeps its header fields.
    m = decode(tcp4(data=b"x" * 5000)[:3800])
    assert (m.anomaly, m.dport, m.ip_len) == ("", 80, 5040)


@settings(max_examples=3000, deadline=None)
@given(st.binary(max_size=120))
def test_never_raises_on_random_bytes(data: bytes) -> None:
    m = decode(data)
    assert isinstance(m, PacketMeta)
    assert m.anomaly in A.DECODE_ANOMALIES or m.anomaly == ""


@settings(max_examples=2000, deadline=None)
@given(st.sampled_from([tcp4(data=b"abc"), udp4(), icmp4_echo(), tcp6(data=b"x")]), st.data())
def test_never_raises_on_mutated_packets(packet: bytes, data: st.DataObject) -> None:
    b = bytearray(packet)
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(b) - 1))
        b[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(b)))
    m = decode(bytes(b[:cut]))
    assert m.anomaly in A.DECODE_ANOMALIES or m.anomaly == ""
    if not m.anomaly:
        assert m.payload_offset <= max(m.ip_len, m.payload_offset)


def _general(buf: bytes) -> PacketMeta:
    """The decoder's general IPv4 path, without the one-unpack fast path for IPv4 + TCP."""
    return _decode_ipv4(buf)


@settings(max_examples=800, deadline=None)
@given(st.sampled_from([tcp4(data=b"abc"), tcp4(flags=0x02), tcp4(data=b"x" * 100)]), st.data())
def test_fast_ipv4_tcp_path_decodes_as_the_general_path(packet: bytes, data: st.DataObject) -> None:
    # Mutations of the fields the fast path reads or checks: version/IHL, lengths, fragment bits, protocol,
    # the TCP data offset; and cuts of the copy.
    b = bytearray(packet)
    for _ in range(data.draw(st.integers(0, 4))):
        i = data.draw(
            st.sampled_from([0, 2, 3, 4, 5, 6, 7, 8, 9, 32, 33, data.draw(st.integers(0, len(b) - 1))])
        )
        b[i] = data.draw(st.integers(0, 255))
    b[0] = 0x40 | (b[0] & 0x0F)  # IPv4 (any header length): the packets the fast path may take
    buf = bytes(b[: data.draw(st.integers(1, len(b)))])
    assert decode(buf) == _general(buf)


def test_fast_path_takes_the_common_syn() -> None:
    syn = tcp4(flags=0x02, seq=99)
    assert decode(syn) == _general(syn) and decode(syn).seq == 99
