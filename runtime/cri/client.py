"""The gRPC shell over the container runtime's CRI socket (runtime.v1.RuntimeService).

Only what the enforcer reads, plus a generic `call` the lab uses to drive pods as the kubelet does. The
runtime's socket is root-only on the node; nothing here listens. Answers are bounded in size.
"""

from __future__ import annotations

from typing import Any

import grpc

from runtime.cri import containerd_events_pb2 as containerd_events
from runtime.cri import cri_api_pb2 as api

SERVICE = "/runtime.v1.RuntimeService/"
MAX_MESSAGE_BYTES = 16 << 20  # a ListContainers answer of a busy node is well below this

# method → response message class (requests are built by the caller)
_RESPONSES: dict[str, Any] = {
    "Version": api.VersionResponse,
    "RunPodSandbox": api.RunPodSandboxResponse,
    "StopPodSandbox": api.StopPodSandboxResponse,
    "RemovePodSandbox": api.RemovePodSandboxResponse,
    "PodSandboxStatus": api.PodSandboxStatusResponse,
    "ListPodSandbox": api.ListPodSandboxResponse,
    "CreateContainer": api.CreateContainerResponse,
    "StartContainer": api.StartContainerResponse,
    "StopContainer": api.StopContainerResponse,
    "RemoveContainer": api.RemoveContainerResponse,
    "ListContainers": api.ListContainersResponse,
    "ContainerStatus": api.ContainerStatusResponse,
}


class CriClient:
    """One channel to the runtime; every call has a deadline. Raises grpc.RpcError (the caller decides)."""

    def __init__(self, socket_path: str, timeout_s: float = 5.0) -> None:
        self.socket_path = socket_path
        self.timeout_s = timeout_s
        self.channel = grpc.insecure_channel(
            f"unix://{socket_path}",
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.enable_http_proxy", 0),  # a local socket: never through a proxy from the environment
            ],
        )

    def call(self, method: str, request: Any, timeout_s: float | None = None) -> Any:
        stub = self.channel.unary_unary(
            SERVICE + method,
            request_serializer=type(request).SerializeToString,
            response_deserializer=_RESPONSES[method].FromString,
        )
        return stub(request, timeout=timeout_s or self.timeout_s)

    def version(self) -> Any:
        return self.call("Version", api.VersionRequest(version="v1"))

    def list_sandboxes(self) -> list[Any]:
        return list(self.call("ListPodSandbox", api.ListPodSandboxRequest()).items)

    def sandbox_status(self, sandbox_id: str) -> Any:
        return self.call("PodSandboxStatus", api.PodSandboxStatusRequest(pod_sandbox_id=sandbox_id)).status

    def list_containers(self) -> list[Any]:
        return list(self.call("ListContainers", api.ListContainersRequest()).containers)

    def container_status(self, container_id: str) -> Any:
        return self.call("ContainerStatus", api.ContainerStatusRequest(container_id=container_id)).status

    def container_events(self) -> Any:
        """The runtime's container event stream: an iterator of ContainerEventResponse with `cancel()`
        (no deadline: it lives as long as the connection)."""
        stream = self.channel.unary_stream(
            SERVICE + "GetContainerEvents",
            request_serializer=api.GetEventsRequest.SerializeToString,
            response_deserializer=api.ContainerEventResponse.FromString,
        )
        return stream(api.GetEventsRequest())

    def containerd_events(self, filters: list[str]) -> Any:
        """containerd's own event stream (its Events service on the same socket): Envelopes with a topic."""
        stream = self.channel.unary_stream(
            "/containerd.services.events.v1.Events/Subscribe",
            request_serializer=containerd_events.SubscribeRequest.SerializeToString,
            response_deserializer=containerd_events.Envelope.FromString,
        )
        return stream(containerd_events.SubscribeRequest(filters=filters))

    def close(self) -> None:
        self.channel.close()
