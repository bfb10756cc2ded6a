"""Detectors that need only packets and flow state (no application parser).

`PacketDetector.inspect(meta, buf, key, direction, now, settings)` looks at one decoded packet and returns
the findings it raises; `tick(now, settings_for)` sweeps a bounded number of idle flows for the
time-based threats. The detector keeps its own small state (handshake progress per flow, windowed
counters per source/destination, fragment intervals per datagram, outstanding echo requests), every
table with a named cap and least-recently-used eviction, so it is sans-io and safe under floods of
distinct keys. Threats covered: syn_flood, icmp_flood, source_session_flood, bad_packet, ip_teardrop,
tcp_syn_data, tcp_split_handshake, ping_of_death, tcp_small_window, tcp_small_mss, tcp_no_data,
port_scan, icmp_tunneling, k8s_extip_mitm.
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
    PacketMeta,
)
from threats import catalogue as C
from threats.catalogue import MAX_FINDING_EXCERPT, Finding, Threat
from threats.settings import ThreatSettings
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
_TCPOPT_EOL, _TCPOPT_NOP, _TCPOPT_MSS, _TCPOPT_WSCALE, _TCPOPT_SACK_OK, _TCPOPT_TS, _TCPOPT_FASTOPEN = (
    0, 1, 2, 3, 4, 8, 34,
)  # fmt: skip
# Fixed lengths of the options whose length is defined by their RFC.
_TCPOPT_LENGTH = {_TCPOPT_MSS: 4, _TCPOPT_WSCALE: 3, _TCPOPT_SACK_OK: 2, _TCPOPT_TS: 10}
_MAX_IP_DATAGRAM = 65535


class _Flow:
    __slots__ = ("state", "init_dir", "est_time", "data", "wscale", "nodata_fired", "last")

    def __init__(self, state: int, init_dir: int, now: float) -> None:
        self.state = state
        self.init_dir = init_dir
        self.est_time = 0.0
        self.data = False
        self.wscale = [-1, -1]
        self.nodata_fired = False
        self.last = now


class _Datagram:
    __slots__ = ("first", "spans")

    def __init__(self, now: float) -> None:
        self.first = now
        self.spans: list[tuple[int, int]] = []


class _Scan:
    __slots__ = ("start", "ports", "hosts")

    def __init__(self, now: float) -> None:
        self.start = now
        self.ports: set[int] = set()
        self.hosts: set[bytes] = set()


class TcpOptions:
    """What the detectors need from a TCP header's options."""

    __slots__ = ("ok", "mss", "wscale", "fast_open")

    def __init__(self) -> None:
        self.ok = True
        self.mss = -1
        self.wscale = -1
        self.fast_open = False


def parse_tcp_options(opts: bytes) -> TcpOptions:
    """Walk TCP options; `ok` is False for a length that is illegal or runs past the header."""
    res = TcpOptions()
    i, n = 0, len(opts)
    while i < n:
        kind = opts[i]
        if kind == _TCPOPT_EOL:
            break
        if kind == _TCPOPT_NOP:
            i += 1
            continue
        if i + 1 >= n:
            res.ok = False
            break
        length = opts[i + 1]
        if length < 2 or i + length > n or _TCPOPT_LENGTH.get(kind, length) != length:
            res.ok = False
            break
        if kind == _TCPOPT_MSS:
            res.mss = (opts[i + 2] << 8) | opts[i + 3]
        elif kind == _TCPOPT_WSCALE:
            res.wscale = opts[i + 2]
        elif kind == _TCPOPT_FASTOPEN:
            res.fast_open = True
        i += length
    return res


def illegal_tcp_flags(flags: int) -> str:
    """A reason if `flags` is a combination no TCP stack sends, else ""."""
    if flags & TCP_SYN and flags & TCP_FIN:
        return "SYN+FIN"
    if flags & TCP_SYN and flags & TCP_RST:
        return "SYN+RST"
    if flags & TCP_FIN and flags & TCP_RST:
        return "FIN+RST"
    if flags & 0x3F == 0:
        return "no flags"
    if not flags & (TCP_ACK | TCP_SYN | TCP_RST):
        return "FIN/PSH/URG without ACK"
    return ""


