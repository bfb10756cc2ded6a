"""The policy process: single writer of the shared tables, controller link, last-known-good, event relay.

Start-up order (no gap): before binding anything, the process loads the last-known-good policy from
its state directory (else the configured start-up policy: monitor everything, or protect = deny
everything) and publishes it, so readers that attach find a policy at generation 1. Then it binds the
event inbox and either links to the controller (`controller.join_addr`) or, standalone, applies and
watches the local policy file (`policy.file`).

Applying a snapshot is atomic (compile aside, publish by generation) and never partial: a snapshot that
fails validation, is older than the one in force or does not fit the tables is rejected whole, reported
as an `audit` event, and the previous one stays in force. Every applied snapshot is persisted as the
new last-known-good before it is acknowledged.

Events from readers, workers and the runtime arrive on the events socket; identical ones within a
short window are aggregated with a count; batches get sequence numbers and go through a bounded disk
spool to the controller, which acknowledges them (standalone: JSON lines to a file or stdout).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from core import anomalies as A
from core.events import EventType, make_event
from core.lookup import Mode
from policy.delta import apply_delta
from policy.events_relay import (
    DEFAULT_AGGREGATE_WINDOW_S,
    DEFAULT_BATCH_MAX_EVENTS,
    DEFAULT_SPOOL_MAX_BYTES,
    EventAggregator,
    EventSpool,
)
from policy.loader import dump_policy, load_policy, parse_policy, parse_policy_text, policy_to_dict
from policy.model import PolicyError, PolicySnapshot, mode_name, parse_mode, startup_snapshot
from policy.shm import DEFAULT_REUSE_WAIT, DEFAULT_TABLE_BYTES, SharedTables, TablesFull, TablesWriter
from policy.shm import wait_for_tables as _wait_for_tables
from policy.tables import Workload, compile_policy, fqdn_matches

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

log = logging.getLogger(__name__)

TABLES_FILE = "policy.tables"
LKG_FILE = "last-known-good.yaml"
EVENT_LOG_MAX_BYTES = 16 << 20  # standalone JSON-lines event log, rotated once beyond this
POLL_MS = 50
MAX_WORKLOADS = 20_000  # workloads tracked for label selectors (a node runs a few hundred)
MAX_DNS_NAMES = 20_000  # resolved names kept for FQDN groups (only names some group's pattern matches)
MAX_DNS_ADDRESSES = 64  # addresses kept per name
MIN_DNS_TTL_S = 60.0  # DNS answers are kept at least this long, so short TTLs do not churn the tables
REPUBLISH_INTERVAL_S = 0.1  # member changes are batched into one recompilation at most this often


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """What the policy process needs from the enforcer's configuration (`from_config`)."""

    node: str
    run_dir: str
    state_dir: str
    policy_file: str = ""
    startup_mode: Mode = Mode.MONITOR
    join_addr: str = ""
    server_key: str = ""  # file with the controller's CURVE public key
    client_key: str = ""  # file with this enforcer's CURVE secret key (zmq.auth certificate)
    table_bytes: int = DEFAULT_TABLE_BYTES
    reuse_wait_s: float = DEFAULT_REUSE_WAIT
    watch_interval_s: float = 1.0  # standalone: how often the policy file is checked for changes
    aggregate_window_s: float = DEFAULT_AGGREGATE_WINDOW_S
    batch_max_events: int = DEFAULT_BATCH_MAX_EVENTS
    spool_max_bytes: int = DEFAULT_SPOOL_MAX_BYTES
    event_log: str = ""  # standalone: JSON-lines file ("-": stdout; empty: state_dir/events.jsonl)
    heartbeat_s: float = 0.2  # to the supervisor
    controller_heartbeat_s: float = 2.0
    controller_timeout_s: float = 6.0  # controller silent this long: reconnect
    reconnect_max_s: float = 10.0  # reconnect backoff ceiling
    inflight_batches: int = 8  # event batches sent and not yet acknowledged
    # Checks of the parts of a policy the tables do not hold (threat settings, sensors), given by the
    # node host: why a snapshot would not compile in its consumers, "" if it would. A policy that fails
    # them is rejected whole, never half applied.
    validate: Callable[[PolicySnapshot], str] = field(default=lambda snapshot: "")

    @classmethod
    def from_config(cls, config: Any, node: str | None = None) -> ServiceSettings:
        """Build from `node.config.Config`; keys the config does not (yet) have keep their defaults."""

        def get(section: str, key: str, default: Any) -> Any:
            return getattr(getattr(config, section, None), key, default)

        return cls(
            node=node or config.node.name or socket.gethostname(),
            run_dir=config.paths.run_dir,
            state_dir=config.paths.state_dir,
            policy_file=config.policy.file,
            startup_mode=parse_mode(config.policy.startup),
            join_addr=config.controller.join_addr,
            server_key=config.controller.server_key,
            client_key=config.controller.client_key,
            table_bytes=get("policy", "table_bytes", DEFAULT_TABLE_BYTES),
            reuse_wait_s=get("policy", "reuse_wait_ms", DEFAULT_REUSE_WAIT * 1000) / 1000.0,
            watch_interval_s=get("policy", "watch_interval_ms", 1000) / 1000.0,
            aggregate_window_s=get("events", "aggregate_window_ms", DEFAULT_AGGREGATE_WINDOW_S * 1000)
            / 1000.0,
            batch_max_events=get("events", "batch_max", DEFAULT_BATCH_MAX_EVENTS),
            spool_max_bytes=get("events", "spool_max_bytes", DEFAULT_SPOOL_MAX_BYTES),
            event_log=get("events", "log_file", ""),
            heartbeat_s=config.supervisor.heartbeat_interval_ms / 1000.0,
            controller_heartbeat_s=get("controller", "heartbeat_s", 2.0),
            controller_timeout_s=get("controller", "timeout_s", 6.0),
            reconnect_max_s=get("controller", "reconnect_max_s", 10.0),
            inflight_batches=get("controller", "inflight_batches", 8),
        )


