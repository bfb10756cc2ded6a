"""prototype_pollution: a parameter name, JSON key or property path that walks to Object.prototype; prose
naming `__proto__` and ordinary names holding `proto` or `constructor` are no finding. Every request here
was written for these tests, in the shapes public advisories describe."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.verdict import WorkerVerdict
from threats import catalogue as C
from workers.detect.injection import json_values, pair_values
from workers.detect.prototype import check_prototype

from .test_body_parts import flow
from .test_engine import Lab
from .test_headers import CURL, request

ATTACKS = [
    ("query", "__proto__[isAdmin]=true", "qs's bracket syntax"),
    ("query", "__proto__.isAdmin=true", "a dotted path"),
    ("query", "constructor[prototype][isAdmin]=true", "through the constructor"),
    ("query", "constructor.prototype.polluted=1", "the constructor dotted"),
    ("query", "__proto__%5Btest%5D=1", "percent-encoded brackets"),
    ("query", "a[__proto__][b]=1", "nested under a field"),
    ("json", '{"user": {"__proto__": {"isAdmin": true}}}', "a JSON key"),
    ("json", '{"constructor": {"prototype": {"shell": "/proc/self/exe"}}}', "JSON through the constructor"),
    ("json", '{"path": "settings.__proto__.admin", "value": true}', "a path for a setter"),
    ("cookie", "prefs=__proto__.theme=x", "a cookie"),
    ("cookie", "prefs=__\\u0070\\u0072oto__.foo=bar", "the name spelt in escapes"),
]
BENIGN = [
    ("query", "q=the+__proto__+property+is+deprecated", "prose"),
    ("query", "protocol=https&proto=tcp", "names holding proto"),
    ("json", '{"constructor": "Ada Lovelace", "prototype": "v2"}', "fields named so"),
    ("json", '{"doc": "Object.getPrototypeOf(x) replaces __proto__ accessors"}', "documentation"),
    ("query", "type=constructor&stage=prototype", "words as values"),
    ("query", "q=Object.setPrototypeOf(constructor.prototype,+base.prototype)", "code quoted in prose"),
]


def found(where: str, text: str) -> bool:
    if where == "json":
        hit = check_prototype(b"", list(json_values(text.encode())), text.encode())
    else:
        hit = check_prototype(b"", list(pair_values(text)))
    assert hit is None or hit.threat is C.PROTOTYPE_POLLUTION
    return hit is not None


@pytest.mark.parametrize(("where", "text", "why"), ATTACKS)
def test_a_walk_to_object_prototype_is_prototype_pollution(where: str, text: str, why: str) -> None:
    assert found(where, text), why


@pytest.mark.parametrize(("where", "text", "why"), BENIGN)
def test_prose_and_ordinary_names_are_no_finding(where: str, text: str, why: str) -> None:
    assert not found(where, text), why


def test_a_body_no_parser_read_and_character_references_are_read() -> None:
    assert check_prototype(b'x={"__proto__":{"a":1}}', []) is not None
    assert check_prototype(b'<a v="&quot;__proto__&quot;:1"/>', []) is not None


@given(st.text(max_size=200))
def test_the_check_is_total(text: str) -> None:
    hit = check_prototype(("__proto__" + text).encode("utf-8", "replace"), [text, "\\u" + text])
    assert hit is None or (hit.threat is C.PROTOTYPE_POLLUTION and len(hit.excerpt) <= C.MAX_FINDING_EXCERPT)


@pytest.mark.parametrize(
    ("method", "headers", "body", "path", "port"),
    [
        ("GET", CURL, b"", "/api/search?__proto__[isAdmin]=true", 42950),
        (
            "POST",
            [*CURL, ("Content-Type", "application/json")],
            b'{"a": {"__proto__": {"x": 1}}}',
            "/api/merge",
            42951,
        ),
    ],
)
def test_prototype_pollution_is_reset_in_protect(
    method: str, headers: list[tuple[str, str]], body: bytes, path: str, port: int
) -> None:
    lab = Lab()
    verdicts = lab.send(flow(request(method, headers, body, path), port))
    assert verdicts[-1] is WorkerVerdict.RESET_FLOW
    [event] = lab.threats("prototype_pollution")
    assert event["action"] == "reset" and event["group"] == "web"


def test_a_json_document_with_constructor_and_prototype_fields_stays_quiet() -> None:
    lab = Lab()
    body = b'{"constructor": "Ada", "prototype": "v2", "proto": "h2"}'
    verdicts = lab.send(
        flow(request("POST", [*CURL, ("Content-Type", "application/json")], body, "/api"), 42952)
    )
    assert WorkerVerdict.RESET_FLOW not in verdicts and lab.threats() == []
