"""crlf_injection: a line break in a request value followed by a header or a status line, the response
split that an application writing the value into a header would send; a text area's lines (`Regards:`)
in a form are no split. Every value here was written for these tests."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.verdict import WorkerVerdict
from threats import catalogue as C
from workers.detect.crlf import check_crlf

from .test_body_parts import flow
from .test_engine import Lab
from .test_headers import CURL, request

IN_THE_TARGET = [
    (b"/%0D%0ASet-Cookie:session=fixed", "a cookie set through the path"),
    (b"/redirect?to=%2Fhome%0d%0aLocation:%20http://198.18.0.9/", "a second Location"),
    (b"/?lang=en%0AX-Injected:%201", "any header name, LF alone"),
    (b"/%E5%98%8D%E5%98%8ASet-Cookie:a=1", "U+560D U+560A, whose low bytes are CR LF"),
    (b"/%250d%250aSet-Cookie:a=1", "double encoded"),
    (b"/%u000d%u000aSet-Cookie:a=1", "%u escapes"),
    (b"/p?a=1%0d%0aContent-Length:%200%0d%0a%0d%0aHTTP/1.1%20200%20OK", "a second response"),
    (b"/%23%0D%0A%09Set-Cookie:x=1", "a fragment, a tab before the header"),
]
QUIET_TARGETS = [
    b"/search?q=line%0d%0abreak",  # a break, no header after it
    b"/a?next=%2Fhome%3Fx%3D1",
    b"/docs/Set-Cookie:%20explained",
]


@pytest.mark.parametrize(("target", "why"), IN_THE_TARGET)
def test_a_header_after_a_line_break_in_the_target_is_crlf_injection(target: bytes, why: str) -> None:
    hit = check_crlf(target, [])
    assert hit is not None and hit.threat is C.CRLF_INJECTION, why


@pytest.mark.parametrize("target", QUIET_TARGETS)
def test_targets_without_a_split_are_quiet(target: bytes) -> None:
    assert check_crlf(target, []) is None


def test_in_a_value_only_a_response_header_or_a_status_line_counts() -> None:
    assert check_crlf(b"/contact", ["msg=Hi%0D%0ASet-Cookie%3A+sid%3D1"]) is not None
    assert check_crlf(b"/contact", ["Thanks\r\nHTTP/1.1 302 Found"]) is not None
    assert check_crlf(b"/contact", ["Dear team,\r\nRegards: Bob", "Hello%0D%0AContent%3A+below"]) is None


@given(st.binary(max_size=300), st.lists(st.text(max_size=100), max_size=4))
def test_the_check_is_total(target: bytes, values: list[str]) -> None:
    hit = check_crlf(b"/%0d%0a" + target, ["\r\n" + v for v in values])
    assert hit is None or (hit.threat is C.CRLF_INJECTION and len(hit.excerpt) <= C.MAX_FINDING_EXCERPT)


@pytest.mark.parametrize(
    ("method", "headers", "body", "path", "port"),
    [
        ("GET", CURL, b"", "/redirect?to=%2F%0D%0ASet-Cookie:%20sid=fixed", 42810),
        (
            "POST",
            [*CURL, ("Content-Type", "application/json")],
            json.dumps({"lang": "en\r\nLocation: http://198.18.0.9/"}).encode(),
            "/prefs",
            42811,
        ),
    ],
)
def test_crlf_injection_is_reset_in_protect(
    method: str, headers: list[tuple[str, str]], body: bytes, path: str, port: int
) -> None:
    lab = Lab()
    verdicts = lab.send(flow(request(method, headers, body, path), port))
    assert verdicts[-1] is WorkerVerdict.RESET_FLOW
    [event] = lab.threats("crlf_injection")
    assert event["action"] == "reset" and event["group"] == "web"


def test_a_multi_line_message_stays_quiet() -> None:
    lab = Lab()
    form = ("Content-Type", "application/x-www-form-urlencoded")
    body = b"msg=Dear+team%2C%0D%0APlease+see+below.%0D%0ARegards%3A+Bob"
    verdicts = lab.send(flow(request("POST", [*CURL, form], body, "/contact"), 42820))
    assert WorkerVerdict.RESET_FLOW not in verdicts and lab.threats() == []
