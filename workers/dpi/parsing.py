"""The parser session of a DPI flow: hire the parsers whose probes accept its first bytes, feed them
the reassembled bytes, fire those the bytes disprove, let one finalize, and deliver its events to the
observers and the detectors' event hooks.

A mixin of `workers.dpi.engine.DpiEngine` (one job per module; the engine owns the state): it decides
nothing itself, but calls the engine's decisions (`workers.dpi.decisions`) when a parser is identified
or none is left.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from core import anomalies as A
from workers.dpi import events as E
from workers.dpi.context import EventHook, FlowContext
from workers.dpi.events import DnsMessage, Finding, HttpRequest, HttpResponse, ParserEvent, TlsClientHello
from workers.dpi.flowstate import Candidate, DpiFlow
from workers.dpi.fqdn import FqdnCache
from workers.dpi.parsers.base import FeedResult, Outcome, ParserSpec, Side
from workers.dpi.settings import DpiSettings

# Events that are one request (or message) of a flow, counted against its inspection window.
WINDOW_REQUESTS = (
    E.HttpRequest, E.Http2Headers, E.SqlQuery, E.DnsMessage, E.RedisCommand, E.MongoMessage,
    E.CassandraFrame, E.KafkaRequest, E.MemcachedCommand, E.TnsPacket, E.TdsPacket,
)  # fmt: skip

# Later parts of long HTTP bodies handed to the detectors, and their bytes: what the body parts cost.
BODY_PARTS = "dpi.http.body_parts"
BODY_PART_BYTES = "dpi.http.body_part_bytes"

PROBE_BYTES = 64  # bytes of a flow's first payload shown to the probes
MAX_PARSER_ORDERS = 4096  # (transport, server port) → parsers in the order they are tried, kept
_NO_EVENTS: list[ParserEvent] = []
_OUTCOMES = frozenset((Outcome.KEEP, Outcome.FINAL, Outcome.GIVE_UP))


class ParserSession:
    """Parser hiring, feeding and event delivery (mixed into DpiEngine, which sets these attributes)."""

    s: DpiSettings
    parsers: dict[str, tuple[ParserSpec, ...]]
    _orders: dict[tuple[bool, int], tuple[ParserSpec, ...]]
    counters: Counter[str]
    fqdn: FqdnCache
    on_fqdn: Callable[[list[tuple[str, bytes, float]]], None] | None
    on_event: Callable[[FlowContext, ParserEvent], None] | None
    _event_hook_calls: tuple[EventHook, ...]

    if TYPE_CHECKING:  # the engine's (workers.dpi.engine, workers.dpi.decisions)

        def count(self, name: str, n: int = 1) -> None: ...
        def _fallback(self, flow: DpiFlow, fallback: str, reason: str, now: float) -> None: ...
        def _identified(self, flow: DpiFlow, spec: ParserSpec, now: float) -> None: ...
        def _decide_app(self, flow: DpiFlow, app: str, reason: str, now: float) -> None: ...
        def _threat(self, flow: DpiFlow, f: Finding, now: float) -> None: ...

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

    def _hire(self, flow: DpiFlow, side: Side, head: bytes) -> list[Candidate]:
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
                hired.append(Candidate(spec, spec.factory(self.s)))
        return hired

    def _feed(self, flow: DpiFlow, side: Side, data: bytes, now: float, datagram: bool) -> None:
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

    def _stream_ended(self, flow: DpiFlow, side: Side, now: float) -> None:
        """`side` closed (FIN) or the connection was reset: the active parser's `stream_ended(side)`, if it
        has one, may complete what it was waiting on (a last answer nothing follows)."""
        ended = getattr(flow.active.parser, "stream_ended", None) if flow.active is not None else None
        if ended is None:
            return
        try:
            events = ended(side)
        except Exception:
            self.count(A.DPI_PARSER_EXCEPTION)
            return
        if events:
            self._deliver(flow, events, now)

    def _run(
        self, flow: DpiFlow, cand: Candidate, side: Side, data: bytes, now: float, datagram: bool
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

    def _drop(self, flow: DpiFlow, cand: Candidate, fallback: str, reason: str, now: float) -> None:
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
    def _note_names(flow: DpiFlow, events: list[ParserEvent]) -> None:
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

    def _deliver(self, flow: DpiFlow, events: list[ParserEvent], now: float) -> None:
        ctx = flow.ctx
        self._note_names(flow, events)
        if flow.awaiting_server and flow.server_answered and not ctx.decided:
            flow.awaiting_server = False
            self._decide_app(flow, ctx.app, "app", now)
        for ev in events:
            self.counters["events"] += 1
            if isinstance(ev, WINDOW_REQUESTS):
                flow.requests += 1
            elif isinstance(ev, E.HttpBodyPart):
                self.counters[BODY_PARTS] += 1
                self.counters[BODY_PART_BYTES] += len(ev.data)
            elif isinstance(ev, E.SshAuthEnd):
                flow.ssh_auth_over = True
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
