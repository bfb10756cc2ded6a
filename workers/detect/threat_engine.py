"""One worker's threat engine: the raw packet path, and the state the DPI hooks share with it.

The DPI engine's hooks (`workers.detect.hooks.AppThreats`) see packets after defragmentation and never
see packets that failed to decode, so the packet-level threats (`threats.packets.PacketDetector`:
malformed packets, fragments, handshake anomalies, ICMP tunnels, refused probes) run on every packet
before them: `inspect_packet` returns a verdict (None: no opinion) and emits the events itself.
Connection-attempt threats (floods, scans) are the readers' guard's in the enforcer; an engine built
with `count_attempts` (a capture replay) counts them too, with the same core.

Settings: each flow is judged with the threat settings of its deciding group (the server's group, or
the client's when the server is `external`) from the current `ThreatPolicy`; groups come from the policy
tables (`PolicyTables.decide`) once per flow. `set_policy` swaps settings, sensors and tables for the
next flows (a new policy generation). Sans-io: time is passed in, events leave through `emit`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from core import anomalies as A
from core.flow import Direction, FlowKey
from core.lookup import Mode, PolicyTables
from core.packet import IPPROTO_TCP, TCP_ACK, TCP_SYN, PacketMeta
from core.verdict import WorkerVerdict
from threats.aggregate import EventAggregator, finding_key, threat_event
from threats.catalogue import Finding, ThreatAction
from threats.context import PacketContext
from threats.packets import PacketDetector
from threats.settings import ThreatSettings, effective_action
from threats.window import LruTable
from workers.detect.evidence import EvidenceStore
from workers.detect.hooks import AppThreats
from workers.detect.injection import value_cache_entries
from workers.detect.limits import DetectLimits
from workers.detect.policy import EMPTY_POLICY, ThreatPolicy
from workers.dpi.context import Detector, FlowContext

MAX_NEW_BLOCKS = 1024  # block-source requests held for the kernel between two takes
EXTERNAL_GROUP = "external"


class ThreatEngine:
    def __init__(
        self,
        node: str,
        emit: Callable[[dict[str, Any]], None],
        policy: ThreatPolicy = EMPTY_POLICY,
        tables: PolicyTables | None = None,
        limits: DetectLimits | None = None,
        count_attempts: bool = True,
    ) -> None:
        self.node = node
        self.limits = lim = limits or DetectLimits()
        self.aggregator = EventAggregator(emit, node, lim.aggregate_window, lim.max_aggregate_keys)
        self.policy = policy
        self.tables = tables
        # count_attempts: no reader's guard in front (a replay) counts the connection attempts
        self.packets = PacketDetector(lim.packet, count_attempts)
        self.app = AppThreats(self, lim.max_clients, lim.max_sensor_streams)
        self.flow_groups: LruTable[FlowKey, tuple[str, Mode, ThreatSettings]] = LruTable(lim.max_flow_groups)
        self._dest_groups: LruTable[tuple[bytes, int, int], tuple[str, Mode, ThreatSettings]] = LruTable(
            lim.max_flow_groups
        )
        self._blocked: LruTable[bytes, float] = LruTable(lim.max_blocked_sources)
        # (source, seconds) blocked since the worker last took them, to be dropped in the kernel too
        self.new_blocks: list[tuple[bytes, float]] = []
        self.evidence = EvidenceStore(lim.evidence)
        self.counters: Counter[str] = Counter()

    def stats(self) -> dict[str, int]:
        p = self.packets
        sizes = p.table_sizes()
        out = dict(self.counters)
        out[A.DETECT_FLOWS_EVICTED] = sizes["flows_evicted"]
        out[A.DETECT_DATAGRAMS_EVICTED] = sizes["datagrams_evicted"]
        out[A.DETECT_HOSTS_EVICTED] = p.hosts_evicted()
        out[A.DETECT_AGGREGATE_EVICTED] = self.aggregator.evicted
        out[A.DETECT_SENSOR_RE_FALLBACK] = len(self.policy.sensors.warnings)
        out["detect.flows"] = sizes["flows"]
        out["detect.sensor_streams"] = self.app.open_streams
        out["detect.events_suppressed"] = self.aggregator.suppressed
        out["detect.evidence_captures"] = len(self.evidence)
        return out

    def table_fill(self) -> dict[str, int]:
        """Entries in the bounded tables that traffic fills (a soak's warm-up waits for them to be full).
        Apart from `stats`: the value cache is the process's, so a replay's summary would depend on what
        ran before it in the same process."""
        return {"detect.evidence_flows": self.evidence.flows(), "detect.value_cache": value_cache_entries()}

    def evidence_pcap(self, evidence_id: str) -> bytes | None:
        """The packets behind a threat event (its `evidence` field) as a pcap file."""
        return self.evidence.pcap(evidence_id)

    # -- policy --------------------------------------------------------------------------------------

    def set_policy(self, policy: ThreatPolicy, tables: PolicyTables | None = None) -> None:
        """Switch to a new policy generation: new flows (and cached raw-path groups) use it."""
        self.policy = policy
        if tables is not None:
            self.tables = tables
        self.flow_groups = LruTable(self.limits.max_flow_groups)
        self._dest_groups = LruTable(self.limits.max_flow_groups)

    def group_of(self, family: int, client: bytes, server: bytes, proto: int, port: int) -> tuple[str, Mode]:
        if self.tables is None:
            return "", Mode.MONITOR
        d = self.tables.decide(family, client, server, proto, port)
        group = d.dst_group if d.dst_group and d.dst_group != EXTERNAL_GROUP else d.src_group
        return group, d.mode

    # -- raw packet path -----------------------------------------------------------------------------

    def inspect_packet(
        self, packet: bytes, meta: PacketMeta, key: FlowKey, direction: Direction, now: float
    ) -> WorkerVerdict | None:
        """Packet-level threats on one packet, before defragmentation and DPI. Emits the threat events;
        returns the verdict the threats ask for (None: no opinion, let the DPI engine decide)."""
        blocked_until = self._blocked.get(meta.src) if len(self._blocked) else None
        if blocked_until is not None:
            if now < blocked_until:
                self.counters[A.DETECT_SOURCE_BLOCKED] += 1
                # the packet only: a connection mark would outlive the block (SYN retransmissions)
                return WorkerVerdict.DROP
            self._blocked.pop(meta.src)
        if meta.src and meta.dst:
            cached = self.flow_groups.get(key) or self._resolve(meta, key)
        else:  # a packet too broken to carry addresses: judged with the default settings
            cached = ("", Mode.MONITOR, self.policy.settings.default)
        group, mode, settings = cached
        if meta.payload_offset < meta.ip_len:  # packets with payload; a finding adds its own packet
            self.evidence.record(key, now, packet)
        ctx = PacketContext(meta, packet, key, direction, now, settings, group, mode)
        findings = self.packets.inspect(ctx)
        if not findings:
            return None
        verdict: WorkerVerdict | None = None
        for f in findings:
            taken = effective_action(mode, settings.action(f.threat))
            self.counters["threats." + f.threat.name] += 1

            def build(f: Finding = f, taken: ThreatAction = taken) -> dict[str, Any]:
                evidence = self.evidence.snapshot(key, now, packet)
                return threat_event(self.node, f, taken, group, now, mode.name.lower(), evidence=evidence)

            # the event (and its evidence snapshot) is built only when it opens an aggregation window
            self.aggregator.emit_lazy(finding_key(f, taken, group), now, build)
            v = self._verdict(taken, f, ctx)
            if v is not None and (verdict is None or v > verdict):
                verdict = v
        return verdict

    def _resolve(self, meta: PacketMeta, key: FlowKey) -> tuple[str, Mode, ThreatSettings]:
        """Group, mode and settings of a packet's flow, cached. A bare SYN is cached per destination
        service only (a SYN flood of spoofed sources must not fill the cache with one entry per flow);
        the flow's later packets find the server side's entry and copy it for the flow."""
        proto = meta.proto
        syn_only = proto == IPPROTO_TCP and meta.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
        if syn_only:
            cached = self._dest_groups.get((meta.dst, proto, meta.dport))
            if cached is not None:
                return cached
        else:
            cached = self._dest_groups.get((meta.src, proto, meta.sport)) or self._dest_groups.get(
                (meta.dst, proto, meta.dport)
            )
            if cached is not None:
                self.flow_groups.put(key, cached)
                return cached
        if self.tables is None:
            group, mode, by_dst = "", Mode.MONITOR, True
        else:
            d = self.tables.decide(meta.family, meta.src, meta.dst, proto, meta.dport)
            by_dst = bool(d.dst_group) and d.dst_group != EXTERNAL_GROUP
            group, mode = (d.dst_group if by_dst else d.src_group), d.mode
        cached = (group, mode, self.policy.settings.for_group(group))
        if syn_only and by_dst:
            self._dest_groups.put((meta.dst, proto, meta.dport), cached)
        else:
            self.flow_groups.put(key, cached)
        return cached

    def _verdict(self, taken: ThreatAction, f: Finding, ctx: PacketContext) -> WorkerVerdict | None:
        if taken is ThreatAction.ALERT:
            return None
        if taken is ThreatAction.DROP:
            return WorkerVerdict.DROP
        if taken is ThreatAction.BLOCK_SOURCE:
            seconds = f.threat.thresholds.get("block_seconds")
            if seconds is not None:
                self.block(f.src, float(ctx.settings.threshold(f.threat, "block_seconds")), ctx.now)
                if self.packets.attempts is not None:  # spent, as in the readers' guard
                    self.packets.attempts.forget_source(f.src, f.dst)
            return WorkerVerdict.BLOCK_FLOW
        return WorkerVerdict.RESET_FLOW if ctx.meta.proto == IPPROTO_TCP else WorkerVerdict.BLOCK_FLOW

    def block(self, src: bytes, seconds: float, now: float) -> None:
        self._blocked.put(src, now + seconds)
        if len(self.new_blocks) < MAX_NEW_BLOCKS and len(src) in (4, 16):
            self.new_blocks.append((src, seconds))

    def tick(self, now: float) -> None:
        """Time-driven work: idle-flow sweeps (tcp_no_data) and closing aggregation windows."""

        def settings_for(key: FlowKey) -> ThreatSettings:
            cached = self.flow_groups.get(key)
            return cached[2] if cached is not None else self.policy.settings.default

        for f in self.packets.tick(now, settings_for):
            cached = self.flow_groups.get(f.flow) if f.flow is not None else None
            group, mode = (cached[0], cached[1]) if cached is not None else ("", Mode.MONITOR)
            self.counters["threats." + f.threat.name] += 1
            # the flow is idle: nothing to drop now; the event says what the setting would do
            taken = (
                effective_action(mode, settings_for(f.flow).action(f.threat))
                if f.flow
                else ThreatAction.ALERT
            )
            self.aggregator.emit(threat_event(self.node, f, taken, group, now, mode.name.lower()))
        for ctx, app_group, hit in self.app.sweep(now):  # slow HTTP requests on silent connections
            f = Finding(hit.threat, ctx.key, ctx.client_direction, ctx.client_addr, ctx.server_addr,
                        ctx.client_port, ctx.server_port, ctx.key.proto, hit.detail)  # fmt: skip
            mode = Mode(ctx.mode) if ctx.mode >= 0 else Mode.MONITOR
            taken = effective_action(mode, settings_for(ctx.key).action(hit.threat))
            self.aggregator.emit(threat_event(self.node, f, taken, app_group, now, mode.name.lower()))
        self.aggregator.flush(now)

    # -- DPI hooks -----------------------------------------------------------------------------------

    # -- DPI hooks (workers.detect.hooks) ---------------------------------------------------------------

    def detector(self) -> Detector:
        return self.app.detector()

    def on_flow_end(self, ctx: FlowContext) -> None:
        """Release the flow's sensor streams (the DPI engine's `on_flow_end` observer)."""
        self.app.on_flow_end(ctx)