ILLEGAL_TCP_FLAGS = tuple(illegal_tcp_flags(f) for f in range(64))  # reason by the low six flag bits
_NOP_NOP_TS = bytes((_TCPOPT_NOP, _TCPOPT_NOP, _TCPOPT_TS, 10))


class PacketDetector:
    """Packet- and flow-level threats for one worker. Not thread-safe (one per worker)."""

    def __init__(self, limits: PacketLimits | None = None) -> None:
        lim = self.limits = limits or PacketLimits()
        self._flows: LruTable[FlowKey, _Flow] = LruTable(lim.max_flows)
        self._syn_dst: WindowCounter[bytes] = WindowCounter(lim.max_hosts)
        self._syn_src: WindowCounter[bytes] = WindowCounter(lim.max_hosts)
        self._sessions_src: WindowCounter[bytes] = WindowCounter(lim.max_hosts)
        self._echo_dst: WindowCounter[bytes] = WindowCounter(lim.max_hosts)
        self._echo_bytes: WindowCounter[tuple[bytes, bytes]] = WindowCounter(lim.max_hosts)
        self._resets_src: WindowCounter[bytes] = WindowCounter(lim.max_hosts)
        self._scans: LruTable[tuple[bytes, bytes], _Scan] = LruTable(lim.max_hosts)
        self._sweeps: LruTable[bytes, _Scan] = LruTable(lim.max_hosts)  # per source: hosts probed
        self._good_sources: LruTable[bytes, float] = LruTable(lim.max_hosts)
        # SYN flood "on" until this time, per flooding source and per flooded destination
        self._flooded_src: LruTable[bytes, float] = LruTable(lim.max_hosts)
        self._flooded_dst: LruTable[bytes, float] = LruTable(lim.max_hosts)
        self._datagrams: LruTable[tuple[bytes, bytes, int, int], _Datagram] = LruTable(lim.max_datagrams)
        self._echoes: LruTable[tuple[bytes, bytes, int, int], int] = LruTable(lim.max_echo)

    # -- entry points ---------------------------------------------------------------------------------

    def inspect(
        self,
        meta: PacketMeta,
        buf: bytes,
        key: FlowKey,
        direction: Direction,
        now: float,
        settings: ThreatSettings,
    ) -> list[Finding]:
        out: list[Finding] = []
        on = settings.on
        if meta.anomaly:
            if C.BAD_PACKET.id in on:
                out.append(_finding(C.BAD_PACKET, meta, key, direction, meta.anomaly, buf))
            return out
        if meta.fragment is not Fragment.NONE:
            self._fragment(meta, buf, key, direction, now, settings, out)
            if meta.fragment is Fragment.LATER:
                return out
        proto = meta.proto
        if proto == IPPROTO_TCP:
            self._tcp(meta, buf, key, direction, now, settings, out)
        elif proto == IPPROTO_UDP:
            if self._flows.get(key) is None:
                self._flows.put(key, _Flow(_UDP, direction, now))
                self._new_session(meta, buf, key, direction, now, settings, out)
        elif proto == IPPROTO_ICMP or proto == IPPROTO_ICMPV6:
            self._icmp(meta, buf, key, direction, now, settings, out)
        return out

    def tick(self, now: float, settings_for: Callable[[FlowKey], ThreatSettings]) -> list[Finding]:
        """Sweep up to `sweep_per_tick` least recently active flows: fire tcp_no_data, forget idle flows."""
        out: list[Finding] = []
        idle = self.limits.flow_idle_timeout
        for key, st in self._flows.oldest(self.limits.sweep_per_tick):
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

    def is_good_source(self, src: bytes, now: float) -> bool:
        seen = self._good_sources.get(src)
        return seen is not None and now - seen < self.limits.good_source_seconds

    def hosts_evicted(self) -> int:
        """Evictions from the per-host counters and tables together."""
        tables = (self._syn_dst, self._syn_src, self._sessions_src, self._echo_dst, self._echo_bytes,
                  self._resets_src, self._scans, self._good_sources, self._echoes, self._flooded_src,
                  self._flooded_dst, self._sweeps)  # fmt: skip
        return sum(t.evicted for t in tables)

    def table_sizes(self) -> dict[str, int]:
        """Sizes and eviction counts of the detector's tables (for metrics)."""
        return {
            "flows": len(self._flows),
            "flows_evicted": self._flows.evicted,
            "datagrams": len(self._datagrams),
            "datagrams_evicted": self._datagrams.evicted,
            "echoes": len(self._echoes),
            "scans": len(self._scans),
        }

    # -- TCP ------------------------------------------------------------------------------------------

    def _tcp(
        self,
        meta: PacketMeta,
        buf: bytes,
        key: FlowKey,
        direction: Direction,
        now: float,
        settings: ThreatSettings,
        out: list[Finding],
    ) -> None:
        on = settings.on
        flags = meta.tcp_flags
        bad = ILLEGAL_TCP_FLAGS[flags & 0x3F]
        if not bad and meta.src == meta.dst and meta.sport == meta.dport:
            bad = "land: source equals destination"
        opts: TcpOptions | None = None
        if meta.payload_offset - meta.l4_offset > 20:
            raw_opts = bytes(buf[meta.l4_offset + 20 : meta.payload_offset])
            # the usual options of a data segment (NOP NOP timestamps) need no walk
            if flags & TCP_SYN or raw_opts[:4] != _NOP_NOP_TS or len(raw_opts) != 12:
                opts = parse_tcp_options(raw_opts)
                if not opts.ok and not bad:
                    bad = "bad TCP option length"
        if bad:
            if C.BAD_PACKET.id in on:
                out.append(_finding(C.BAD_PACKET, meta, key, direction, bad, buf))
            return
        syn, ack = flags & TCP_SYN, flags & TCP_ACK
        payload_len = meta.ip_len - meta.payload_offset
        flows = self._flows
        st = flows.get(key)
        if st is not None:
            st.last = now
        if syn:
            if opts is not None and opts.mss >= 0 and C.TCP_SMALL_MSS.id in on:
                if opts.mss < settings.threshold(C.TCP_SMALL_MSS, "min_mss"):
                    out.append(_finding(C.TCP_SMALL_MSS, meta, key, direction, f"MSS {opts.mss}", buf))
            wscale = opts.wscale if opts is not None else -1
            if not ack:
                if payload_len > 0 and C.TCP_SYN_DATA.id in on:
                    tfo_ok = (
                        opts is not None
                        and opts.fast_open
                        and settings.threshold(C.TCP_SYN_DATA, "allow_fast_open")
                    )
                    if not tfo_ok:
                        out.append(
                            _finding(C.TCP_SYN_DATA, meta, key, direction, f"{payload_len} bytes", buf)
                        )
                if st is not None and st.state == _SYN_SENT and st.init_dir != direction:
                    if C.TCP_SPLIT_HANDSHAKE.id in on:
                        out.append(
                            _finding(C.TCP_SPLIT_HANDSHAKE, meta, key, direction, "SYN answered by SYN", buf)
                        )
                    return
                if self._syn(meta, buf, key, direction, now, settings, out) and st is None:
                    return  # a flood SYN: no flow state for it (the flood must not churn the flow table)
                if st is None or st.state != _SYN_SENT:  # not a retransmission: a new attempt
                    st = _Flow(_SYN_SENT, direction, now)
                    st.wscale[direction] = wscale
                    flows.put(key, st)
                    self._new_session(meta, buf, key, direction, now, settings, out)
                    self._probe(meta, buf, key, direction, now, settings, out)
            elif st is not None and st.state == _SYN_SENT and st.init_dir != direction:
                st.state = _SYN_RCVD
                st.wscale[direction] = wscale
            return
        if st is None:
            return  # picked up mid-stream: no handshake state to check against
        if flags & TCP_RST:
            if st.state == _SYN_SENT and st.init_dir != direction:
                self._reset_seen(meta.dst, meta, buf, key, direction, now, settings, out)
            st.state = _CLOSED
            return
        if st.state == _SYN_RCVD and direction == st.init_dir and ack:
            st.state = _ESTABLISHED
            st.est_time = now
            self._handshake_done(meta.src, meta.dst, now, settings)
        if payload_len > 0 and direction == st.init_dir:
            st.data = True  # the client spoke (a server banner alone does not count: SSH, MySQL, SMTP)
        elif st.state == _ESTABLISHED and not st.data and not st.nodata_fired and C.TCP_NO_DATA.id in on:
            if now - st.est_time >= settings.threshold(C.TCP_NO_DATA, "seconds"):
                st.nodata_fired = True
                out.append(_finding(C.TCP_NO_DATA, meta, key, direction, "established, no client data", buf))
        if (
            st.state == _ESTABLISHED
            and ack
            and not flags & TCP_FIN
            and meta.window
            and C.TCP_SMALL_WINDOW.id in on
        ):
            scale_a, scale_b = st.wscale
            scale = st.wscale[direction] if scale_a >= 0 and scale_b >= 0 else 0
            window = meta.window << min(scale, 14)
            if window < settings.threshold(C.TCP_SMALL_WINDOW, "min_window"):
                out.append(_finding(C.TCP_SMALL_WINDOW, meta, key, direction, f"window {window}", buf))
        if flags & TCP_FIN:
            st.state = _CLOSED

    def _syn(
        self,
        meta: PacketMeta,
        buf: bytes,
        key: FlowKey,
        direction: Direction,
        now: float,
        settings: ThreatSettings,
        out: list[Finding],
    ) -> bool:
        """Count a SYN toward the SYN-flood thresholds (a completed handshake takes it back); True if the
        SYN is part of a flood."""
        on = settings.on
        if C.SYN_FLOOD.id in on:
            window = settings.threshold(C.SYN_FLOOD, "window")
            limit = settings.threshold(C.SYN_FLOOD, "syns_per_window")
            by_src = self._syn_src.hit(meta.src, now, window)
            by_dst = self._syn_dst.hit(meta.dst, now, window)
            # Once a flood is seen it stays "on" for a full window after the rate last exceeded the
            # limit, so a sustained flood does not get `limit` SYNs through at the start of each window.
            flooded = self._flooded_src.get(meta.src)
            if by_src > limit or (flooded is not None and flooded > now):
                if by_src > limit:
                    self._flooded_src.put(meta.src, now + window)
                out.append(
                    _finding(C.SYN_FLOOD, meta, key, direction, f"{by_src:.0f} half-open from source", buf)
                )
                return True
            flooded = self._flooded_dst.get(meta.dst)
            if by_dst > limit:
                self._flooded_dst.put(meta.dst, now + window)
            elif flooded is None or flooded <= now:
                return False
            if not self.is_good_source(meta.src, now):
                out.append(
                    _finding(C.SYN_FLOOD, meta, key, direction, f"{by_dst:.0f} half-open to destination", buf)
                )
                return True
        return False

    def _handshake_done(self, src: bytes, dst: bytes, now: float, settings: ThreatSettings) -> None:
        self._good_sources.put(src, now)
        if C.SYN_FLOOD.id in settings.on:
            window = settings.threshold(C.SYN_FLOOD, "window")
            if self._syn_src.get(src, now, window) > 0:
                self._syn_src.hit(src, now, window, -1)
            if self._syn_dst.get(dst, now, window) > 0:
                self._syn_dst.hit(dst, now, window, -1)

    def _new_session(
        self,
        meta: PacketMeta,
        buf: bytes,
        key: FlowKey,
        direction: Direction,
        now: float,
        settings: ThreatSettings,
        out: list[Finding],
    ) -> None:
        on = settings.on
        if C.SOURCE_SESSION_FLOOD.id in on:
            window = settings.threshold(C.SOURCE_SESSION_FLOOD, "window")
            count = self._sessions_src.hit(meta.src, now, window)
            if count > settings.threshold(C.SOURCE_SESSION_FLOOD, "sessions_per_window"):
                out.append(
                    _finding(C.SOURCE_SESSION_FLOOD, meta, key, direction, f"{count:.0f} new sessions", buf)
                )
        if meta.proto == IPPROTO_UDP:
            self._probe(meta, buf, key, direction, now, settings, out)
        if settings.external_ips and C.K8S_EXTIP_MITM.id in on and meta.dst in settings.external_ips:
            if meta.src not in settings.external_ips and settings.is_internal(meta.src):
                out.append(_finding(C.K8S_EXTIP_MITM, meta, key, direction, "to a Service external IP", buf))

    def _probe(
        self,
        meta: PacketMeta,
        buf: bytes,
        key: FlowKey,
        direction: Direction,
        now: float,
        settings: ThreatSettings,
        out: list[Finding],
    ) -> None:
        """A connection attempt to (dst, dport): count distinct ports per source/destination pair."""
        if C.PORT_SCAN.id not in settings.on:
            return
        window = settings.threshold(C.PORT_SCAN, "window")
        limit = settings.threshold(C.PORT_SCAN, "ports_per_window")
        pair = (meta.src, meta.dst)
        scan = self._scans.get(pair)
        if scan is None or now - scan.start >= window:
            scan = _Scan(now)
            self._scans.put(pair, scan)
        ports = scan.ports
        if len(ports) < self.limits.max_scan_ports:
            ports.add((meta.proto << 16) | meta.dport)
        if len(ports) >= limit:
            out.append(_finding(C.PORT_SCAN, meta, key, direction, f"{len(ports)} ports probed", buf))
            return
        self._sweep(meta, buf, key, direction, now, settings, out)

    def _sweep(
        self,
        meta: PacketMeta,
        buf: bytes,
        key: FlowKey,
        direction: Direction,
        now: float,
        settings: ThreatSettings,
        out: list[Finding],
    ) -> None:
        """A probe of a host: count distinct destination hosts per source (a horizontal scan or a ping
        sweep). The set holds at most the threshold."""
        window = settings.threshold(C.PORT_SCAN, "window")
        limit = settings.threshold(C.PORT_SCAN, "hosts_per_window")
        sweep = self._sweeps.get(meta.src)
        if sweep is None or now - sweep.start >= window:
            sweep = _Scan(now)
            self._sweeps.put(meta.src, sweep)
        hosts = sweep.hosts
        if len(hosts) < limit:
            hosts.add(meta.dst)
        if len(hosts) >= limit:
            out.append(_finding(C.PORT_SCAN, meta, key, direction, f"{len(hosts)} hosts probed", buf))

    def _reset_seen(
        self,
        prober: bytes,
        meta: PacketMeta,
        buf: bytes,
        key: FlowKey,
        direction: Direction,
        now: float,
        settings: ThreatSettings,
        out: list[Finding],
    ) -> None:
        """A probe from `prober` was refused (RST to its SYN, or ICMP port unreachable)."""
        if C.PORT_SCAN.id not in settings.on:
            return
        window = settings.threshold(C.PORT_SCAN, "window")
        count = self._resets_src.hit(prober, now, window)
        if count >= settings.threshold(C.PORT_SCAN, "resets_per_window"):
            out.append(_finding(C.PORT_SCAN, meta, key, direction, f"{count:.0f} probes refused", buf))

    # -- ICMP -----------------------------------------------------------------------------------------

    def _icmp(
        self,
        meta: PacketMeta,
        buf: bytes,
        key: FlowKey,
        direction: Direction,
        now: float,
        settings: ThreatSettings,
        out: list[Finding],
    ) -> None:
        on = settings.on
        itype = meta.icmp_type
        family = meta.family
        if itype == ICMP_ECHO_REQUEST[family] or itype == ICMP_ECHO_REPLY[family]:
            request = itype == ICMP_ECHO_REQUEST[family]
            if request:
                if self._flows.get(key) is None:
                    self._flows.put(key, _Flow(_UDP, direction, now))
                    self._new_session(meta, buf, key, direction, now, settings, out)
                    if C.PORT_SCAN.id in on:
                        self._sweep(meta, buf, key, direction, now, settings, out)  # ping sweep
                if C.ICMP_FLOOD.id in on:
                    window = settings.threshold(C.ICMP_FLOOD, "window")
                    count = self._echo_dst.hit(meta.dst, now, window)
                    if count > settings.threshold(C.ICMP_FLOOD, "echo_per_window"):
                        out.append(
                            _finding(C.ICMP_FLOOD, meta, key, direction, f"{count:.0f} echo requests", buf)
                        )
            if C.ICMP_TUNNELING.id not in on:
                return
            off = meta.l4_offset
            ident_seq = int.from_bytes(buf[off + 4 : off + 8], "big")
            payload = buf[meta.payload_offset : meta.ip_len]
            digest = zlib.crc32(payload)
            if request:
                self._echoes.put((meta.src, meta.dst, ident_seq, family), digest)
            else:
                sent = self._echoes.pop((meta.dst, meta.src, ident_seq, family))
                if sent is not None and sent != digest:
                    out.append(
                        _finding(
                            C.ICMP_TUNNELING, meta, key, direction, "echo reply differs from request", buf
                        )
                    )
                    return
            window = settings.threshold(C.ICMP_TUNNELING, "window")
            volume = self._echo_bytes.hit((meta.src, meta.dst), now, window, len(payload))
            if volume > settings.threshold(C.ICMP_TUNNELING, "bytes_per_window"):
                out.append(_finding(C.ICMP_TUNNELING, meta, key, direction, f"{volume:.0f} echo bytes", buf))
        elif (family == 4 and itype == 3 and meta.icmp_code == 3) or (
            family == 6 and itype == 1 and meta.icmp_code == 4
        ):
            self._reset_seen(meta.dst, meta, buf, key, direction, now, settings, out)

    # -- fragments ------------------------------------------------------------------------------------

    def _fragment(
        self,
        meta: PacketMeta,
        buf: bytes,
        key: FlowKey,
        direction: Direction,
        now: float,
        settings: ThreatSettings,
        out: list[Finding],
    ) -> None:
        on = settings.on
        start = meta.frag_offset
        end = start + max(0, meta.ip_len - meta.l4_offset)
        header = meta.l4_offset if meta.family == 4 else 0
        if end + header > _MAX_IP_DATAGRAM:
            icmp = meta.proto in (IPPROTO_ICMP, IPPROTO_ICMPV6)
            threat = C.PING_OF_DEATH if icmp else C.BAD_PACKET
            if threat.id in on:
                out.append(
                    _finding(threat, meta, key, direction, f"reassembles to {end + header} bytes", buf)
                )
            return
        dkey = (meta.src, meta.dst, meta.proto, meta.frag_id)
        dgram = self._datagrams.get(dkey)
        if dgram is None or now - dgram.first >= self.limits.fragment_timeout:
            dgram = _Datagram(now)
            self._datagrams.put(dkey, dgram)
        spans = dgram.spans
        for s, e in spans:
            if start < e and s < end and (s, e) != (start, end):
                if C.IP_TEARDROP.id in on:
                    out.append(
                        _finding(
                            C.IP_TEARDROP, meta, key, direction, f"[{start},{end}) overlaps [{s},{e})", buf
                        )
                    )
                return
        if len(spans) >= self.limits.max_fragments_per_datagram:
            if C.BAD_PACKET.id in on:
                out.append(_finding(C.BAD_PACKET, meta, key, direction, "too many fragments", buf))
            return
        if (start, end) not in spans:
            spans.append((start, end))


def _finding(
    threat: Threat, meta: PacketMeta, key: FlowKey, direction: Direction, detail: str, buf: bytes
) -> Finding:
    return Finding(
        threat, key, direction, meta.src, meta.dst, meta.sport, meta.dport, meta.proto, detail,
        bytes(buf[:MAX_FINDING_EXCERPT]),
    )  # fmt: skip


def _flow_finding(threat: Threat, key: FlowKey, init_dir: int, detail: str) -> Finding:
    if init_dir == Direction.A_TO_B:
        src, sport, dst, dport = key.addr_a, key.port_a, key.addr_b, key.port_b
    else:
        src, sport, dst, dport = key.addr_b, key.port_b, key.addr_a, key.port_a
    return Finding(threat, key, Direction(init_dir), src, dst, sport, dport, key.proto, detail)
