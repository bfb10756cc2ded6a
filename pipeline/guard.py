"""The reader's guard: flood and scan checks on the first packet of the connections a reader decides.

A reader offloads a connection to the kernel after its first packet when the L3/L4 rules decide it, so
such connections never reach a worker and the workers' packet detectors never see them. Floods and
scans are made of exactly such first packets, and every one of them passes a reader: the guard counts
them there. It covers, with the workers' catalogue, thresholds and per-group settings (the threat
settings of the policy in force):

- `syn_flood`: half-open connections per source and per destination. The reader sees only the SYN of
  an offloaded connection, so it counts SYNs per destination, and above the limit it follows that
  destination's handshakes in user space for a while (`WATCH`, see `_syn`) to tell a flood from a busy
  service;
- `source_session_flood`: new connections per source;
- `port_scan`: distinct ports one source tries on one host, distinct hosts one source tries;
- `bad_packet` (illegal TCP flags: FIN, Xmas and null scan probes, SYN+FIN; a land attack; bad option
  lengths), `tcp_syn_data` and `tcp_small_mss` on the connection's first packet;
- `icmp_flood`: echo requests per destination. Conntrack offloads a ping session (one ICMP id) after
  its first packet, so while the flood check is on, a reader does not offload allowed echo flows and
  counts every request (`echo`); pings are few in normal traffic.

What is done follows the deciding group's mode (Discover/Monitor: the event only) and the threat's
action in Protect: `drop` and `reset` drop the packet (a SYN dropped is a connection refused before it
exists), `block-source` drops every new connection of the source for the threat's `block_seconds`,
in the kernel too (the reader hands it to the supervisor: `new_blocks`). A flooded destination still
serves real clients: a SYN from a source not known to be real is dropped, and the source proves itself
by retransmitting that SYN (same ports and sequence number) after a pause (`retry_min_s`..
`retry_max_s`), as every TCP stack does (Linux after 1 s) and flood tools do not, or by completing a
handshake; it is then let through for `good_source_s`. A source whose own SYNs stay half-open over the
limit is the flood: dropped regardless, in the kernel for ten windows.

Sans-io: time is passed in, events leave through `emit` (aggregated like the workers' threat events).
Every table has a named cap with least-recently-used eviction, so a flood of distinct sources costs
bounded memory.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from typing import Any, NamedTuple

from core.flow import FlowKey
from core.lookup import Decision, Mode
from core.packet import (
    ICMP_ECHO_REQUEST,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    IPPROTO_UDP,
    TCP_ACK,
    TCP_RST,
    TCP_SYN,
    PacketMeta,
)
from threats import catalogue as C
from threats.aggregate import EventAggregator, finding_key, threat_event
from threats.catalogue import Finding, Threat, ThreatAction
from threats.packets import ILLEGAL_TCP_FLAGS, parse_tcp_options
from threats.settings import (
    GroupThreatSettings,
    ThreatSettings,
    compile_group_settings,
    effective_action,
)
from threats.window import LruTable, WindowCounter

EXTERNAL_GROUP = "external"
MAX_PENDING_KEYS = 4096  # distinct threat events held in one aggregation window
# What the guard makes of a connection's first packet (`check`).
PASS, DROP, WATCH = 0, 1, 2  # WATCH: let it through, but keep the connection in user space until its
# handshake completes (`handshake_done`), so half-open connections can be told from busy clients
_MAX_WINDOW = (
    3600.0  # WindowCounter.get/hit with this never opens a new window (the count's own window stands)
)
_FLOODER_BLOCK_WINDOWS = 10  # a source whose SYNs never complete is dropped in the kernel this many windows
WATCH_SAMPLE = 4  # while a destination is watched, one new connection in this many is followed
_WATCH_WINDOWS = 5  # a destination over the SYN rate has its handshakes followed this many windows
_COUNTER_NAMES = {t.id: (f"guard.threats.{t.name}", f"guard.dropped.{t.name}") for t in C.THREATS}
_MODE_NAMES = {m: m.name.lower() for m in Mode}


@dataclasses.dataclass(frozen=True, slots=True)
class GuardSettings:
    """The reader guard's switches and table caps (the thresholds come with the policy)."""

    enabled: bool = True  # flood and scan checks on the connections readers decide without a worker
    max_hosts: int = 65536  # keys of each per-source / per-destination counter
    max_challenges: int = 65536  # SYNs dropped during a flood and remembered for the retransmission check
    retry_min_s: float = 0.5  # a retransmitted SYN proves its source only after this pause
    retry_max_s: float = 10.0  # ... and only within this time of the dropped SYN
    good_source_s: float = 60.0  # a source that proved itself passes flooded destinations this long
    aggregate_window_s: float = 5.0  # identical threat events within this are one event with a count
    kernel_blocks: int = 1024  # sources a block-source action also drops in the kernel (iptables); 0: none


