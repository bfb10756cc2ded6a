"""The policy process: single writer of the shared tables, controller link, event relay.

Start-up order (no gap): before binding anything, the process loads the last-known-good policy from
its state directory (else the configured start-up policy: monitor everything, or protect = deny
everything) and publishes it, so readers that attach find a policy at generation 1. Then it binds the
event inbox and either links to the controller (`controller.join_addr`) or, standalone, applies and
watches the local policy file (`policy.file`). Applying is `policy.applier`'s job; the workloads and
DNS answers label and FQDN groups resolve to are `policy.members`'.

Events from readers, workers and the runtime arrive on the events socket; identical ones within a
short window are aggregated with a count; batches get sequence numbers and go through a bounded disk
spool to the controller, which acknowledges them (standalone: JSON lines to a file or stdout).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core import anomalies as A
from core import messages as M
from core.events import EventType, make_event
from core.policy_input import (
    DnsAnswers,
    PolicyInput,
    WorkloadUpdate,
    decode_policy_input,
    policy_input_endpoint,
)
from core.sockets import poll_ms
from policy.applier import ApplyResult, PolicyApplier
from policy.delta import apply_delta
from policy.events_relay import EventAggregator, EventSpool
from policy.last_known_good import LastKnownGood, initial_policy
from policy.layout import tables_path
from policy.loader import parse_policy_text, policy_to_dict
from policy.members import Members
from policy.model import PolicyError, startup_snapshot
from policy.settings import Derive, PolicySections, ServiceSettings, Validate
from policy.standalone import JsonLinesLog, PolicyFileWatch
from policy.table_writer import TablesWriter

# Longest wait for a message before the timed duties run (each checks its own time); long, because every
# idle wake-up costs the node's workloads (node/supervisor.py, POLL_MS).
POLL_MS = 250
REPUBLISH_INTERVAL_S = 0.1  # member changes are batched into one recompilation at most this often


class PolicyService:
    """The policy process's state and loop (`run_policy_process` builds and runs one)."""

    def __init__(
        self, settings: ServiceSettings, version: str | None = None, writer: TablesWriter | None = None
    ) -> None:
        from core import __version__

        self.settings = settings
        self.version = version or __version__
        self.counters: Counter[str] = Counter()
        for d in (settings.run_dir, settings.state_dir):
            os.makedirs(d, mode=0o700, exist_ok=True)
        self.aggregator = EventAggregator(settings.aggregate_window_s)
        self._outbox: list[dict[str, Any]] = []  # our own audit events, before aggregation
        # No gap: publish the last-known-good (or start-up) policy before binding any socket.
        self.members = Members(self.counters)
        self._next_republish = 0.0
        self.writer = writer or TablesWriter(
            tables_path(settings.run_dir), settings.table_bytes, settings.reuse_wait_s
        )
        self.lkg = LastKnownGood(Path(settings.state_dir) / "policy")
        self.applier = PolicyApplier(
            self.writer, self.lkg, settings.node, self._outbox.append, self.counters, self.members,
            settings.validate, settings.derive,
        )  # fmt: skip
        snapshot, source = initial_policy(settings.startup_mode, self.lkg, self.counters)
        if not self.applier.apply(snapshot, source, persist=False).ok:
            # e.g. the last-known-good no longer fits the configured tables: never start without a policy
            self.applier.apply(startup_snapshot(settings.startup_mode), "start-up (fallback)", persist=False)
        self.spool: EventSpool | None = None
        self.sink: JsonLinesLog | None = None
        self.link: Any = None
        self.watch: PolicyFileWatch | None = None
        if settings.join_addr:
            self.spool = EventSpool(Path(settings.state_dir) / "spool", settings.spool_max_bytes)
        else:
            self.sink = JsonLinesLog(settings.event_log or str(Path(settings.state_dir) / "events.jsonl"))
            if settings.policy_file:
                self.watch = PolicyFileWatch(settings.policy_file)
                # The configured file is in force before the process reports alive, so the supervisor
                # never binds a queue under the start-up policy when a real one is at hand.
                self.check_policy_file()

    # ---- policy ----------------------------------------------------------------------------------

    def check_policy_file(self) -> None:
        if self.watch is None or not self.watch.changed():
            return
        try:
            with open(self.watch.path, "rb") as f:
                snapshot = parse_policy_text(f.read())
        except (OSError, PolicyError) as exc:
            self.applier.reject(0, f"{self.watch.path}: {exc}", "file", A.POLICY_REJECTED)
            return
        self.applier.apply(snapshot, f"file {self.watch.path}")

    def on_controller_policy(self, version: int, doc: dict[str, Any]) -> ApplyResult:
        return self.applier.apply_doc(doc, "controller")

    def on_controller_delta(self, base: int, version: int, delta: dict[str, Any]) -> ApplyResult:
        """Apply a delta on top of the policy in force; a gap asks the controller for a full snapshot."""
        current = self.applier.current
        if current is None or current.version != base:
            have = current.version if current else 0
            self.counters["policy.delta_gap"] += 1
            return ApplyResult(False, version, self.writer.generation(), (f"resync: have version {have}",))
        try:
            doc = apply_delta(policy_to_dict(current), delta)
        except PolicyError as exc:
            self.counters["policy.delta_gap"] += 1
            return ApplyResult(False, version, self.writer.generation(), (f"resync: {exc}",))
        self.counters["policy.deltas"] += 1
        return self.applier.apply_doc(doc, "controller (delta)")

    # ---- members (workloads for label selectors, DNS answers for FQDN groups) ----------------------

    def take_input(self, msg: PolicyInput, now: float) -> None:
        if isinstance(msg, WorkloadUpdate):
            self.members.take_workloads(msg)
        elif isinstance(msg, DnsAnswers):
            current = self.applier.current
            self.members.take_dns(msg, now, (p for g in (current.groups if current else ()) for p in g.fqdns))

    def republish_wait_ms(self, now: float, longest: int) -> int:
        """How long the loop may wait before a pending recompilation is due (at most `longest`)."""
        if not self.members.dirty:
            return longest
        return poll_ms(self._next_republish - now, longest)

    def maybe_republish(self, now: float) -> None:
        if self.members.dirty and now >= self._next_republish:
            self.members.dirty = False
            self._next_republish = now + REPUBLISH_INTERVAL_S
            self.applier.republish()

    # ---- events ----------------------------------------------------------------------------------

    def take_events(self, events: list[dict[str, Any]], now: float) -> None:
        for event in events:
            if isinstance(event, dict):
                self.aggregator.add(event, now)
            else:
                self.counters[A.MESSAGE_MALFORMED] += 1

    def flush_events(self, now: float, force: bool = False) -> None:
        if self._outbox:
            # Our own audit events are not aggregated (each policy change matters on its own).
            own = list(self._outbox)
            self._outbox.clear()  # in place: the applier holds this list's append
            self._deliver(own)
        if self.aggregator.due(now) or (force and len(self.aggregator)):
            events = self.aggregator.flush()
            self.counters[A.EVENTS_AGGREGATED] = self.aggregator.folded
            self._deliver(events)

    def _deliver(self, events: list[dict[str, Any]]) -> None:
        size = max(1, self.settings.batch_max_events)
        for i in range(0, len(events), size):
            batch = events[i : i + size]
            self.counters["events.relayed"] += len(batch)
            if self.sink is not None:
                self.sink.write(batch)
            elif self.spool is not None:
                self.spool.append(batch)
        if self.spool is not None:
            self.counters[A.EVENTS_SPOOL_DROPPED] = self.spool.dropped_events
            self.counters["events.spool_write_failed"] = self.spool.write_errors
            if self.link is not None:
                self.link.pump()

    def report_drops(self) -> None:
        """Once connected, report events lost to a full spool as an audit event (never silent)."""
        spool = self.spool
        if spool is not None and spool.unreported_drops() > 0:
            lost = spool.unreported_drops()
            spool.mark_drops_reported()
            self._outbox.append(
                make_event(
                    EventType.AUDIT,
                    self.settings.node,
                    what="events dropped",
                    count=lost,
                    reason="spool full",
                )
            )

    def close(self) -> None:
        if self.sink is not None:
            self.sink.close()
        self.writer.close()


