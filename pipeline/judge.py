"""The reader's sans-io core: one packet in, what to do with it out.

No sockets, no queue, no clock: the reader shell passes the time in and carries out the answer (a kernel
verdict now, or "send to the flow's worker"). The same core serves `enforcer replay` and the tests.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable
from typing import Any

from core.config import DROP
from core.events import EventType, flow_fields, make_event
from core.flow import Direction, FlowKey, flow_key, worker_for
from core.lookup import Action, Decision, Mode, PolicyTables, Report
from core.packet import (
    ICMP_ECHO_REQUEST,
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
from pipeline import guard as G
from pipeline.flowtable import NO_WORKER, Flow, FlowState, FlowTable, opening_isn, reopens
from pipeline.settings import ReaderConfig


class Act(enum.IntEnum):
    PASS = 0  # let this packet through; the flow is not final
    ALLOW = 1  # let it through and offload the connection (final)
    DROP = 2  # drop this packet only
    BLOCK = 3  # drop it and every later packet of the connection in the kernel (final)
    RESET = 4  # BLOCK, and reset a TCP connection both ways
    INSPECT = 5  # send the packet to the flow's worker and wait for its verdict
    # Let it through now and send it to the flow's worker without waiting (a TCP packet of an inspected
    # flow with no payload: no verdict of the worker could change, but its stream state needs the packet).
    PASS_LEARN = 6
    # PASS_LEARN for a bare ACK, and the kernel passes the connection's later bare ACKs itself (they carry
    # nothing a worker needs once it has seen the handshake complete: `node.netfilter`, quiet ACKs).
    LEARN_QUIET = 7


# The reader's act for each WorkerVerdict value, indexed by the value (faster than building the enum).
_FROM_WORKER = tuple(
    {
        WorkerVerdict.PASS: Act.PASS,
        WorkerVerdict.ALLOW_FLOW: Act.ALLOW,
        WorkerVerdict.DROP: Act.DROP,
        WorkerVerdict.BLOCK_FLOW: Act.BLOCK,
        WorkerVerdict.RESET_FLOW: Act.RESET,
    }[v]
    for v in sorted(WorkerVerdict)
)

# The TCP flag sets of an ordinary packet without payload (SYN, SYN/ACK, bare ACK, FIN, RST; PSH, URG,
# ECE and CWR aside). Any other set (SYN/FIN, none, …) is a bad packet the worker's threats may act on.
_CONTROL_FLAGS = TCP_SYN | TCP_ACK | TCP_FIN | TCP_RST
_PLAIN_NO_PAYLOAD = frozenset(
    (TCP_SYN, TCP_SYN | TCP_ACK, TCP_ACK, TCP_FIN | TCP_ACK, TCP_RST, TCP_RST | TCP_ACK)
)

_RULE_COUNTER: dict[int, str] = {}  # rule id → its hit counter's name
_NEW_FLOW_COUNTER = {1: "flow.new.icmp", 6: "flow.new.tcp", 17: "flow.new.udp", 58: "flow.new.icmpv6"}
# Flows examined per sweep call; the reader calls sweep about once a second.
SWEEP_BUDGET = 4096
# Distinct aggregated events a reader holds between two flushes; more are counted as dropped.
MAX_PENDING_EVENTS = 4096


def _oriented(meta: PacketMeta, from_client: bool) -> tuple[bytes, int, bytes, int]:
    """(client, client port, server, server port) of a packet of a known flow, whichever way it goes."""
    if from_client:
        return meta.src, meta.sport, meta.dst, meta.dport
    return meta.dst, meta.dport, meta.src, meta.sport


class Judge:
    def __init__(
        self,
        config: ReaderConfig,
        tables: PolicyTables,
        seed: int,
        node: str,
        reader: int = 0,
    ) -> None:
        self.config = config
        self.tables = tables
        self.seed = seed
        self.node = node
        self.reader = reader
        self.flows = FlowTable(config.flows)
        self._find_flow = self.flows.lookup
        self.workers = config.workers.count
        self.inspect_mode = config.workers.inspect
        self._inspect_all = self.inspect_mode == "all"
        self._inspect_new = self.inspect_mode == "new"
        self._quiet_acks = config.netfilter.quiet_acks
        self.malformed_act = Act.DROP if config.failure.malformed == DROP else Act.PASS
        self.no_policy_act = Act.DROP if config.failure.no_policy == DROP else Act.PASS
        self.counters: Counter[str] = Counter()
        self._revalidating = 0  # the generation whose offloaded flows are being re-decided
        self._stale: list[FlowKey] = []
        self._events: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._threat_events: list[dict[str, Any]] = []
        self.guard = G.Guard(config.guard, node, self._threat_event) if config.guard.enabled else None
        # The guard's clock: `now` (monotonic in the reader) plus this, so its events carry wall time.
        self.wall_offset = 0.0

    # ---- packets -------------------------------------------------------------------------------

    def judge(self, payload: bytes, now: float) -> tuple[Act, PacketMeta, FlowKey | None, Flow | None]:
        meta = decode(payload)
        if meta.anomaly:
            self.counters[meta.anomaly] += 1
            return self.malformed_act, meta, None, None
        generation = self.tables.generation()
        if generation == 0:
            self.counters["policy.none"] += 1
            return self.no_policy_act, meta, None, None
        key, direction = flow_key(meta)
        flow = self._find_flow(key)
        isn = opening_isn(meta)
        if flow is not None and isn >= 0 and reopens(flow, isn):
            # A new connection on the ports of a decided one: it is judged afresh, never given the old
            # verdict (our chain cleared the old connmark bits for the same reason, `node.netfilter`).
            self.flows.remove(key)
            self.counters["flow.reopened"] += 1
            flow = None
        if flow is None:
            guard = self.guard
            wall = now + self.wall_offset
            if guard is not None and guard.blocked(meta.src, wall):
                return Act.DROP, meta, key, None
            # "flow.new" is their sum (`stats`): one counter less per connection
            self.counters[_NEW_FLOW_COUNTER.get(meta.proto, "flow.new.other")] += 1
            # The first packet's direction is the client's.
            decision = self.tables.decide(meta.family, meta.src, meta.dst, meta.proto, meta.dport)
            # `_state(decision, new=True)`, inlined for the path every connection takes
            if self._inspect_all or not decision.final:
                state = FlowState.INSPECT
            elif decision.action is Action.ALLOW:
                state = FlowState.INSPECT if self._inspect_new else FlowState.ALLOWED
            else:
                state = FlowState.BLOCKED
            # Every connection's first packet meets the guard, which counts the connection-attempt threats
            # (workers do not count them again). What it drops leaves no flow behind and no policy report
            # (a flood would fill both).
            guarded = G.PASS
            if guard is not None:
                guarded = guard.check(meta, key, decision, wall, payload)
                if guarded == G.DROP:
                    return Act.DROP, meta, key, None
            # The worker is chosen when the flow first goes to one (`_to_worker`): a flow decided here at
            # once (most, with `inspect = "app"`) never needs the hash.
            flow = Flow(direction, NO_WORKER, now, isn)
            self.flows.add(key, flow)
            self._settle(flow, decision, state, meta, meta.src, meta.sport, meta.dst, meta.dport)
            if guard is not None and state is not FlowState.BLOCKED:
                if guarded == G.WATCH:
                    flow.watch = True
                elif meta.icmp_type >= 0 and meta.icmp_type == ICMP_ECHO_REQUEST[meta.family]:
                    if guard.watches_echo(decision):
                        flow.watch = True
        elif flow.generation != generation and not flow.judged:
            client, cport, server, port = _oriented(meta, direction == flow.client_dir)
            decision = self.tables.decide(meta.family, client, server, meta.proto, port)
            if flow.state is not FlowState.INSPECT:
                self._settle(
                    flow, decision, self._state(decision, new=False), meta, client, cport, server, port
                )
            elif decision.final and decision.action is Action.DENY:
                # A flow still at its worker (inspected by default, or waiting for its application) that
                # the new policy denies at L3/L4: cut now, not when its worker would have finished.
                self._settle(flow, decision, FlowState.BLOCKED, meta, client, cport, server, port)
            else:
                flow.generation = decision.generation  # the worker keeps deciding it
        elif flow.watch and self.guard is not None and flow.state is not FlowState.BLOCKED:
            act = self._watched(flow, meta, key, direction, now + self.wall_offset)
            if act is not None:
                flow.last_seen = now
                flow.packets += 1
                return act, meta, key, flow
        flow.last_seen = now
        flow.packets += 1
        if meta.tcp_flags & (TCP_FIN | TCP_RST):
            flow.closing = True
        state = flow.state
        if state is FlowState.ALLOWED:
            return (Act.PASS if flow.watch else Act.ALLOW), meta, key, flow
        if state is FlowState.BLOCKED:
            return (Act.RESET if self.config.netfilter.reject_tcp else Act.BLOCK), meta, key, flow
        if flow.worker == NO_WORKER:
            flow.worker = worker_for(key, self.seed, self.workers)
        # A TCP packet without payload and with ordinary flags, outside the capacity-test mode: the worker
        # could only answer PASS for it (or a block that then lands on the flow's next payload packet), so
        # it need not wait for the worker. The payload by the IP header's length (link padding in a
        # capture is no payload), by the bytes held if it says none.
        if (
            meta.proto == IPPROTO_TCP
            and not self._inspect_all
            and meta.fragment is Fragment.NONE
            and (meta.ip_len or len(payload)) <= meta.payload_offset
            and meta.tcp_flags & _CONTROL_FLAGS in _PLAIN_NO_PAYLOAD
        ):
            # A flow the guard follows in user space needs every packet (it counts handshakes).
            if meta.tcp_flags & _CONTROL_FLAGS == TCP_ACK and self._quiet_acks and not flow.watch:
                return Act.LEARN_QUIET, meta, key, flow
            return Act.PASS_LEARN, meta, key, flow
        return Act.INSPECT, meta, key, flow

    def judge_flooded(
        self, payload: bytes, now: float
    ) -> tuple[Act, PacketMeta, FlowKey | None, Flow | None]:
        """A datagram our chain queued because its offloaded UDP flow went over `netfilter.udp_flow_rate`
        (the kernel's rate check, `node.netfilter`): `udp_flood` on one 5-tuple, reported by the guard
        under the deciding group's settings. BLOCK cuts the flow in the kernel (Protect); ALLOW offloads
        it again, and the kernel does not check its rate again. Anything else takes the usual path."""
        guard = self.guard
        meta = decode(payload)
        if guard is None or meta.anomaly or meta.proto != IPPROTO_UDP or self.tables.generation() == 0:
            return self.judge(payload, now)
        key, direction = flow_key(meta)
        flow = self._find_flow(key)
        if flow is not None and flow.state is not FlowState.ALLOWED:
            return self.judge(payload, now)
        self.counters["flow.udp_rate_exceeded"] += 1
        if flow is None:  # forgotten while offloaded (idle here): the flooding side is taken as the client
            flow = Flow(direction, NO_WORKER, now)
            self.flows.add(key, flow)
            flow.state = FlowState.ALLOWED
        client, _cport, server, port = _oriented(meta, direction == flow.client_dir)
        decision = self.tables.decide(meta.family, client, server, meta.proto, port)
        flow.last_seen = now
        flow.packets += 1
        if guard.flow_flood(meta, key, decision, now + self.wall_offset):
            flow.state = FlowState.BLOCKED
            flow.judged = True  # a verdict on what the flow carried: no new policy undoes it
            return Act.BLOCK, meta, key, flow
        return Act.ALLOW, meta, key, flow

    def _watched(
        self, flow: Flow, meta: PacketMeta, key: FlowKey, direction: Direction, now: float
    ) -> Act | None:
        """A packet of a flow the guard follows (kept in user space if allowed, or going to its worker);
        an act, or None for the usual one (a flow being inspected keeps going to its worker)."""
        assert self.guard is not None
        client_side = direction == flow.client_dir
        allowed = flow.state is FlowState.ALLOWED
        if meta.proto == IPPROTO_TCP:
            flags = meta.tcp_flags
            if client_side and flags & TCP_ACK and not flags & (TCP_SYN | TCP_RST):
                # The client's ACK completes the handshake: a real connection, offloaded from here on.
                client, server = (meta.src, meta.dst)
                self.guard.handshake_done(client, server, now)
                flow.watch = False
                return Act.ALLOW if allowed else None
            return Act.PASS if allowed else None
        if client_side and meta.icmp_type == ICMP_ECHO_REQUEST[meta.family]:
            # An allowed ping kept in user space for the ICMP flood check: every request counts.
            client, server = (meta.src, meta.dst)
            decision = self.tables.decide(meta.family, client, server, meta.proto, 0)
            if self.guard.echo(meta, key, decision, now):
                # The flood's own session: blocked in the kernel (conntrack mark) for as long as it lasts.
                flow.state = FlowState.BLOCKED
                flow.watch = False
                return Act.BLOCK
        return None

    def _state(self, decision: Decision, new: bool) -> FlowState:
        if self.inspect_mode == "all" or not decision.final:
            return FlowState.INSPECT
        if new and self.inspect_mode == "new" and decision.action is Action.ALLOW:
            return FlowState.INSPECT  # protection on by default: an allowed flow is inspected first
        return FlowState.ALLOWED if decision.action is Action.ALLOW else FlowState.BLOCKED

    def _settle(
        self,
        flow: Flow,
        decision: Decision,
        state: FlowState,
        meta: PacketMeta,
        client: bytes,
        cport: int,
        server: bytes,
        port: int,
    ) -> None:
        """Give the flow its decision, and report it when the policy says so."""
        flow.state = state
        flow.generation = decision.generation
        flow.rule_id = decision.rule_id
        key = _RULE_COUNTER.get(decision.rule_id)
        if key is None:  # formatted once per rule, not once per flow
            key = _RULE_COUNTER[decision.rule_id] = f"rule.{decision.rule_id}"
        self.counters[key] += 1
        if decision.report is not Report.NONE and decision.final:
            self._report(decision, meta.family, meta.proto, client, cport, server, port)

    @property
    def revalidation_pending(self) -> bool:
        return bool(self._stale)

    def revalidate(self, budget: int) -> list[tuple[FlowKey, Flow, int]]:
        """After a policy generation change, re-decide up to `budget` offloaded flows; return those whose
        fate changed (key, flow, family), for the reader to hand back from the kernel. Their own next packet
        then meets the new decision (the flow's generation is stale)."""
        generation = self.tables.generation()
        if generation != self._revalidating:
            self._revalidating = generation
            self._stale = [
                k for k, f in self.flows.items() if f.state is not FlowState.INSPECT and not f.judged
            ]
        changed: list[tuple[FlowKey, Flow, int]] = []
        while self._stale and budget > 0:
            key = self._stale.pop()
            flow = self.flows.get(key)
            if flow is None or flow.state is FlowState.INSPECT or flow.generation == generation:
                continue
            budget -= 1
            family = 4 if len(key.addr_a) == 4 else 6
            if flow.client_dir == Direction.A_TO_B:
                client, server, port = key.addr_a, key.addr_b, key.port_b
            else:
                client, server, port = key.addr_b, key.addr_a, key.port_a
            decision = self.tables.decide(family, client, server, key.proto, port)
            if not decision.final:
                fate = FlowState.INSPECT
            else:
                fate = FlowState.ALLOWED if decision.action is Action.ALLOW else FlowState.BLOCKED
            if fate is flow.state:
                flow.generation = decision.generation  # unchanged: no need to look again
            else:
                changed.append((key, flow, family))
                self.counters["flow.revalidated_changed"] += 1
        return changed

    def on_worker_verdict(self, flow: Flow | None, verdict: int) -> Act:
        """The reader's answer for a packet its worker judged; a final verdict settles the flow."""
        if not 0 <= verdict < len(_FROM_WORKER):
            self.counters["worker.bad_verdict"] += 1
            return Act.PASS
        act = _FROM_WORKER[verdict]
        if self.inspect_mode == "all":
            # Capacity-test mode: every packet keeps going through a worker, so nothing is offloaded.
            return Act.PASS if act is Act.ALLOW else act
        if flow is not None:
            if flow.judged and flow.state is FlowState.BLOCKED and act is not Act.RESET:
                # Blocked while this packet was out at its worker (a flood found by the kernel's rate check,
                # or an earlier packet's verdict): a late verdict never reopens the flow.
                return Act.BLOCK
            if act is Act.ALLOW:
                flow.state = FlowState.ALLOWED
                if flow.watch:
                    return Act.PASS  # allowed, but the guard still follows it in user space
            elif act is Act.BLOCK or act is Act.RESET:
                flow.state = FlowState.BLOCKED
                # kept over policy changes: a UDP flow blocked on its first packet has no connmark to
                # remember it by (the kernel drops an unconfirmed conntrack entry with its packet), so this
                # table is what blocks its next datagrams
                flow.judged = True
        return act

    def sweep(self, now: float, final: bool = False) -> None:
        self.flows.sweep(now, SWEEP_BUDGET)
        if self.guard is not None:
            self.guard.flush(now + self.wall_offset, final)

    # ---- events --------------------------------------------------------------------------------

    def _report(
        self, d: Decision, family: int, proto: int, client: bytes, cport: int, server: bytes, port: int
    ) -> None:
        key = (d.report, d.rule_id, family, proto, client, server, port)
        pending = self._events.get(key)
        if pending is not None:
            pending["count"] += 1
            return
        if len(self._events) >= MAX_PENDING_EVENTS:
            self.counters["events.dropped"] += 1
            return
        flow = flow_fields(family, proto, client, cport, server, port)
        if d.report is Report.LEARNED:
            event = make_event(
                EventType.CONNECTION, self.node, client_group=d.src_group, server_group=d.dst_group,
                app="", port=port, count=1, proto=proto, flow=flow, learned=True,
            )  # fmt: skip
        else:
            action = "deny" if d.action is Action.DENY else "allow"
            event = make_event(
                EventType.VIOLATION, self.node, rule_id=d.rule_id, flow=flow, action=action, count=1,
                client_group=d.src_group, server_group=d.dst_group, mode=Mode(d.mode).name.lower(),
            )  # fmt: skip
        self._events[key] = event

    def _threat_event(self, event: dict[str, Any]) -> None:
        if len(self._threat_events) >= MAX_PENDING_EVENTS:
            self.counters["events.dropped"] += 1
            return
        self._threat_events.append(event)

    def take_events(self) -> list[dict[str, Any]]:
        """Events gathered since the last call (identical ones merged with a count)."""
        events = self._threat_events + list(self._events.values())  # threats first: they matter most
        self._events.clear()
        self._threat_events = []
        return events

    def stats(self) -> dict[str, int]:
        stats = dict(self.counters)
        new_flows = sum(n for name, n in stats.items() if name.startswith("flow.new."))
        if new_flows:
            stats["flow.new"] = new_flows
        stats["flows.active"] = len(self.flows)
        stats["flow.evicted_full"] = self.flows.evicted_full
        stats["flow.expired"] = self.flows.expired
        if self.guard is not None:
            stats.update(self.guard.counters)
            stats.update(self.guard.table_sizes())
        return stats


EmitEvents = Callable[[list[dict[str, Any]]], None]
