"""IP fragment threats: overlapping fragments (teardrop), a datagram that reassembles past 64 KiB
(ping of death, or a bad packet for other protocols), too many fragments in one datagram.

Fragments reach the process that sees the flow's later packets (a worker), so they are checked there.
Sans-io; the datagram table is capped with least-recently-used eviction.
"""

from __future__ import annotations

from core.packet import IPPROTO_ICMP, IPPROTO_ICMPV6
from threats import catalogue as C
from threats.catalogue import Finding
from threats.context import PacketContext
from threats.window import LruTable

_MAX_IP_DATAGRAM = 65535


class _Datagram:
    __slots__ = ("first", "spans")

    def __init__(self, now: float) -> None:
        self.first = now
        self.spans: list[tuple[int, int]] = []


class FragmentTracker:
    """Byte ranges seen per fragmented datagram (source, destination, protocol, IP id)."""

    def __init__(self, max_datagrams: int, max_fragments: int, timeout: float) -> None:
        self.max_fragments = max_fragments  # more than this in one datagram is itself a bad packet
        self.timeout = timeout
        self.datagrams: LruTable[tuple[bytes, bytes, int, int], _Datagram] = LruTable(max_datagrams)

    def inspect(self, ctx: PacketContext, out: list[Finding]) -> None:
        meta, on = ctx.meta, ctx.settings.on
        start = meta.frag_offset
        end = start + max(0, meta.ip_len - meta.l4_offset)
        header = meta.l4_offset if meta.family == 4 else 0
        if end + header > _MAX_IP_DATAGRAM:
            icmp = meta.proto in (IPPROTO_ICMP, IPPROTO_ICMPV6)
            threat = C.PING_OF_DEATH if icmp else C.BAD_PACKET
            if threat.id in on:
                out.append(ctx.finding(threat, f"reassembles to {end + header} bytes"))
            return
        dkey = (meta.src, meta.dst, meta.proto, meta.frag_id)
        dgram = self.datagrams.get(dkey)
        if dgram is None or ctx.now - dgram.first >= self.timeout:
            dgram = _Datagram(ctx.now)
            self.datagrams.put(dkey, dgram)
        spans = dgram.spans
        for s, e in spans:
            if start < e and s < end and (s, e) != (start, end):
                if C.IP_TEARDROP.id in on:
                    out.append(ctx.finding(C.IP_TEARDROP, f"[{start},{end}) overlaps [{s},{e})"))
                return
        if len(spans) >= self.max_fragments:
            if C.BAD_PACKET.id in on:
                out.append(ctx.finding(C.BAD_PACKET, "too many fragments"))
            return
        if (start, end) not in spans:
            spans.append((start, end))
