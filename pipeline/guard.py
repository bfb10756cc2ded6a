"""The reader's guard: flood and scan checks on the first packet of every connection.

Every new connection's first packet reaches a reader (the kernel queues it), and a connection the L3/L4
rules decide is offloaded right after it, so floods and scans are counted here, once: connections sent
to a worker too (the workers do not count connection attempts again; they keep the threats that need a
flow's later packets). It covers, with the workers' catalogue, thresholds and per-group settings (the
threat settings of the policy in force):

- `syn_flood`: half-open connections per source and per destination. The reader sees only the SYN of
  an offloaded connection, so it counts SYNs per destination, and above the limit it follows that
  destination's handshakes for a while (`WATCH`, see `threats.attempts`) to tell a flood from a busy
  service;
- `source_session_flood`: new connections per source; `k8s_extip_mitm`;
- `port_scan`: distinct ports one source tries on one host (SYN, UDP, FIN/NULL/Xmas and ACK probes),
  distinct hosts one source tries;
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

The counting itself is the threat library's (`threats.attempts.ConnectionAttempts`, shared with the
workers' detector where no reader stands in front); the guard adds what is the reader's: the deciding
group's settings, events, the Protect actions and the sources blocked.

Sans-io: time is passed in, events leave through `emit` (aggregated like the workers' threat events).
Every table has a named cap with least-recently-used eviction, so a flood of distinct sources costs
bounded memory.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from typing import Any

from core.flow import FlowKey
from core.lookup import Decision, Mode
from core.packet import ICMP_ECHO_REQUEST, PacketMeta
from threats import attempts as T
from threats import catalogue as C
from threats.aggregate import EventAggregator, finding_key, threat_event
from threats.catalogue import Threat, ThreatAction
from threats.context import PacketContext
from threats.settings import GroupThreatSettings, ThreatSettings, compile_group_settings, effective_action
from threats.window import LruTable

EXTERNAL_GROUP = "external"
MAX_PENDING_KEYS = 4096  # distinct threat events held in one aggregation window
MAX_DECISIONS_KNOWN = 4096  # decisions whose deciding group the guard remembers (cleared when full)
# What the guard makes of a connection's first packet (`check`); WATCH: let it through, but keep the
# connection in user space until its handshake completes (`handshake_done`).
PASS, DROP, WATCH = T.PASS, T.DROP, T.WATCH
WATCH_SAMPLE = 4  # while a destination is watched, one new connection in this many is followed
_COUNTER_NAMES = {t.id: (f"guard.threats.{t.name}", f"guard.dropped.{t.name}") for t in C.THREATS}
_MODE_NAMES = {m: m.name.lower() for m in Mode}
_context = tuple.__new__  # builds a PacketContext without the NamedTuple's Python-level __new__


@dataclasses.dataclass(frozen=True, slots=True)
class GuardSettings:
    """The reader guard's switches and table caps (the thresholds come with the policy)."""

    enabled: bool = (
        True  # connection-attempt threats on every connection's first packet (workers do not count them)
    )
    max_hosts: int = 65536  # keys of each per-source / per-destination counter
    max_challenges: int = 1 << 20  # slots for SYNs dropped during a flood (retransmission check; 8 B each)
    retry_min_s: float = 0.5  # a retransmitted SYN proves its source only after this pause
    retry_max_s: float = 10.0  # ... and only within this time of the dropped SYN
    good_source_s: float = 60.0  # a source that proved itself passes flooded destinations this long
    aggregate_window_s: float = 5.0  # identical threat events within this are one event with a count
    kernel_blocks: int = 1024  # sources a block-source action also drops in the kernel (iptables); 0: none


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
        self.attempts = T.ConnectionAttempts(
            T.AttemptLimits(
                max_hosts=settings.max_hosts,
                max_challenges=settings.max_challenges,
                retry_min_s=settings.retry_min_s,
                retry_max_s=settings.retry_max_s,
                good_source_s=settings.good_source_s,
                sample=WATCH_SAMPLE,
            )
        )
        self._blocked: LruTable[bytes, float] = LruTable(settings.max_hosts)  # source → until when
        # (source, seconds) for the kernel, taken by the reader
        self.new_blocks: list[tuple[bytes, float]] = []
        self.counters: Counter[str] = Counter()
        self._actions: dict[tuple[int, str, Mode], ThreatAction] = {}  # (threat, group, mode) → action taken
        # id(decision) → (decision, deciding group, its settings) under the threat settings in force
        self._by_decision: dict[int, tuple[Decision, str, ThreatSettings]] = {}

    def set_threat_settings(self, threats: GroupThreatSettings) -> None:
        """The threat settings of a new policy generation (compiled off the packet path)."""
        self.threats = threats
        self._actions.clear()
        self._by_decision.clear()

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

    def _context(
        self, meta: PacketMeta, key: FlowKey, d: Decision, now: float, packet: bytes
    ) -> PacketContext:
        group = _deciding_group(d)
        return _context(
            PacketContext, (meta, packet, key, None, now, self.threats.for_group(group), group, d.mode)
        )

    def check(self, meta: PacketMeta, key: FlowKey, d: Decision, now: float, packet: bytes = b"") -> int:
        """Count the first packet of a connection the reader decided: PASS, DROP or WATCH. `packet` (the
        IP packet) lets the TCP header checks see the options."""
        # The deciding group and its settings, by the decision: the policy tables hand out one Decision
        # object per (groups, protocol, port) and generation, so this is one probe for most connections.
        known = self._by_decision.get(id(d))
        if known is not None and known[0] is d:
            group, settings = known[1], known[2]
        else:
            group = _deciding_group(d)
            settings = self.threats.for_group(group)
            if len(self._by_decision) >= MAX_DECISIONS_KNOWN:
                self._by_decision.clear()
            self._by_decision[id(d)] = (d, group, settings)  # holding `d` keeps its id from being reused
        ctx = _context(PacketContext, (meta, packet, key, None, now, settings, group, d.mode))
        return self.attempts.first_packet(ctx, self)

    def watches_echo(self, d: Decision) -> bool:
        """Must the reader keep an echo flow in user space (not offload it) to count its requests?"""
        return C.ICMP_FLOOD.id in self.threats.for_group(_deciding_group(d)).on

    def echo(self, meta: PacketMeta, key: FlowKey, d: Decision, now: float) -> bool:
        """A later packet of an ICMP flow kept in user space; True: drop it."""
        if meta.icmp_type != ICMP_ECHO_REQUEST[meta.family]:
            return False
        ctx = self._context(meta, key, d, now, b"")
        return C.ICMP_FLOOD.id in ctx.settings.on and self.attempts.echo(ctx, self)

    def flow_flood(self, meta: PacketMeta, key: FlowKey, d: Decision, now: float) -> bool:
        """A datagram of an offloaded UDP flow that went over the kernel's rate (`netfilter.udp_flow_rate`);
        True: block the flow."""
        ctx = self._context(meta, key, d, now, b"")
        if C.UDP_FLOOD.id not in ctx.settings.on:
            return False
        return self.report(C.UDP_FLOOD, ctx, "a single UDP flow over the kernel's datagram rate")

    def handshake_done(self, client: bytes, server: bytes, now: float) -> None:
        """A watched connection completed its handshake: its SYN was no flood, and its client is real."""
        self.attempts.handshake_done(client, server, now)

    # ---- what a finding does (threats.attempts.Reporter) -----------------------------------------

    def report(self, threat: Threat, ctx: PacketContext, detail: str) -> bool:
        """Report a finding (aggregated) and carry out its action; True if the packet is to be dropped."""
        group, s, now, mode = ctx.group, ctx.settings, ctx.now, ctx.mode
        action = self._actions.get((threat.id, group, mode))
        if action is None:
            action = self._actions[(threat.id, group, mode)] = effective_action(mode, s.action(threat))
        seen, dropped = _COUNTER_NAMES[threat.id]
        self.counters[seen] += 1
        finding = ctx.finding(threat, detail, excerpt=False)
        self.events.emit_lazy(
            finding_key(finding, action, group),
            now,
            lambda: threat_event(self.node, finding, action, group, now, _MODE_NAMES[mode]),
        )
        if action is ThreatAction.ALERT:
            return False
        if action is ThreatAction.BLOCK_SOURCE and "block_seconds" in threat.thresholds:
            self.block_source(ctx.meta.src, float(s.threshold(threat, "block_seconds")), now)
            self.attempts.forget_source(ctx.meta.src, ctx.meta.dst)
        self.counters[dropped] += 1
        return True

    def block_source(self, src: bytes, seconds: float, now: float) -> None:
        self._blocked.put(src, now + seconds)
        if self.s.kernel_blocks and len(self.new_blocks) < self.s.kernel_blocks:
            self.new_blocks.append((src, seconds))

    def flush(self, now: float, final: bool = False) -> None:
        """Send the counts of aggregation windows that have closed (every window when `final`: the
        reader stops or the capture ended, and a count held back would be lost)."""
        self.events.flush(now, force=final)

    def table_sizes(self) -> dict[str, int]:
        sizes = self.attempts.table_sizes()
        return {
            "guard.blocked_sources": len(self._blocked),
            "guard.good_sources": sizes["good_sources"],
            "guard.challenges": sizes["challenges"],
            "guard.syn_flood.source_proved": self.attempts.sources_proved,
        }
