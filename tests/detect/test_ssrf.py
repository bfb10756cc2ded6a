"""ssrf: a request value that points the server's fetch at the cloud metadata service, at an address spelt
to pass a filter, or through a scheme only a forged request uses; loopback and private addresses written
plainly (a command-line tool's `redirect_uri`, an internal service URL) are configuration, not attacks.
Every value here was written for these tests (the localhost spellings are those fuzzdb's
`attack/ip/localhost.txt` lists, scored by `scripts/eval_detect.py --fuzzdb`)."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.verdict import WorkerVerdict
from threats import catalogue as C
from workers.detect.ssrf import check_ssrf

from .test_body_parts import flow
from .test_engine import Lab
from .test_headers import CURL, request

FORGED = [
    ("http://169.254.169.254/latest/meta-data/iam/security-credentials/", "AWS metadata"),
    ("169.254.169.254/latest/user-data", "AWS metadata, no scheme"),
    ("http://metadata.google.internal/computeMetadata/v1/instance/", "GCP metadata"),
    ("http://100.100.100.200/latest/meta-data/", "Alibaba metadata"),
    ("http://169.254.170.2/v2/credentials/", "ECS task credentials"),
    ("http://[fd00:ec2::254]/latest/meta-data/", "AWS metadata over IPv6"),
    ("http://[::ffff:169.254.169.254]/", "metadata as an IPv4-mapped IPv6 address"),
    ("http://2852039166/latest/", "metadata as one number"),
    ("http://0xa9.0xfe.0xa9.0xfe/", "metadata in hex"),
    ("http://2130706433:6379/", "loopback as one number"),
    ("http://0x7f000001/admin", "loopback in hex"),
    ("http://0177.0.0.01/", "loopback in octal"),
    ("http://127.1/", "loopback, short form"),
    ("http://0/", "the unspecified address as 0"),
    ("http://user:pw@0x7f.1:8080/", "userinfo before a hex host"),
    ("//2130706433/x", "protocol-relative"),
    ("http://[::ffff:7f00:1]/", "loopback as an IPv4-mapped IPv6 address"),
    ("http://[::]:22/", "the unspecified IPv6 address"),
    ("http://①②⑦.⓪.⓪.①/", "circled digits"),
    ("http://127。0。0。1/", "ideographic full stops"),
    ("gopher://127.0.0.1:6379/_FLUSHALL", "gopher to Redis"),
    ("dict://127.0.0.1:11211/stats", "dict to memcached"),
    ("jar:http://198.18.0.9/evil.jar!/", "Java's jar: scheme"),
    (quote(quote("http://169.254.169.254/", safe=""), safe=""), "double encoded"),
]

BENIGN = [
    "http://localhost:8080/callback",  # a command-line tool's OAuth redirect
    "http://127.0.0.1:3000/",
    "http://[::1]:8080/",
    "http://10.0.0.5:9090/metrics",
    "http://orders.shop.svc.cluster.local:8080/hooks/paid",
    "https://example.org/2024//05/a",  # a double slash in a path
    "2130706433",  # a number is a number
    "v1.2.3",
    "https://metadata.example.org/schema.json",
    "instance-data",
    "http://café.example/menu",
    "Please fetch http://example.org/a.png and resize it",
    "see RFC 3927 (169.254/16 is link-local)",
]


@pytest.mark.parametrize(("value", "why"), FORGED)
def test_a_forged_target_is_ssrf(value: str, why: str) -> None:
    hit = check_ssrf(["page", value])
    assert hit is not None and hit.threat is C.SSRF, why


@pytest.mark.parametrize("value", BENIGN)
def test_plain_urls_and_addresses_are_no_ssrf(value: str) -> None:
    assert check_ssrf(["url", value]) is None


@given(st.lists(st.text(max_size=200), max_size=5))
def test_the_check_is_total(values: list[str]) -> None:
    hit = check_ssrf(["http://" + v for v in values] + values)
    assert hit is None or (hit.threat is C.SSRF and len(hit.excerpt) <= C.MAX_FINDING_EXCERPT)


METADATA = "http://169.254.169.254/latest/meta-data/"


@pytest.mark.parametrize(
    ("method", "headers", "body", "path", "port"),
    [
        ("GET", CURL, b"", "/fetch?url=" + quote(METADATA, safe=""), 42710),  # a query value
        (
            "POST",
            [*CURL, ("Content-Type", "application/json")],
            json.dumps({"webhook": {"url": METADATA}}).encode(),
            "/api/hooks",
            42711,
        ),  # a JSON string
        (
            "POST",
            [*CURL, ("Content-Type", "application/x-www-form-urlencoded")],
            b"image=" + quote("http://2130706433:6379/", safe="").encode(),
            "/resize",
            42712,
        ),  # a form value
        ("GET", CURL, b"", "/proxy/" + quote(METADATA, safe=":/"), 42713),  # the path of a proxy
        ("GET", [*CURL, ("X-Callback-Url", "gopher://127.0.0.1:6379/_x")], b"", "/ping", 42714),  # a header
    ],
)
def test_ssrf_is_reset_in_protect(
    method: str, headers: list[tuple[str, str]], body: bytes, path: str, port: int
) -> None:
    lab = Lab()
    verdicts = lab.send(flow(request(method, headers, body, path), port))
    assert verdicts[-1] is WorkerVerdict.RESET_FLOW
    [event] = lab.threats("ssrf")
    assert event["action"] == "reset" and event["group"] == "web"


def test_a_redirect_uri_to_localhost_and_an_internal_webhook_stay_quiet() -> None:
    lab = Lab()
    login = "/oauth/authorize?client_id=cli&redirect_uri=" + quote("http://localhost:8085/callback", safe="")
    verdicts = lab.send(flow(request("GET", CURL, b"", login), 42720))
    hook = json.dumps({"url": "http://orders.shop.svc.cluster.local:8080/hooks/paid"}).encode()
    json_type = ("Content-Type", "application/json")
    verdicts += lab.send(flow(request("POST", [*CURL, json_type], hook, "/api/hooks"), 42721))
    assert WorkerVerdict.RESET_FLOW not in verdicts and lab.threats() == []