def tables_path(run_dir: str) -> Path:
    return Path(run_dir) / TABLES_FILE


def table_slot(role: str, index: int, readers: int, workers: int) -> int:
    """The reader slot of a process in the shared tables: readers first, then workers, then runtime."""
    if role == "reader":
        return index
    if role == "worker":
        return readers + index
    return readers + workers + index


def open_shared_tables(
    run_dir: str, slot: int, startup_mode: Mode = Mode.MONITOR, timeout: float = 10.0
) -> SharedTables:
    """For readers and workers: wait (bounded) for the policy process's tables, then map them.

    The policy process publishes before it binds anything, so the wait is short; if the file is there
    but nothing is published yet, lookups answer non-final decisions in `startup_mode`.
    """
    path = tables_path(run_dir)
    deadline = time.monotonic() + timeout
    _wait_for_tables(path, timeout)
    while True:
        try:
            return SharedTables(path, slot, fallback_mode=startup_mode)
        except FileNotFoundError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


class LastKnownGood:
    """The last applied snapshot, persisted in native YAML (atomic replace, 0600)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = self.dir / LKG_FILE

    def load(self) -> PolicySnapshot | None:
        if not self.path.exists():
            return None
        return load_policy(self.path)

    def save(self, snapshot: PolicySnapshot) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(dump_policy(snapshot))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


@dataclass(frozen=True, slots=True)
class ApplyResult:
    ok: bool
    version: int
    generation: int
    reasons: tuple[str, ...] = ()


class PolicyApplier:
    """Validates, compiles, publishes and persists snapshots; emits audit events through `emit`."""

    def __init__(
        self,
        writer: TablesWriter,
        lkg: LastKnownGood,
        node: str,
        emit: Callable[[dict[str, Any]], None],
        counters: Counter[str],
        members: Callable[[], tuple[list[Workload], dict[str, list[Address]]]] | None = None,
        validate: Callable[[PolicySnapshot], str] = lambda snapshot: "",
    ) -> None:
        self.members = members
        self.validate = validate
        self.writer = writer
        self.lkg = lkg
        self.node = node
        self.emit = emit
        self.counters = counters
        self.current: PolicySnapshot | None = None
        self.source = ""

    @property
    def version(self) -> int:
        return self.current.version if self.current else 0

    def _reject(self, version: int, reason: str, source: str, anomaly: str) -> ApplyResult:
        self.counters[anomaly] += 1
        log.error("policy version %s from %s rejected: %s", version, source, reason)
        self.emit(
            make_event(
                EventType.AUDIT,
                self.node,
                what="policy rejected",
                version=version,
                source=source,
                reason=reason,
                in_force=self.version,
            )
        )
        return ApplyResult(False, version, self.writer.generation(), (reason,))

    def apply_doc(self, doc: object, source: str) -> ApplyResult:
        version = doc.get("version", 0) if isinstance(doc, dict) else 0
        try:
            snapshot = parse_policy(doc)
        except PolicyError as exc:
            return self._reject(
                version if isinstance(version, int) else 0, str(exc), source, A.POLICY_REJECTED
            )
        return self.apply(snapshot, source)

    def apply(self, snapshot: PolicySnapshot, source: str, persist: bool = True) -> ApplyResult:
        cur = self.current
        if cur is not None and snapshot.version <= cur.version and cur.version > 0:
            if snapshot == cur:
                return ApplyResult(True, cur.version, self.writer.generation())
            why = (
                f"version {snapshot.version} is not newer than the version in force ({cur.version})"
                if snapshot.version < cur.version
                else f"version {snapshot.version} is already in force with other content; raise the version"
            )
            return self._reject(snapshot.version, why, source, A.POLICY_STALE)
        problem = self.validate(snapshot)
        if problem:
            return self._reject(snapshot.version, problem, source, A.POLICY_REJECTED)
        try:
            generation = self._publish(snapshot)
        except TablesFull as exc:
            return self._reject(snapshot.version, str(exc), source, A.POLICY_TABLES_FULL)
        changes = self._mode_changes(cur, snapshot)
        self.current = snapshot
        self.source = source
        if persist:
            self.lkg.save(snapshot)
        self.counters["policy.applied"] += 1
        log.info(
            "policy version %d from %s applied as generation %d (%d groups, %d rules)",
            snapshot.version,
            source,
            generation,
            len(snapshot.groups),
            len(snapshot.rules),
        )
        self.emit(
            make_event(
                EventType.AUDIT,
                self.node,
                what="policy applied",
                version=snapshot.version,
                generation=generation,
                source=source,
                groups=len(snapshot.groups),
                rules=len(snapshot.rules),
                mode_changes=changes,
            )
        )
        return ApplyResult(True, snapshot.version, generation)

    def _publish(self, snapshot: PolicySnapshot) -> int:
        workloads, fqdns = self.members() if self.members is not None else ([], {})
        return self.writer.publish(compile_policy(snapshot, workloads, fqdns))

    def republish(self) -> bool:
        """Recompile the policy in force with the current members (workloads, DNS answers)."""
        if self.current is None:
            return False
        try:
            self._publish(self.current)
        except TablesFull as exc:
            self.counters[A.POLICY_TABLES_FULL] += 1
            log.error("members update not applied: %s", exc)
            return False
        self.counters["policy.republished"] += 1
        return True

    @staticmethod
    def _mode_changes(old: PolicySnapshot | None, new: PolicySnapshot) -> list[str]:
        if old is None:
            return []
        before = {g.name: g.mode for g in old.groups}
        return [
            f"{g.name}: {mode_name(before[g.name])} -> {mode_name(g.mode)}"
            for g in new.groups
            if g.name in before and before[g.name] != g.mode
        ]


def initial_policy(
    settings: ServiceSettings, lkg: LastKnownGood, counters: Counter[str]
) -> tuple[PolicySnapshot, str]:
    """The policy to publish before anything else: last-known-good, else the start-up policy."""
    try:
        snapshot = lkg.load()
    except PolicyError as exc:
        counters[A.POLICY_LKG_UNREADABLE] += 1
        log.error("last-known-good policy unusable, using the start-up policy: %s", exc)
        snapshot = None
    if snapshot is not None:
        return snapshot, "last-known-good"
    return startup_snapshot(settings.startup_mode), f"start-up ({mode_name(settings.startup_mode)})"


class _FileWatch:
    """Standalone mode: notices changes of the local policy file (by stat signature)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.signature: tuple[int, int, int] | None = None

    def changed(self) -> bool:
        try:
            st = os.stat(self.path)
        except OSError:
            sig = None
        else:
            sig = (st.st_ino, st.st_size, st.st_mtime_ns)
        if sig == self.signature:
            return False
        self.signature = sig
        return sig is not None


