"""Connection-attempt threats, counted once per source and destination: the first packet of every
connection (a SYN, a UDP datagram, an echo request, a probe) and every echo request.

Threats: `syn_flood`, `source_session_flood`, `port_scan` (distinct ports one source tries on one host,
distinct hosts one source tries; SYN, UDP, ping and FIN/NULL/Xmas/ACK probes alike), `icmp_flood`,
`bad_packet` (illegal flags, land, option lengths), `tcp_syn_data`, `tcp_small_mss` and
`k8s_extip_mitm` on a connection's first packet; `ssh_brute_force` (new connections from one source to
one server's SSH port: every guess costs a guesser a connection every few tries, and the readers see
every connection whatever the inspection mode, where a worker would see only inspected flows and could
not tell a failed login from a successful one inside the encrypted session) and `udp_flood` (new UDP
flows per destination and per source).

A UDP flood is counted in flows, not datagrams: a reader sees the first datagram of each 5-tuple, and
the kernel keeps the rest of an allowed flow (offloaded). Flood tools vary the source port (hping3
`--udp` counts it up, `--rand-source` varies the address), so each datagram is a new flow and counts; a
flood on one fixed 5-tuple is one flow, bounded by the kernel's own rate limits and not seen here.

Every new connection's first packet reaches a reader (the kernel queues it), so in the enforcer the
readers' guard (`pipeline.guard`) drives this; the workers' packet detector drives it only where no
reader stands in front (a capture replay), so nothing is counted twice.

SYN flood: half-open connections per source and per destination. A vantage point that sees only a
connection's SYN (a reader) watches a destination once its SYN rate exceeds the limit and follows one
new connection in `sample` of it (`WATCH`) until the handshake completes (`handshake_done`); one that
sees every handshake (`watch_all`) follows them all. Half-open SYNs over the limit make a flood: from
one source, that source is the flood; toward one destination, sources not known to be real are
suspects until they complete a handshake or retransmit a refused SYN after a pause, as every TCP stack
does and flood tools do not.

What a finding does is the caller's: `Reporter.report` raises it with the packet's settings and says
whether the packet is dropped; a check that would drop goes on only where that matters (a refused SYN is
challenged only when it was refused). Sans-io; every table is capped with least-recently-used eviction.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

from core.packet import (
    ICMP_ECHO_REQUEST,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    IPPROTO_UDP,
    TCP_ACK,
    TCP_RST,
    TCP_SYN,
)
from threats import catalogue as C
from threats.catalogue import Threat
from threats.challenges import RefusedSyns
from threats.context import PacketContext
from threats.settings import ThreatSettings
from threats.tcp import syn_problems, tcp_header
from threats.window import LruTable, WindowCounter

# What a connection's first packet gets (`ConnectionAttempts.first_packet`).
PASS, DROP, WATCH = 0, 1, 2  # WATCH: let it through, but follow the connection until its handshake
# completes (`handshake_done`), so half-open connections can be told from busy clients
_MAX_WINDOW = 3600.0  # WindowCounter.get/hit with this never opens a new window (the count's own stands)
_FLOODER_BLOCK_WINDOWS = 10  # a source whose SYNs never complete is blocked this many windows
_WATCH_WINDOWS = 5  # a destination over the SYN rate has its handshakes followed this many windows


@dataclasses.dataclass(frozen=True, slots=True)
class AttemptLimits:
    """Caps and times of the attempt tables (the thresholds come with the policy)."""

    max_hosts: int = 65536  # keys of each per-source / per-destination table
    max_challenges: int = 1 << 20  # slots for SYNs refused during a flood (retransmission check)
    retry_min_s: float = 0.5  # a retransmitted SYN proves its source only after this pause
    retry_max_s: float = 10.0  # ... and only within this time of the refused SYN
    good_source_s: float = 60.0  # a source that proved itself passes flooded destinations this long
    max_scan_ports: int = 4096  # distinct ports remembered per (source, destination) pair
    sample: int = 1  # one new connection in this many to a watched destination is followed
    watch_all: bool = False  # every handshake is seen (a worker, a replay): every destination is watched


class Reporter(Protocol):
    """Where findings go: the reader's guard (events, Protect actions) or the workers' detector."""

    def report(self, threat: Threat, ctx: PacketContext, detail: str) -> bool:
        """Raise a finding; True if the packet is to be dropped."""
        ...

    def block_source(self, src: bytes, seconds: float, now: float) -> None:
        """A flooding source: drop its new connections for `seconds` (Protect, on a drop)."""
        ...


class _Seen:
    __slots__ = ("start", "seen")

    def __init__(self, now: float) -> None:
        self.start = now
        self.seen: set[int | bytes] = set()


class _Thresholds:
    """The attempt checks' switches and thresholds of one `ThreatSettings`, read once into attributes:
    a first packet then costs attribute reads, not two mapping lookups per threshold."""

    __slots__ = (
        "bad_packet", "hosts_limit", "icmp_flood", "k8s_extip", "min_mss", "port_cap", "port_scan",
        "ports_limit", "scan_window", "session_limit", "session_window", "sessions", "small_mss", "ssh",
        "ssh_limit", "ssh_port", "ssh_window", "syn_data", "syn_flood", "syn_limit", "syn_window",
        "udp_flood", "udp_limit", "udp_window",
    )  # fmt: skip

    def __init__(self, s: ThreatSettings, max_scan_ports: int) -> None:
        on = s.on
        self.bad_packet = C.BAD_PACKET.id in on
        self.syn_data = C.TCP_SYN_DATA.id in on
        self.small_mss = C.TCP_SMALL_MSS.id in on
        self.min_mss = s.threshold(C.TCP_SMALL_MSS, "min_mss")
        self.syn_flood = C.SYN_FLOOD.id in on
        self.syn_window = s.threshold(C.SYN_FLOOD, "window")
        self.syn_limit = s.threshold(C.SYN_FLOOD, "syns_per_window")
        self.icmp_flood = C.ICMP_FLOOD.id in on
        self.sessions = C.SOURCE_SESSION_FLOOD.id in on
        self.session_window = s.threshold(C.SOURCE_SESSION_FLOOD, "window")
        self.session_limit = s.threshold(C.SOURCE_SESSION_FLOOD, "sessions_per_window")
        self.k8s_extip = bool(s.external_ips) and C.K8S_EXTIP_MITM.id in on
        self.ssh = C.SSH_BRUTE_FORCE.id in on
        self.ssh_port = s.threshold(C.SSH_BRUTE_FORCE, "port")
        self.ssh_window = s.threshold(C.SSH_BRUTE_FORCE, "window")
        self.ssh_limit = s.threshold(C.SSH_BRUTE_FORCE, "sessions_per_window")
        self.udp_flood = C.UDP_FLOOD.id in on
        self.udp_window = s.threshold(C.UDP_FLOOD, "window")
        self.udp_limit = s.threshold(C.UDP_FLOOD, "flows_per_window")
        self.port_scan = C.PORT_SCAN.id in on
        self.scan_window = s.threshold(C.PORT_SCAN, "window")
        self.ports_limit = s.threshold(C.PORT_SCAN, "ports_per_window")
        self.port_cap = min(self.ports_limit, max_scan_ports)  # distinct ports one set holds at most
        self.hosts_limit = s.threshold(C.PORT_SCAN, "hosts_per_window")


# Compiled thresholds kept per process: settings objects live for a policy generation, a few per group.
MAX_COMPILED_SETTINGS = 1024


class ConnectionAttempts:
    """The counts behind the connection-attempt threats, for one process."""

    def __init__(self, limits: AttemptLimits | None = None) -> None:
        lim = self.limits = limits or AttemptLimits()
        hosts = lim.max_hosts
        self._attempts_dst: WindowCounter[bytes] = WindowCounter(hosts)  # SYNs per destination
        self._watched_dst: LruTable[bytes, float] = LruTable(hosts)  # destinations followed, until when
        self._half_src: WindowCounter[bytes] = WindowCounter(hosts)  # SYNs not (yet) completed, per source
        self._half_dst: WindowCounter[bytes] = WindowCounter(hosts)
        self._flooded_src: LruTable[bytes, float] = LruTable(hosts)  # until when
        self._flooded_dst: LruTable[bytes, float] = LruTable(hosts)
        self._sessions: WindowCounter[bytes] = WindowCounter(hosts)
        self._echo_dst: WindowCounter[bytes] = WindowCounter(hosts)
        self._flooded_echo: LruTable[bytes, float] = LruTable(hosts)
        self._ssh: WindowCounter[tuple[bytes, bytes]] = WindowCounter(hosts)  # (source, server) SSH SYNs
        self._udp_src: WindowCounter[bytes] = WindowCounter(hosts)  # new UDP flows per source
        self._udp_dst: WindowCounter[bytes] = WindowCounter(hosts)  # ... and per destination
        self._ports: LruTable[tuple[bytes, bytes], _Seen] = LruTable(hosts)
        self._hosts: LruTable[bytes, _Seen] = LruTable(hosts)
        self._good: LruTable[bytes, float] = LruTable(hosts)  # source → until when
        # refused SYNs (source, port, destination, port, sequence number) → when
        self._challenged = RefusedSyns(lim.max_challenges)
        self._sampled = 0  # SYNs to watched destinations (every `sample`-th is followed)
        self.sources_proved = 0  # sources let through a flooded destination by a retransmission
        # id(settings) → (settings, its thresholds); the settings are held so their id is not reused
        self._compiled: dict[int, tuple[ThreatSettings, _Thresholds]] = {}

    def thresholds(self, settings: ThreatSettings) -> _Thresholds:
        """The compiled thresholds of `settings` (immutable, so compiled once)."""
        entry = self._compiled.get(id(settings))
        if entry is not None and entry[0] is settings:
            return entry[1]
        if len(self._compiled) >= MAX_COMPILED_SETTINGS:
            self._compiled.clear()
        t = _Thresholds(settings, self.limits.max_scan_ports)
        self._compiled[id(settings)] = (settings, t)
        return t

    # ---- entry points ----------------------------------------------------------------------------

    def first_packet(self, ctx: PacketContext, out: Reporter) -> int:
        """The first packet of a connection: PASS, DROP or WATCH."""
        meta = ctx.meta
        t = self.thresholds(ctx.settings)
        proto = meta.proto
        if proto == IPPROTO_TCP:
            flags = meta.tcp_flags
            bad, opts = tcp_header(meta, ctx.packet)
            if bad:
                # A FIN, Xmas or null scan probe, SYN+FIN, a land attack: no stack opens a connection so.
                drop = t.bad_packet and out.report(C.BAD_PACKET, ctx, bad)
                if not flags & TCP_SYN and t.port_scan:
                    drop |= self._scan(ctx, t, out)
                return DROP if drop else PASS
            if flags & (TCP_SYN | TCP_ACK | TCP_RST) != TCP_SYN:
                # An ACK or FIN/ACK probe (no connection behind it: nmap's ACK, window and Maimon
                # scans) counts toward a port scan; a reply, RST or straggler whose SYN was never seen
                # opens nothing.
                if flags & (TCP_SYN | TCP_RST) == 0 and t.port_scan:
                    return DROP if self._scan(ctx, t, out, ports_only=True) else PASS
                return PASS
            if (t.syn_data and meta.ip_len > meta.payload_offset) or (
                t.small_mss and opts is not None and 0 <= opts.mss < t.min_mss
            ):  # what `syn_problems` would find, so an ordinary SYN costs no call
                for threat, detail in syn_problems(meta, opts, ctx.settings):
                    if out.report(threat, ctx, detail):
                        return DROP
        elif proto == IPPROTO_ICMP or proto == IPPROTO_ICMPV6:
            if meta.icmp_type != ICMP_ECHO_REQUEST[meta.family]:
                return PASS  # replies and errors open nothing
        drop = False
        verdict = PASS
        if proto == IPPROTO_TCP:
            if t.syn_flood:
                verdict = self._syn(ctx, t, out)
                if verdict == DROP and not self.is_flooder(meta.src, ctx.now):
                    # Refused as part of a flood on its destination: probably a forged source, so it is
                    # not counted against that source (which would only churn the per-source tables).
                    return DROP
                drop = verdict == DROP
        elif (proto == IPPROTO_ICMP or proto == IPPROTO_ICMPV6) and t.icmp_flood:
            drop = self.echo(ctx, out)
        if t.sessions or t.k8s_extip:
            drop |= self._new_session(ctx, t, out)
        if proto == IPPROTO_TCP:
            if t.ssh and meta.dport == t.ssh_port:
                drop |= self._ssh_brute_force(ctx, t, out)
        elif proto == IPPROTO_UDP and t.udp_flood:
            drop |= self._udp_flood(ctx, t, out)
        if t.port_scan:
            drop |= self._scan(ctx, t, out)
        return DROP if drop else verdict

    def echo(self, ctx: PacketContext, out: Reporter) -> bool:
        """An echo request (a flow's first or a later one): the ICMP flood count; True: drop it."""
        meta, s, now = ctx.meta, ctx.settings, ctx.now
        window = s.threshold(C.ICMP_FLOOD, "window")
        count = self._echo_dst.hit(meta.dst, now, window)
        if count > s.threshold(C.ICMP_FLOOD, "echo_per_window"):
            self._flooded_echo.put(meta.dst, now + window)
        until = self._flooded_echo.get(meta.dst)
        if until is None or until <= now:
            return False
        return out.report(C.ICMP_FLOOD, ctx, f"{count:.0f} echo requests")

    def handshake_done(self, client: bytes, server: bytes, now: float) -> None:
        """A followed connection completed its handshake: its SYN was no flood, and its client is real."""
        self._good.put(client, now + self.limits.good_source_s)
        weight = self.limits.sample
        for table, addr in ((self._half_src, client), (self._half_dst, server)):
            count = table.get(addr, now, _MAX_WINDOW)
            if count > 0:
                table.hit(addr, now, _MAX_WINDOW, -min(count, weight))

    def is_flooder(self, src: bytes, now: float) -> bool:
        until = self._flooded_src.get(src)
        return until is not None and until > now

    def forget_source(self, src: bytes, dst: bytes) -> None:
        """A block of `src` spent the evidence that led to it: the source's scan and session counts start
        afresh, so its first connection after the block is not taken for the same attack again (a block
        shorter than the scan window would otherwise be renewed by that connection)."""
        self._ports.pop((src, dst))
        self._hosts.pop(src)
        self._sessions.forget(src)

    def is_good_source(self, src: bytes, now: float) -> bool:
        until = self._good.get(src)
        return until is not None and until > now

    def hosts_evicted(self) -> int:
        """Evictions from the per-host tables together."""
        tables = (self._attempts_dst, self._watched_dst, self._half_src, self._half_dst, self._flooded_src,
                  self._flooded_dst, self._sessions, self._echo_dst, self._flooded_echo, self._ports,
                  self._hosts, self._good, self._ssh, self._udp_src, self._udp_dst)  # fmt: skip
        return sum(t.evicted for t in tables)

    def table_sizes(self) -> dict[str, int]:
        return {
            "good_sources": len(self._good),
            "challenges": len(self._challenged),
            "scans": len(self._ports),
        }

    # ---- checks ----------------------------------------------------------------------------------

    def _syn(self, ctx: PacketContext, t: _Thresholds, out: Reporter) -> int:
        """PASS, WATCH or DROP for one SYN (see the module's docstring)."""
        meta, now, lim = ctx.meta, ctx.now, self.limits
        window, limit = t.syn_window, t.syn_limit
        src, dst = meta.src, meta.dst
        flooder_until = self._flooded_src.get(src)  # `is_flooder`, inlined: every SYN asks
        if flooder_until is not None and flooder_until > now:
            return DROP if out.report(C.SYN_FLOOD, ctx, "half-open SYNs from one source") else WATCH
        if not lim.watch_all:
            if self._attempts_dst.hit(dst, now, window) > limit:
                self._watched_dst.put(dst, now + window * _WATCH_WINDOWS)
            watched = self._watched_dst.get(dst)
            if watched is None or watched <= now:
                return PASS
        # One connection in `sample` is followed and counts for `sample`: the half-open share is
        # estimated at a fraction of the extra packets a followed connection costs a reader.
        self._sampled += 1
        if self._sampled % lim.sample == 0:
            follow = WATCH
            half_dst = self._half_dst.hit(dst, now, window, lim.sample)
            half_src = self._half_src.hit(src, now, window, lim.sample)
        else:
            follow = PASS
            half_dst = self._half_dst.get(dst, now, window)
            half_src = self._half_src.get(src, now, window)
        if half_src > limit:
            self._flooded_src.put(src, now + window)
            # Its half-open SYNs no longer count against the destination: its real clients are not suspects.
            self._half_dst.hit(dst, now, window, -min(half_src, self._half_dst.get(dst, now, window)))
            if out.report(C.SYN_FLOOD, ctx, f"{half_src:.0f} half-open SYNs from one source"):
                out.block_source(src, window * _FLOODER_BLOCK_WINDOWS, now)
                return DROP
            return follow
        if half_dst > limit:
            self._flooded_dst.put(dst, now + window)
        until = self._flooded_dst.get(dst)
        if until is None or until <= now or self.is_good_source(src, now):
            return follow
        # a retransmission repeats its sequence number; a new SYN does not
        challenge = (src, meta.sport, dst, meta.dport, meta.seq)
        refused = self._challenged.take(challenge)
        if refused is not None and lim.retry_min_s <= now - refused <= lim.retry_max_s:
            self._good.put(src, now + lim.good_source_s)
            self.sources_proved += 1
            return follow
        if not out.report(C.SYN_FLOOD, ctx, f"{half_dst:.0f} half-open SYNs to one destination"):
            return follow
        # (re)starts the pause: a tool resending at once never passes
        self._challenged.remember(challenge, now)
        return DROP

    def _new_session(self, ctx: PacketContext, t: _Thresholds, out: Reporter) -> bool:
        """source_session_flood, and k8s_extip_mitm (a pod reaching a Service's external IP)."""
        meta, s = ctx.meta, ctx.settings
        drop = False
        if t.sessions:
            count = self._sessions.hit(meta.src, ctx.now, t.session_window)
            if count > t.session_limit:
                drop = out.report(C.SOURCE_SESSION_FLOOD, ctx, f"{count:.0f} new sessions")
        if t.k8s_extip and meta.dst in s.external_ips:
            if meta.src not in s.external_ips and s.is_internal(meta.src):
                drop |= out.report(C.K8S_EXTIP_MITM, ctx, "to a Service external IP")
        return drop

    def _ssh_brute_force(self, ctx: PacketContext, t: _Thresholds, out: Reporter) -> bool:
        """New connections from one source to one server's SSH port (`port`) within the window."""
        meta = ctx.meta
        window = t.ssh_window
        count = self._ssh.hit((meta.src, meta.dst), ctx.now, window)
        if count <= t.ssh_limit:
            return False
        return out.report(C.SSH_BRUTE_FORCE, ctx, f"{count:.0f} SSH connections in {window:g}s")

    def _udp_flood(self, ctx: PacketContext, t: _Thresholds, out: Reporter) -> bool:
        """New UDP flows per source and per destination within the window (see the module's docstring)."""
        meta, now = ctx.meta, ctx.now
        window, limit = t.udp_window, t.udp_limit
        from_src = self._udp_src.hit(meta.src, now, window)
        to_dst = self._udp_dst.hit(meta.dst, now, window)
        if from_src > limit:
            return out.report(C.UDP_FLOOD, ctx, f"{from_src:.0f} new UDP flows from one source")
        if to_dst > limit:
            return out.report(C.UDP_FLOOD, ctx, f"{to_dst:.0f} new UDP flows to one destination")
        return False

    def _scan(self, ctx: PacketContext, t: _Thresholds, out: Reporter, ports_only: bool = False) -> bool:
        """A probe of (dst, dport): distinct ports per (source, destination), then distinct hosts per
        source (a horizontal scan or a ping sweep). Each set holds at most its threshold."""
        meta, now = ctx.meta, ctx.now
        window = t.scan_window
        proto = meta.proto
        if proto == IPPROTO_TCP or proto == IPPROTO_UDP:
            pair = (meta.src, meta.dst)
            ports = self._ports.get(pair)
            if ports is None or now - ports.start >= window:
                ports = _Seen(now)
                self._ports.put(pair, ports)
            seen = ports.seen
            if len(seen) < t.port_cap:
                seen.add(proto << 16 | meta.dport)
            if len(seen) >= t.ports_limit:
                return out.report(C.PORT_SCAN, ctx, f"{len(seen)} ports probed")
        if ports_only:
            return False
        hosts = self._hosts.get(meta.src)
        if hosts is None or now - hosts.start >= window:
            hosts = _Seen(now)
            self._hosts.put(meta.src, hosts)
        seen = hosts.seen
        if len(seen) < t.hosts_limit:
            seen.add(meta.dst)
        if len(seen) >= t.hosts_limit:
            return out.report(C.PORT_SCAN, ctx, f"{len(seen)} hosts probed")
        return False
