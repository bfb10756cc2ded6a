"""TCP resets built for blocked connections: right addresses, sequence numbers and checksums."""

from __future__ import annotations

import struct

import dpkt

from core.packet import decode
from pipeline.reset import resets_for
from tests.pipeline.packets import tcp4, tcp6, udp4


def _valid_tcp_checksum(packet: bytes, family: int) -> bool:
    """One's-complement sum over pseudo-header and segment: a correct checksum makes it 0xFFFF."""
    if family == 4:
        src, dst, segment = packet[12:16], packet[16:20], packet[20:]
        pseudo = src + dst + struct.pack("!BBH", 0, 6, len(segment))
    else:
        src, dst, segment = packet[8:24], packet[24:40], packet[40:]
        pseudo = src + dst + struct.pack("!IxxxB", len(segment), 6)
    data = pseudo + segment + b"\0" * (len(segment) % 2)
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


def test_refused_syn_gets_rst_ack_to_the_client() -> None:
    (rst,) = resets_for(decode(tcp4(dport=22, seq=1000)))
    ip = dpkt.ip.IP(rst)
    assert ip.src == bytes([198, 18, 2, 11]) and ip.data.sport == 22 and ip.data.dport == 40000
    assert ip.data.flags == dpkt.tcp.TH_RST | dpkt.tcp.TH_ACK and ip.data.ack == 1001
    assert _valid_tcp_checksum(rst, 4)


def test_established_connection_is_reset_both_ways() -> None:
    meta = decode(tcp4(flags=dpkt.tcp.TH_ACK | dpkt.tcp.TH_PUSH, data=b"evil", seq=5000, ack=7000))
    to_sender, to_receiver = resets_for(meta)
    s, r = dpkt.ip.IP(to_sender), dpkt.ip.IP(to_receiver)
    assert (s.dst, s.data.dport, s.data.seq) == (meta.src, meta.sport, 7000)
    assert (r.dst, r.data.dport, r.data.seq) == (meta.dst, meta.dport, 5000)
    for pkt in (to_sender, to_receiver):
        assert _valid_tcp_checksum(pkt, 4)
    for pkt in resets_for(decode(tcp6(flags=dpkt.tcp.TH_ACK, data=b"x"))):
        assert _valid_tcp_checksum(pkt, 6)


def test_no_reset_for_udp_or_a_reset() -> None:
    assert resets_for(decode(udp4())) == []
    assert resets_for(decode(tcp4(flags=dpkt.tcp.TH_RST))) == []
