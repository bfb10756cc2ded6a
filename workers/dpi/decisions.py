"""What the DPI engine decides for a flow and the events it raises: the app-aware rule once the
application is known (or the L3/L4 rule when it did not need one), the configured fallbacks
(unidentified, stream gap, buffer cap, parser error), a detector's finding in Protect mode, and the
`connection`/`violation`/`threat` events that go with them.

A mixin of `workers.dpi.engine.DpiEngine` (which sets the attributes declared here).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

from core import anomalies as A
from core.events import EventType, flow_fields, make_event
from core.lookup import Action, Decision, Mode, PolicyTables, Report, normalize_host
from core.verdict import WorkerVerdict
from workers.dpi.context import Detector, FlowContext
from workers.dpi.events import Finding
from workers.dpi.flowstate import DpiFlow
from workers.dpi.parsers.base import ParserSpec
from workers.dpi.settings import DpiSettings

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
_FALLBACK_VERDICT = {
    "allow": WorkerVerdict.ALLOW_FLOW,
    "block": WorkerVerdict.BLOCK_FLOW,
    "reset": WorkerVerdict.RESET_FLOW,
}


class Decisions:
    """Verdicts and policy/threat events of DPI flows (mixed into DpiEngine, which sets these)."""

    s: DpiSettings
    tables: PolicyTables | None
    emit: Callable[[dict], None]
    node: str
    detectors: Sequence[Detector]
    report_l4: bool
    counters: Counter[str]

    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] += n

    def _flow_fields(self, ctx: FlowContext) -> dict:
        proto = ctx.key.proto
        return flow_fields(
            ctx.family, proto, ctx.client_addr, ctx.client_port, ctx.server_addr, ctx.server_port
        )

    def _identified(self, flow: DpiFlow, spec: ParserSpec, now: float) -> None:
        ctx = flow.ctx
        ctx.app = spec.name
        self.counters["identified"] += 1
        self.counters["app." + spec.name] += 1
        if not ctx.decided:
            self._decide_app(flow, spec.name, "app", now)

    def _decide_app(self, flow: DpiFlow, app: str, reason: str, now: float) -> None:
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

    def _l4_final(self, flow: DpiFlow, d: Decision, now: float) -> None:
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

    def _decide(self, ctx: FlowContext, decision: str, reason: str, verdict: WorkerVerdict) -> None:
        ctx.decided = True
        ctx.decision = decision
        ctx.reason = reason
        ctx.verdict = verdict

    def _fallback(self, flow: DpiFlow, fallback: str, reason: str, now: float) -> None:
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

    def _threat(self, flow: DpiFlow, f: Finding, now: float) -> None:
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
