"""multipart/form-data bodies: field names, file names and text fields are judged as a form's values;
uploaded files' contents are not (`workers.detect.multipart`). Every payload and benign form here was
written for these tests."""

from __future__ import annotations

import base64

import pytest

from workers.detect.injection import check_request
from workers.detect.multipart import CLOSED, FIELD, FILE, MultipartCursor, boundary_of, scan

BOUNDARY = b"----WebKitFormBoundary7MA4YWxkTrZu0gW"
CTYPE = "multipart/form-data; boundary=" + BOUNDARY.decode()


def part(name: str, content: bytes, filename: str | None = None, ctype: str = "", extra: str = "") -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename is not None else "")
    head = f"Content-Disposition: {disposition}\r\n"
    head += f"Content-Type: {ctype}\r\n" if ctype else ""
    head += extra
    return b"--" + BOUNDARY + b"\r\n" + head.encode() + b"\r\n" + content + b"\r\n"


def form(*parts: bytes, boundary: bytes = BOUNDARY) -> bytes:
    return b"".join(parts) + b"--" + boundary + b"--\r\n"


def threats(body: bytes, ctype: str = CTYPE) -> set[str]:
    return {h.threat.name for h in check_request("/upload", body, ctype)}


SQLI = b"1' UNION SELECT username, password FROM users-- -"
XSS = b'"><img src=x onerror=alert(document.domain)>'
HTML_FILE = (
    b"<!doctype html><html><body><script>document.title='x'</script><a href='?id=1 or 1=1'></a></body>"
)


def test_fields_names_and_file_names_are_values_and_file_contents_are_not() -> None:
    body = form(
        part("user", b"O'Brien"),
        part("bio", b"Line one\r\nline two; with 'quotes'"),
        part("avatar", b"\x89PNG\r\n\x1a\n\x00\x00binary", filename="me.png", ctype="image/png"),
        part("page", HTML_FILE, filename="index.html", ctype="text/html"),
    )
    values, marks = scan(body, BOUNDARY)
    assert values == ["user", "O'Brien", "bio", "Line one\r\nline two; with 'quotes'", "avatar", "me.png",
                      "page", "index.html"]  # fmt: skip
    assert [kind for _at, kind in marks] == [FIELD, FIELD, FILE, FILE, CLOSED]
    assert threats(body) == set()


@pytest.mark.parametrize(
    ("body", "threat"),
    [
        (form(part("q", SQLI)), "sql_injection"),
        (form(part("comment", XSS)), "xss"),
        (form(part("doc", b"%PDF-1.7", filename="a'||(SELECT pg_sleep(5))||'.pdf")), "sql_injection"),
        (form(part("doc", b"%PDF-1.7", filename="<svg onload=alert(1)>.pdf")), "xss"),
        (form(part(SQLI.decode(), b"1")), "sql_injection"),  # a field name
        (
            form(part("note", b"1'; WAITFOR DELAY '0:0:5'--", ctype="text/plain; charset=utf-8")),
            "sql_injection",
        ),
        (
            form(part("q", base64.b64encode(SQLI), extra="Content-Transfer-Encoding: base64\r\n")),
            "sql_injection",
        ),
        (
            form(
                part(
                    "q",
                    b"=22=3E=3Cscript=3Ealert(1)=3C/script=3E",
                    extra="Content-Transfer-Encoding: quoted-printable\r\n",
                )
            ),
            "xss",
        ),  # fmt: skip
        (form(part("cmd", b"127.0.0.1; cat /etc/passwd")), "command_injection"),
    ],
)
def test_an_injection_in_a_multipart_form_is_found(body: bytes, threat: str) -> None:
    assert threat in threats(body)


def test_lf_line_ends_quoted_and_lost_boundaries_are_read_as_applications_read_them() -> None:
    lf = form(part("q", SQLI)).replace(b"\r\n", b"\n")
    assert threats(lf) == {"sql_injection"}
    assert threats(form(part("q", SQLI)), f'multipart/form-data; boundary="{BOUNDARY.decode()}"') == {
        "sql_injection"
    }
    # a content type without its boundary: the body's first line shows it
    assert boundary_of("multipart/form-data", form(part("q", b"x"))) == BOUNDARY
    assert threats(form(part("q", SQLI)), "multipart/form-data") == {"sql_injection"}


def test_preamble_and_epilogue_are_not_values() -> None:
    body = (
        b"preamble with 1' or '1'='1\r\n" + form(part("q", b"widget")) + b"epilogue <script>alert(1)</script>"
    )
    values, _ = scan(body, BOUNDARY)
    assert values == ["q", "widget"]


def test_a_file_upload_of_markup_or_sql_is_no_attack() -> None:
    dump = b"INSERT INTO users VALUES (1, 'admin', '' OR 1=1); DROP TABLE sessions; -- backup"
    body = form(
        part("title", b"Backup of 2026-12-01"),
        part("file", dump, filename="backup.sql", ctype="application/sql"),
        part("page", HTML_FILE, filename="page.html", ctype="text/html"),
        part("raw", HTML_FILE, ctype="application/octet-stream"),  # data, though without a file name
    )
    assert threats(body) == set()


def pieces(body: bytes, size: int, overlap: int) -> list[tuple[int, bytes]]:
    """A body cut as the HTTP parsers cut one: `size` bytes a part, the next starting `overlap` earlier."""
    out, start = [], 0
    while start + size < len(body):
        out.append((start, body[start : start + size]))
        start += size - overlap
    out.append((start, body[start:]))
    return out


def cursor_values(body: bytes, size: int = 4096, overlap: int = 1024) -> list[str]:
    cursor = MultipartCursor(BOUNDARY)
    return [v for offset, data in pieces(body, size, overlap) for v in cursor.feed(offset, data)]


@pytest.mark.parametrize("padding", [100, 3000, 5000, 20000])
def test_a_field_padded_past_the_first_part_is_still_judged(padding: int) -> None:
    body = form(part("a", b"x"), part("q", b"y" * padding + b" " + SQLI), part("b", b"z"))
    values = cursor_values(body)
    assert any(v.endswith(SQLI.decode()) for v in values)
    assert "b" in values and "z" in values


@pytest.mark.parametrize("padding", [100, 3000, 5000, 20000])
def test_a_file_padded_past_the_first_part_stays_unjudged(padding: int) -> None:
    body = form(part("f", b"y" * padding + HTML_FILE + b"w" * padding, filename="x.html", ctype="text/html"),
                part("b", b"after"))  # fmt: skip
    values = cursor_values(body)
    assert not any("script" in v or "yyyy" in v for v in values)
    assert values[-2:] == ["b", "after"]  # the field after the file is read whole
