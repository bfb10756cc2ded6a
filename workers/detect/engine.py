"""The threat engine of one worker: adapters from packets and parser events to the detectors.

Two ways in, both sans-io (time is passed in, events leave through `emit`):

1. DPI hooks. `ThreatEngine.detector()` is the `workers.dpi.context.Detector` the DPI engine takes
   (`DpiEngine(..., detectors=[threats.detector()], on_flow_end=threats.on_flow_end)`). Its event hook
   maps parser events (HTTP requests and responses, HTTP/2 headers, SQL text, TLS hellos and
   heartbeats, SSH banners, DNS over TCP, MySQL errors) to the application detectors and the DLP/WAF
   sensors; its packet hook handles what needs payload bytes (DNS over UDP, SSLv2 records, Slowloris
   timing, sensors of the `packet` context, streamed per flow direction). Findings go back to the DPI
   engine as `workers.dpi.events.Finding`s; it raises the `threat` event and, in Protect mode, resets
   or blocks the flow when `block` is set.

2. The raw packet path. The DPI engine's hooks see packets after defragmentation and never see packets
   that failed to decode, so packet-level threats (malformed packets, teardrop, ping of death, floods,
   scans, handshake anomalies) run on every packet before it: `inspect_packet` returns a verdict
   (None: no opinion) and emits the events itself. `DetectingEngine` wraps any worker engine (the DPI
   engine) with it, keeping the worker's `on_packet/expire/stats` interface.

Settings: each flow is judged with the threat settings of its deciding group (the server's group, or
the client's when the server is `external`) from the current `ThreatPolicy`; groups come from the policy
tables (`PolicyTables.decide`) once per flow. `set_policy` swaps settings, sensors and tables for the
next flows (a new policy generation).
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from core import anomalies as A
from core.flow import Direction, FlowKey
from core.lookup import Mode, PolicyTables
from core.packet import IPPROTO_TCP, IPPROTO_UDP, TCP_ACK, TCP_SYN, PacketMeta
from core.verdict import WorkerVerdict
from threats import catalogue as C
from threats.aggregate import EventAggregator, finding_key, threat_event
from threats.catalogue import Finding, Hit, Threat, ThreatAction, excerpt_of
from threats.packets import PacketDetector, PacketLimits
from threats.settings import (
    GroupThreatSettings,
    ThreatSettings,
    compile_group_settings,
    effective_action,
)
from threats.window import LruTable
from workers.detect.database import AccessDeniedTracker
from workers.detect.decode import percent_decode
from workers.detect.dns import DnsDetector, tunnel_name
from workers.detect.evidence import EvidenceLimits, EvidenceStore
from workers.detect.http import check_headers, check_struts_body
from workers.detect.injection import check_request, check_sql_query
from workers.detect.sensors import (
    Context,
    SensorAction,
    SensorMatch,
    SensorSet,
    SensorStream,
    compile_sensors,
)
from workers.detect.tls import check_ssh_banner, check_sslv2, is_sslv2, version_hits
from workers.dpi import events as E
from workers.dpi.context import Detector, FlowContext
from workers.dpi.parsers.base import Side

DETECTOR_NAME = "threats"
MAX_NEW_BLOCKS = 1024  # block-source requests held for the kernel between two takes
EXTERNAL_GROUP = "external"
_HTTP_METHOD = re.compile(rb"[A-Z]{3,10} \S")
_DNS_PORT = 53
_DNS_THREATS = frozenset(
    t.id for t in (C.DNS_POINTER_LOOP, C.DNS_OVERFLOW, C.DNS_ZONE_TRANSFER, C.DNS_NULL_TYPE, C.DNS_TUNNELING)
)
# Headers applications log or echo, where scanners (sqlmap --level 3) inject as well.
_INJECTABLE_HEADERS = frozenset({b"user-agent", b"referer", b"x-forwarded-for"})
_DENIED_PG = frozenset({b"28P01", b"28000"})  # invalid password / authorization specification


@dataclasses.dataclass(frozen=True, slots=True)
class DetectLimits:
    """Caps of the threat engine's own tables (the packet detector's are in `packet`)."""

    packet: PacketLimits = PacketLimits()
    max_clients: int = 65536  # per-client counters (DNS unusual types, MySQL denials)
    max_flow_groups: int = 65536  # flows whose group/mode is cached on the raw packet path
    max_blocked_sources: int = 16384  # sources blocked by a block-source action
    aggregate_window: float = 5.0  # identical threat events within this are counted, not repeated
    max_aggregate_keys: int = 4096  # distinct threat events held in one aggregation window
    evidence: EvidenceLimits = EvidenceLimits()  # packet rings per flow, snapshotted on findings
    # Hyperscan stream states for packet-context sensors (~0.8 KB each with 2,000 patterns); beyond
    # this, packets are scanned one by one (detect.sensor.streams_full)
    max_sensor_streams: int = 16384


@dataclasses.dataclass(frozen=True, slots=True)
class ThreatPolicy:
    """The detection part of one policy generation (immutable; compiled off the packet path)."""

    generation: int
    settings: GroupThreatSettings
    sensors: SensorSet


def compile_threat_policy(
    generation: int, threat_settings: Any = None, sensors: Any = None, use_hyperscan: bool = True
) -> ThreatPolicy:
    """Validate and compile the `threat_settings` and `sensors` documents of a policy snapshot.
    Raises ThreatSettingsError / SensorError (both ValueError) naming the bad key or pattern."""
    return ThreatPolicy(
        generation,
        compile_group_settings(threat_settings),
        compile_sensors(sensors, use_hyperscan=use_hyperscan),
    )


EMPTY_POLICY = ThreatPolicy(0, compile_group_settings(None), compile_sensors(None))


class _FlowState:
    """Per-flow state of the hooks, kept in `ctx.detector_state[DETECTOR_NAME]`."""

    __slots__ = ("group", "settings", "pending_since", "slow_fired", "first_payload", "streams", "generation")

    def __init__(self, group: str, settings: ThreatSettings, generation: int) -> None:
        self.group = group
        self.settings = settings
        self.generation = generation
        self.pending_since = -1.0  # Slowloris: when the current request head started (-1: none)
        self.slow_fired = False
        self.first_payload = [True, True]  # per Side
        self.streams: list[SensorStream | None] = [None, None]  # packet-context sensor streams per Side


class Engine(Protocol):
    """The worker engine interface (what `workers.worker.Worker` drives)."""

    def on_packet(
        self, packet: bytes, meta: PacketMeta, key: FlowKey, direction: Direction, now: float
    ) -> tuple[WorkerVerdict, int]: ...

    def expire(self, now: float) -> None: ...

    def stats(self) -> dict[str, int]: ...


class ThreatEngine:
    def __init__(
        self,
        node: str,
        emit: Callable[[dict[str, Any]], None],
        policy: ThreatPolicy = EMPTY_POLICY,
        tables: PolicyTables | None = None,
        limits: DetectLimits | None = None,
    ) -> None:
        self.node = node
        self.limits = lim = limits or DetectLimits()
        self.aggregator = EventAggregator(emit, node, lim.aggregate_window, lim.max_aggregate_keys)
        self.policy = policy
        self.tables = tables
        self.packets = PacketDetector(lim.packet)
        self.dns = DnsDetector(lim.max_clients)
        self.denials = AccessDeniedTracker(lim.max_clients)
        self._flow_groups: LruTable[FlowKey, tuple[str, Mode, ThreatSettings]] = LruTable(lim.max_flow_groups)
        self._dest_groups: LruTable[tuple[bytes, int, int], tuple[str, Mode, ThreatSettings]] = LruTable(
            lim.max_flow_groups
        )
        self._blocked: LruTable[bytes, float] = LruTable(lim.max_blocked_sources)
        # (source, seconds) blocked since the worker last took them, to be dropped in the kernel too
        self.new_blocks: list[tuple[bytes, float]] = []
        self.evidence = EvidenceStore(lim.evidence)
        self._open_streams = 0  # packet-context sensor streams open (closed with their flow)
        self._now = 0.0  # time of the packet or event being handled (hooks)
        self.counters: Counter[str] = Counter()

    def stats(self) -> dict[str, int]:
        p = self.packets
        out = dict(self.counters)
        out[A.DETECT_FLOWS_EVICTED] = p._flows.evicted
        out[A.DETECT_DATAGRAMS_EVICTED] = p._datagrams.evicted
        out[A.DETECT_HOSTS_EVICTED] = p.hosts_evicted()
        out[A.DETECT_AGGREGATE_EVICTED] = self.aggregator.evicted
        out[A.DETECT_SENSOR_RE_FALLBACK] = len(self.policy.sensors.warnings)
        out["detect.flows"] = len(p._flows)
        out["detect.sensor_streams"] = self._open_streams
        out["detect.events_suppressed"] = self.aggregator.suppressed
        out["detect.evidence_captures"] = len(self.evidence)
        return out

    def evidence_pcap(self, evidence_id: str) -> bytes | None:
        """The packets behind a threat event (its `evidence` field) as a pcap file."""
        return self.evidence.pcap(evidence_id)

    # -- policy --------------------------------------------------------------------------------------

    def set_policy(self, policy: ThreatPolicy, tables: PolicyTables | None = None) -> None:
        """Switch to a new policy generation: new flows (and cached raw-path groups) use it."""
        self.policy = policy
        if tables is not None:
            self.tables = tables
        self._flow_groups = LruTable(self.limits.max_flow_groups)
        self._dest_groups = LruTable(self.limits.max_flow_groups)

    def _group(self, family: int, client: bytes, server: bytes, proto: int, port: int) -> tuple[str, Mode]:
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
                return WorkerVerdict.BLOCK_FLOW
            self._blocked.pop(meta.src)
        if meta.src and meta.dst:
            cached = self._flow_groups.get(key) or self._resolve(meta, key)
        else:  # a packet too broken to carry addresses: judged with the default settings
            cached = ("", Mode.MONITOR, self.policy.settings.default)
        group, mode, settings = cached
        if meta.payload_offset < meta.ip_len:  # packets with payload; a finding adds its own packet
            self.evidence.record(key, now, packet)
        findings = self.packets.inspect(meta, packet, key, direction, now, settings)
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
            v = self._verdict(taken, f, meta, now, settings)
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
                self._flow_groups.put(key, cached)
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
            self._flow_groups.put(key, cached)
        return cached

    def _verdict(
        self, taken: ThreatAction, f: Finding, meta: PacketMeta, now: float, settings: ThreatSettings
    ) -> WorkerVerdict | None:
        if taken is ThreatAction.ALERT:
            return None
        if taken is ThreatAction.DROP:
            return WorkerVerdict.DROP
        if taken is ThreatAction.BLOCK_SOURCE:
            seconds = f.threat.thresholds.get("block_seconds")
            if seconds is not None:
                self._block(f.src, float(settings.threshold(f.threat, "block_seconds")), now)
            return WorkerVerdict.BLOCK_FLOW
        return WorkerVerdict.RESET_FLOW if meta.proto == IPPROTO_TCP else WorkerVerdict.BLOCK_FLOW

    def _block(self, src: bytes, seconds: float, now: float) -> None:
        self._blocked.put(src, now + seconds)
        if len(self.new_blocks) < MAX_NEW_BLOCKS and len(src) in (4, 16):
            self.new_blocks.append((src, seconds))

    def tick(self, now: float) -> None:
        """Time-driven work: idle-flow sweeps (tcp_no_data) and closing aggregation windows."""

        def settings_for(key: FlowKey) -> ThreatSettings:
            cached = self._flow_groups.get(key)
            return cached[2] if cached is not None else self.policy.settings.default

        for f in self.packets.tick(now, settings_for):
            cached = self._flow_groups.get(f.flow) if f.flow is not None else None
            group, mode = (cached[0], cached[1]) if cached is not None else ("", Mode.MONITOR)
            self.counters["threats." + f.threat.name] += 1
            # the flow is idle: nothing to drop now; the event says what the setting would do
            taken = (
                effective_action(mode, settings_for(f.flow).action(f.threat))
                if f.flow
                else ThreatAction.ALERT
            )
            self.aggregator.emit(threat_event(self.node, f, taken, group, now, mode.name.lower()))
        self.aggregator.flush(now)

    # -- DPI hooks -----------------------------------------------------------------------------------

    def detector(self) -> Detector:
        return Detector(DETECTOR_NAME, on_packet=self.on_packet_hook, on_event=self.on_event_hook)

    def _state(self, ctx: FlowContext) -> _FlowState:
        st = ctx.detector_state.get(DETECTOR_NAME)
        if st is None:
            cached = self._flow_groups.get(ctx.key)  # resolved by the raw packet path already?
            if cached is not None:
                group, settings = cached[0], cached[2]
            else:
                group, _mode = self._group(
                    ctx.family, ctx.client_addr, ctx.server_addr, ctx.key.proto, ctx.server_port
                )
                settings = self.policy.settings.for_group(group)
            st = _FlowState(group, settings, self.policy.generation)
            ctx.detector_state[DETECTOR_NAME] = st
        assert isinstance(st, _FlowState)
        return st

    def on_flow_end(self, ctx: FlowContext) -> None:
        """Release the flow's sensor streams (the DPI engine's `on_flow_end` observer)."""
        st = ctx.detector_state.get(DETECTOR_NAME)
        if isinstance(st, _FlowState):
            for stream in st.streams:
                if stream is not None:
                    stream.close()
                    self._open_streams -= 1
            st.streams = [None, None]

    def on_packet_hook(
        self, ctx: FlowContext, meta: PacketMeta, packet: bytes, now: float
    ) -> list[E.Finding]:
        self._now = now
        end = min(meta.ip_len, len(packet))
        if end <= meta.payload_offset:
            return []
        payload = packet[meta.payload_offset : end]
        st = self._state(ctx)
        s = st.settings
        side = int(ctx.side)
        hits: list[Hit] = []
        first = st.first_payload[side]
        st.first_payload[side] = False
        if meta.proto == IPPROTO_UDP:
            if (ctx.server_port == _DNS_PORT or ctx.app == "DNS") and not _DNS_THREATS.isdisjoint(s.on):
                hits += self.dns.inspect(payload, ctx.client_addr, False, now, s)
        elif meta.proto == IPPROTO_TCP:
            if first and is_sslv2(payload):
                hits += check_sslv2(payload)
            if side == Side.CLIENT and C.HTTP_SLOWLORIS.id in s.on:
                hit = self._slowloris(st, payload, now, s)
                if hit is not None:
                    hits.append(hit)
        sensors = self.policy.sensors
        if sensors.applies(st.group):
            stream = st.streams[side]
            if stream is None and self._open_streams < self.limits.max_sensor_streams:
                stream = st.streams[side] = sensors.open_stream(Context.PACKET, st.group)
                self._open_streams += 1
            if stream is not None:
                hits += self._sensor_hits(stream.scan(payload))
            else:  # at the cap: this packet alone (a pattern split across packets is missed)
                self.counters[A.DETECT_SENSOR_STREAMS_FULL] += 1
                hits += self._sensor_hits(sensors.scan(Context.PACKET, payload, st.group))
        return self._to_dpi(hits, st, ctx)

    def _slowloris(self, st: _FlowState, payload: bytes, now: float, s: ThreatSettings) -> Hit | None:
        if st.pending_since < 0:
            if _HTTP_METHOD.match(payload):
                st.pending_since = now  # cleared by the HttpRequest event when the head completes
            return None
        if st.slow_fired or now - st.pending_since < s.threshold(C.HTTP_SLOWLORIS, "header_seconds"):
            return None
        st.slow_fired = True
        return Hit(C.HTTP_SLOWLORIS, f"request head incomplete after {now - st.pending_since:.1f}s")

    def on_event_hook(self, ctx: FlowContext, ev: object, now: float) -> list[E.Finding]:
        self._now = now
        st = self._state(ctx)
        s = st.settings
        on = s.on
        hits: list[Hit] = []
        if isinstance(ev, E.HttpRequest):
            st.pending_since = -1.0
            hits += self._http_request(ev.uri, ev.headers, ev.body, st, on)
        elif isinstance(ev, E.HttpResponse):
            hits += check_headers(ev.headers)
            hits += self._sensor_body(ev.body, st)
        elif isinstance(ev, E.Http2Headers):
            path = next((v for n, v in ev.headers if n == b":path"), b"")
            if path:
                hits += self._http_request(path, ev.headers, b"", st, on)
        elif isinstance(ev, E.SqlQuery):
            if C.SQL_INJECTION.id in on:
                hit = check_sql_query(ev.text)
                if hit is not None:
                    hits.append(hit)
            if self.policy.sensors.applies(st.group):
                hits += self._sensor_hits(
                    self.policy.sensors.scan(Context.SQL, ev.text.encode("utf-8", "replace"), st.group)
                )
        elif isinstance(ev, E.TlsClientHello):
            if not ev.sslv2:  # SSLv2 hellos are judged on their bytes by the packet hook
                offered = max(ev.supported_versions) if ev.supported_versions else ev.handshake_version
                hits += version_hits(True, offered)
        elif isinstance(ev, E.TlsServerHello):
            hits += version_hits(False, ev.selected_version or ev.handshake_version)
        elif isinstance(ev, E.TlsHeartbeat):
            if not ev.encrypted and 3 + ev.declared_length + 16 > ev.record_length:
                detail = f"heartbeat claims {ev.declared_length} bytes in a {ev.record_length}-byte record"
                hits.append(Hit(C.HEARTBLEED, detail))
        elif isinstance(ev, E.SshBanner):
            hit = check_ssh_banner(b"SSH-" + ev.proto_version + b"-" + ev.software)
            if hit is not None:
                hits.append(hit)
        elif isinstance(ev, E.DnsMessage):
            if ev.transport == "tcp":
                hits += self._dns_event(ev, ctx, now, s)
        elif isinstance(ev, E.MysqlError):  # a failed login also yields MysqlLoginResult: count one of them
            code = ev.code
            if code:
                hit = self.denials.on_error(ctx.client_addr, code, now, s)
                if hit is not None:
                    hits.append(hit)
        elif isinstance(ev, E.PgAuthResult):
            if not ev.ok and ev.code in _DENIED_PG:
                hit = self.denials.on_error(ctx.client_addr, 1045, now, s)
                if hit is not None:
                    hits.append(hit._replace(detail=hit.detail + " (PostgreSQL)"))
        return self._to_dpi(hits, st, ctx)

    def _http_request(
        self, uri: bytes, headers: E.Headers, body: bytes, st: _FlowState, on: frozenset[int]
    ) -> list[Hit]:
        hits = check_headers(headers)
        ctype = cookie = ""
        injectable: list[str] = []
        for name, value in headers:
            low = name.lower()
            if low == b"content-type":
                ctype = value.decode("latin-1")
            elif low == b"cookie":
                cookie = value.decode("latin-1")
            elif low in _INJECTABLE_HEADERS:
                injectable.append(value.decode("latin-1"))
        sqli, xss = C.SQL_INJECTION.id in on, C.XSS.id in on
        if sqli or xss:
            hits += check_request(uri.decode("latin-1"), body, ctype, cookie, sqli, xss, injectable)
        if body and C.STRUTS_RCE.id in on:
            hit = check_struts_body(body, ctype)
            if hit is not None:
                hits.append(hit)
        sensors = self.policy.sensors
        if sensors.applies(st.group):
            found = sensors.scan(Context.URL, uri, st.group)
            decoded = percent_decode(uri.decode("latin-1")).encode("latin-1", "replace")
            if decoded != uri:
                seen = {(m.sensor, m.rule) for m in found}
                found += [
                    m for m in sensors.scan(Context.URL, decoded, st.group) if (m.sensor, m.rule) not in seen
                ]
            head = b"\r\n".join(n + b": " + v for n, v in headers)
            found += sensors.scan(Context.HEADER, head, st.group)
            hits += self._sensor_hits(found)
            body_hits = self._sensor_body(body, st)
            if body and "x-www-form-urlencoded" in ctype:  # the values as the application sees them
                form = percent_decode(body.decode("latin-1"), plus=True).encode("latin-1", "replace")
                if form != body:
                    seen = {(h.sensor, h.rule) for h in body_hits}
                    body_hits += [h for h in self._sensor_body(form, st) if (h.sensor, h.rule) not in seen]
            hits += body_hits
        return hits

    def _sensor_body(self, body: bytes, st: _FlowState) -> list[Hit]:
        if not body or not self.policy.sensors.applies(st.group):
            return []
        return self._sensor_hits(self.policy.sensors.scan(Context.BODY, body, st.group))

    def _dns_event(self, ev: E.DnsMessage, ctx: FlowContext, now: float, s: ThreatSettings) -> list[Hit]:
        hits: list[Hit] = []
        for anomaly in ev.anomalies:
            if anomaly == "dpi.dns.pointer_loop":
                hits.append(Hit(C.DNS_POINTER_LOOP, "compression pointer loop"))
            elif anomaly in ("dpi.dns.name_too_long", "dpi.dns.truncated", "dpi.dns.bad_pointer"):
                hits.append(Hit(C.DNS_OVERFLOW, anomaly))
        if not ev.qr:
            for q in ev.questions:
                if q.qtype in (251, 252):
                    hits.append(
                        Hit(C.DNS_ZONE_TRANSFER, "AXFR" if q.qtype == 252 else "IXFR", excerpt_of(q.name))
                    )
                elif q.qtype == 10:
                    hits.append(Hit(C.DNS_NULL_TYPE, "NULL query", excerpt_of(q.name)))
                if C.DNS_TUNNELING.id in s.on:
                    reason = tunnel_name(
                        [label.encode("latin-1", "replace") for label in q.name.split(".")], s
                    )
                    if reason:
                        hits.append(Hit(C.DNS_TUNNELING, reason, excerpt_of(q.name)))
        return hits

    @staticmethod
    def _sensor_hits(matches: Sequence[SensorMatch]) -> list[Hit]:
        return [
            Hit(C.DLP_SENSOR, f"sensor {m.sensor} rule {m.rule} ({m.context.value})", m.excerpt.encode(),
                m.sensor, m.rule, m.action is SensorAction.BLOCK)
            for m in matches
        ]  # fmt: skip

    def _to_dpi(self, hits: list[Hit], st: _FlowState, ctx: FlowContext) -> list[E.Finding]:
        if not hits:
            return []
        s = st.settings
        out = []
        evidence = self.evidence.snapshot(ctx.key)
        for h in hits:
            threat: Threat = h.threat
            if threat.id not in s.on:
                continue
            self.counters["threats." + threat.name] += 1
            fields: dict[str, object] = {"threat_id": threat.id, "group": st.group, "count": 1}
            if h.sensor:
                fields.update(sensor=h.sensor, rule=h.rule)
                block = h.block
                configured = "block" if block else "alert"
            else:
                action = s.action(threat)
                block = action is not ThreatAction.ALERT
                configured = action.value
                if action is ThreatAction.BLOCK_SOURCE and ctx.mode == Mode.PROTECT:
                    # the DPI engine resets this flow; the client's next flows are dropped by the raw path
                    seconds = threat.thresholds.get("block_seconds")
                    if seconds is not None:
                        self._block(ctx.client_addr, float(s.threshold(threat, "block_seconds")), self._now)
            fields["configured_action"] = configured
            if evidence:
                fields["evidence"] = evidence
            out.append(E.Finding(threat.name, threat.severity.value, block, h.detail, h.excerpt, fields))
        return out


class DetectingEngine:
    """A worker engine that runs the packet-level threats on every packet before the inner engine."""

    def __init__(self, inner: Engine, threats: ThreatEngine) -> None:
        self.inner = inner
        self.threats = threats

    def on_packet(
        self, packet: bytes, meta: PacketMeta, key: FlowKey, direction: Direction, now: float
    ) -> tuple[WorkerVerdict, int]:
        try:
            verdict = self.threats.inspect_packet(packet, meta, key, direction, now)
        except Exception:  # a detector bug must not take the packet path down: counted, DPI decides
            self.threats.counters[A.DETECT_EXCEPTION] += 1
            verdict = None
        if verdict is not None and verdict is not WorkerVerdict.PASS:
            return verdict, 0
        return self.inner.on_packet(packet, meta, key, direction, now)

    def expire(self, now: float) -> None:
        self.threats.tick(now)
        self.inner.expire(now)

    def stats(self) -> dict[str, int]:
        """The inner engine's counters, the threat counters (`threats.<name>`) and the detection
        anomalies (table evictions, blocked-source drops) under their catalogue names."""
        out = dict(self.inner.stats())
        out.update(self.threats.stats())
        return out

    def close_all(self) -> None:
        """End every flow of the inner engine (replay end, worker shutdown) and send pending summaries."""
        close = getattr(self.inner, "close_all", None)
        if close is not None:
            close()
        self.threats.aggregator.flush(0.0, force=True)

    def set_tables(self, tables: PolicyTables | None) -> None:
        """New policy tables for both engines (the threat settings stay; see `set_policy`)."""
        if tables is not None:
            self.threats.set_policy(self.threats.policy, tables)
        set_tables = getattr(self.inner, "set_tables", None)
        if set_tables is not None:
            set_tables(tables)

    def set_policy(self, policy: ThreatPolicy, tables: PolicyTables | None = None) -> None:
        """A new policy generation: threat settings and sensors, and the tables for both engines."""
        self.threats.set_policy(policy, tables)
        set_tables = getattr(self.inner, "set_tables", None)
        if tables is not None and set_tables is not None:
            set_tables(tables)


def build_engine(
    dpi_settings: Any,
    tables: PolicyTables | None,
    emit: Callable[[dict[str, Any]], None],
    node: str,
    policy: ThreatPolicy = EMPTY_POLICY,
    limits: DetectLimits | None = None,
    on_event: Callable[[FlowContext, Any], None] | None = None,
    on_flow_end: Callable[[FlowContext], None] | None = None,
    report_l4: bool = False,
    on_fqdn: Callable[[list[tuple[str, bytes, float]]], None] | None = None,
) -> DetectingEngine:
    """The worker's engine with threat detection: packet-level threats in front of a DpiEngine whose
    detector hooks are the threat engine's. Every event (the DPI engine's too) goes through the threat
    aggregator to `emit`."""
    from workers.dpi.engine import DpiEngine

    threats = ThreatEngine(node, emit, policy, tables, limits)

    def flow_end(ctx: FlowContext) -> None:
        threats.on_flow_end(ctx)
        if on_flow_end is not None:
            on_flow_end(ctx)

    dpi = DpiEngine(
        dpi_settings,
        tables,
        threats.aggregator.emit,
        node,
        detectors=[threats.detector()],
        on_event=on_event,
        on_flow_end=flow_end,
        report_l4=report_l4,
        on_fqdn=on_fqdn,
    )
    return DetectingEngine(dpi, threats)


def threat_documents_from_snapshot(snapshot: Any) -> dict[str, Any]:
    """The threat settings of a `policy.model.PolicySnapshot` as the document `compile_group_settings`
    takes: `{"default": {...}, "groups": {...}}`. The snapshot names threats either as the catalogue does
    (`syn_flood`) or with a category prefix (`tcp.syn_flood`); its thresholds mapping is flattened into
    the threat's settings; `threats` is the default of every group, `group_threats` overlays it."""

    def documents(settings: Any) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        for name, setting in settings.items():
            short = name.rsplit(".", 1)[-1] if name not in C.BY_NAME else name
            entry: dict[str, Any] = {"enabled": setting.enabled}
            if setting.action is not None:  # None: the catalogue's default action
                entry["action"] = str(setting.action)
            entry.update(dict(setting.thresholds))
            doc[short] = entry
        return doc

    per_group = {group: documents(s) for group, s in getattr(snapshot, "group_threats", {}).items()}
    return {"default": documents(snapshot.threats), "groups": per_group}


