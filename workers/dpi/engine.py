"""The DPI engine of one worker: defragmentation → flow → reassembly → parsers → app-aware decision.

Sans-io: no sockets, no clock. The worker process (or `enforcer replay`) hands it packets with the time,
and gets back `(WorkerVerdict, rule_id)` for each; policy events go out through the `emit` callback.

Verdicts:
- while the application is unknown: PASS (keep sending the flow's packets);
- identified: with tables, `tables.decide_app(...)` decides. Allowed → ALLOW_FLOW (the reader offloads
  the flow), or PASS while detectors still need to see the flow (`inspect_after_identify` with any
  detector), until the protocol's inspection window closes (`workers.dpi.window`), then ALLOW_FLOW; denied → RESET_FLOW for TCP, BLOCK_FLOW otherwise, and a `violation` event. Without
  tables (identify and report only) an identified flow is allowed;
- never identified within `identify_bytes`/`identify_packets`, or no candidate parser left: the
  configured `unidentified_fallback` (counted as `dpi.app.unidentified`); a stream hole or buffer cap
  and a parser exception use their own fallbacks;
- a detector finding with `block` set in protect mode: RESET_FLOW (TCP) / BLOCK_FLOW, `threat` event.

Detector hooks (see `workers.dpi.context` for the exact types):

    on_packet_hook(ctx: FlowContext, meta: PacketMeta, packet: bytes, now: float) -> list[Finding]
    on_event_hook(ctx: FlowContext, event: ParserEvent, now: float) -> list[Finding]

passed as `DpiEngine(..., detectors=[Detector(name, on_packet=..., on_event=...)])`.

This module owns the flows (defragmentation, the flow table, TCP reassembly, expiry); the parser
session is `workers.dpi.parsing`, the decisions and their events `workers.dpi.decisions`.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Sequence

from core import anomalies as A
from core.flow import Direction, FlowKey, flow_key
from core.lookup import PolicyTables
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
from workers.dpi.decisions import Decisions
from workers.dpi.defrag import Defragmenter
from workers.dpi.events import ParserEvent
from workers.dpi.flowstate import DpiFlow
from workers.dpi.fqdn import FqdnCache
from workers.dpi.parsers.base import ParserSpec, Side
from workers.dpi.parsing import ParserSession
from workers.dpi.settings import DpiSettings
from workers.dpi.window import window_closed

# A flow with one of these is decided: a SYN on it opens a new connection.
_FINAL_VERDICTS = (WorkerVerdict.ALLOW_FLOW, WorkerVerdict.BLOCK_FLOW, WorkerVerdict.RESET_FLOW)
_BLOCKING_VERDICTS = (WorkerVerdict.BLOCK_FLOW, WorkerVerdict.RESET_FLOW)

EventObserver = Callable[[FlowContext, ParserEvent], None]
FlowObserver = Callable[[FlowContext], None]
FqdnObserver = Callable[[list[tuple[str, bytes, float]]], None]

EXPIRE_BUDGET = 4096  # flows examined per expire() call, so one call stays short


class DpiEngine(ParserSession, Decisions):
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
        self.flows: dict[FlowKey, DpiFlow] = {}
        self.counters: Counter[str] = Counter()
        self.n_packets = 0  # a plain attribute: counted on every packet
        self.defrag = Defragmenter(settings, self.count)
        self.fqdn = FqdnCache(settings, self.count)

    # ------------------------------------------------------------------------------------ public API

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
            and (flow.rst or flow.fin == 3 or flow.ctx.verdict in _FINAL_VERDICTS)
        ):
            # A new connection reusing the ports of one that closed, or of one already decided (the reader
            # sends such a SYN only when it started a new flow): the old flow ends here.
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
            if ctx.verdict is WorkerVerdict.PASS and ctx.decided:
                self._close_window(flow)
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
        # this side's first FIN, or the connection's first RST (flags of a non-TCP packet are 0)
        ending = meta.tcp_flags & (TCP_FIN | TCP_RST) and not (flow.rst or flow.fin & (1 << side))
        data = self._tcp(flow, side, meta, payload) if flow.tcp else payload
        if data and flow.inspect:
            self._feed(flow, side, data, now, datagram=not flow.tcp)
        if ending and flow.active is not None:
            self._stream_ended(flow, side, now)
        if ctx.decided:
            if ctx.verdict is WorkerVerdict.PASS:
                self._close_window(flow)
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

    def _timeout(self, flow: DpiFlow) -> float:
        if not flow.tcp:
            return self.s.udp_timeout
        if flow.rst or flow.fin == 3 or flow.ctx.verdict in _BLOCKING_VERDICTS:
            # a blocked flow's later packets end in the kernel (dropped, reset): its end is never seen here,
            # and held for the idle hour every blocked attack grew the table
            return self.s.tcp_closed_timeout
        if flow.ctx.verdict is WorkerVerdict.ALLOW_FLOW:
            # offloaded: held for the idle hour, every short connection of a busy node grew the table
            return self.s.tcp_offloaded_timeout
        if flow.ctx.packets[Side.SERVER] == 0 or flow.payload_packets == 0:
            return self.s.tcp_embryonic_timeout
        return self.s.tcp_idle_timeout

    def _end(self, key: FlowKey, why: str) -> None:
        flow = self.flows.pop(key)
        if why:
            self.count(why)
        if self.on_flow_end is not None:
            self.on_flow_end(flow.ctx)

    def _new_flow(self, meta: PacketMeta, key: FlowKey, direction: Direction, now: float) -> DpiFlow:
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
        flow = DpiFlow(ctx, meta.proto == IPPROTO_TCP, self.s)
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

    def _tcp(self, flow: DpiFlow, side: Side, meta: PacketMeta, payload: bytes) -> bytes:
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

    def _close_window(self, flow: DpiFlow) -> None:
        """An allowed flow still inspected for threats and sensors (PASS) is offloaded (ALLOW_FLOW) once
        its protocol's inspection window closes (`workers.dpi.window`)."""
        ctx = flow.ctx
        if ctx.decision != "allow":
            return
        closed = window_closed(flow, self.s)
        if closed is not None:
            self.count(closed)
            ctx.verdict = WorkerVerdict.ALLOW_FLOW
            flow.inspect = False

    def _wants_more(self, flow: DpiFlow) -> bool:
        """Does anyone still need this flow's parser events? Detectors, an event observer (replay), or
        the FQDN cache (DNS answers). Otherwise a decided flow keeps only its verdict."""
        if not flow.inspect:
            return False
        if self.detectors and self.s.inspect_after_identify:
            return True
        return self.on_event is not None or flow.ctx.app == "DNS"

    @staticmethod
    def _release(flow: DpiFlow) -> None:
        """Drop reassembly and parser state of a decided flow (keeps an idle flow small)."""
        flow.inspect = False
        flow.client_stream = flow.server_stream = None
        flow.active = None
        flow.candidates = []
