"""Clear our bits from a connection's conntrack mark (ctnetlink), so its next packet is judged again.

When a new policy generation changes the fate of a connection that was offloaded to the kernel (allowed
before, denied now, or the reverse), the reader clears our accept/drop bits from the connection's mark.
The connection's next packet then reaches the queue again and is decided under the new policy — and a
TCP connection that is now denied is reset from that packet's sequence numbers. NAT state and marks of
other users are left as they are (the mark mask covers our bits only).
"""

from __future__ import annotations

import errno
import socket
import struct

from core.flow import Direction, FlowKey
from core.packet import IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP

NETLINK_NETFILTER = 12
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_NEW = 0
NLM_F_REQUEST = 0x01
NLM_F_ACK = 0x04
NLMSG_ERROR = 0x02
NLA_F_NESTED = 0x8000

CTA_TUPLE_ORIG = 1
CTA_MARK = 8
CTA_MARK_MASK = 21
CTA_TUPLE_IP = 1
CTA_TUPLE_PROTO = 2
CTA_IP_V4_SRC, CTA_IP_V4_DST, CTA_IP_V6_SRC, CTA_IP_V6_DST = 1, 2, 3, 4
CTA_PROTO_NUM, CTA_PROTO_SRC_PORT, CTA_PROTO_DST_PORT = 1, 2, 3
CTA_PROTO_ICMP_ID, CTA_PROTO_ICMP_TYPE, CTA_PROTO_ICMP_CODE = 4, 5, 6
CTA_PROTO_ICMPV6_ID, CTA_PROTO_ICMPV6_TYPE, CTA_PROTO_ICMPV6_CODE = 7, 8, 9

_NLMSGHDR = struct.Struct("=IHHII")
ACK_TIMEOUT_S = 0.5  # ctnetlink answers synchronously; this only bounds a wedged kernel


def _attr(kind: int, data: bytes) -> bytes:
    return struct.pack("=HH", 4 + len(data), kind) + data + b"\0" * (-len(data) % 4)


def _nested(kind: int, *attrs: bytes) -> bytes:
    return _attr(kind | NLA_F_NESTED, b"".join(attrs))


def tuple_attr(family: int, proto: int, src: bytes, dst: bytes, sport: int, dport: int) -> bytes | None:
    """CTA_TUPLE_ORIG for a connection from (src, sport) to (dst, dport); None for protocols we cannot name
    (ICMP echo uses the identifier as both "ports", as our decoder does)."""
    if family == 4:
        ip = _nested(CTA_TUPLE_IP, _attr(CTA_IP_V4_SRC, src), _attr(CTA_IP_V4_DST, dst))
    else:
        ip = _nested(CTA_TUPLE_IP, _attr(CTA_IP_V6_SRC, src), _attr(CTA_IP_V6_DST, dst))
    l4: tuple[bytes, ...]
    if proto in (IPPROTO_TCP, IPPROTO_UDP):
        l4 = (
            _attr(CTA_PROTO_SRC_PORT, struct.pack("!H", sport)),
            _attr(CTA_PROTO_DST_PORT, struct.pack("!H", dport)),
        )
    elif proto == IPPROTO_ICMP:
        l4 = (_attr(CTA_PROTO_ICMP_ID, struct.pack("!H", sport)), _attr(CTA_PROTO_ICMP_TYPE, b"\x08"),
              _attr(CTA_PROTO_ICMP_CODE, b"\x00"))  # fmt: skip
    elif proto == IPPROTO_ICMPV6:
        l4 = (_attr(CTA_PROTO_ICMPV6_ID, struct.pack("!H", sport)), _attr(CTA_PROTO_ICMPV6_TYPE, b"\x80"),
              _attr(CTA_PROTO_ICMPV6_CODE, b"\x00"))  # fmt: skip
    else:
        return None
    return _nested(CTA_TUPLE_ORIG, ip, _nested(CTA_TUPLE_PROTO, _attr(CTA_PROTO_NUM, bytes([proto])), *l4))


def clear_mark_request(seq: int, family: int, tuple_: bytes, bits: int) -> bytes:
    """An update (no create) of one connection: mark = mark & ~bits."""
    body = struct.pack("!BBH", socket.AF_INET if family == 4 else socket.AF_INET6, 0, 0)
    body += tuple_ + _attr(CTA_MARK, struct.pack("!I", 0)) + _attr(CTA_MARK_MASK, struct.pack("!I", bits))
    msg_type = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), msg_type, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


class Conntrack:
    def __init__(self) -> None:
        self._sock = socket.socket(
            socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER
        )
        self._sock.bind((0, 0))
        self._sock.settimeout(ACK_TIMEOUT_S)
        self._seq = 0
        self.cleared = 0
        self.missing = 0  # no such connection (gone, or never tracked)
        self.failed = 0

    def clear_marks(self, key: FlowKey, client_dir: Direction, family: int, bits: int) -> bool:
        """Clear `bits` of the connection's mark; True when the kernel had the connection. Tries the flow in
        its client's direction first, then reversed (a connection older than our flow table)."""
        a = (key.addr_a, key.port_a)
        b = (key.addr_b, key.port_b)
        client, server = (a, b) if client_dir == Direction.A_TO_B else (b, a)
        for src, dst in ((client, server), (server, client)):
            tuple_ = tuple_attr(family, key.proto, src[0], dst[0], src[1], dst[1])
            if tuple_ is None:
                self.failed += 1
                return False
            code = self._request(clear_mark_request(self._next_seq(), family, tuple_, bits))
            if code == 0:
                self.cleared += 1
                return True
            if code != errno.ENOENT:
                self.failed += 1
                return False
        self.missing += 1
        return False

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        return self._seq

    def _request(self, msg: bytes) -> int:
        seq = struct.unpack_from("=I", msg, 8)[0]
        try:
            self._sock.send(msg)
            for _ in range(16):
                data = self._sock.recv(65536)
                length, msg_type, _flags, got_seq, _pid = _NLMSGHDR.unpack_from(data)
                if msg_type == NLMSG_ERROR and got_seq == seq:
                    return -struct.unpack_from("=i", data, _NLMSGHDR.size)[0]
        except OSError as exc:
            return exc.errno or errno.EIO
        return errno.EPROTO

    def close(self) -> None:
        self._sock.close()