def threat_settings_from_snapshot(snapshot: Any) -> GroupThreatSettings:
    """The compiled per-group threat settings of a snapshot (no sensors: what the readers' guard needs)."""
    return compile_group_settings(threat_documents_from_snapshot(snapshot))


def threat_policy_from_snapshot(snapshot: Any, use_hyperscan: bool = True) -> ThreatPolicy:
    """Compile the threat part of a `policy.model.PolicySnapshot` (its threat settings and sensors).
    Raises ThreatSettingsError/SensorError (ValueError) naming the bad
    threat, key or pattern."""
    return compile_threat_policy(
        snapshot.version,
        threat_documents_from_snapshot(snapshot),
        sensor_documents_from_snapshot(snapshot),
        use_hyperscan,
    )


def sensor_documents_from_snapshot(snapshot: Any) -> list[dict[str, Any]]:
    """The sensors of a snapshot as the documents `compile_sensors` takes: each snapshot sensor (one
    context, a list of patterns, groups or none for all) becomes one sensor whose rules are its patterns."""
    return [
        {
            "name": s.name,
            "action": str(s.action),
            "groups": list(s.groups),
            "rules": [
                {"name": f"{s.name}#{i}", "pattern": pattern, "context": str(s.context)}
                for i, pattern in enumerate(s.patterns)
            ],
        }
        for s in snapshot.sensors
    ]