class _Attempt(NamedTuple):
    """The first packet being judged, and with whose settings (the deciding group's)."""

    meta: PacketMeta
    key: FlowKey
    decision: Decision
    group: str
    settings: ThreatSettings
    now: float


class _Scan:
    __slots__ = ("start", "seen")

    def __init__(self, now: float) -> None:
        self.start = now
        self.seen: set[int] = set()


def _deciding_group(d: Decision) -> str:
    """Whose settings apply: the server's group, or the client's for egress to `external`."""
    if d.dst_group == EXTERNAL_GROUP and d.src_group != EXTERNAL_GROUP:
        return d.src_group
    return d.dst_group


class Guard:
    def __init__(self, settings: GuardSettings, node: str, emit: Callable[[dict[str, Any]], None]) -> None:
        self.s = settings
        self.node = node
        self.threats: GroupThreatSettings = compile_group_settings(None)
        self.events = EventAggregator(emit, node, settings.aggregate_window_s, MAX_PENDING_KEYS)
        hosts = settings.max_hosts
        self._attempts_dst: WindowCounter[bytes] = WindowCounter(hosts)  # SYNs per destination
        self._watched_dst: LruTable[bytes, float] = LruTable(hosts)  # destinations whose handshakes we follow
        self._half_src: WindowCounter[bytes] = WindowCounter(hosts)  # SYNs not (yet) completed, per source
        self._half_dst: WindowCounter[bytes] = WindowCounter(hosts)
        self._flooded_src: LruTable[bytes, float] = LruTable(hosts)  # until when
        self._flooded_dst: LruTable[bytes, float] = LruTable(hosts)
        self._sessions: WindowCounter[bytes] = WindowCounter(hosts)
        self._echo_dst: WindowCounter[bytes] = WindowCounter(hosts)
        self._flooded_echo: LruTable[bytes, float] = LruTable(hosts)
        self._ports: LruTable[tuple[bytes, bytes], _Scan] = LruTable(hosts)
        self._hosts: LruTable[bytes, _Scan] = LruTable(hosts)
        self._blocked: LruTable[bytes, float] = LruTable(hosts)  # source → until when
        self.new_blocks: list[
            tuple[bytes, float]
        ] = []  # (source, seconds) for the kernel, taken by the reader
        self._good: LruTable[bytes, float] = LruTable(hosts)  # source → until when
        # dropped SYN (source, port, destination, port) → (when, its sequence number)
        self._challenged: LruTable[tuple[bytes, int, bytes, int], tuple[float, int]] = LruTable(
            settings.max_challenges
        )
        self.counters: Counter[str] = Counter()
        self._sampled = 0  # SYNs to watched destinations (every WATCH_SAMPLE-th is followed)
        self._actions: dict[tuple[int, str, Mode], ThreatAction] = {}  # (threat, group, mode) → action taken

    def set_threat_settings(self, threats: GroupThreatSettings) -> None:
        """The threat settings of a new policy generation (compiled off the packet path)."""
        self.threats = threats
        self._actions.clear()

    # ---- packets -------------------------------------------------------------------------------

    def blocked(self, src: bytes, now: float) -> bool:
        """Is this source blocked by a block-source action? (Checked before a new connection is decided.)"""
        until = self._blocked.get(src)
        if until is None:
            return False
        if until > now:
            self.counters["guard.dropped.blocked_source"] += 1
            return True
        self._blocked.pop(src)
        return False

    def check(self, meta: PacketMeta, key: FlowKey, d: Decision, now: float, packet: bytes = b"") -> int:
        """Count the first packet of a connection the reader decided: PASS, DROP or WATCH. `packet` (the
        IP packet) lets the TCP header checks see the options."""
        proto = meta.proto
        group = _deciding_group(d)
        s = self.threats.for_group(group)
        on = s.on
        a = _Attempt(meta, key, d, group, s, now)
        if proto == IPPROTO_TCP:
            flags = meta.tcp_flags
            bad = ILLEGAL_TCP_FLAGS[flags & 0x3F]
            if bad or (meta.sport == meta.dport and meta.src == meta.dst):
                # A FIN, Xmas or null scan probe, SYN+FIN, a land attack: no stack opens a connection so.
                detail = bad or "land: source equals destination"
                if C.BAD_PACKET.id in on and self._raise(C.BAD_PACKET, a, detail):
                    return DROP
                return PASS
            if flags & (TCP_SYN | TCP_ACK | TCP_RST) != TCP_SYN:
                return PASS  # not an attempt: a reply or a straggler whose SYN the reader never saw
            if packet and self._syn_header(a, packet):
                return DROP
        elif proto == IPPROTO_ICMP or proto == IPPROTO_ICMPV6:
            if meta.icmp_type != ICMP_ECHO_REQUEST[meta.family]:
                return PASS  # replies and errors open nothing
        drop = False
        verdict = PASS
        if proto == IPPROTO_TCP:
            if C.SYN_FLOOD.id in on:
                verdict = self._syn(a)
                if verdict == DROP and not self._is_flooder(meta.src, now):
                    # Dropped as part of a flood on its destination: probably a forged source, so it is
                    # not counted against that source (which would only churn the per-source tables).
                    return DROP
                drop = verdict == DROP
        elif proto != IPPROTO_UDP and C.ICMP_FLOOD.id in on:
            drop = self._echo(a)
        if C.SOURCE_SESSION_FLOOD.id in on:
            window = s.threshold(C.SOURCE_SESSION_FLOOD, "window")
            count = self._sessions.hit(meta.src, now, window)
            if count > s.threshold(C.SOURCE_SESSION_FLOOD, "sessions_per_window"):
                drop |= self._raise(C.SOURCE_SESSION_FLOOD, a, f"{count:.0f} new sessions")
        if C.PORT_SCAN.id in on:
            drop |= self._scan(a)
        return DROP if drop else verdict

    def _syn_header(self, a: _Attempt, packet: bytes) -> bool:
        """tcp_syn_data (payload on a SYN, TCP Fast Open aside) and tcp_small_mss; True: drop."""
        meta, s = a.meta, a.settings
        on = s.on
        has_data = meta.ip_len > meta.payload_offset
        has_options = meta.payload_offset - meta.l4_offset > 20
        if not (has_data and C.TCP_SYN_DATA.id in on) and not (has_options and C.TCP_SMALL_MSS.id in on):
            return False
        opts = (
            parse_tcp_options(bytes(packet[meta.l4_offset + 20 : meta.payload_offset]))
            if has_options
            else None
        )
        if opts is not None and not opts.ok:
            return C.BAD_PACKET.id in on and self._raise(C.BAD_PACKET, a, "bad TCP option length")
        if has_data and C.TCP_SYN_DATA.id in on:
            fast_open = opts is not None and opts.fast_open and s.threshold(C.TCP_SYN_DATA, "allow_fast_open")
            if not fast_open:
                detail = f"{meta.ip_len - meta.payload_offset} bytes"
                if self._raise(C.TCP_SYN_DATA, a, detail):
                    return True
        if (
            opts is not None
            and 0 <= opts.mss < s.threshold(C.TCP_SMALL_MSS, "min_mss")
            and C.TCP_SMALL_MSS.id in on
        ):
            return self._raise(C.TCP_SMALL_MSS, a, f"MSS {opts.mss}")
        return False

    def watches_echo(self, d: Decision) -> bool:
        """Must the reader keep an allowed echo flow in user space (not offload it) to count its requests?"""
        return C.ICMP_FLOOD.id in self.threats.for_group(_deciding_group(d)).on

    def echo(self, meta: PacketMeta, key: FlowKey, d: Decision, now: float) -> bool:
        """A later packet of an ICMP flow kept in user space; True: drop it."""
        if meta.icmp_type != ICMP_ECHO_REQUEST[meta.family]:
            return False
        group = _deciding_group(d)
        s = self.threats.for_group(group)
        return C.ICMP_FLOOD.id in s.on and self._echo(_Attempt(meta, key, d, group, s, now))

    def _echo(self, a: _Attempt) -> bool:
        meta, s, now = a.meta, a.settings, a.now
        window = s.threshold(C.ICMP_FLOOD, "window")
        count = self._echo_dst.hit(meta.dst, now, window)
        if count > s.threshold(C.ICMP_FLOOD, "echo_per_window"):
            self._flooded_echo.put(meta.dst, now + window)
        until = self._flooded_echo.get(meta.dst)
        if until is None or until <= now:
            return False
        return self._raise(C.ICMP_FLOOD, a, f"{count:.0f} echo requests")

    def _is_flooder(self, src: bytes, now: float) -> bool:
        until = self._flooded_src.get(src)
        return until is not None and until > now

    def _syn(self, a: _Attempt) -> int:
        """PASS, WATCH or DROP for one SYN.

        Readers see a connection's SYN only, so a busy service's rate of SYNs says nothing of a flood.
        Once a destination gets more than the limit within the window, it is watched: one new connection
        in WATCH_SAMPLE is kept in user space until the client's ACK completes the handshake
        (`handshake_done`), which takes its SYN back from the half-open counts. Half-open SYNs over the limit make a flood: from one
        source, that source is dropped (and, in Protect, in the kernel for a few windows); toward one
        destination, sources not known to be real are dropped until a retransmission proves them."""
        meta, s, now = a.meta, a.settings, a.now
        window = s.threshold(C.SYN_FLOOD, "window")
        limit = s.threshold(C.SYN_FLOOD, "syns_per_window")
        src, dst = meta.src, meta.dst
        if self._is_flooder(src, now):
            return DROP if self._raise(C.SYN_FLOOD, a, "half-open SYNs from one source") else WATCH
        if self._attempts_dst.hit(dst, now, window) > limit:
            self._watched_dst.put(dst, now + window * _WATCH_WINDOWS)
        watched = self._watched_dst.get(dst)
        if watched is None or watched <= now:
            return PASS
        # One connection in WATCH_SAMPLE is followed and counts for WATCH_SAMPLE: the half-open share
        # is estimated at a fraction of the extra packets a followed connection costs in user space.
        self._sampled += 1
        if self._sampled % WATCH_SAMPLE == 0:
            follow = WATCH
            half_dst = self._half_dst.hit(dst, now, window, WATCH_SAMPLE)
            half_src = self._half_src.hit(src, now, window, WATCH_SAMPLE)
        else:
            follow = PASS
            half_dst = self._half_dst.get(dst, now, window)
            half_src = self._half_src.get(src, now, window)
        if half_src > limit:
            self._flooded_src.put(src, now + window)
            # Its half-open SYNs no longer count against the destination: its real clients are not suspects.
            self._half_dst.hit(dst, now, window, -min(half_src, self._half_dst.get(dst, now, window)))
            if self._raise(C.SYN_FLOOD, a, f"{half_src:.0f} half-open SYNs from one source"):
                self._block_flooder(src, window * _FLOODER_BLOCK_WINDOWS, now)
                return DROP
            return follow
        if half_dst > limit:
            self._flooded_dst.put(dst, now + window)
        until = self._flooded_dst.get(dst)
        if until is None or until <= now:
            return follow
        good = self._good.get(src)
        if good is not None and good > now:
            return follow
        challenge = (src, meta.sport, dst, meta.dport)
        dropped = self._challenged.get(challenge)
        if (
            dropped is not None
            and dropped[1] == meta.seq  # a retransmission repeats its sequence number; a new SYN does not
            and self.s.retry_min_s <= now - dropped[0] <= self.s.retry_max_s
        ):
            self._challenged.pop(challenge)
            self._good.put(src, now + self.s.good_source_s)
            self.counters["guard.syn_flood.source_proved"] += 1
            return follow
        if not self._raise(C.SYN_FLOOD, a, f"{half_dst:.0f} half-open SYNs to one destination"):
            return follow
        # (re)starts the pause: a tool resending at once never passes
        self._challenged.put(challenge, (now, meta.seq))
        return DROP

    def handshake_done(self, client: bytes, server: bytes, now: float) -> None:
        """A watched connection completed its handshake: its SYN was no flood, and its client is real."""
        self._good.put(client, now + self.s.good_source_s)
        for table, addr in ((self._half_src, client), (self._half_dst, server)):
            count = table.get(addr, now, _MAX_WINDOW)
            if count > 0:
                table.hit(addr, now, _MAX_WINDOW, -min(count, WATCH_SAMPLE))

    def _block_flooder(self, src: bytes, seconds: float, now: float) -> None:
        self._blocked.put(src, now + seconds)
        if self.s.kernel_blocks and len(self.new_blocks) < self.s.kernel_blocks:
            self.new_blocks.append((src, seconds))

    def _scan(self, a: _Attempt) -> bool:
        meta, s, now = a.meta, a.settings, a.now
        window = s.threshold(C.PORT_SCAN, "window")
        if meta.proto == IPPROTO_TCP or meta.proto == IPPROTO_UDP:
            pair = (meta.src, meta.dst)
            ports = self._ports.get(pair)
            if ports is None or now - ports.start >= window:
                ports = _Scan(now)
                self._ports.put(pair, ports)
            limit = s.threshold(C.PORT_SCAN, "ports_per_window")
            if len(ports.seen) < limit:
                ports.seen.add(meta.proto << 16 | meta.dport)
            if len(ports.seen) >= limit:
                return self._raise(C.PORT_SCAN, a, f"{len(ports.seen)} ports probed")
        hosts = self._hosts.get(meta.src)
        if hosts is None or now - hosts.start >= window:
            hosts = _Scan(now)
            self._hosts.put(meta.src, hosts)
        limit = s.threshold(C.PORT_SCAN, "hosts_per_window")
        if len(hosts.seen) < limit:
            hosts.seen.add(hash(meta.dst))
        if len(hosts.seen) >= limit:
            return self._raise(C.PORT_SCAN, a, f"{len(hosts.seen)} hosts probed")
        return False

    def _raise(self, threat: Threat, a: _Attempt, detail: str) -> bool:
        """Report a finding (aggregated) and carry out its action; True if the packet is to be dropped."""
        meta, group, s, now = a.meta, a.group, a.settings, a.now
        mode = a.decision.mode
        action = self._actions.get((threat.id, group, mode))
        if action is None:
            action = self._actions[(threat.id, group, mode)] = effective_action(mode, s.action(threat))
        seen, dropped = _COUNTER_NAMES[threat.id]
        self.counters[seen] += 1
        finding = Finding(threat, a.key, None, meta.src, meta.dst, meta.sport, meta.dport, meta.proto, detail)
        self.events.emit_lazy(
            finding_key(finding, action, group),
            now,
            lambda: threat_event(self.node, finding, action, group, now, _MODE_NAMES[mode]),
        )
        if action is ThreatAction.ALERT:
            return False
        if action is ThreatAction.BLOCK_SOURCE and "block_seconds" in threat.thresholds:
            self._block_flooder(meta.src, float(s.threshold(threat, "block_seconds")), now)
        self.counters[dropped] += 1
        return True

    def flush(self, now: float) -> None:
        """Send the counts of aggregation windows that have closed."""
        self.events.flush(now)

    def table_sizes(self) -> dict[str, int]:
        return {
            "guard.blocked_sources": len(self._blocked),
            "guard.good_sources": len(self._good),
            "guard.challenges": len(self._challenged),
        }
