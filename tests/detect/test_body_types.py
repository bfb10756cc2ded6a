"""A body is judged by what it is, not only by what its Content-Type says (`sniffed_values`): JSON or a
form sent as `text/plain` or a vendor type (frameworks that parse JSON whatever the type, the WAF
evasion that relies on it), GraphQL documents as one value, XML CDATA sections; raw text, pages,
scripts, tables and binary uploads are not request values. Payloads and benign bodies written here."""

from __future__ import annotations

import json

import pytest

from workers.detect.injection import check_request, sniffed_values, xml_values

SQLI = "1' UNION SELECT username, password FROM users-- -"
XSS = '"><svg onload=alert(document.domain)>'


def threats(body: bytes, ctype: str) -> set[str]:
    return {h.threat.name for h in check_request("/api", body, ctype)}


@pytest.mark.parametrize(
    ("body", "ctype", "threat"),
    [
        (json.dumps({"q": SQLI}).encode(), "text/plain", "sql_injection"),
        (json.dumps([{"bio": XSS}]).encode(), "text/plain;charset=UTF-8", "xss"),
        (json.dumps({"q": SQLI}).encode(), "application/x-custom", "sql_injection"),
        (b"q=1%27+UNION+SELECT+username%2C+password+FROM+users--+-&page=2", "text/plain", "sql_injection"),
        (b"q=%22%3E%3Csvg+onload%3Dalert(1)%3E", "application/x-anything", "xss"),
        (b"{ user(name: \"x' OR '1'='1\") { id email } }", "application/graphql", "sql_injection"),
        (b"<a><id><![CDATA[" + SQLI.encode() + b"]]></id></a>", "application/xml", "sql_injection"),
        (b"<a><![CDATA[\n" + XSS.encode() + b"\n]]></a>", "text/xml", "xss"),
    ],
)
def test_a_body_of_another_type_is_read_as_what_it_is(body: bytes, ctype: str, threat: str) -> None:
    assert threat in threats(body, ctype)


@pytest.mark.parametrize(
    ("body", "ctype"),
    [
        (b"<!doctype html><p onclick=\"go('x')\"><script>var q = \"1' or '1'='1\";</script></p>", "text/html"),
        (b"function f(a) { return a.innerHTML = '<b>' + a + '</b>'; }", "application/javascript"),
        (b"id,name,note\n1,O'Brien,\"select * from a\"\n2,<b>x</b>,1=1\n", "text/csv"),
        (b"\x89PNG\r\n\x1a\n' OR '1'='1 <script>", "image/png"),
        (b"PK\x03\x04' OR '1'='1 <script>", "application/zip"),
        (b"' OR '1'='1 <script>alert(1)</script>", "application/octet-stream"),
        (json.dumps({"name": "O'Brien", "note": "Tom & Jerry; cats > dogs"}).encode(), "text/plain"),
        (b"Dear team, please select the union rep by Friday. Thanks, O'Brien", "text/plain"),
        # raw text is no value: log lines, scripts, SQL for a database console (ClickHouse over HTTP)
        (b"2026-12-06 10:00:01 ERROR query failed: select * from jobs where id = 5 or 1=1", "text/plain"),
        (b"#!/bin/sh\necho hello; ls -la /tmp && cat /etc/hostname\n", "text/plain"),
        (b"SELECT id, name FROM users WHERE active = 1 UNION SELECT 0, 'none' ORDER BY 2", "text/plain"),
        (b'query { products(first: 10, filter: {name: "O\'Brien"}) { edges { node { id } } } }', "application/graphql"),
    ],
)  # fmt: skip
def test_pages_scripts_tables_binaries_and_benign_text_raise_nothing(body: bytes, ctype: str) -> None:
    assert threats(body, ctype) == set()


def test_what_is_sniffed() -> None:
    assert sniffed_values(b' {"a": ["b", {"c": "d"}]}', "text/plain") == ["a", "c", "d", "b"]
    assert sniffed_values(b"a=1&b=%27x", "text/plain") == ["a", "1", "b", "%27x"]
    assert sniffed_values(b"{not json", "text/plain") == []  # raw text: no value
    assert sniffed_values(b"{ user(id: 1) }", "application/graphql") == ["{ user(id: 1) }"]
    assert sniffed_values(b"<html>", "text/html") == []
    assert list(xml_values(b"<a x='1'>t<![CDATA[c]]></a>")) == ["1", "t", "c"]


@pytest.mark.parametrize(
    ("value", "xss"),
    [
        ('<?xml version="1.0" encoding="UTF-8"?>', False),
        ('<?xml version="1.0"?><order><id>7</id></order>', False),
        ('<?xpacket begin="?" id="W5M0MpCehiHzreSzNTczkc9d"?>', False),
        ('<?xml x="><script>alert(1)</script>"?>', True),  # HTML ends the declaration at its first `>`
        ('<?xml version="1.0"?><svg onload=alert(1)>', True),
    ],
)
def test_an_xml_declaration_is_a_comment_to_html(value: str, xss: bool) -> None:
    from urllib.parse import quote

    found = {h.threat.name for h in check_request("/api?doc=" + quote(value))}
    assert ("xss" in found) is xss
