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
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import zmq

from core import messages as M
from core.policy_input import (
    MAX_ADDRESSES_PER_ITEM,
    MAX_POLICY_INPUT_ITEMS,
    WorkloadUpdate,
    encode_policy_input,
    policy_input_endpoint,
)
from core.sockets import EVENTS_HWM, HEARTBEAT_HWM, push_to
from node.config import Config
from node.policy_updates import DocumentFollower
from policy.document import decode_document
from policy.layout import TablesError, tables_path
from policy.table_reader import SharedTables
from runtime.cri.settings import CriSettings

if TYPE_CHECKING:
    from runtime.cri.pods import PodIdentity
    from runtime.cri.watcher import CriWatcher
    from runtime.identity import Workload

log = logging.getLogger(__name__)

INVENTORY_PERIOD_S = 5.0  # how often the node's workloads and their addresses are sent to the policy process
WORKLOADS_VIEW = "workloads.json"  # in the run dir: the inventory with identities, for `enforcer workloads`
# Events held between two sends to the policy process; more are counted as dropped.
MAX_PENDING_EVENTS = 8192
# Heartbeat and workload-change period when nothing wakes the sender sooner (events and CRI changes do).
SEND_PERIOD_S = 0.5


class PublishedProfiles:
    """`get_profiles()` for the monitor: the runtime part of the derived document in force, compiled when
    it changes. Until the policy process has published (or while the tables cannot be read) the monitor
    keeps what it has: an error raised here keeps its previous policy, counted."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir
        self.follower: DocumentFollower | None = None
        self._policy: Any = None
        # Labels of the container runtime's pods by pod UID, sandbox and container id, replaced whole by
        # the inventory's thread (`set_pod_labels`): the monitor selects process profiles on them too.
        self._pod_labels: Mapping[str, Mapping[str, str]] = {}
        self._merged: tuple[Any, Mapping[str, Mapping[str, str]], Any] | None = None

    def set_pod_labels(self, labels: Mapping[str, Mapping[str, str]]) -> None:
        self._pod_labels = labels

    def __call__(self) -> Any:
        from runtime.profiles import RuntimePolicy, policy_from_dict

        if self.follower is None:
            try:
                self.follower = DocumentFollower(SharedTables(tables_path(self.run_dir), slot=None))
            except (FileNotFoundError, TablesError):
                pass  # not published yet: ask again next refresh
        if self.follower is not None:
            published = self.follower.changed()
            if published is not None:
                self._policy = policy_from_dict(decode_document(published.data).get("runtime") or {})
        if self._policy is None:
            self._policy = RuntimePolicy()
        return self._with_pod_labels(self._policy)

    def _with_pod_labels(self, policy: Any) -> Any:
        """The policy with the runtime's pod labels under the controller's ones (the same object while
        neither changed, so the monitor regroups its processes only on a change)."""
        pods = self._pod_labels
        if not pods:
            return policy
        if self._merged is not None and self._merged[0] is policy and self._merged[1] is pods:
            return self._merged[2]
        labels = {**pods, **policy.workload_labels}
        merged = dataclasses.replace(policy, workload_labels=labels)
        self._merged = (policy, pods, merged)
        return merged

    def close(self) -> None:
        if self.follower is not None:
            self.follower.tables.close()


class WorkloadInventory:
    """The node's workloads with their addresses and labels, for the policy's label groups: the pods the
    container runtime reports (CRI, when configured) and, for every process outside them, the workloads
    /proc and cgroups show. Also writes the root-only view `enforcer workloads` reads."""

    def __init__(
        self,
        node: str,
        cri: CriWatcher | None = None,
        run_dir: str | None = None,
        on_pod_labels: Callable[[Mapping[str, Mapping[str, str]]], None] | None = None,
    ) -> None:
        from runtime.identity import WorkloadResolver

        self.resolver = WorkloadResolver()
        self.node = node
        self.cri = cri
        self.on_pod_labels = on_pod_labels
        self.view_path = os.path.join(run_dir, WORKLOADS_VIEW) if run_dir else None
        self.pods: dict[str, PodIdentity] = {}
        self.procs: dict[str, tuple[Workload, frozenset[str]]] = {}
        self.left_out = 0  # workloads beyond what one policy input carries

    def update(self) -> WorkloadUpdate:
        """The complete inventory (the policy process drops workloads it does not list)."""
        from runtime.identity import node_workloads

        self.pods = self.cri.take_all() if self.cri is not None else {}
        self.resolver.refresh_names()
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
        self.procs = {
            key: (workload, addresses)
            for key, (workload, addresses, _pid) in node_workloads(self.resolver, pids).items()
            if not self._in_a_pod(workload)
        }
        items = [self._pod_item(p) for p in self.pods.values()]
        items += [(key, _packed(addrs), wl.intrinsic_labels()) for key, (wl, addrs) in self.procs.items()]
        self.left_out = max(0, len(items) - MAX_POLICY_INPUT_ITEMS)
        self.publish_pod_labels()
        self.write_view()
        return WorkloadUpdate("runtime", True, items[:MAX_POLICY_INPUT_ITEMS], [])

    def delta(self) -> WorkloadUpdate | None:
        """What the runtime reported since the last send (pods started, changed, gone), or None."""
        if self.cri is None:
            return None
        changed, removed = self.cri.take_delta()
        if not changed and not removed:
            return None
        for pod in changed:
            self.pods[pod.uid] = pod
        for uid in removed:
            self.pods.pop(uid, None)
        # /proc saw some of these pods' processes before the runtime told us: those stand-in entries go.
        stale = [key for key, (wl, _) in self.procs.items() if self._in_a_pod(wl)]
        for key in stale:
            del self.procs[key]
        self.publish_pod_labels()
        self.write_view()
        items = [self._pod_item(p) for p in changed][:MAX_POLICY_INPUT_ITEMS]
        return WorkloadUpdate("runtime", False, items, [*removed, *stale][:MAX_POLICY_INPUT_ITEMS])

    def _in_a_pod(self, workload: Workload) -> bool:
        if workload.pod_uid and workload.pod_uid in self.pods:
            return True
        cid = workload.container_id
        return bool(cid) and any(
            cid == p.sandbox_id or any(c.id == cid for c in p.containers) for p in self.pods.values()
        )

    def publish_pod_labels(self) -> None:
        """Each pod's labels under every key a process of it may be known by in the monitor (cgroup paths
        name the pod UID under the kubelet, the container or sandbox id otherwise)."""
        if self.on_pod_labels is None:
            return
        by_key: dict[str, Mapping[str, str]] = {}
        for pod in self.pods.values():
            labels = pod.policy_labels(self.node)
            for key in (pod.uid, pod.sandbox_id, *(c.id for c in pod.containers)):
                if key:
                    by_key[key] = labels
        self.on_pod_labels(by_key)

    def _pod_item(self, pod: PodIdentity) -> tuple[str, list[bytes], dict[str, str]]:
        return (pod.uid, _packed(pod.addresses), pod.policy_labels(self.node))

    def write_view(self) -> None:
        """The inventory as `enforcer workloads` shows it: JSON, mode 0600 in the private run dir, replaced
        atomically."""
        if self.view_path is None:
            return
        cri = self.cri
        view = {
            "node": self.node,
            "time": time.time(),
            "cri": {
                "socket": cri.socket_path if cri else "",
                "connected": bool(cri and cri.connected),
                "runtime": cri.runtime if cri else "",
                "events": cri.events_source if cri else "",
            },
            "workloads": [p.to_dict(self.node) for p in self.pods.values()]
            + [
                {
                    "key": key,
                    "source": "proc",
                    "kind": wl.kind,
                    "addresses": sorted(addrs),
                    "labels": wl.intrinsic_labels(),
                }
                for key, (wl, addrs) in self.procs.items()
            ],
        }
        tmp = f"{self.view_path}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(view, f)
            os.replace(tmp, self.view_path)
        except OSError as exc:
            log.warning("workloads view %s: %s", self.view_path, exc)


def _packed(addresses: Iterable[str]) -> list[bytes]:
    return sorted(ipaddress.ip_address(a).packed for a in addresses)[:MAX_ADDRESSES_PER_ITEM]


def start_cri_watcher(
    settings: CriSettings, counters: dict[str, int], wake: threading.Event
) -> CriWatcher | None:
    """The CRI watcher thread when a runtime socket is configured and present, else None (the /proc and
    cgroup workloads alone, as before)."""
    from runtime.cri.watcher import CriWatcher

    socket_path = settings.resolve_socket()
    if not socket_path:
        log.info("cri: no container runtime socket configured or found; workloads from /proc and cgroups")
        return None
    if not os.path.exists(socket_path):
        log.warning("cri: %s does not exist (yet); retrying in the background", socket_path)
    watcher = CriWatcher(settings, socket_path, counters, on_change=wake.set)
    threading.Thread(target=watcher.run, name="cri-watcher", daemon=True).start()
    return watcher


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

    profiles = PublishedProfiles(config.paths.run_dir)
    sender = threading.Thread(
        target=_send_loop, args=(config, node, pending, counters, stop, profiles), name="runtime-send"
    )
    sender.start()
    try:
        return run_runtime_monitor(settings, profiles, emit, stop, counters)
    finally:
        stop.set()
        sender.join(timeout=5)
        profiles.close()


def _send_loop(
    config: Config,
    node: str,
    pending: collections.deque[dict[str, Any]],
    counters: dict[str, int],
    stop: threading.Event,
    profiles: PublishedProfiles,
) -> None:
    """The only user of this child's ZeroMQ sockets: events and workloads to the policy process,
    heartbeats. A pod the container runtime reports wakes it at once (`wake`), so the pod's labels reach
    the policy process within the CRI watcher's reaction time, not the inventory period."""
    run_dir = config.paths.run_dir
    ctx = zmq.Context(1)
    events = push_to(ctx, M.events_endpoint(run_dir), EVENTS_HWM, linger_ms=500)
    supervisor = push_to(ctx, M.supervisor_endpoint(run_dir), HEARTBEAT_HWM)
    policy_input = push_to(ctx, policy_input_endpoint(run_dir), HEARTBEAT_HWM)
    wake = threading.Event()
    cri = start_cri_watcher(config.cri, counters, wake)
    inventory = WorkloadInventory(node, cri, run_dir, profiles.set_pod_labels)
    period = min(SEND_PERIOD_S, config.supervisor.heartbeat_interval_ms / 1000.0)
    next_inventory = 0.0

    def send_workloads(update: WorkloadUpdate) -> None:
        try:
            policy_input.send(encode_policy_input(update), zmq.NOBLOCK)
        except zmq.Again:
            counters["workloads.dropped"] = counters.get("workloads.dropped", 0) + 1

    try:
        while True:
            if time.monotonic() >= next_inventory:
                next_inventory = time.monotonic() + INVENTORY_PERIOD_S
                send_workloads(inventory.update())
                counters["workloads.left_out"] = inventory.left_out
            else:
                delta = inventory.delta()
                if delta is not None:
                    counters["workloads.deltas"] = counters.get("workloads.deltas", 0) + 1
                    send_workloads(delta)
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
            wake.wait(period)
            wake.clear()
            if stop.is_set() and not pending:
                return
    finally:
        if cri is not None:
            cri.close()
        ctx.destroy(linger=500)
