"""Packet builders for the detector tests (struct only: no checksums, which the decoder does not check)."""

from __future__ import annotations

import ipaddress
import struct

from core.flow import Direction, FlowKey, flow_key
from core.packet import TCP_ACK, TCP_SYN, PacketMeta, decode

CLIENT = "198.18.0.1"
SERVER = "198.18.1.1"


def addr(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def ipv4(
    src: str, dst: str, proto: int, body: bytes, ident: int = 1, frag_off: int = 0, more: bool = False
) -> bytes:
    flags_frag = (0x2000 if more else 0) | (frag_off // 8)
    total = 20 + len(body)
    return (
        struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, ident, flags_frag, 64, proto, 0, addr(src), addr(dst))
        + body
    )


def ipv6(src: str, dst: str, nxt: int, body: bytes) -> bytes:
    return struct.pack("!IHBB16s16s", 0x60000000, len(body), nxt, 64, addr(src), addr(dst)) + body


def tcp(
    sport: int,
    dport: int,
    flags: int,
    seq: int = 1000,
    ack: int = 0,
    window: int = 65535,
    options: bytes = b"",
    payload: bytes = b"",
) -> bytes:
    options += b"\x00" * (-len(options) % 4)
    offset = (20 + len(options)) // 4
    return (
        struct.pack("!HHIIBBHHH", sport, dport, seq, ack, offset << 4, flags, window, 0, 0)
        + options
        + payload
    )


def udp(sport: int, dport: int, payload: bytes) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def icmp(itype: int, code: int = 0, ident: int = 1, seq: int = 1, payload: bytes = b"") -> bytes:
    return struct.pack("!BBHHH", itype, code, 0, ident, seq) + payload


def mss(value: int) -> bytes:
    return struct.pack("!BBH", 2, 4, value)


def wscale(shift: int) -> bytes:
    return struct.pack("!BBB", 3, 3, shift) + b"\x01"


def tcp4(src: str, sport: int, dst: str, dport: int, flags: int, **kw: object) -> bytes:
    return ipv4(src, dst, 6, tcp(sport, dport, flags, **kw))  # type: ignore[arg-type]


def packet(buf: bytes) -> tuple[PacketMeta, bytes, FlowKey, Direction]:
    meta = decode(buf)
    key, direction = flow_key(meta)
    return meta, buf, key, direction


def handshake(client: str, cport: int, server: str, sport: int, **kw: object) -> list[bytes]:
    """SYN, SYN-ACK, ACK of one connection."""
    return [
        tcp4(client, cport, server, sport, TCP_SYN, **kw),
        tcp4(server, sport, client, cport, TCP_SYN | TCP_ACK, seq=5000, ack=1001, **kw),
        tcp4(client, cport, server, sport, TCP_ACK, seq=1001, ack=5001),
    ]
