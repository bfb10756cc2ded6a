"""php_object_injection: a serialized PHP object (as sent, base64- or percent-encoded) or a phar:// path in
a request; serialized arrays and scalars, names that only look like one and prose are no finding. Every
value here was written for these tests, in the shape phpggc's chains take."""

from __future__ import annotations

import base64
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.verdict import WorkerVerdict
from threats import catalogue as C
from workers.detect.phpobject import check_php_object

from .test_body_parts import flow
from .test_engine import Lab
from .test_headers import CURL, request

# the shape of phpggc's Monolog/RCE1 chain (class names and property counts as PHP writes them)
MONOLOG = (
    'O:32:"Monolog\\Handler\\SyslogUdpHandler":1:{s:9:"\x00*\x00socket";O:29:"Monolog\\Handler\\BufferHandler"'
    ':7:{s:10:"\x00*\x00handler";r:2;s:13:"\x00*\x00bufferSize";i:-1;}}'
)
GUZZLE = 'O:24:"GuzzleHttp\\Psr7\\FnStream":2:{s:33:"\x00GuzzleHttp\\Psr7\\FnStream\x00methods";a:1:{s:5:"close";a:2:{}}}'
CUSTOM = 'C:11:"ArrayObject":37:{x:i:0;a:0:{};m:a:1:{s:1:"x";s:2:"id";}}'

ATTACKS = [
    (b"", [MONOLOG], "a Monolog chain in a value"),
    (b"", [quote(GUZZLE, safe="")], "percent-encoded"),
    (b"", [base64.b64encode(MONOLOG.encode()).decode()], "base64, as phpggc -b writes it"),
    (b"", [CUSTOM], "a custom-serialized object"),
    (MONOLOG.encode("latin-1"), [], "the body"),
    (b"", ["phar://./uploads/avatar.jpg/x.txt"], "a phar:// path to an upload"),
    (b'{"file": "PHAR://../../tmp/x.phar"}', [], "phar:// in a JSON body, upper case"),
]
BENIGN = [
    (b"", ['a:2:{i:0;s:3:"red";i:1;s:4:"blue";}'], "a serialized array (an application's own cookie)"),
    (b"", ['s:5:"hello";'], "a serialized string"),
    (b"", ['O:99:"short":1:{'], "a declared length that is not the name's"),
    (b"", ["Order O:12 is due: 3 items"], "prose"),
    (b"", ["Tzo5MDAw is an order reference"], "base64-looking text that decodes to no object"),
    (b"", ["the phar extension and phar files"], "prose naming phar"),
]


@pytest.mark.parametrize(("body", "values", "why"), ATTACKS)
def test_a_serialized_object_or_phar_path_is_php_object_injection(
    body: bytes, values: list[str], why: str
) -> None:
    hit = check_php_object(body, values)
    assert hit is not None and hit.threat is C.PHP_OBJECT_INJECTION, why


@pytest.mark.parametrize(("body", "values", "why"), BENIGN)
def test_arrays_scalars_and_prose_are_no_finding(body: bytes, values: list[str], why: str) -> None:
    assert check_php_object(body, values) is None, why


@given(st.binary(max_size=400), st.lists(st.text(max_size=80), max_size=3))
def test_the_check_is_total(body: bytes, values: list[str]) -> None:
    hit = check_php_object(b'O:3:"abc":1:{' + body, ["Tzo" + v for v in values] + values)
    assert hit is None or (hit.threat is C.PHP_OBJECT_INJECTION and len(hit.excerpt) <= C.MAX_FINDING_EXCERPT)


@pytest.mark.parametrize(
    ("headers", "body", "path", "port"),
    [
        ([*CURL, ("Cookie", "prefs=" + quote(MONOLOG, safe=""))], b"", "/account", 42940),
        (
            [*CURL, ("Content-Type", "application/x-www-form-urlencoded")],
            b"data=" + base64.b64encode(GUZZLE.encode()),
            "/import",
            42941,
        ),
    ],
)
def test_php_object_injection_is_reset_in_protect(
    headers: list[tuple[str, str]], body: bytes, path: str, port: int
) -> None:
    lab = Lab()
    verdicts = lab.send(flow(request("POST" if body else "GET", headers, body, path), port))
    assert verdicts[-1] is WorkerVerdict.RESET_FLOW
    [event] = lab.threats("php_object_injection")
    assert event["action"] == "reset" and event["group"] == "web"


def test_a_serialized_array_cookie_stays_quiet() -> None:
    lab = Lab()
    cookie = ("Cookie", "cart=" + quote('a:1:{i:0;s:6:"widget";}', safe=""))
    verdicts = lab.send(flow(request("GET", [*CURL, cookie], b"", "/cart"), 42942))
    assert WorkerVerdict.RESET_FLOW not in verdicts and lab.threats() == []
