"""Seed packets for the packet decoder's fuzz target: one of each shape it decodes (made with dpkt)."""

from __future__ import annotations

import dpkt

V4_SRC, V4_DST = bytes([198, 18, 1, 5]), bytes([198, 18, 2, 5])
V6_SRC, V6_DST = bytes.fromhex("fd00" + "00" * 12 + "0105"), bytes.fromhex("fd00" + "00" * 12 + "0205")


def _v4(proto: int, l4: bytes, **kw: int) -> bytes:
    return bytes(dpkt.ip.IP(src=V4_SRC, dst=V4_DST, p=proto, data=l4, **kw))


def _v6(nxt: int, l4: bytes) -> bytes:
    return bytes(dpkt.ip6.IP6(src=V6_SRC, dst=V6_DST, nxt=nxt, hlim=64, data=l4, plen=len(l4)))


_SYN = bytes(dpkt.tcp.TCP(sport=40000, dport=80, flags=dpkt.tcp.TH_SYN, opts=b"\x02\x04\x05\xb4\x01\x01\x04\x02"))
_DATA = bytes(dpkt.tcp.TCP(sport=40000, dport=80, flags=dpkt.tcp.TH_ACK | dpkt.tcp.TH_PUSH, data=b"GET / HTTP/1.1\r\n"))
_UDP = bytes(dpkt.udp.UDP(sport=5353, dport=53, data=b"\x12\x34\x01\x00\x00\x01" + bytes(6)))
_ICMP = bytes(dpkt.icmp.ICMP(type=8, code=0, data=dpkt.icmp.ICMP.Echo(id=1, seq=1, data=b"ping")))
_ICMP6 = bytes([128, 0, 0, 0, 0, 1, 0, 1]) + b"ping"
# A hop-by-hop extension header (PadN) before TCP.
_HOPOPTS = bytes([dpkt.ip.IP_PROTO_TCP, 0, 1, 4, 0, 0, 0, 0])

PACKETS: tuple[bytes, ...] = tuple(
    p
    for p in (
        _v4(dpkt.ip.IP_PROTO_TCP, _SYN),
        _v4(dpkt.ip.IP_PROTO_TCP, _DATA),
        _v4(dpkt.ip.IP_PROTO_UDP, _UDP),
        _v4(dpkt.ip.IP_PROTO_ICMP, _ICMP),
        _v4(dpkt.ip.IP_PROTO_UDP, _UDP, mf=1),  # a first fragment
        _v4(dpkt.ip.IP_PROTO_UDP, b"tail", offset=3),  # a later fragment
        _v6(dpkt.ip.IP_PROTO_TCP, _SYN),
        _v6(dpkt.ip.IP_PROTO_UDP, _UDP),
        _v6(dpkt.ip.IP_PROTO_ICMP6, _ICMP6),
        _v6(dpkt.ip.IP_PROTO_HOPOPTS, _HOPOPTS + _SYN),
    )
)
