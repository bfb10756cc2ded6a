"""The committed CRI module is what protoc makes of cri_api.proto, and speaks the published wire format."""

from __future__ import annotations

import ast
from pathlib import Path

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
    fresh = _serialized_descriptor((tmp_path / "cri_api_pb2.py").read_text())
    assert fresh == api.DESCRIPTOR.serialized_pb, "cri_api_pb2.py is stale: python -m runtime.cri.generate"


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
