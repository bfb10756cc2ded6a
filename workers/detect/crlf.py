"""CRLF injection (HTTP response splitting): a line break in a request value that the application writes
into a response header (a redirect's `Location`, a cookie, a language), so that what follows the break
becomes a header of the attacker's (`Set-Cookie`, a second `Location`) or a second response.

A finding is a line break followed by a header (`name:`) or a status line (`HTTP/1.1 200`):
- in the request target, decoded (twice: scanners double-encode), any header name: a path or a query
  has no line breaks of its own (`/%0d%0aSet-Cookie:x=1`, `?lang=en%0d%0aX-Injected: 1`);
- in a form, JSON or cookie value, a response header only (`Set-Cookie`, `Location`, `Content-Type`, …)
  or a status line: a text area's lines may start with `Regards:`.

A line break is CR or LF, `%u000a` too, and U+560A/U+560D (嘊, 嘍): a server that writes a header's
characters as single bytes keeps their low byte, a line break (the bypass scanners send to Node.js and
Java servers).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from itertools import islice

from threats.catalogue import CRLF_INJECTION, Hit, excerpt_of
from workers.detect.decode import percent_decode

MAX_CRLF_VALUES = 256  # values looked at per request
MAX_CRLF_TEXT = 16 * 1024  # characters of the target, and of the values joined

_BREAKS = "\r\n\u560a\u560d"
_HEADER_AFTER_BREAK = re.compile(
    r"[\r\n\u560a\u560d]+[ \t]*(?:(?P<status>HTTP/\d(?:\.\d)?\s+\d{3})|(?P<name>[A-Za-z][A-Za-z0-9_-]{0,40})[ \t]*:)"
)
# the headers a split response is written to carry: a session fixed, a redirect, a type or length that
# makes the rest a page of the attacker's, a policy loosened
RESPONSE_HEADERS = frozenset(
    "set-cookie location content-type content-length transfer-encoding refresh content-disposition"
    " access-control-allow-origin access-control-allow-credentials content-security-policy"
    " x-xss-protection x-frame-options cache-control link".split()
)


# a line break as sent, or escaped (`%0d`, `%0a`, `%u000a`, `%e5%98%8a`, or double encoded: `%250a`)
_ESCAPED_BREAKS = ("%0d", "%0a", "%u000", "%e5%98", "%25")


def _may_break(text: str) -> bool:
    """Whether `text` may hold a line break, once decoded (C-speed substring tests)."""
    if any(b in text for b in _BREAKS):
        return True
    if "%" not in text:
        return False
    low = text.lower()
    return any(e in low for e in _ESCAPED_BREAKS)


def _decoded(text: str) -> str:
    if "%" in text:
        text = percent_decode(text)
        if "%" in text:  # double encoding (`%250d%250a`)
            text = percent_decode(text)
    return text


def check_crlf(target: bytes, values: Iterable[str]) -> Hit | None:
    """A response split by a line break in the request `target` (path and query, as sent) or in one of
    `values` (form, JSON, cookie values, as sent), or None."""
    text = target[:MAX_CRLF_TEXT].decode("latin-1")
    if _may_break(text):
        split = _HEADER_AFTER_BREAK.search(_decoded(text))
        if split is not None:
            return Hit(CRLF_INJECTION, _why(split, "the request target"), excerpt_of(split.group()))
    joined = "\x00".join(islice(values, MAX_CRLF_VALUES))[:MAX_CRLF_TEXT]
    if not _may_break(joined):
        return None
    for split in _HEADER_AFTER_BREAK.finditer(_decoded(joined)):
        if split.group("status") or split.group("name").lower() in RESPONSE_HEADERS:
            return Hit(CRLF_INJECTION, _why(split, "a value"), excerpt_of(split.group()))
    return None


def _why(split: re.Match[str], where: str) -> str:
    if split.group("status"):
        return f"a line break and a status line in {where}"
    return f"a line break and a {split.group('name')!r} header in {where}"