class _JsonLines:
    """Standalone event sink: JSON lines to a file (rotated once) or stdout."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._out: IO[str] = sys.stdout if path == "-" else open(path, "a", buffering=1)

    def write(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            self._out.write(json.dumps(event, default=_jsonable) + "\n")
        if self.path != "-" and self._out.tell() > EVENT_LOG_MAX_BYTES:
            self._out.close()
            os.replace(self.path, self.path + ".1")
            self._out = open(self.path, "a", buffering=1)
        self._out.flush()

    def close(self) -> None:
        if self.path != "-":
            self._out.close()


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    return str(value)


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
        self.workloads: dict[str, Workload] = {}
        self.dns: dict[str, dict[Address, float]] = {}  # name → address → expiry (monotonic)
        self.members_dirty = False
        self._next_republish = 0.0
        self.writer = writer or TablesWriter(
            tables_path(settings.run_dir), settings.table_bytes, settings.reuse_wait_s
        )
        self.lkg = LastKnownGood(Path(settings.state_dir) / "policy")
        self.applier = PolicyApplier(
            self.writer, self.lkg, settings.node, self._outbox.append, self.counters, self.members,
            settings.validate,
        )
        snapshot, source = initial_policy(settings, self.lkg, self.counters)
        if not self.applier.apply(snapshot, source, persist=False).ok:
            # e.g. the last-known-good no longer fits the configured tables: never start without a policy
            self.applier.apply(startup_snapshot(settings.startup_mode), "start-up (fallback)", persist=False)
        self.spool: EventSpool | None = None
        self.sink: _JsonLines | None = None
        self.link: Any = None
        self.watch: _FileWatch | None = None
        if settings.join_addr:
            self.spool = EventSpool(Path(settings.state_dir) / "spool", settings.spool_max_bytes)
        else:
            self.sink = _JsonLines(settings.event_log or str(Path(settings.state_dir) / "events.jsonl"))
            if settings.policy_file:
                self.watch = _FileWatch(settings.policy_file)
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
            self.applier._reject(0, f"{self.watch.path}: {exc}", "file", A.POLICY_REJECTED)
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

    def members(self) -> tuple[list[Workload], dict[str, list[Address]]]:
        return list(self.workloads.values()), {name: list(addrs) for name, addrs in self.dns.items()}

    def take_input(self, msg: Any, now: float) -> None:
        from core.policy_input import DnsAnswers, WorkloadUpdate

        if isinstance(msg, WorkloadUpdate):
            if msg.full:
                self.workloads.clear()
            for wid in msg.removed:
                self.workloads.pop(wid, None)
            for wid, addrs, labels in msg.workloads:
                if wid not in self.workloads and len(self.workloads) >= MAX_WORKLOADS:
                    self.counters["policy.workloads_full"] += 1
                    continue
                self.workloads[wid] = Workload(tuple(ipaddress.ip_address(a) for a in addrs), dict(labels))
            self.members_dirty = True
        elif isinstance(msg, DnsAnswers):
            patterns = [
                p for g in (self.applier.current.groups if self.applier.current else ()) for p in g.fqdns
            ]
            for name, addrs, ttl in msg.answers:
                name = name.rstrip(".").lower()
                if not any(fqdn_matches(p, name) for p in patterns):
                    continue  # no FQDN group wants this name
                known = self.dns.get(name)
                if known is None:
                    if len(self.dns) >= MAX_DNS_NAMES:
                        self.counters["policy.dns_names_full"] += 1
                        continue
                    known = self.dns[name] = {}
                expiry = now + max(float(ttl), MIN_DNS_TTL_S)
                for raw in addrs:
                    addr = ipaddress.ip_address(raw)
                    if addr not in known and len(known) >= MAX_DNS_ADDRESSES:
                        continue
                    if addr not in known:
                        self.members_dirty = True
                    known[addr] = expiry

    def expire_dns(self, now: float) -> None:
        for name in list(self.dns):
            addrs = self.dns[name]
            for addr in [a for a, exp in addrs.items() if exp <= now]:
                del addrs[addr]
                self.members_dirty = True
            if not addrs:
                del self.dns[name]

    def maybe_republish(self, now: float) -> None:
        if self.members_dirty and now >= self._next_republish:
            self.members_dirty = False
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
    config: Any,
    node: str | None = None,
    stop: threading.Event | None = None,
    validate: Callable[[PolicySnapshot], str] | None = None,
) -> int:
    """Main of the policy process (`node.child` role "policy"): `config` is node.config.Config."""
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
    settings = ServiceSettings.from_config(config, node)
    if validate is not None:
        settings = dataclasses.replace(settings, validate=validate)
    return run_policy_service(settings, stop)


def run_policy_service(
    settings: ServiceSettings,
    stop: threading.Event,
    on_started: Callable[[PolicyService], None] | None = None,
) -> int:
    """The policy process's loop until `stop` is set (`on_started` sees the service once it is built)."""
    import zmq

    from core import messages as M
    from core.policy_input import decode_policy_input, policy_input_endpoint
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
            ready = dict(poller.poll(POLL_MS))
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
                service.expire_dns(now)
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


__all__ = [
    "ApplyResult",
    "LastKnownGood",
    "PolicyApplier",
    "PolicyService",
    "ServiceSettings",
    "initial_policy",
    "open_shared_tables",
    "policy_to_dict",
    "run_policy_process",
    "run_policy_service",
    "table_slot",
    "tables_path",
]
