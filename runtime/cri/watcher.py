"""Following the container runtime: the node's pods, kept current, surviving runtime restarts.

One thread (`run`) owns the connection. After connecting it reads every pod (ListPodSandbox,
PodSandboxStatus per new sandbox, ListContainers, ContainerStatus per new container), then follows
changes: with the runtime's container event stream where it has one (GetContainerEvents; containerd 1.7+,
CRI-O), each event triggering a re-read of the lists; otherwise by polling the two lists every `poll_ms`,
and, on containerd without CRI events (1.6), also on containerd's own task events (Events.Subscribe), so
a pod is read the moment its sandbox starts rather than at the next poll. After an event the lists are
read every few milliseconds for a short while (the runtime records a sandbox a moment after its task
starts). Every `resync_s` the lists are read whatever the events said, so a missed event heals. When the
runtime goes away the last-known pods stay in force (counted and logged) and the thread reconnects with a
back-off.

Changes are handed over, not sent from here: `on_change()` tells the owner (the runtime child's sender)
that `take_delta()` has something; one thread sends, so a delta never overtakes a full inventory.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import grpc

from runtime.cri.client import CriClient
from runtime.cri.pods import (
    SANDBOX_READY,
    ContainerInfo,
    PodIdentity,
    SandboxInfo,
    build_pods,
    container_info,
    sandbox_info,
)
from runtime.cri.settings import CriSettings

log = logging.getLogger(__name__)

BACKOFF_START_S = 0.5  # first reconnect delay; doubled up to `reconnect_max_s`
STREAM_RESTART_S = 1.0  # least time between two starts of the event stream
SETTLE_S = 0.3  # after an event, the lists are read often for this long (or until they change) ...
SETTLE_POLL_S = 0.01  # ... this often
# containerd's task events of Kubernetes pods (its CRI namespace): a sandbox or container started or ended.
CONTAINERD_FILTERS = ['namespace==k8s.io,topic~="^/tasks/(create|start|exit|delete)$"']


class CriWatcher:
    def __init__(
        self,
        settings: CriSettings,
        socket_path: str,
        counters: Counter[str] | dict[str, int],
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.settings = settings
        self.socket_path = socket_path
        self.counters = counters
        self.on_change = on_change
        self._lock = threading.Lock()
        self._pods: dict[str, PodIdentity] = {}
        self._pending: dict[str, PodIdentity] = {}
        self._removed: set[str] = set()
        self._sandboxes: dict[str, SandboxInfo] = {}  # sandbox id → its status (fixed for its life)
        self._containers: dict[str, ContainerInfo] = {}  # container id → name and image
        self._stop = threading.Event()
        self._kick = threading.Event()  # an event arrived, or stop
        self._stream: Any = None
        self.connected = False
        self.events_supported: bool | None = None  # CRI GetContainerEvents; None: not known yet
        self.containerd_events: bool | None = None  # containerd's Events.Subscribe (the fallback)
        self.events_source = ""  # "cri" or "containerd" while an event stream is open
        self.runtime = ""  # "containerd 1.6.20" once connected
        self._settle_until = 0.0

    # ---- what the owner reads ----------------------------------------------------------------------

    def pods(self) -> dict[str, PodIdentity]:
        with self._lock:
            return dict(self._pods)

    def take_delta(self) -> tuple[list[PodIdentity], list[str]]:
        """Pods new or changed and UIDs gone since the last take."""
        with self._lock:
            changed, removed = list(self._pending.values()), sorted(self._removed)
            self._pending.clear()
            self._removed.clear()
        return changed, removed

    def take_all(self) -> dict[str, PodIdentity]:
        """Every pod now, clearing the pending delta (a full inventory carries it)."""
        with self._lock:
            self._pending.clear()
            self._removed.clear()
            return dict(self._pods)

    # ---- the thread --------------------------------------------------------------------------------

    def close(self) -> None:
        self._stop.set()
        self._kick.set()
        stream = self._stream
        if stream is not None:
            stream.cancel()

    def run(self) -> None:
        backoff = BACKOFF_START_S
        while not self._stop.is_set():
            client = CriClient(self.socket_path, self.settings.call_timeout_s)
            try:
                version = client.version()
                self.runtime = f"{version.runtime_name} {version.runtime_version}"
                self.connected = True
                self.counters["cri.connects"] = self.counters.get("cri.connects", 0) + 1
                log.info(
                    "cri: connected to %s (%s) at %s",
                    self.runtime,
                    version.runtime_api_version,
                    self.socket_path,
                )
                self._cycle(client, full=True)
                backoff = BACKOFF_START_S
                self._follow(client)
            except grpc.RpcError as exc:
                key = "cri.disconnects" if self.connected else "cri.connect_failures"
                self.counters[key] = self.counters.get(key, 0) + 1
                if self.connected or self.counters[key] == 1:
                    log.warning(
                        "cri: %s: %s; keeping %d known pods, retrying",
                        self.socket_path,
                        _describe(exc),
                        len(self._pods),
                    )
                self.connected = False
            except Exception:  # a bug here must not freeze the identities: counted, logged, reconnected
                self.counters["cri.errors"] = self.counters.get("cri.errors", 0) + 1
                log.exception("cri: unexpected error; keeping %d known pods, reconnecting", len(self._pods))
                self.connected = False
            finally:
                self._end_stream()
                client.close()
            if self._stop.wait(backoff):
                break
            backoff = min(backoff * 2, self.settings.reconnect_max_s)

    def _follow(self, client: CriClient) -> None:
        """Until stop, or a call fails (raised: the caller reconnects)."""
        next_resync = time.monotonic() + self.settings.resync_s
        poll_s = self.settings.poll_ms / 1000.0
        next_stream = 0.0
        last_source = ""
        while not self._stop.is_set():
            now = time.monotonic()
            source = self._stream_source()
            ended = self._stream is None or self._stream.done()
            # A stream that keeps ending is restarted at most every STREAM_RESTART_S; the fallback to
            # containerd's events (the CRI said UNIMPLEMENTED) starts at once.
            if source and ended and (now >= next_stream or source != last_source):
                self._start_stream(client, source)
                next_stream, last_source = now + STREAM_RESTART_S, source
            # CRI events tell of every change: no polling then. containerd's task events only hurry it.
            cri_events = self.events_source == "cri" and self._stream is not None and not self._stream.done()
            timeout = max(0.0, next_resync - now)
            if not cri_events:
                timeout = min(timeout, poll_s)
            if now < self._settle_until:
                timeout = min(timeout, SETTLE_POLL_S)
            self._kick.wait(timeout)
            self._kick.clear()
            if self._stop.is_set():
                return
            if time.monotonic() >= next_resync:
                # The lists again, whatever the events said; sandbox and container details are fixed for
                # their lifetime, so the caches stay (they are dropped on reconnect).
                self.counters["cri.resyncs"] = self.counters.get("cri.resyncs", 0) + 1
                next_resync = time.monotonic() + self.settings.resync_s
            self._cycle(client, full=False)

    # ---- event streams -----------------------------------------------------------------------------

    def _stream_source(self) -> str:
        """The CRI event stream, else (containerd without it) containerd's; "" when neither."""
        if self.events_supported is not False:
            return "cri"
        if self.runtime.startswith("containerd") and self.containerd_events is not False:
            return "containerd"
        return ""

    def _start_stream(self, client: CriClient, source: str) -> None:
        if source == "cri":
            stream = client.container_events()
        else:
            stream = client.containerd_events(CONTAINERD_FILTERS)
        self._stream = stream
        self.events_source = source
        threading.Thread(
            target=self._read_stream, args=(stream, source), name="cri-events", daemon=True
        ).start()

    def _read_stream(self, stream: Any, source: str) -> None:
        try:
            for _event in stream:
                if source == "cri" and not self.events_supported:
                    log.info("cri: following the runtime's container events")
                    self.events_supported = True
                elif source == "containerd" and not self.containerd_events:
                    log.info("cri: following containerd's task events (its CRI has none); polling too")
                    self.containerd_events = True
                self.counters["cri.events"] = self.counters.get("cri.events", 0) + 1
                self._settle_until = time.monotonic() + SETTLE_S
                self._kick.set()
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                if source == "cri":
                    log.info(
                        "cri: the runtime has no container events; polling every %d ms", self.settings.poll_ms
                    )
                    self.events_supported = False
                else:
                    self.containerd_events = False
            elif exc.code() != grpc.StatusCode.CANCELLED:
                self.counters["cri.events_lost"] = self.counters.get("cri.events_lost", 0) + 1
        self.events_source = ""
        self._kick.set()  # the follower notices the stream ended (reads the lists, restarts it)

    def _end_stream(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.cancel()

    # ---- reading the runtime -----------------------------------------------------------------------

    def _cycle(self, client: CriClient, full: bool) -> None:
        if full:
            self._sandboxes.clear()
            self._containers.clear()
        sandboxes = client.list_sandboxes()
        ready = [s.id for s in sandboxes if s.state == SANDBOX_READY]
        for sid in ready:
            if sid not in self._sandboxes:
                status = _unless_gone(client.sandbox_status, sid)
                if status is not None:
                    self._sandboxes[sid] = sandbox_info(status)
        live = {s.id for s in sandboxes}
        for sid in [s for s in self._sandboxes if s not in live]:
            del self._sandboxes[sid]
        containers = client.list_containers()
        for c in containers:
            if c.id not in self._containers:
                status = _unless_gone(client.container_status, c.id)
                if status is not None:
                    self._containers[c.id] = container_info(status, c.pod_sandbox_id)
        present = {c.id for c in containers}
        for cid in [c for c in self._containers if c not in present]:
            del self._containers[cid]
        pods, left_out = build_pods(
            ready,
            self._sandboxes,
            [(c.id, c.state) for c in containers],
            self._containers,
            self.settings.max_pods,
        )
        if left_out:
            self.counters["cri.pods_full"] = self.counters.get("cri.pods_full", 0) + left_out
        self._publish(pods)

    def _publish(self, pods: dict[str, PodIdentity]) -> None:
        with self._lock:
            changed = [p for uid, p in pods.items() if self._pods.get(uid) != p]
            removed = [uid for uid in self._pods if uid not in pods]
            self._pods = pods
            for p in changed:
                self._pending[p.uid] = p
                self._removed.discard(p.uid)
            for uid in removed:
                self._pending.pop(uid, None)
                self._removed.add(uid)
        self.counters["cri.pods"] = len(pods)
        if changed or removed:
            self._settle_until = 0.0  # what the event announced has been read
            self.on_change()


def _unless_gone(call: Callable[[str], Any], ident: str) -> Any:
    """The status of a sandbox or container, or None when it went away between the list and the call."""
    try:
        return call(ident)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:
            return None
        raise


def _describe(exc: grpc.RpcError) -> str:
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return f"{code.name if code else 'error'}: {details}"
