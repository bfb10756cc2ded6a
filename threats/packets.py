"""The workers' packet detector: threats that need a flow's later packets (no application parser).

`PacketDetector.inspect(ctx)` looks at one decoded packet (`threats.context.PacketContext`) and returns
the findings it raises; `tick(now, settings_for)` sweeps a bounded number of idle flows for the
time-based threats. It keeps a small state per flow (handshake progress, window scales, client data),
fragment ranges per datagram, outstanding echo requests and refused probes per source, every table with
a named cap and least-recently-used eviction, so it is sans-io and safe under floods of distinct keys.

Threats here: tcp_split_handshake, tcp_small_window, tcp_slow_read, tcp_no_data, tcp_small_mss on a
SYN-ACK, bad_packet on later packets (flags, option lengths, decode anomalies), fragments (ip_teardrop,
ping_of_death: `threats.fragments`), icmp_tunneling, port_scan by refused probes (RST or ICMP
unreachable answering a probe).

Connection-attempt threats (floods, scans, first-packet checks: `threats.attempts`) are counted by the
readers' guard, which sees every connection's first packet; a detector built with `count_attempts`
(a capture replay, where no reader stands in front) drives the same core itself, following every
handshake it sees.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable

from core.flow import Direction, FlowKey
from core.packet import (
    ICMP_ECHO_REPLY,
    ICMP_ECHO_REQUEST,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    IPPROTO_UDP,
    TCP_ACK,
    TCP_FIN,
    TCP_RST,
    TCP_SYN,
    Fragment,
)
from threats import catalogue as C
from threats.attempts import AttemptLimits, ConnectionAttempts
from threats.catalogue import Finding, Threat, ThreatAction
from threats.context import PacketContext
from threats.fragments import FragmentTracker
from threats.settings import ThreatSettings, effective_action
from threats.tcp import syn_problems, tcp_header
from threats.window import LruTable, WindowCounter


@dataclasses.dataclass(frozen=True, slots=True)
class PacketLimits:
    """Caps on the detector's state (each a table size or a time), overridable from the config."""

    max_flows: int = 65536  # flows whose handshake/data state is tracked
    max_hosts: int = 65536  # keys of each per-source / per-destination counter
    max_datagrams: int = 4096  # fragmented datagrams tracked for overlap and size
    max_fragments_per_datagram: int = 64  # more than this in one datagram is itself a bad packet
    fragment_timeout: float = 30.0  # Linux ipfrag_time
    max_echo: int = 16384  # outstanding echo requests remembered for the reply check
    max_scan_ports: int = 4096  # distinct ports remembered per (source, destination) pair
    sweep_per_tick: int = 512  # flows examined per tick
    flow_idle_timeout: float = 600.0  # a tracked flow silent this long is forgotten by the sweep
    good_source_seconds: float = 60.0  # a source that completed a handshake is spared flood drops


# TCP state of a tracked flow
_NONE, _SYN_SENT, _SYN_RCVD, _ESTABLISHED, _CLOSED, _UDP = range(6)


class _Flow:
    __slots__ = (
        "state", "init_dir", "est_time", "data", "wscale", "nodata_fired", "last", "client_window", "reading"
    )  # fmt: skip

    def __init__(self, state: int, init_dir: int, now: float) -> None:
        self.state = state
        self.init_dir = init_dir
        self.est_time = 0.0
        self.data = False
        self.wscale = [-1, -1]
        self.nodata_fired = False
        self.last = now
        self.client_window = 0  # the largest receive window the client offered (scaled)
        # the client's reading of the server's data, followed only while that window stays tiny
        self.reading: _Reading | None = None


_SEQ_MASK = 0xFFFFFFFF


def _seq_after(a: int, b: int) -> bool:
    """Is sequence number `a` after `b` (RFC 1982 serial arithmetic on 32 bits)?"""
    return 0 < (a - b) & _SEQ_MASK < 0x80000000


