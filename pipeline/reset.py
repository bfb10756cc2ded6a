"""TCP resets for blocked connections, built from the packet that was blocked.

`resets_for()` is pure (packet metadata in, raw IP packets out); `ResetSender` is the thin I/O shell
that sends them through raw sockets marked with our PASS bit, so that our own chain lets them by.
"""

from __future__ import annotations

import socket
import struct

from core.packet import TCP_ACK, TCP_RST, TCP_SYN, PacketMeta

_TCP_HDR = struct.Struct("!HHIIBBHHH")
_IPV4_HDR = struct.Struct("!BBHHHBBH4s4s")
_IPV6_HDR = struct.Struct("!IHBB16s16s")
SO_MARK = 36


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _tcp_rst(
    family: int, src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int
) -> bytes:
    tcp = _TCP_HDR.pack(sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags, 0, 0, 0)
    if family == 4:
        pseudo = src + dst + struct.pack("!BBH", 0, 6, len(tcp))
    else:
        pseudo = src + dst + struct.pack("!IxxxB", len(tcp), 6)
    csum = _checksum(pseudo + tcp)
    tcp = tcp[:16] + struct.pack("!H", csum) + tcp[18:]
    if family == 4:
        ip = _IPV4_HDR.pack(0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, src, dst)
        ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
        return ip + tcp
    return _IPV6_HDR.pack(6 << 28, len(tcp), 6, 64, src, dst) + tcp


def resets_for(meta: PacketMeta) -> list[bytes]:
    """Resets that end the connection `meta` belongs to: to its sender always, and to its receiver when
    the connection was established (a refused SYN needs no reset towards the server)."""
    if meta.proto != 6 or meta.tcp_flags & TCP_RST:
        return []
    payload = meta.payload_len
    if meta.tcp_flags & TCP_SYN and not meta.tcp_flags & TCP_ACK:
        # Refuse the connection: RST|ACK acknowledging the SYN, as a closed port would answer.
        return [_tcp_rst(meta.family, meta.dst, meta.src, meta.dport, meta.sport, 0, meta.seq + 1 + payload,
                         TCP_RST | TCP_ACK)]  # fmt: skip
    to_sender = _tcp_rst(meta.family, meta.dst, meta.src, meta.dport, meta.sport, meta.ack, 0, TCP_RST)
    to_receiver = _tcp_rst(meta.family, meta.src, meta.dst, meta.sport, meta.dport, meta.seq, 0, TCP_RST)
    return [to_sender, to_receiver]


class ResetSender:
    def __init__(self, pass_mark: int) -> None:
        self._socks: dict[int, socket.socket] = {}
        self._pass_mark = pass_mark
        self.sent = 0
        self.failed = 0

    def _sock(self, family: int) -> socket.socket:
        sock = self._socks.get(family)
        if sock is None:
            af = socket.AF_INET if family == 4 else socket.AF_INET6
            sock = socket.socket(af, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.IPPROTO_RAW)
            sock.setsockopt(socket.SOL_SOCKET, SO_MARK, self._pass_mark)
            sock.setblocking(False)
            self._socks[family] = sock
        return sock

    def send(self, meta: PacketMeta) -> None:
        for packet in resets_for(meta):
            try:
                self._send_one(meta.family, packet)
                self.sent += 1
            except OSError:
                self.failed += 1

    def _send_one(self, family: int, packet: bytes) -> None:
        if family == 4:
            dst = socket.inet_ntop(socket.AF_INET, packet[16:20])
            self._sock(4).sendto(packet, (dst, 0))
        else:
            dst = socket.inet_ntop(socket.AF_INET6, packet[24:40])
            self._sock(6).sendto(packet, (dst, 0))

    def close(self) -> None:
        for sock in self._socks.values():
            sock.close()
        self._socks.clear()
