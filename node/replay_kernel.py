"""What the kernel does around the readers, for `enforcer replay`: our chain, connection marks, source blocks.

Live, our chain (`node/netfilter.py`) drops sources a block-source action cut off, then lets the kernel
handle every connection whose mark carries our accept or drop bit (saved from a packet a reader
re-injected with it): those packets never reach a reader; nor do the bare ACKs of a connection whose mark
carries the quiet-ACK bit. An offloaded UDP flow over `netfilter.udp_flow_rate` in datagrams up to
`UDP_FLOOD_MAX_LENGTH` bytes (the kernel's hashlimit: a token bucket per direction, a tenth of the rate as
its burst) has its next datagram queued with the flood bit (FLOODED), once. Everything else is queued. Replay runs the same
chain over the capture: `Kernel.step` says whether a packet is queued, and `Kernel.verdict` saves the
bit of a reader's verdict to the connection. A connection ends as a conntrack entry does: a new SYN after
a close, or idle longer than conntrack's timeouts. Each connection is one flow line of the replay.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from core.config import NetfilterConfig
from core.flow import Direction, FlowKey
from core.packet import IPPROTO_TCP, IPPROTO_UDP, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, PacketMeta
from node.netfilter import NDP_AND_MLD_TYPES, UDP_FLOOD_MAX_LENGTH, kernel_passes_quiet_ack, udp_flow_burst

# Linux conntrack's default timeouts (seconds): established TCP, TCP after a close, UDP stream, ICMP.
CT_TCP_TIMEOUT = 432000.0
CT_TCP_CLOSED_TIMEOUT = 120.0
CT_TIMEOUTS = {IPPROTO_TCP: CT_TCP_TIMEOUT, 17: 120.0, 1: 30.0, 58: 30.0}
CT_OTHER_TIMEOUT = 600.0
MAX_CONNECTIONS = 262144  # connections tracked at once; beyond it the oldest ends early (its line is written)

# what the chain does with a packet; FLOODED: queued with the flood bit (a UDP flow over the rate check)
QUEUE, ACCEPTED, DROPPED, FLOODED = 0, 1, 2, 3
_IPPROTO_ICMPV6 = 58
_PLUMBING_ICMPV6 = frozenset(NDP_AND_MLD_TYPES)


class Connection:
    """One connection as the kernel tracks it, with what the replay reports about it."""

    __slots__ = (
        "act", "acts", "app", "bytes", "client", "client_dir", "closed", "cport", "credit", "first", "flooded",
        "host", "kernel", "key", "last", "mark", "packets", "quiet", "rule_id", "server", "server_app", "sni",
        "sport", "to_worker", "worker", "worker_rule",
    )  # fmt: skip

    def __init__(self, key: FlowKey, meta: PacketMeta, direction: Direction, now: float) -> None:
        self.key = key
        self.client_dir = direction  # the first packet's direction is the client's (as the judge has it)
        self.client, self.cport, self.server, self.sport = meta.src, meta.sport, meta.dst, meta.dport
        self.first = self.last = now
        self.packets = [0, 0]  # client → server, server → client
        self.bytes = [0, 0]  # IP bytes, same order
        self.mark = QUEUE  # ACCEPTED or DROPPED once a verdict's bit is saved to the connection
        self.quiet = False  # the quiet-ACK bit is saved to the connection: its bare ACKs are not queued
        self.flooded = False  # the flood bit is saved to the connection: its rate is not checked again
        self.credit: list[tuple[float, float]] = []  # per direction once offloaded: (tokens, at when)
        self.acts: Counter[str] = Counter()  # verdicts of the packets readers saw, by act name
        self.act = ""  # the last of them
        self.kernel = 0  # packets the kernel handled by the connection's mark (offloaded)
        self.closed = 0  # FIN seen per direction (bits), 4 once reset
        self.rule_id = 0
        self.worker = -1  # the worker its packets went to (-1: never inspected)
        self.worker_rule = 0
        self.to_worker = False  # a worker still has to report what it found (application)
        self.app = ""
        self.host = b""
        self.sni = b""
        self.server_app = ""


class Kernel:
    def __init__(self, netfilter: NetfilterConfig, on_end: Callable[[Connection], None]) -> None:
        self.accept_bit = netfilter.accept_mark
        self.ipv6 = netfilter.ipv6
        self.drop_bit = netfilter.drop_mark
        self.quiet_bit = netfilter.quiet_ack_mark if netfilter.quiet_acks else 0
        self.udp_rate = float(netfilter.udp_flow_rate)
        self.udp_burst = float(udp_flow_burst(netfilter.udp_flow_rate))
        self.on_end = on_end
        self.connections: dict[FlowKey, Connection] = {}
        self.blocked_until: dict[bytes, float] = {}
        self.counters: Counter[str] = Counter()

    def unqueued(self, meta: PacketMeta) -> bool:
        """Traffic our chain never queues: IPv6 without our IPv6 chain, and the IPv6 network's own
        plumbing (link-local sources, multicast, neighbour discovery and MLD)."""
        if meta.family != 6:
            return False
        if (
            not self.ipv6
            or (meta.src[0] == 0xFE and meta.src[1] & 0xC0 == 0x80)  # fe80::/10
            or meta.dst[0] == 0xFF
            or (meta.proto == _IPPROTO_ICMPV6 and meta.icmp_type in _PLUMBING_ICMPV6)
        ):
            self.counters["kernel.not_queued"] += 1
            return True
        return False

    def step(
        self, meta: PacketMeta, key: FlowKey, direction: Direction, now: float
    ) -> tuple[int, Connection]:
        """Track the packet's connection; QUEUE (a reader judges it), or what the kernel did with it."""
        conn = self._connection(meta, key, direction, now)
        side = 0 if direction == conn.client_dir else 1
        conn.packets[side] += 1
        conn.bytes[side] += meta.ip_len
        conn.last = now
        flags = meta.tcp_flags
        if flags & TCP_RST:
            conn.closed = 4
        elif flags & TCP_FIN:
            conn.closed |= 1 << side
        until = self.blocked_until.get(meta.src)
        if until is not None:
            if until > now:
                self.counters["kernel.source_blocked"] += 1
                conn.kernel += 1
                return DROPPED, conn
            del self.blocked_until[meta.src]
        if (
            (conn.mark != QUEUE or conn.quiet)
            and flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) == TCP_SYN
            and conn.packets[1]
        ):
            conn.mark = QUEUE  # our chain clears its bits for a SYN reopening an answered entry (netfilter)
            conn.quiet = False
        if (
            conn.mark == ACCEPTED
            and meta.proto == IPPROTO_UDP
            and self.udp_rate
            and not conn.flooded
            and meta.ip_len <= UDP_FLOOD_MAX_LENGTH
        ):
            if self._over_rate(conn, side, now):
                self.counters["kernel.udp_rate_exceeded"] += 1
                conn.flooded = True
                conn.mark = QUEUE  # our chain clears the accept bit as it sets the flood bit
                return FLOODED, conn
        if conn.mark != QUEUE:
            conn.kernel += 1
            self.counters["kernel.accepted" if conn.mark == ACCEPTED else "kernel.dropped"] += 1
        elif conn.quiet and kernel_passes_quiet_ack(meta):
            conn.kernel += 1
            self.counters["kernel.quiet_acks"] += 1
            return ACCEPTED, conn
        return conn.mark, conn

    def _over_rate(self, conn: Connection, side: int, now: float) -> bool:
        """hashlimit's token bucket for one direction of an offloaded UDP flow: True once it is empty."""
        if not conn.credit:
            conn.credit = [(self.udp_burst, now), (self.udp_burst, now)]
        tokens, then = conn.credit[side]
        tokens = min(self.udp_burst, tokens + (now - then) * self.udp_rate)
        if tokens < 1.0:
            conn.credit[side] = (tokens, now)
            return True
        conn.credit[side] = (tokens - 1.0, now)
        return False

    def verdict(self, conn: Connection, act: str, bit: int | None) -> None:
        """A reader's verdict for a queued packet: its bit is saved to the connection (offload)."""
        conn.acts[act] += 1
        conn.act = act
        if bit is not None and bit & self.drop_bit:
            conn.mark = DROPPED
        elif bit is not None and bit & self.accept_bit and conn.mark != DROPPED:
            conn.mark = ACCEPTED  # (a dropped connection stays dropped: our chain checks that first)
        if bit is not None and bit & self.quiet_bit:
            conn.quiet = True

    def block_sources(self, blocks: list[tuple[bytes, float]], now: float) -> None:
        for src, seconds in blocks:
            self.blocked_until[src] = max(self.blocked_until.get(src, 0.0), now + seconds)

    def close_all(self) -> None:
        for conn in self.connections.values():
            self.on_end(conn)
        self.connections.clear()

    def _connection(self, meta: PacketMeta, key: FlowKey, direction: Direction, now: float) -> Connection:
        conns = self.connections
        conn = conns.get(key)
        if conn is not None and self._ended(conn, meta, now):
            del conns[key]
            self.on_end(conn)
            conn = None
        if conn is None:
            if len(conns) >= MAX_CONNECTIONS:
                self.counters["kernel.connections_full"] += 1
                self.on_end(conns.pop(next(iter(conns))))
            conn = conns[key] = Connection(key, meta, direction, now)
        return conn

    @staticmethod
    def _ended(conn: Connection, meta: PacketMeta, now: float) -> bool:
        """Is this packet past the end of the tracked connection (a new one with the same addresses)?"""
        tcp = meta.proto == IPPROTO_TCP
        if tcp and conn.closed in (3, 4) and meta.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN:
            return True  # a new connection reusing the ports of one that closed
        if tcp and conn.closed in (3, 4):
            timeout = CT_TCP_CLOSED_TIMEOUT
        else:
            timeout = CT_TIMEOUTS.get(meta.proto, CT_OTHER_TIMEOUT)
        return now - conn.last > timeout
