"""The DPI engine of one worker: defragmentation → flow → reassembly → parsers → app-aware decision.

Sans-io: no sockets, no clock. The worker process (or `enforcer replay`) hands it packets with the time,
and gets back `(WorkerVerdict, rule_id)` for each; policy events go out through the `emit` callback.

Verdicts:
- while the application is unknown: PASS (keep sending the flow's packets);
- identified: with tables, `tables.decide_app(...)` decides. Allowed → ALLOW_FLOW (the reader offloads
  the flow), or PASS while detectors still need to see the flow (`inspect_after_identify` with any
  detector); denied → RESET_FLOW for TCP, BLOCK_FLOW otherwise, and a `violation` event. Without
  tables (identify and report only) an identified flow is allowed;
- never identified within `identify_bytes`/`identify_packets`, or no candidate parser left: the
  configured `unidentified_fallback` (counted as `dpi.app.unidentified`); a stream hole or buffer cap
  and a parser exception use their own fallbacks;
- a detector finding with `block` set in protect mode: RESET_FLOW (TCP) / BLOCK_FLOW, `threat` event.

Detector hooks (see `workers.dpi.context` for the exact types):

    on_packet_hook(ctx: FlowContext, meta: PacketMeta, packet: bytes, now: float) -> list[Finding]
    on_event_hook(ctx: FlowContext, event: ParserEvent, now: float) -> list[Finding]

passed as `DpiEngine(..., detectors=[Detector(name, on_packet=..., on_event=...)])`.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Sequence

from core import anomalies as A
from core.events import EventType, flow_fields, make_event
from core.flow import Direction, FlowKey, flow_key
from core.lookup import Action, Decision, Mode, PolicyTables, Report, normalize_host
from core.packet import (
    IPPROTO_TCP,
    IPPROTO_UDP,
    TCP_ACK,
    TCP_FIN,
    TCP_RST,
    TCP_SYN,
    Fragment,
    PacketMeta,
    decode,
)
from core.verdict import WorkerVerdict
from workers.dpi import registry
from workers.dpi.context import Detector, FlowContext
from workers.dpi.defrag import Defragmenter
from workers.dpi.events import DnsMessage, Finding, HttpRequest, HttpResponse, ParserEvent, TlsClientHello
from workers.dpi.fqdn import FqdnCache
from workers.dpi.parsers.base import FeedResult, Outcome, Parser, ParserSpec, Side
from workers.dpi.settings import DpiSettings
from workers.dpi.stream import TcpStream

EventObserver = Callable[[FlowContext, ParserEvent], None]
FlowObserver = Callable[[FlowContext], None]
FqdnObserver = Callable[[list[tuple[str, bytes, float]]], None]

PROBE_BYTES = 64  # bytes of a flow's first payload shown to the probes
MAX_PARSER_ORDERS = 4096  # (transport, server port) → parsers in the order they are tried, kept
EXPIRE_BUDGET = 4096  # flows examined per expire() call, so one call stays short


class _Candidate:
    __slots__ = ("spec", "parser", "pending", "events")

    def __init__(self, spec: ParserSpec, parser: Parser) -> None:
        self.spec = spec
        self.parser = parser
        # per Side: unconsumed bytes at [side]; at [2 + side] the length pending must reach before the
        # next feed call is useful (one list: small idle flows)
        self.pending: list = [b"", b"", 0, 0]
        self.events: list[ParserEvent] = []  # held until this candidate finalizes


class _Flow:
    __slots__ = (
        "tcp",
        "ctx",
        "client_stream",
        "server_stream",
        "candidates",
        "active",
        "inspect",
        "fin",
        "probed",
        "rst",
        "payload_packets",
        "payload_bytes",
        "server_answered",
        "awaiting_server",
    )

    def __init__(self, ctx: FlowContext, tcp: bool, s: DpiSettings) -> None:
        self.tcp = tcp
        self.ctx = ctx
        # TCP reassembly per side (None for other transports, and once the flow's state is released)
        self.client_stream = TcpStream(s.max_buffered_bytes, s.max_ooo_segments) if tcp else None
        self.server_stream = TcpStream(s.max_buffered_bytes, s.max_ooo_segments) if tcp else None
        self.candidates: list[_Candidate] | None = None  # None: not hired yet
        self.active: _Candidate | None = None
        self.inspect = True  # parsers still run
        self.fin = 0  # bit per Side: FIN seen
        self.probed = 0  # bit per Side: candidates probed with that side's first bytes
        self.rst = False
        self.payload_packets = 0
        self.payload_bytes = 0
        self.server_answered = False  # an HTTP response head was seen (its server software is known)
        self.awaiting_server = False  # the rule needs that server software: decide on the response


# Keys the engine sets on a threat event; a finding's own `fields` may not override them.
_THREAT_KEYS = frozenset(
    (
        "type",
        "type_",
        "time",
        "node",
        "id",
        "name",
        "severity",
        "action",
        "flow",
        "app",
        "message",
        "excerpt",
        "now",
    )
)
_NO_EVENTS: list[ParserEvent] = []
_OUTCOMES = frozenset((Outcome.KEEP, Outcome.FINAL, Outcome.GIVE_UP))
_FALLBACK_VERDICT = {
    "allow": WorkerVerdict.ALLOW_FLOW,
    "block": WorkerVerdict.BLOCK_FLOW,
    "reset": WorkerVerdict.RESET_FLOW,
}


class DpiEngine:
    def __init__(
        self,
        settings: DpiSettings,
        tables: PolicyTables | None,
        emit: Callable[[dict], None],
        node: str,
        detectors: Sequence[Detector] = (),
        parsers: tuple[ParserSpec, ...] = registry.PARSERS,
        on_event: EventObserver | None = None,
        on_flow_end: FlowObserver | None = None,
        report_l4: bool = False,
        on_fqdn: FqdnObserver | None = None,
    ) -> None:
        registry.validate(parsers)
        self.s = settings
        self.tables = tables
        self.emit = emit
        self.node = node
        self.detectors = tuple(detectors)
        self.packet_hooks = tuple(d for d in self.detectors if d.on_packet is not None)
        self.event_hooks = tuple(d for d in self.detectors if d.on_event is not None)
        self._packet_hook_calls = tuple(d.on_packet for d in self.packet_hooks if d.on_packet is not None)
        self._event_hook_calls = tuple(d.on_event for d in self.event_hooks if d.on_event is not None)
        self._orders: dict[tuple[bool, int], tuple[ParserSpec, ...]] = {}
        self.on_event = on_event
        self.on_flow_end = on_flow_end
        self.on_fqdn = on_fqdn  # (name, address, ttl) learnt from DNS answers, e.g. for FQDN groups
        self.report_l4 = report_l4  # the reader reports L3/L4 decisions; replay has no reader and asks us
        self.parsers = {t: tuple(p for p in parsers if p.transport == t) for t in registry.TRANSPORTS}
        self.server_ports = registry.server_ports(parsers)
        # Insertion order = last packet order (a flow is re-inserted on each packet): least recent first.
        # A plain dict: ~half the per-entry memory of an OrderedDict.
        self.flows: dict[FlowKey, _Flow] = {}
        self.counters: Counter[str] = Counter()
        self.n_packets = 0  # a plain attribute: counted on every packet
        self.defrag = Defragmenter(settings, self.count)
        self.fqdn = FqdnCache(settings, self.count)

    # ------------------------------------------------------------------------------------ public API

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def stats(self) -> dict[str, int]:
        out = dict(self.counters)
        out["packets"] = self.n_packets
        out["flows"] = len(self.flows)
        out["frag_datagrams"] = len(self.defrag)
        out["fqdn_entries"] = len(self.fqdn)
        return out

    def set_tables(self, tables: PolicyTables | None) -> None:
        """Switch policy; flows already decided keep their verdict (the reader re-checks generations)."""
        self.tables = tables

    def on_packet(
        self, packet: bytes, meta: PacketMeta, key: FlowKey, direction: Direction, now: float
    ) -> tuple[WorkerVerdict, int]:
        self.n_packets += 1
        if meta.anomaly:
            self.count(meta.anomaly)
            return WorkerVerdict.PASS, 0
        if meta.fragment is not Fragment.NONE:
            self.counters["fragments"] += 1
            rebuilt = self.defrag.add(packet, meta, now)
            if rebuilt is None:
                return WorkerVerdict.PASS, 0
            self.counters["reassembled_datagrams"] += 1
            packet = rebuilt
            meta = decode(rebuilt)
            if meta.anomaly:
                self.count(meta.anomaly)
                return WorkerVerdict.PASS, 0
            key, direction = flow_key(meta)
        flows = self.flows
        flow = flows.pop(key, None)
        if (
            flow is not None
            and flow.tcp
            and meta.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
            and (flow.rst or flow.fin == 3)
        ):
            # A new connection reusing the ports of one that closed: the old flow ends here.
            flows[key] = flow
            self._end(key, A.DPI_FLOW_REUSED)
            flow = None
        if flow is None:
            flow = self._new_flow(meta, key, direction, now)
            if meta.proto != IPPROTO_TCP and meta.proto != IPPROTO_UDP:
                flow.inspect = False  # ICMP and other transports: no application to identify
                self._fallback(flow, self.s.unidentified_fallback, A.DPI_UNIDENTIFIED, now)
        flows[key] = flow  # (re)inserted last: the dict stays ordered by last packet
        ctx = flow.ctx
        ctx.last_seen = now
        ctx.direction = direction
        side = Side.CLIENT if direction == ctx.client_direction else Side.SERVER
        ctx.side = side
        ctx.packets[side] += 1
        end = meta.ip_len if meta.ip_len < len(packet) else len(packet)
        plen = end - meta.payload_offset
        if plen > 0:
            ctx.bytes[side] += plen
            flow.payload_packets += 1
            flow.payload_bytes += plen
        if not flow.inspect and not self.packet_hooks:
            # Fast path: a decided flow nobody inspects any more (packets still in flight, or replay).
            if flow.tcp:
                flags = meta.tcp_flags
                if flags & TCP_RST:
                    flow.rst = True
                if flags & TCP_FIN:
                    flow.fin |= 1 << side
            return ctx.verdict, ctx.rule_id
        for hook in self._packet_hook_calls:
            try:
                findings = hook(ctx, meta, packet, now)
            except Exception:
                self.count(A.DPI_DETECTOR_EXCEPTION)
                continue
            for f in findings or ():
                self._threat(flow, f, now)
        payload = packet[meta.payload_offset : end] if plen > 0 else b""
        data = self._tcp(flow, side, meta, payload) if flow.tcp else payload
        if data and flow.inspect:
            self._feed(flow, side, data, now, datagram=not flow.tcp)
        if ctx.decided:
            if flow.client_stream is not None and not self._wants_more(flow):
                self._release(flow)
        elif flow.payload_bytes > self.s.identify_bytes or flow.payload_packets > self.s.identify_packets:
            self._fallback(flow, self.s.unidentified_fallback, A.DPI_UNIDENTIFIED, now)
        return ctx.verdict, ctx.rule_id

    def expire(self, now: float) -> None:
        self.defrag.expire(now)
        self.fqdn.expire(now)
        shortest = min(self.s.tcp_closed_timeout, self.s.tcp_embryonic_timeout, self.s.udp_timeout)
        for key in list(itertools.islice(self.flows, EXPIRE_BUDGET)):
            flow = self.flows[key]
            idle = now - flow.ctx.last_seen
            if idle < shortest:
                break  # ordered by last packet: the rest are younger
            if idle >= self._timeout(flow):
                self._end(key, A.FLOW_EXPIRED)

    def close_all(self) -> None:
        """End every flow (replay end, worker shutdown), telling `on_flow_end`."""
        for key in list(self.flows):
            self._end(key, "")

    # ----------------------------------------------------------------------------------------- flows

    def _timeout(self, flow: _Flow) -> float:
        if not flow.tcp:
            return self.s.udp_timeout
        if flow.rst or flow.fin == 3:
            return self.s.tcp_closed_timeout
        if flow.ctx.packets[Side.SERVER] == 0 or flow.payload_packets == 0:
            return self.s.tcp_embryonic_timeout
        return self.s.tcp_idle_timeout

    def _end(self, key: FlowKey, why: str) -> None:
        flow = self.flows.pop(key)
        if why:
            self.count(why)
        if self.on_flow_end is not None:
            self.on_flow_end(flow.ctx)

    def _new_flow(self, meta: PacketMeta, key: FlowKey, direction: Direction, now: float) -> _Flow:
        if len(self.flows) >= self.s.max_flows:
            oldest = next(iter(self.flows))
            self._end(oldest, A.DPI_FLOW_EVICTED)
        midstream = False
        client_is_src = True
        ports = self.server_ports["tcp" if meta.proto == IPPROTO_TCP else "udp"]
        if meta.proto == IPPROTO_TCP:
            syn, ack = meta.tcp_flags & TCP_SYN, meta.tcp_flags & TCP_ACK
            if syn and ack:
                client_is_src = False
            elif not syn:
                midstream = True
                client_is_src = self._guess_client_is_src(meta, ports)
                self.count(A.DPI_STREAM_MIDSTREAM)
        elif meta.proto == IPPROTO_UDP:
            client_is_src = self._guess_client_is_src(meta, ports) if meta.sport in ports else True
        client_dir = direction if client_is_src else Direction(1 - direction)
        if client_is_src:
            caddr, cport, saddr, sport = meta.src, meta.sport, meta.dst, meta.dport
        else:
            caddr, cport, saddr, sport = meta.dst, meta.dport, meta.src, meta.sport
        ctx = FlowContext(key, meta.family, client_dir, caddr, cport, saddr, sport, now, now, midstream)
        ctx.server_names = self.fqdn.names(saddr, now)
        flow = _Flow(ctx, meta.proto == IPPROTO_TCP, self.s)
        if self.tables is not None:
            d = self.tables.decide(meta.family, caddr, saddr, meta.proto, sport)
            ctx.mode = int(d.mode)
            ctx.rule_id = d.rule_id
            if d.final:
                self._l4_final(flow, d, now)
        if midstream and not self.s.midstream_pickup:
            flow.inspect = False
            self._fallback(flow, self.s.unidentified_fallback, A.DPI_STREAM_MIDSTREAM, now)
        self.flows[key] = flow
        self.counters["flows_created"] += 1
        return flow

    @staticmethod
    def _guess_client_is_src(meta: PacketMeta, ports: frozenset[int]) -> bool:
        """Mid-stream: the side on a known server port is the server; else the lower port is."""
        if meta.dport in ports and meta.sport not in ports:
            return True
        if meta.sport in ports and meta.dport not in ports:
            return False
        return meta.dport <= meta.sport

    def _tcp(self, flow: _Flow, side: Side, meta: PacketMeta, payload: bytes) -> bytes:
        flags = meta.tcp_flags
        if flags & TCP_RST:
            flow.rst = True
        if flags & TCP_FIN:
            flow.fin |= 1 << side
        stream = flow.client_stream if side is Side.CLIENT else flow.server_stream
        if stream is None:
            return b""  # released: the flow is decided and nobody needs its bytes
        if flags & TCP_SYN:
            stream.syn(meta.seq)
            return b""
        if not payload:
            return b""
        data = stream.segment(meta.seq, payload)
        for name in stream.anomalies:
            self.count(name)
        if A.DPI_STREAM_GAP in stream.anomalies and flow.inspect:
            # A parser cannot follow a stream with a hole: inspection of this flow ends here.
            flow.inspect = False
            if not flow.ctx.decided:
                self._fallback(
                    flow, self.s.buffer_full_fallback, A.DPI_STREAM_BUFFER_FULL, flow.ctx.last_seen
                )
            return b""
        return data

    # --------------------------------------------------------------------------------------- parsers

    def _probe(self, spec: ParserSpec, side: Side, head: bytes) -> bool:
        try:
            return bool(spec.probe(side, head[:PROBE_BYTES]))
        except Exception:
            self.count(A.DPI_PARSER_EXCEPTION)
            return False

    def _ordered(self, tcp: bool, port: int) -> tuple[ParserSpec, ...]:
        """The parsers to try on a new flow of this transport and server port, the port's own first (so
        they win ties); the same few ports come again and again, so the order is kept."""
        ordered = self._orders.get((tcp, port))
        if ordered is None:
            specs = self.parsers["tcp" if tcp else "udp"]
            ordered = tuple(s for s in specs if port in s.ports) + tuple(
                s for s in specs if port not in s.ports and not s.port_only
            )
            if len(self._orders) >= MAX_PARSER_ORDERS:
                self._orders.clear()
            self._orders[(tcp, port)] = ordered
        return ordered

    def _hire(self, flow: _Flow, side: Side, head: bytes) -> list[_Candidate]:
        """Candidates for a new flow: parsers of its transport whose probe accepts the first bytes seen."""
        head = head[:PROBE_BYTES]
        hired = []
        for spec in self._ordered(flow.tcp, flow.ctx.server_port):
            try:
                accepted = spec.probe(side, head)
            except Exception:
                self.count(A.DPI_PARSER_EXCEPTION)
                continue
            if accepted:
                hired.append(_Candidate(spec, spec.factory(self.s)))
        return hired

    def _feed(self, flow: _Flow, side: Side, data: bytes, now: float, datagram: bool) -> None:
        if flow.candidates is None and flow.active is None:
            flow.candidates = self._hire(flow, side, data)
            flow.probed = 1 << side
        elif flow.active is None and flow.candidates and not flow.probed & (1 << side):
            # The other side's first bytes: fire the candidates they disprove.
            flow.probed |= 1 << side
            flow.candidates = [c for c in flow.candidates if self._probe(c.spec, side, data)]
        if flow.active is None and not flow.candidates:
            flow.inspect = False
            self._fallback(flow, self.s.unidentified_fallback, A.DPI_UNIDENTIFIED, now)
            return
        if flow.active is not None:
            self._run(flow, flow.active, side, data, now, datagram)
            return
        assert flow.candidates is not None
        for cand in list(flow.candidates):
            self._run(flow, cand, side, data, now, datagram)
            if flow.active is not None:
                break
        if flow.active is None and not flow.candidates:
            flow.inspect = False
            self._fallback(flow, self.s.unidentified_fallback, A.DPI_UNIDENTIFIED, now)

    def _run(
        self, flow: _Flow, cand: _Candidate, side: Side, data: bytes, now: float, datagram: bool
    ) -> None:
        pending = cand.pending
        buf = pending[side] + data if pending[side] else data
        if len(buf) < pending[2 + side]:
            pending[side] = buf
            return
        try:
            res = cand.parser.feed(side, buf)
            if not isinstance(res, FeedResult) or not 0 <= res.consumed <= len(buf):
                raise ValueError("bad feed result")
            outcome = res.outcome
            if outcome not in _OUTCOMES:
                raise ValueError("bad outcome")
        except Exception:
            self.count(A.DPI_PARSER_EXCEPTION)
            self._drop(flow, cand, self.s.parser_error_fallback, A.DPI_PARSER_EXCEPTION, now)
            return
        consumed = res.consumed
        rest = b"" if datagram or consumed == len(buf) else buf[consumed:]
        pending[side] = rest
        pending[2 + side] = len(rest) + res.needed if res.needed > 0 else 0
        events = res.events
        if flow.active is cand:
            if events:
                self._deliver(flow, events, now)
        elif outcome is Outcome.FINAL:
            held = cand.events
            cand.events = _NO_EVENTS  # shared and never appended to: the winner holds nothing back
            flow.active = cand
            flow.candidates = None
            events = held + events
            self._note_names(flow, events)  # the decision may need the Host or SNI of these events
            self._identified(flow, cand.spec, now)
            self._deliver(flow, events, now)
        elif events and len(cand.events) < self.s.max_events_per_flow:
            cand.events.extend(events[: self.s.max_events_per_flow - len(cand.events)])
        if outcome is Outcome.GIVE_UP:
            self._drop(flow, cand, "", "", now)
            return
        if len(rest) > self.s.max_buffered_bytes:
            self.count(A.DPI_PARSER_BUFFER_FULL)
            self._drop(flow, cand, self.s.buffer_full_fallback, A.DPI_PARSER_BUFFER_FULL, now)

    def _drop(self, flow: _Flow, cand: _Candidate, fallback: str, reason: str, now: float) -> None:
        """Fire a candidate, or stop inspecting when it is the active parser."""
        if flow.active is cand:
            flow.inspect = False
            flow.active = None
            flow.candidates = []
            if not flow.ctx.decided and fallback:
                self._fallback(flow, fallback, reason, now)
            return
        if flow.candidates is not None and cand in flow.candidates:
            flow.candidates.remove(cand)

    @staticmethod
    def _note_names(flow: _Flow, events: list[ParserEvent]) -> None:
        """Keep the first request's Host, the client hello's SNI and the server software in the flow."""
        ctx = flow.ctx
        for ev in events:
            if isinstance(ev, HttpRequest):
                if not ctx.host:
                    ctx.host = ev.host
            elif isinstance(ev, HttpResponse):
                if ev.server_app and not ctx.server_app:
                    ctx.server_app = ev.server_app
                flow.server_answered = True
            elif isinstance(ev, TlsClientHello):
                if not ctx.sni:
                    ctx.sni = ev.sni

    def _deliver(self, flow: _Flow, events: list[ParserEvent], now: float) -> None:
        ctx = flow.ctx
        self._note_names(flow, events)
        if flow.awaiting_server and flow.server_answered and not ctx.decided:
            flow.awaiting_server = False
            self._decide_app(flow, ctx.app, "app", now)
        for ev in events:
            self.counters["events"] += 1
            if isinstance(ev, DnsMessage):
                learnt = self.fqdn.learn(ev, now)
                if learnt and self.on_fqdn is not None:
                    self.on_fqdn(learnt)
            if self.on_event is not None:
                self.on_event(ctx, ev)
            for hook in self._event_hook_calls:
                try:
                    findings = hook(ctx, ev, now)
                except Exception:
                    self.count(A.DPI_DETECTOR_EXCEPTION)
                    continue
                for f in findings or ():
                    self._threat(flow, f, now)

    # ------------------------------------------------------------------------------------- decisions

    def _flow_fields(self, ctx: FlowContext) -> dict:
        proto = ctx.key.proto
        return flow_fields(
            ctx.family, proto, ctx.client_addr, ctx.client_port, ctx.server_addr, ctx.server_port
        )

    def _identified(self, flow: _Flow, spec: ParserSpec, now: float) -> None:
        ctx = flow.ctx
        ctx.app = spec.name
        self.counters["identified"] += 1
        self.counters["app." + spec.name] += 1
        if not ctx.decided:
            self._decide_app(flow, spec.name, "app", now)

    def _decide_app(self, flow: _Flow, app: str, reason: str, now: float) -> None:
        """Ask the tables about the flow with its application (`""`: none identified, which matches no
        rule that names applications) and apply the answer."""
        ctx = flow.ctx
        tcp = flow.tcp
        keep_inspecting = self.s.inspect_after_identify and bool(self.detectors) and flow.inspect
        allow = WorkerVerdict.PASS if keep_inspecting else WorkerVerdict.ALLOW_FLOW
        if self.tables is None:
            self._decide(ctx, "allow", reason, allow)
            return
        # Only an HTTP flow's server can still name its software, and only while we wait for the app.
        wait = reason == "app" and app == "HTTP" and not flow.server_answered
        d = self.tables.decide_app(
            ctx.family,
            ctx.client_addr,
            ctx.server_addr,
            ctx.key.proto,
            ctx.server_port,
            app,
            normalize_host(ctx.host or ctx.sni),
            None if wait else ctx.server_app,
        )
        ctx.rule_id = d.rule_id
        if not d.final:  # the rule names the server's software: ask again on its response
            flow.awaiting_server = True
            ctx.mode = int(d.mode)
            self.counters["app_awaiting_server"] += 1
            return
        ctx.mode = int(d.mode)
        if d.action is Action.DENY:
            verdict = WorkerVerdict.RESET_FLOW if tcp else WorkerVerdict.BLOCK_FLOW
            self._decide(ctx, "reset" if tcp else "block", reason, verdict)
            flow.inspect = False
            self.counters["app_denied"] += 1
        else:
            self._decide(ctx, "allow", reason, allow)
            self.counters["app_allowed"] += 1
        if d.report is not Report.NONE or d.action is Action.DENY:
            self._report(ctx, d, app, now)

    def _l4_final(self, flow: _Flow, d: Decision, now: float) -> None:
        """The rule did not need the application: its answer stands. Parsing goes on for reports and
        detectors while packets keep coming (replay, inspect-all mode)."""
        ctx = flow.ctx
        tcp = flow.tcp
        if d.action is Action.DENY:
            self._decide(
                ctx,
                "reset" if tcp else "block",
                "l4",
                WorkerVerdict.RESET_FLOW if tcp else WorkerVerdict.BLOCK_FLOW,
            )
            flow.inspect = False
        else:
            keep = self.s.inspect_after_identify and bool(self.detectors)
            self._decide(ctx, "allow", "l4", WorkerVerdict.PASS if keep else WorkerVerdict.ALLOW_FLOW)
        if self.report_l4 and d.report is not Report.NONE:
            self._report(ctx, d, "", now)

    def _report(self, ctx: FlowContext, d: Decision, app: str, now: float) -> None:
        if d.report is Report.LEARNED:
            event = make_event(
                EventType.CONNECTION, self.node, now, client_group=d.src_group, server_group=d.dst_group,
                app=app, port=ctx.server_port, count=1, proto=ctx.key.proto, flow=self._flow_fields(ctx),
                learned=True,
            )  # fmt: skip
        else:
            event = make_event(
                EventType.VIOLATION, self.node, now, rule_id=d.rule_id, flow=self._flow_fields(ctx),
                action="deny" if d.action is Action.DENY else "allow", count=1, app=app,
                client_group=d.src_group, server_group=d.dst_group, mode=Mode(d.mode).name.lower(),
            )  # fmt: skip
        self.emit(event)

    def _wants_more(self, flow: _Flow) -> bool:
        """Does anyone still need this flow's parser events? Detectors, an event observer (replay), or
        the FQDN cache (DNS answers). Otherwise a decided flow keeps only its verdict."""
        if not flow.inspect:
            return False
        if self.detectors and self.s.inspect_after_identify:
            return True
        return self.on_event is not None or flow.ctx.app == "DNS"

    @staticmethod
    def _release(flow: _Flow) -> None:
        """Drop reassembly and parser state of a decided flow (keeps an idle flow small)."""
        flow.inspect = False
        flow.client_stream = flow.server_stream = None
        flow.active = None
        flow.candidates = []

    def _decide(self, ctx: FlowContext, decision: str, reason: str, verdict: WorkerVerdict) -> None:
        ctx.decided = True
        ctx.decision = decision
        ctx.reason = reason
        ctx.verdict = verdict

    def _fallback(self, flow: _Flow, fallback: str, reason: str, now: float) -> None:
        ctx = flow.ctx
        if ctx.decided:
            return
        if reason == A.DPI_UNIDENTIFIED:
            self.count(A.DPI_UNIDENTIFIED)
        self.counters["fallback." + fallback] += 1
        if fallback == "policy":
            self._decide_app(flow, ctx.app, reason, now)
            return
        verdict = _FALLBACK_VERDICT[fallback]
        if verdict is WorkerVerdict.RESET_FLOW and not flow.tcp:
            verdict = WorkerVerdict.BLOCK_FLOW
        if verdict is not WorkerVerdict.ALLOW_FLOW:
            flow.inspect = False
        elif self.s.inspect_after_identify and self.detectors and flow.inspect:
            verdict = WorkerVerdict.PASS
        self._decide(ctx, fallback, reason, verdict)
        if fallback != "allow":
            self.emit(
                make_event(
                    EventType.VIOLATION, self.node, now, rule_id=ctx.rule_id, flow=self._flow_fields(ctx),
                    action="deny", count=1, reason=reason, app=ctx.app,
                )
            )  # fmt: skip

    def _threat(self, flow: _Flow, f: Finding, now: float) -> None:
        ctx = flow.ctx
        self.counters["threats"] += 1
        act = f.block and ctx.mode == int(Mode.PROTECT)
        tcp = flow.tcp
        action = ("reset" if tcp else "block") if act else "alert"
        if act:
            self._decide(
                ctx, action, "threat:" + f.name, WorkerVerdict.RESET_FLOW if tcp else WorkerVerdict.BLOCK_FLOW
            )
            flow.inspect = False
        extra = {k: v for k, v in f.fields.items() if k not in _THREAT_KEYS}
        if len(extra) != len(f.fields):
            self.count("dpi.detector.reserved_field")
        self.emit(
            make_event(
                EventType.THREAT, self.node, now, name=f.name, severity=f.severity, action=action,
                flow=self._flow_fields(ctx), app=ctx.app, message=f.message, excerpt=f.excerpt, **extra,
            )
        )  # fmt: skip
