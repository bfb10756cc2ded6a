"""Packet builders for the tests (dpkt, so the bytes are built independently of our decoder)."""

from __future__ import annotations

import socket

import dpkt


def a4(s: str) -> bytes:
    return socket.inet_pton(socket.AF_INET, s)


def a6(s: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, s)


def tcp4(
    src: str = "198.18.1.11",
    dst: str = "198.18.2.11",
    sport: int = 40000,
    dport: int = 80,
    flags: int = dpkt.tcp.TH_SYN,
    data: bytes = b"",
    seq: int = 1000,
    ack: int = 0,
) -> bytes:
    t = dpkt.tcp.TCP(sport=sport, dport=dport, flags=flags, seq=seq, ack=ack, data=data)
    ip = dpkt.ip.IP(src=a4(src), dst=a4(dst), p=dpkt.ip.IP_PROTO_TCP, data=t)
    ip.len = len(ip)
    return bytes(ip)


def udp4(
    src: str = "198.18.1.11", dst: str = "198.18.2.11", sport: int = 5000, dport: int = 53, data: bytes = b"q"
) -> bytes:
    u = dpkt.udp.UDP(sport=sport, dport=dport, data=data)
    u.ulen = len(u)
    ip = dpkt.ip.IP(src=a4(src), dst=a4(dst), p=dpkt.ip.IP_PROTO_UDP, data=u)
    ip.len = len(ip)
    return bytes(ip)


def icmp4_echo(
    src: str = "198.18.1.11", dst: str = "198.18.2.11", ident: int = 77, reply: bool = False, seq: int = 1
) -> bytes:
    echo = dpkt.icmp.ICMP.Echo(id=ident, seq=seq, data=b"ping")
    ic = dpkt.icmp.ICMP(type=0 if reply else 8, code=0, data=echo)
    ip = dpkt.ip.IP(src=a4(src), dst=a4(dst), p=dpkt.ip.IP_PROTO_ICMP, data=ic)
    ip.len = len(ip)
    return bytes(ip)


def tcp6(
    src: str = "fd00:198:18:1::b",
    dst: str = "fd00:198:18:2::b",
    sport: int = 40000,
    dport: int = 80,
    flags: int = dpkt.tcp.TH_SYN,
    data: bytes = b"",
    ext: bytes = b"",
    first_nh: int = 6,
) -> bytes:
    t = bytes(dpkt.tcp.TCP(sport=sport, dport=dport, flags=flags, seq=5, data=data))
    body = ext + t
    hdr = bytes(dpkt.ip6.IP6(src=a6(src), dst=a6(dst), nxt=first_nh, hlim=64, plen=len(body)))[:40]
    return hdr + body
