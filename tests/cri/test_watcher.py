"""The watcher's two ways of following a runtime, against a small CRI server of our own on a unix socket.

containerd 1.6 (Debian 12, what the `cri` tests run) has no GetContainerEvents; containerd 1.7+ and
CRI-O have. This server stands in for such a runtime: real gRPC, real socket, the real watcher thread.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest

from runtime.cri import cri_api_pb2 as api
from runtime.cri.settings import CriSettings
from runtime.cri.watcher import CriWatcher

UID = "5f0c6c1e-2b7a-4c1e-9a51-0d7f3b2e4a10"


class FakeRuntime:
    def __init__(self, socket: Path, events: bool) -> None:
        self.sandboxes: dict[str, api.PodSandboxStatus] = {}
        self.events: queue.Queue[api.ContainerEventResponse | None] = queue.Queue()
        handlers: dict[str, Any] = {
            "Version": self._unary(
                api.VersionRequest, lambda r: api.VersionResponse(runtime_name="fake", runtime_version="1")
            ),
            "ListPodSandbox": self._unary(api.ListPodSandboxRequest, self._list),
            "PodSandboxStatus": self._unary(api.PodSandboxStatusRequest, self._status),
            "ListContainers": self._unary(api.ListContainersRequest, lambda r: api.ListContainersResponse()),
        }
        if events:
            handlers["GetContainerEvents"] = grpc.unary_stream_rpc_method_handler(
                self._events,
                request_deserializer=api.GetEventsRequest.FromString,
                response_serializer=api.ContainerEventResponse.SerializeToString,
            )
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("runtime.v1.RuntimeService", handlers),)
        )
        self.server.add_insecure_port(f"unix://{socket}")
        self.server.start()

    @staticmethod
    def _unary(request_type: Any, fn: Any) -> Any:
        return grpc.unary_unary_rpc_method_handler(
            lambda request, context: fn(request),
            request_deserializer=request_type.FromString,
            response_serializer=lambda m: m.SerializeToString(),
        )

    def _list(self, request: Any) -> api.ListPodSandboxResponse:
        return api.ListPodSandboxResponse(
            items=[
                api.PodSandbox(id=s.id, metadata=s.metadata, state=s.state) for s in self.sandboxes.values()
            ]
        )

    def _status(self, request: Any) -> api.PodSandboxStatusResponse:
        return api.PodSandboxStatusResponse(status=self.sandboxes[request.pod_sandbox_id])

    def _events(self, request: Any, context: Any) -> Iterator[api.ContainerEventResponse]:
        while context.is_active():
            try:
                event = self.events.get(timeout=0.1)
            except queue.Empty:
                continue
            if event is None:
                return
            yield event

    def add_pod(self, sid: str, ip: str) -> None:
        self.sandboxes[sid] = api.PodSandboxStatus(
            id=sid,
            metadata=api.PodSandboxMetadata(name="web-0", uid=UID, namespace="shop"),
            state=api.SANDBOX_READY,
            network=api.PodSandboxNetworkStatus(ip=ip),
            labels={"app": "web"},
        )

    def stop(self) -> None:
        self.events.put(None)
        self.server.stop(grace=None)


def _wait(cond: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.mark.parametrize("events", [True, False])
def test_a_new_pod_is_seen_through_events_or_polling(tmp_path: Path, events: bool) -> None:
    socket = tmp_path / "cri.sock"
    runtime = FakeRuntime(socket, events)
    # With events, polling is an hour away: only the event can bring the pod in time.
    settings = CriSettings(socket=str(socket), poll_ms=60_000 if events else 50, resync_s=3600)
    changed = threading.Event()
    watcher = CriWatcher(settings, str(socket), Counter(), on_change=changed.set)
    thread = threading.Thread(target=watcher.run)
    thread.start()
    try:
        # past the first full read: the stream is open (events) or known to be missing (polling)
        if events:
            assert _wait(lambda: watcher.events_source == "cri")
        else:
            assert _wait(lambda: watcher.events_supported is False)
        runtime.add_pod("sb1", "198.18.40.7")
        if events:
            runtime.events.put(
                api.ContainerEventResponse(
                    container_id="sb1", container_event_type=api.CONTAINER_STARTED_EVENT
                )
            )
        assert _wait(lambda: UID in watcher.pods(), timeout=3.0)
        assert changed.is_set() and watcher.events_supported is events
        pod = watcher.pods()[UID]
        assert pod.addresses == ("198.18.40.7",) and pod.labels == {"app": "web"}
        changed_pods, removed = watcher.take_delta()
        assert [p.uid for p in changed_pods] == [UID] and removed == []
    finally:
        watcher.close()
        runtime.stop()
        thread.join(timeout=10)
    assert not thread.is_alive()


def test_runtime_away_keeps_the_pods_and_reconnects(tmp_path: Path) -> None:
    socket = tmp_path / "cri.sock"
    runtime = FakeRuntime(socket, events=False)
    runtime.add_pod("sb1", "198.18.40.8")
    counters: Counter[str] = Counter()
    watcher = CriWatcher(CriSettings(poll_ms=50, reconnect_max_s=0.5), str(socket), counters)
    thread = threading.Thread(target=watcher.run)
    thread.start()
    try:
        assert _wait(lambda: UID in watcher.pods())
        assert [p.uid for p in watcher.take_delta()[0]] == [UID]
        runtime.stop()
        assert _wait(lambda: counters["cri.disconnects"] >= 1)
        assert UID in watcher.pods()  # last-known identity kept while the runtime is away
        assert watcher.take_delta() == ([], [])  # nothing announced as gone
        runtime = FakeRuntime(socket, events=False)
        runtime.add_pod("sb2", "198.18.40.9")  # restarted meanwhile with a new sandbox
        assert _wait(
            lambda: (
                watcher.connected
                and watcher.pods().get(UID) is not None
                and watcher.pods()[UID].sandbox_id == "sb2"
            )
        )
        assert counters["cri.connects"] >= 2
    finally:
        watcher.close()
        runtime.stop()
        thread.join(timeout=10)