def run_policy_process(
    config: PolicySections,
    node: str | None = None,
    stop: threading.Event | None = None,
    validate: Validate | None = None,
    derive: Derive | None = None,
) -> int:
    """Main of the policy process (`node.child` role "policy"): `config` is `node.config.Config`;
    `derive` and `validate` say what the policy's consumers compile beyond the tables
    (`ServiceSettings`)."""
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
    settings = ServiceSettings.from_config(config, node, derive, validate)
    return run_policy_service(settings, stop)


def run_policy_service(
    settings: ServiceSettings,
    stop: threading.Event,
    on_started: Callable[[PolicyService], None] | None = None,
) -> int:
    """The policy process's loop until `stop` is set (`on_started` sees the service once it is built)."""
    import zmq

    from policy.controller_link import ControllerLink

    # The tables lock first (a second policy process stops here, before touching any socket), then the
    # event sockets (so a reader that starts as soon as the tables are published finds them), then the
    # policy is published, before anything else happens.
    os.makedirs(settings.run_dir, mode=0o700, exist_ok=True)
    writer = TablesWriter(tables_path(settings.run_dir), settings.table_bytes, settings.reuse_wait_s)
    ctx = zmq.Context(1)
    service: PolicyService | None = None
    try:
        inbox = ctx.socket(zmq.PULL)
        inbox.setsockopt(zmq.LINGER, 0)
        inbox.setsockopt(zmq.RCVHWM, 1000)
        inbox.bind(M.events_endpoint(settings.run_dir))
        inputs = ctx.socket(zmq.PULL)
        inputs.setsockopt(zmq.LINGER, 0)
        inputs.setsockopt(zmq.RCVHWM, 100)
        inputs.bind(policy_input_endpoint(settings.run_dir))
        supervisor = ctx.socket(zmq.PUSH)
        supervisor.setsockopt(zmq.LINGER, 0)
        supervisor.setsockopt(zmq.SNDHWM, 8)
        supervisor.connect(M.supervisor_endpoint(settings.run_dir))
        service = PolicyService(settings, writer=writer)
        if on_started is not None:
            on_started(service)
        if settings.join_addr and service.spool is not None:
            service.link = ControllerLink(
                ctx,
                settings,
                service.version,
                service.spool,
                service.counters,
                on_policy=service.on_controller_policy,
                applied_version=lambda: service.applier.version,
                on_ready=service.report_drops,
                on_delta=service.on_controller_delta,
                members=service.members,
            )
        next_hb = 0.0
        next_watch = 0.0
        next_expiry = 0.0
        while not stop.is_set():
            poller = zmq.Poller()
            poller.register(inbox, zmq.POLLIN)
            poller.register(inputs, zmq.POLLIN)
            if service.link is not None:
                service.link.register(poller)
            wait_ms = service.republish_wait_ms(time.monotonic(), POLL_MS)
            ready = dict(poller.poll(wait_ms))
            now = time.monotonic()
            if inbox in ready:
                for _ in range(1000):  # bounded drain per loop
                    try:
                        frame = inbox.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    try:
                        msg = M.decode(frame)
                    except M.MessageError as exc:
                        service.counters[exc.anomaly] += 1
                        continue
                    if isinstance(msg, M.Events):
                        service.take_events(msg.events, time.time())
            if inputs in ready:
                for _ in range(100):
                    try:
                        frame = inputs.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    try:
                        service.take_input(decode_policy_input(frame), now)
                    except M.MessageError as exc:
                        service.counters[exc.anomaly] += 1
            if now >= next_expiry:
                next_expiry = now + 1.0
                service.members.expire_dns(now)
                service.members.expire_remote(now)
            service.maybe_republish(now)
            if service.link is not None:
                service.link.handle(ready, now)
            if service.watch is not None and now >= next_watch:
                next_watch = now + settings.watch_interval_s
                service.check_policy_file()
            service.flush_events(time.time())
            if now >= next_hb:
                next_hb = now + settings.heartbeat_s
                counters = {k: int(v) for k, v in service.counters.items()}
                counters["policy.version"] = service.applier.version
                counters["policy.generation"] = service.writer.generation()
                counters["policy.forced_reuses"] = service.writer.forced_reuses()  # a half reused unacknowledged
                try:
                    supervisor.send(M.encode(M.Heartbeat("policy", 0, os.getpid(), counters)), zmq.NOBLOCK)
                except zmq.Again:
                    pass
        service.flush_events(time.time(), force=True)
        if service.link is not None:
            service.link.close()
    finally:
        if service is not None:
            service.close()
        else:
            writer.close()
        ctx.destroy(linger=0)
    return 0
