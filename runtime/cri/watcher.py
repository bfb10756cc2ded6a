"""Following the container runtime: the node's pods, kept current, surviving runtime restarts.

One thread (`run`) owns the connection. After connecting it reads every pod (ListPodSandbox,
PodSandboxStatus per new sandbox, ListContainers, ContainerStatus per new container), then follows
changes: with the runtime's container event stream where it has one (GetContainerEvents; containerd 1.7+,
CRI-O), each event triggering a re-read of the lists, otherwise by polling the two lists every
`poll_ms`; every `resync_s` everything is read again, so a missed event heals. When the runtime goes away
the last-known pods stay in force (counted and logged) and the thread reconnects with a back-off.

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


class CriWatcher:
    def __init__(
        self,
        settings: CriSettings,
        socket_path: str,
        counters: Counter[str] | dict[str, int],
        on_change: Callable[[], None] = lambda: None,
        client_factory: Callable[[str, float], CriClient] = CriClient,
    ) -> None:
        self.settings = settings
        self.socket_path = socket_path
        self.counters = counters
        self.on_change = on_change
        self._client_factory = client_factory
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
        self.events_supported: bool | None = None  # None: not known yet
        self.runtime = ""  # "containerd 1.6.20" once connected

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
            client = self._client_factory(self.socket_path, self.settings.call_timeout_s)
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
        while not self._stop.is_set():
            ended = self._stream is None or self._stream.done()
            if self.events_supported is not False and ended and time.monotonic() >= next_stream:
                self._start_stream(client)
                next_stream = time.monotonic() + STREAM_RESTART_S  # a stream that keeps ending: no busy loop
            streaming = self._stream is not None and not self._stream.done()
            wait = max(0.0, next_resync - time.monotonic())
            kicked = self._kick.wait(wait if streaming else min(wait, poll_s))
            self._kick.clear()
            if self._stop.is_set():
                return
            if time.monotonic() >= next_resync:
                # The lists again, whatever the events said; sandbox and container details are fixed for
                # their lifetime, so the caches stay (they are dropped on reconnect).
                self.counters["cri.resyncs"] = self.counters.get("cri.resyncs", 0) + 1
                self._cycle(client, full=False)
                next_resync = time.monotonic() + self.settings.resync_s
            elif kicked or not streaming:
                self._cycle(client, full=False)

    # ---- container events --------------------------------------------------------------------------

    def _start_stream(self, client: CriClient) -> None:
        stream = client.container_events()
        self._stream = stream
        threading.Thread(target=self._read_stream, args=(stream,), name="cri-events", daemon=True).start()

    def _read_stream(self, stream: Any) -> None:
        try:
            for _event in stream:
                if self.events_supported is None:
                    log.info("cri: following the runtime's container events")
                self.events_supported = True
                self.counters["cri.events"] = self.counters.get("cri.events", 0) + 1
                self._kick.set()
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                if self.events_supported is None:
                    log.info(
                        "cri: the runtime has no container events; polling every %d ms", self.settings.poll_ms
                    )
                self.events_supported = False
            elif exc.code() != grpc.StatusCode.CANCELLED:
                self.counters["cri.events_lost"] = self.counters.get("cri.events_lost", 0) + 1
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
