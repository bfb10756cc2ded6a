"""The runtime-security child: the runtime monitor under the supervisor, fed by the policy in force.

The process profiles and file rules come with the policy's shared tables: this child maps them (with no
reader slot: it looks only now and then) and takes the runtime part of the derived document of the
generation in force whenever that document changes. Events go to the policy process like every other
producer's, counters to the supervisor with the heartbeat.
"""

from __future__ import annotations

import collections
import dataclasses
import ipaddress
import logging
import os
import signal
import threading
import time
from typing import Any

import zmq

from core import messages as M
from core.policy_input import WorkloadUpdate, encode_policy_input, policy_input_endpoint
from core.sockets import EVENTS_HWM, HEARTBEAT_HWM, push_to
from node.config import Config
from node.policy_updates import DocumentFollower
from policy.document import decode_document
from policy.layout import TablesError, tables_path
from policy.table_reader import SharedTables

log = logging.getLogger(__name__)

INVENTORY_PERIOD_S = 5.0  # how often the node's workloads and their addresses are sent to the policy process
# Events held between two sends to the policy process; more are counted as dropped.
MAX_PENDING_EVENTS = 8192
SEND_PERIOD_S = 0.2


class PublishedProfiles:
    """`get_profiles()` for the monitor: the runtime part of the derived document in force, compiled when
    it changes. Until the policy process has published (or while the tables cannot be read) the monitor
    keeps what it has: an error raised here keeps its previous policy, counted."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir
        self.follower: DocumentFollower | None = None
        self._policy: Any = None

    def __call__(self) -> Any:
        from runtime.profiles import RuntimePolicy, policy_from_dict

        if self.follower is None:
            try:
                self.follower = DocumentFollower(SharedTables(tables_path(self.run_dir), slot=None))
            except (FileNotFoundError, TablesError):
                return self._policy or RuntimePolicy()  # not published yet: ask again next refresh
        published = self.follower.changed()
        if published is not None:
            self._policy = policy_from_dict(decode_document(published.data).get("runtime") or {})
        return self._policy or RuntimePolicy()

    def close(self) -> None:
        if self.follower is not None:
            self.follower.tables.close()


class WorkloadInventory:
    """The node's workloads with their addresses and intrinsic labels, for the policy's label groups."""

    def __init__(self) -> None:
        from runtime.identity import WorkloadResolver

        self.resolver = WorkloadResolver()

    def update(self) -> WorkloadUpdate:
        from runtime.identity import node_workloads

        self.resolver.refresh_names()
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
        workloads = []
        for key, (workload, addresses, _pid) in node_workloads(self.resolver, pids).items():
            packed = sorted(ipaddress.ip_address(a).packed for a in addresses)
            workloads.append((key, packed, workload.intrinsic_labels()))
        return WorkloadUpdate("runtime", True, workloads, [])


def run_runtime_child(config: Config, node: str) -> int:
    from runtime.monitor import run_runtime_monitor

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    settings = dataclasses.replace(
        config.runtime,
        node=node,
        protected_pids=tuple({*config.runtime.protected_pids, os.getppid(), os.getpid()}),
    )
    pending: collections.deque[dict[str, Any]] = collections.deque()
    counters: dict[str, int] = {}

    def emit(event: dict[str, Any]) -> None:
        if len(pending) < MAX_PENDING_EVENTS:
            pending.append(event)
        else:
            counters["events.dropped"] = counters.get("events.dropped", 0) + 1

    sender = threading.Thread(target=_send_loop, args=(config, pending, counters, stop), name="runtime-send")
    sender.start()
    profiles = PublishedProfiles(config.paths.run_dir)
    try:
        return run_runtime_monitor(settings, profiles, emit, stop, counters)
    finally:
        stop.set()
        sender.join(timeout=5)
        profiles.close()


def _send_loop(
    config: Config,
    pending: collections.deque[dict[str, Any]],
    counters: dict[str, int],
    stop: threading.Event,
) -> None:
    """The only user of this child's ZeroMQ sockets: events to the policy process, heartbeats."""
    run_dir = config.paths.run_dir
    ctx = zmq.Context(1)
    events = push_to(ctx, M.events_endpoint(run_dir), EVENTS_HWM, linger_ms=500)
    supervisor = push_to(ctx, M.supervisor_endpoint(run_dir), HEARTBEAT_HWM)
    policy_input = push_to(ctx, policy_input_endpoint(run_dir), HEARTBEAT_HWM)
    inventory = WorkloadInventory()
    period = min(SEND_PERIOD_S, config.supervisor.heartbeat_interval_ms / 1000.0)
    next_inventory = 0.0
    try:
        while True:
            if time.monotonic() >= next_inventory:
                next_inventory = time.monotonic() + INVENTORY_PERIOD_S
                try:
                    policy_input.send(encode_policy_input(inventory.update()), zmq.NOBLOCK)
                except zmq.Again:
                    counters["workloads.dropped"] = counters.get("workloads.dropped", 0) + 1
            batch = [pending.popleft() for _ in range(min(len(pending), M.MAX_EVENTS_PER_BATCH))]
            if batch:
                try:
                    events.send(M.encode(M.Events("runtime", batch)), zmq.NOBLOCK)
                except zmq.Again:
                    counters["events.dropped"] = counters.get("events.dropped", 0) + len(batch)
            snapshot = {k: int(v) for k, v in list(counters.items())}
            try:
                supervisor.send(M.encode(M.Heartbeat("runtime", 0, os.getpid(), snapshot)), zmq.NOBLOCK)
            except zmq.Again:
                pass
            if stop.wait(period) and not pending:
                return
    finally:
        ctx.destroy(linger=500)
