"""A `multipart/form-data` body (RFC 7578) as the values an application reads from it.

What is checked: each part's field name, its file name (a classic injection point: it reaches file
systems, logs and databases), and the contents of its text fields. What is not: the contents of
uploaded files (a part with a file name, or with a content type that is not text, JSON, XML or a form),
which applications store rather than interpret; an HTML or SQL file is no attack on the upload form.
A field sent with `Content-Transfer-Encoding: base64` or `quoted-printable` is decoded first, as the
RFC allows and as WAF-evasion tools use it.

Long bodies reach the detectors in parts (`workers.dpi.events.HttpBodyPart`) cut anywhere, so a part may
start inside a field or a file. `MultipartCursor` carries what a body's previous part showed: which kind
of part is open at any offset of it. The bytes before a part's first delimiter are then judged as
what they continue: a text field's rest is checked (padding a field past the first part evades
nothing), a file's rest is not.

Parsing is lenient where applications are: line ends may be LF alone, header names any case, and a
body whose content type lost its boundary is read with the boundary its first line shows.
"""

from __future__ import annotations

import binascii
import quopri
import re

# What a part's delimiter opens
PREAMBLE, FIELD, FILE, CLOSED = range(4)

# Bounds: parts looked at in one piece of a body, and bytes of one part's headers
MAX_PARTS = 512
MAX_PART_HEADERS = 4096

_BOUNDARY = re.compile(r'boundary\s*=\s*(?:"([^"]{1,200})"|([^\s;,"]{1,200}))', re.I)
_FIRST_LINE = re.compile(rb"\s*--([^\s]{1,200})\r?\n")
_HEADERS_END = re.compile(rb"\r?\n\r?\n")
_HEADER = re.compile(rb"^[ \t]*([\w-]+)[ \t]*:[ \t]*(.*?)\r?$", re.M)
# A Content-Disposition parameter: name="x", filename=x, filename*=UTF-8''x
_PARAM = re.compile(rb';\s*([\w*]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]*))', re.S)
# Part content types read as text by applications (anything else is data, like a file)
_TEXT_TYPE = re.compile(rb"\s*(?:text/|application/(?:[\w.+-]*\+)?(?:json|xml|x-www-form-urlencoded))", re.I)


def boundary_of(content_type: str, body: bytes = b"") -> bytes | None:
    """The boundary a `multipart/form-data` content type names, else the one the body's first line
    shows (`--BOUNDARY`), else None."""
    m = _BOUNDARY.search(content_type)
    if m:
        return (m.group(1) or m.group(2)).encode("latin-1", "replace")
    first = _FIRST_LINE.match(body)
    return first.group(1) if first else None


def _text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _decoded(content: bytes, transfer_encoding: bytes) -> bytes:
    """A field's content with its transfer encoding undone (as sent when it is not valid)."""
    te = transfer_encoding.strip().lower()
    try:
        if te == b"base64":
            return binascii.a2b_base64(content)
        if te == b"quoted-printable":
            return quopri.decodestring(content)
    except (binascii.Error, ValueError):
        pass
    return content


def _part(headers: bytes, values: list[str]) -> tuple[int, bytes]:
    """A part's kind (FIELD or FILE) and transfer encoding; its field and file names go to `values`."""
    kind, transfer = FIELD, b""
    for m in _HEADER.finditer(headers):
        name, value = m.group(1).lower(), m.group(2)
        if name == b"content-disposition":
            for p in _PARAM.finditer(value):
                key = p.group(1).lower()
                text = p.group(2) if p.group(2) is not None else p.group(3)
                if key.startswith(b"filename"):
                    kind = FILE
                if key.startswith((b"name", b"filename")) and text:
                    values.append(_text(text))
        elif name == b"content-type" and not _TEXT_TYPE.match(value):
            kind = FILE
        elif name == b"content-transfer-encoding":
            transfer = value
    return kind, transfer


def _delimiters(data: bytes, boundary: bytes) -> list[int]:
    """Offsets of the delimiter lines (`--BOUNDARY` at the start of a line) in `data`, at most MAX_PARTS."""
    marker = b"--" + boundary
    found: list[int] = []
    at = data.find(marker)
    while at >= 0 and len(found) < MAX_PARTS:
        if at == 0 or data[at - 1] == 0x0A:
            found.append(at)
        at = data.find(marker, at + len(marker))
    return found


def _content_end(data: bytes, end: int) -> int:
    """Where a part's content ends before the delimiter at `end` (the line break is the delimiter's)."""
    if end >= 2 and data[end - 2 : end] == b"\r\n":
        return end - 2
    if end >= 1 and data[end - 1] == 0x0A:
        return end - 1
    return end


def scan(data: bytes, boundary: bytes, open_kind: int = PREAMBLE) -> tuple[list[str], list[tuple[int, int]]]:
    """The values of a body (or a piece of one that starts inside a part of `open_kind`), and each
    delimiter's (offset, kind of what it opens)."""
    values: list[str] = []
    marks: list[tuple[int, int]] = []
    starts = _delimiters(data, boundary)
    first = starts[0] if starts else len(data)
    if open_kind == FIELD and first:
        values.append(_text(data[: _content_end(data, first) if starts else first]))
    skip = len(boundary) + 2
    for n, at in enumerate(starts):
        after = at + skip
        end = starts[n + 1] if n + 1 < len(starts) else len(data)
        if data[after : after + 2] == b"--":
            marks.append((at, CLOSED))
            continue
        head_end = _HEADERS_END.search(data, after, min(end, after + MAX_PART_HEADERS))
        if head_end is None:  # headers cut off by the piece's end: judged by what they show
            kind, _ = _part(data[after:end], values)
            marks.append((at, kind))
            continue
        kind, transfer = _part(data[after : head_end.start()], values)
        marks.append((at, kind))
        if kind == FIELD:
            content = data[head_end.end() : _content_end(data, end) if n + 1 < len(starts) else end]
            if content:
                values.append(_text(_decoded(content, transfer)))
    return values, marks


class MultipartCursor:
    """Where a body cut into pieces stands: the kind of part open at any offset of its last piece."""

    __slots__ = ("boundary", "start", "open_kind", "marks")

    def __init__(self, boundary: bytes) -> None:
        self.boundary = boundary
        self.start = 0  # body offset of the last piece
        self.open_kind = PREAMBLE  # what is open at `start`
        self.marks: list[tuple[int, int]] = []  # that piece's delimiters (body offsets)

    def kind_at(self, offset: int) -> int:
        kind = self.open_kind
        for at, opened in self.marks:
            if at >= offset:
                break
            kind = opened
        return kind

    def feed(self, offset: int, data: bytes) -> list[str]:
        """The values of the body's piece at `offset` (pieces come in order; one may repeat the end of
        the one before)."""
        open_kind = self.kind_at(offset)
        values, marks = scan(data, self.boundary, open_kind)
        self.start, self.open_kind = offset, open_kind
        self.marks = [(offset + at, kind) for at, kind in marks]
        return values