def threat_policy_problem(snapshot: Any) -> str:
    """Why the snapshot's threat settings or sensors would not compile in the workers ("" if they do):
    checked here so such a policy is rejected whole, not half applied. Python `re` stands in for
    Hyperscan, which the workers compile with, to keep the check quick."""
    try:
        threat_policy_from_snapshot(snapshot, use_hyperscan=False)
    except Exception as exc:  # ValueError naming the key or pattern; re.error for a pattern it missed
        return f"threat settings or sensors: {exc}"
    return ""


# The published form: the policy process publishes, with each generation of the tables, a document whose
# "threats" is `threat_documents_from_snapshot`'s and "sensors" `sensor_documents_from_snapshot`'s (the
# node host derives it), and readers and workers compile from that plain document.


def threat_settings_from_document(document: Mapping[str, Any]) -> GroupThreatSettings:
    """The readers' guard settings from a policy's derived document (`threats`; none: the defaults)."""
    return compile_group_settings(document.get("threats"))


def threat_policy_from_document(document: Mapping[str, Any], use_hyperscan: bool = True) -> ThreatPolicy:
    """The workers' threat settings and sensors from a policy's derived document (`version`, `threats`,
    `sensors`). Raises ThreatSettingsError/SensorError (ValueError) naming the bad threat, key or pattern."""
    return compile_threat_policy(
        int(document.get("version", 0)), document.get("threats"), document.get("sensors"), use_hyperscan
    )


def threat_document_problem(document: Mapping[str, Any]) -> str:
    """Why a derived document's threat settings or sensors would not compile in the workers ("" if they
    do); Python `re` stands in for Hyperscan to keep the check quick."""
    try:
        threat_policy_from_document(document, use_hyperscan=False)
    except Exception as exc:  # ValueError naming the key or pattern; re.error for a pattern it missed
        return f"threat settings or sensors: {exc}"
    return ""
