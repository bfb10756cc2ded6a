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


def ssh_packet(msg: int, body: bytes = b"") -> bytes:
    """A clear SSH-2 binary packet (RFC 4253 §6): length, padding length, payload, padding."""
    payload = bytes([msg]) + body
    pad = 8 - (5 + len(payload)) % 8
    pad += 8 if pad < 4 else 0
    return struct.pack("!IB", 1 + len(payload) + pad, pad) + payload + b"\0" * pad


def ssh_conversation(
    *exchanges: tuple[int, int], banner: bytes = b"SSH-2.0-OpenSSH_9.6p1\r\n"
) -> list[tuple[int, bytes]]:
    """(side, bytes) of an SSH-2 connection, 0 the client: banners, a key exchange in clear up to each
    side's NEWKEYS, then encrypted flights of the given sizes, (client request bytes, server answer
    bytes), the first exchange being the service request."""
    kex = ssh_packet(20, b"\x11" * 16 + b"\0" * 700)  # KEXINIT: cookie and name lists
    out = [
        (1, banner + kex),
        (0, b"SSH-2.0-hydra\r\n" + kex + ssh_packet(30, b"\x22" * 36)),  # KEX_ECDH_INIT
        (1, ssh_packet(31, b"\x33" * 300) + ssh_packet(21) + b"\xee" * 60),  # REPLY, NEWKEYS, EXT_INFO
    ]
    for n, (request, answer) in enumerate(exchanges):
        head = b"" if n else ssh_packet(21)  # the client's NEWKEYS rides with its service request
        out += [(0, head + b"\xcc" * request), (1, b"\xdd" * answer)]
    return out
