"""The committed CRI module is what protoc makes of cri_api.proto, and speaks the published wire format."""

from __future__ import annotations

import ast
from pathlib import Path

from runtime.cri import containerd_events_pb2, cri_api_pb2
from runtime.cri import cri_api_pb2 as api
from runtime.cri.generate import generate


def _serialized_descriptor(module_source: str) -> bytes:
    """The bytes literal a generated module hands to AddSerializedFile (the whole compiled schema)."""
    for node in ast.walk(ast.parse(module_source)):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "AddSerializedFile":
            arg = node.args[0]
            assert isinstance(arg, ast.Constant) and isinstance(arg.value, bytes)
            return arg.value
    raise AssertionError("no AddSerializedFile call in the generated module")


def test_committed_module_is_current(tmp_path: Path) -> None:
    # The schema, not the text: another protoc version writes another header around the same schema.
    generate(tmp_path)
    for module in (cri_api_pb2, containerd_events_pb2):
        name = module.__name__.rsplit(".", 1)[-1]
        fresh = _serialized_descriptor((tmp_path / f"{name}.py").read_text())
        assert fresh == module.DESCRIPTOR.serialized_pb, f"{name}.py is stale: python -m runtime.cri.generate"


def test_field_numbers_follow_the_published_api() -> None:
    # PodSandboxStatusResponse.status (1) → PodSandboxStatus.network (5) → PodSandboxNetworkStatus.ip (1):
    # tag bytes 0x0a, 0x2a, 0x0a; labels map entries of PodSandboxStatus are field 7 (0x3a).
    msg = api.PodSandboxStatusResponse(
        status=api.PodSandboxStatus(network=api.PodSandboxNetworkStatus(ip="1.2.3.4"), labels={"a": "b"})
    )
    wire = msg.SerializeToString()
    assert (
        wire.startswith(b"\x0a")
        and b"\x2a\x09\x0a\x071.2.3.4" in wire
        and b"\x3a\x06\x0a\x01a\x12\x01b" in wire
    )
    assert (
        api.PodSandboxStatusRequest(pod_sandbox_id="x", verbose=True).SerializeToString()
        == b"\x0a\x01x\x10\x01"
    )


def test_envelope_reads_a_containerd_event_with_its_timestamp_and_payload_as_bytes() -> None:
    # An Envelope as containerd writes it: Timestamp{seconds: 5} (field 1), namespace, topic, Any{type_url}.
    wire = b"\x0a\x02\x08\x05" + b"\x12\x06k8s.io" + b"\x1a\x0c/tasks/start" + b"\x22\x03\x0a\x01x"
    env = containerd_events_pb2.Envelope.FromString(wire)
    assert (env.namespace, env.topic, env.timestamp, env.event) == (
        "k8s.io",
        "/tasks/start",
        b"\x08\x05",
        b"\x0a\x01x",
    )