class _Reading:
    """How a client with a tiny window reads what the server sends: since when server data has waited
    for its acknowledgement (`waiting_since`, -1: nothing waits), and how much it has read since."""

    __slots__ = ("server_end", "acked", "waiting_since", "acked_then", "fired", "swept")

    def __init__(self) -> None:
        self.server_end = -1  # the sequence number after the server's last byte sent (-1: none yet)
        self.acked = -1  # the client's last acknowledgement
        self.waiting_since = -1.0
        self.acked_then = 0  # ... and its acknowledgement when the wait began
        self.fired = False  # found on the packet path
        self.swept = False  # ... and by the sweep


def _scaled_window(st: _Flow, direction: int, raw: int) -> int:
    """A window field in bytes: shifted by its side's scale when both sides agreed to scaling."""
    scale_a, scale_b = st.wscale
    return raw << min(st.wscale[direction], 14) if scale_a >= 0 and scale_b >= 0 else raw


def _slow_reader(st: _Flow, now: float, s: ThreatSettings, swept: bool = False) -> str:
    """What makes the flow's client a slow reader now, or "": once on the packet path (where Protect
    resets the connection) and once by the sweep (which reports a connection gone quiet)."""
    r = st.reading
    if r is None or r.waiting_since < 0 or r.fired or (swept and r.swept) or not st.client_window:
        return ""
    waited = now - r.waiting_since
    if waited < s.threshold(C.TCP_SLOW_READ, "seconds"):
        return ""
    read = ((r.acked - r.acked_then) & _SEQ_MASK) if r.acked >= 0 else 0
    if read / waited >= s.threshold(C.TCP_SLOW_READ, "min_bytes_per_second"):
        return ""
    if swept:
        r.swept = True
    else:
        r.fired = True
    return f"{read} bytes read in {waited:.0f}s behind a window of at most {st.client_window}"


class _Collect:
    """The attempt core's reporter for a detector: findings into a list (the engine acts on them)."""

    __slots__ = ("out",)

    def __init__(self, out: list[Finding]) -> None:
        self.out = out

    def report(self, threat: Threat, ctx: PacketContext, detail: str) -> bool:
        self.out.append(ctx.finding(threat, detail))
        return effective_action(ctx.mode, ctx.settings.action(threat)) is not ThreatAction.ALERT

    def block_source(self, src: bytes, seconds: float, now: float) -> None:
        pass  # a flood's source is blocked by the engine when the threat's action says block-source


class PacketDetector:
    """Packet- and flow-level threats for one worker. Not thread-safe (one per worker)."""

    def __init__(self, limits: PacketLimits | None = None, count_attempts: bool = True) -> None:
        lim = self.limits = limits or PacketLimits()
        self._flows: LruTable[FlowKey, _Flow] = LruTable(lim.max_flows)
        self._echo_bytes: WindowCounter[tuple[bytes, bytes]] = WindowCounter(lim.max_hosts)
        self._resets_src: WindowCounter[bytes] = WindowCounter(lim.max_hosts)
        self._echoes: LruTable[tuple[bytes, bytes, int, int], int] = LruTable(lim.max_echo)
        self.fragments = FragmentTracker(
            lim.max_datagrams, lim.max_fragments_per_datagram, lim.fragment_timeout
        )
        # Where no reader's guard stands in front, the detector counts connection attempts itself; it
        # sees every handshake, so every destination is watched and every connection followed.
        self.attempts = (
            ConnectionAttempts(
                AttemptLimits(
                    max_hosts=lim.max_hosts,
                    max_scan_ports=lim.max_scan_ports,
                    good_source_s=lim.good_source_seconds,
                    watch_all=True,
                )
            )
            if count_attempts
            else None
        )

    # -- entry points ---------------------------------------------------------------------------------

    def inspect(self, ctx: PacketContext) -> list[Finding]:
        out: list[Finding] = []
        meta = ctx.meta
        if meta.anomaly:
            if C.BAD_PACKET.id in ctx.settings.on:
                out.append(ctx.finding(C.BAD_PACKET, meta.anomaly))
            return out
        if meta.fragment is not Fragment.NONE:
            self.fragments.inspect(ctx, out)
            if meta.fragment is Fragment.LATER:
                return out
        proto = meta.proto
        if proto == IPPROTO_TCP:
            self._tcp(ctx, out)
        elif proto == IPPROTO_UDP:
            if self._flows.get(ctx.key) is None:
                self._flows.put(ctx.key, _Flow(_UDP, ctx.direction or 0, ctx.now))
                if self.attempts is not None:
                    self.attempts.first_packet(ctx, _Collect(out))
        elif proto == IPPROTO_ICMP or proto == IPPROTO_ICMPV6:
            self._icmp(ctx, out)
        return out

    def tick(self, now: float, settings_for: Callable[[FlowKey], ThreatSettings]) -> list[Finding]:
        """Sweep up to `sweep_per_tick` least recently active flows: fire tcp_no_data and tcp_slow_read
        (a slow reader's connection is quiet: the server backs off its probes of a shut window), forget
        idle flows."""
        out: list[Finding] = []
        idle = self.limits.flow_idle_timeout
        for key, st in self._flows.oldest(self.limits.sweep_per_tick):
            if st.reading is not None and st.state == _ESTABLISHED:
                settings = settings_for(key)
                detail = (
                    _slow_reader(st, now, settings, swept=True) if C.TCP_SLOW_READ.id in settings.on else ""
                )
                if detail:
                    out.append(_flow_finding(C.TCP_SLOW_READ, key, st.init_dir, detail))
            if st.state == _ESTABLISHED and not st.data and not st.nodata_fired:
                settings = settings_for(key)
                if C.TCP_NO_DATA.id in settings.on:
                    if now - st.est_time >= settings.threshold(C.TCP_NO_DATA, "seconds"):
                        st.nodata_fired = True
                        out.append(
                            _flow_finding(C.TCP_NO_DATA, key, st.init_dir, "established, no client data")
                        )
            if now - st.last >= idle:
                self._flows.pop(key)
        return out

    def hosts_evicted(self) -> int:
        """Evictions from the per-host counters and tables together."""
        own = self._echo_bytes.evicted + self._resets_src.evicted + self._echoes.evicted
        return own + (self.attempts.hosts_evicted() if self.attempts is not None else 0)

    def table_sizes(self) -> dict[str, int]:
        """Sizes and eviction counts of the detector's tables (for metrics)."""
        datagrams = self.fragments.datagrams
        return {
            "flows": len(self._flows),
            "flows_evicted": self._flows.evicted,
            "datagrams": len(datagrams),
            "datagrams_evicted": datagrams.evicted,
            "echoes": len(self._echoes),
            "scans": self.attempts.table_sizes()["scans"] if self.attempts is not None else 0,
        }

    # -- TCP ------------------------------------------------------------------------------------------

    def _tcp(self, ctx: PacketContext, out: list[Finding]) -> None:
        meta, key, direction, now = ctx.meta, ctx.key, ctx.direction or 0, ctx.now
        flags = meta.tcp_flags
        syn, ack = flags & TCP_SYN, flags & TCP_ACK
        flows = self._flows
        st = flows.get(key)
        if st is None or (syn and not ack and st.state not in (_SYN_SENT, _SYN_RCVD)):
            self._opening(ctx, st, out)
            return
        st.last = now
        bad, opts = tcp_header(meta, ctx.packet)
        if bad:
            if C.BAD_PACKET.id in ctx.settings.on:
                out.append(ctx.finding(C.BAD_PACKET, bad))
            return
        if syn:
            if not ack:
                if st.state == _SYN_SENT and st.init_dir != direction:
                    if C.TCP_SPLIT_HANDSHAKE.id in ctx.settings.on:
                        out.append(ctx.finding(C.TCP_SPLIT_HANDSHAKE, "SYN answered by SYN"))
                return  # else a retransmission: counted once, with its first copy
            for threat, detail in syn_problems(meta, opts, ctx.settings):  # the server's MSS
                out.append(ctx.finding(threat, detail))
            if st.state == _SYN_SENT and st.init_dir != direction:
                st.state = _SYN_RCVD
                st.wscale[direction] = opts.wscale if opts is not None else -1
            return
        self._established(ctx, st, out)

    def _opening(self, ctx: PacketContext, st: _Flow | None, out: list[Finding]) -> None:
        """A packet no tracked flow expects: a connection's first packet (a SYN, a probe, a straggler).
        The attempt checks count it where no reader did; a SYN that is no flood starts the flow's state."""
        meta = ctx.meta
        flood = False
        if self.attempts is not None:
            mark = len(out)
            self.attempts.first_packet(ctx, _Collect(out))
            flood = any(f.threat is C.SYN_FLOOD for f in out[mark:])
            bad = any(f.threat is C.BAD_PACKET for f in out[mark:])
        else:
            bad = bool(tcp_header(meta, ctx.packet)[0])
        if bad or meta.tcp_flags & (TCP_SYN | TCP_ACK | TCP_RST) != TCP_SYN:
            return  # picked up mid-stream, or no connection: nothing to follow
        if flood and st is None:
            return  # a flood SYN: no flow state for it (the flood must not churn the flow table)
        direction = ctx.direction or 0
        st = _Flow(_SYN_SENT, direction, ctx.now)
        opts = tcp_header(meta, ctx.packet)[1]
        st.wscale[direction] = opts.wscale if opts is not None else -1
        self._flows.put(ctx.key, st)

    def _established(self, ctx: PacketContext, st: _Flow, out: list[Finding]) -> None:
        meta, direction, now, s = ctx.meta, ctx.direction or 0, ctx.now, ctx.settings
        on = s.on
        flags = meta.tcp_flags
        if flags & TCP_RST:
            if st.state == _SYN_SENT and st.init_dir != direction:
                self._refused(meta.dst, ctx, out)
            st.state = _CLOSED
            return
        ack = flags & TCP_ACK
        if st.state == _SYN_RCVD and direction == st.init_dir and ack:
            st.state = _ESTABLISHED
            st.est_time = now
            if self.attempts is not None:
                self.attempts.handshake_done(meta.src, meta.dst, now)
        if meta.ip_len > meta.payload_offset and direction == st.init_dir:
            st.data = True  # the client spoke (a server banner alone does not count: SSH, MySQL, SMTP)
        elif st.state == _ESTABLISHED and not st.data and not st.nodata_fired and C.TCP_NO_DATA.id in on:
            if now - st.est_time >= s.threshold(C.TCP_NO_DATA, "seconds"):
                st.nodata_fired = True
                out.append(ctx.finding(C.TCP_NO_DATA, "established, no client data"))
        # the receive window this packet offers, in bytes (0 on a packet that offers none)
        window = _scaled_window(st, direction, meta.window) if ack and st.state == _ESTABLISHED else 0
        # (a zero window is ordinary flow control)
        if window and not flags & TCP_FIN and C.TCP_SMALL_WINDOW.id in on:
            if window < s.threshold(C.TCP_SMALL_WINDOW, "min_window"):
                out.append(ctx.finding(C.TCP_SMALL_WINDOW, f"window {window}"))
        if st.state == _ESTABLISHED and C.TCP_SLOW_READ.id in on:
            self._slow_read(ctx, st, window, out)
        if flags & TCP_FIN:
            st.state = _CLOSED

    @staticmethod
    def _slow_read(ctx: PacketContext, st: _Flow, window: int, out: list[Finding]) -> None:
        """tcp_slow_read: the server's data has waited `seconds` for a client that never offered a window
        of `max_window` bytes and acknowledged it at under `min_bytes_per_second`. The data waits from
        the server's first bytes until the client has acknowledged all it was sent with its window open
        again (its application read them): a slow reader keeps its window shut, so the server's data
        waits in the server's own buffers. A browser that stops reading (a paused video) lets its window
        fall to zero too, but offered a large one first."""
        meta, direction, now, s = ctx.meta, ctx.direction or 0, ctx.now, ctx.settings
        client_ack = direction == st.init_dir and meta.tcp_flags & TCP_ACK
        if client_ack:
            st.client_window = max(st.client_window, window)
        if st.client_window >= s.threshold(C.TCP_SLOW_READ, "max_window"):
            st.reading = None  # an ordinary stack: nothing to follow (most flows stop here)
            return
        r = st.reading
        if r is None:
            r = st.reading = _Reading()
        if direction != st.init_dir:  # the server
            if meta.payload_len:
                end = (meta.seq + meta.payload_len) & _SEQ_MASK
                if r.server_end < 0 or _seq_after(end, r.server_end):
                    r.server_end = end
                if r.waiting_since < 0 and (r.acked < 0 or _seq_after(end, r.acked)):
                    r.waiting_since, r.acked_then = now, r.acked if r.acked >= 0 else meta.seq
        elif client_ack:
            r.acked = meta.ack
            if r.server_end >= 0 and not _seq_after(r.server_end, meta.ack) and window >= st.client_window:
                r.waiting_since = -1.0  # all read, by the application too: its window is open again
        detail = _slow_reader(st, now, s)
        if detail:
            out.append(ctx.finding(C.TCP_SLOW_READ, detail))

    def _refused(self, prober: bytes, ctx: PacketContext, out: list[Finding]) -> None:
        """A probe from `prober` was refused (RST to its SYN, or ICMP port unreachable)."""
        s = ctx.settings
        if C.PORT_SCAN.id not in s.on:
            return
        count = self._resets_src.hit(prober, ctx.now, s.threshold(C.PORT_SCAN, "window"))
        if count >= s.threshold(C.PORT_SCAN, "resets_per_window"):
            # Seen on the refusal, reported as the probe: from the prober to the port it tried.
            meta, back = ctx.meta, Direction(1 - (ctx.direction or 0))
            detail = f"{count:.0f} probes refused"
            out.append(
                Finding(
                    C.PORT_SCAN, ctx.key, back, meta.dst, meta.src, meta.dport, meta.sport, meta.proto, detail
                )
            )

    # -- ICMP -----------------------------------------------------------------------------------------

    def _icmp(self, ctx: PacketContext, out: list[Finding]) -> None:
        meta, s = ctx.meta, ctx.settings
        on = s.on
        itype = meta.icmp_type
        family = meta.family
        request = itype == ICMP_ECHO_REQUEST[family]
        if request or itype == ICMP_ECHO_REPLY[family]:
            if request and self.attempts is not None:
                if self._flows.get(ctx.key) is None:
                    self._flows.put(ctx.key, _Flow(_UDP, ctx.direction or 0, ctx.now))
                    self.attempts.first_packet(ctx, _Collect(out))
                elif C.ICMP_FLOOD.id in on:
                    self.attempts.echo(ctx, _Collect(out))
            if C.ICMP_TUNNELING.id in on:
                self._tunnel(ctx, request, out)
        elif (family == 4 and itype == 3 and meta.icmp_code == 3) or (
            family == 6 and itype == 1 and meta.icmp_code == 4
        ):
            self._refused(meta.dst, ctx, out)

    def _tunnel(self, ctx: PacketContext, request: bool, out: list[Finding]) -> None:
        """icmp_tunneling: a reply that differs from its request, or echo payload volume per pair."""
        meta, s, buf = ctx.meta, ctx.settings, ctx.packet
        off = meta.l4_offset
        ident_seq = int.from_bytes(buf[off + 4 : off + 8], "big")
        payload = buf[meta.payload_offset : meta.ip_len]
        digest = zlib.crc32(payload)
        if request:
            self._echoes.put((meta.src, meta.dst, ident_seq, meta.family), digest)
        else:
            sent = self._echoes.pop((meta.dst, meta.src, ident_seq, meta.family))
            if sent is not None and sent != digest:
                out.append(ctx.finding(C.ICMP_TUNNELING, "echo reply differs from request"))
                return
        window = s.threshold(C.ICMP_TUNNELING, "window")
        volume = self._echo_bytes.hit((meta.src, meta.dst), ctx.now, window, len(payload))
        if volume > s.threshold(C.ICMP_TUNNELING, "bytes_per_window"):
            out.append(ctx.finding(C.ICMP_TUNNELING, f"{volume:.0f} echo bytes"))


def _flow_finding(threat: Threat, key: FlowKey, init_dir: int, detail: str) -> Finding:
    if init_dir == Direction.A_TO_B:
        src, sport, dst, dport = key.addr_a, key.port_a, key.addr_b, key.port_b
    else:
        src, sport, dst, dport = key.addr_b, key.port_b, key.addr_a, key.port_a
    return Finding(threat, key, Direction(init_dir), src, dst, sport, dport, key.proto, detail)
