"""PHP object injection in an HTTP request: a serialized PHP object that an application passes to
`unserialize()`, whose class's magic methods (`__wakeup`, `__destruct`, `__toString`) run a gadget chain
(phpggc's chains for Laravel, Symfony, Monolog, Guzzle, WordPress …); and a `phar://` path, which makes a
file function deserialize the archive's metadata (the same chains, through an upload).

A finding is a value (query, cookie, form field, JSON string) or a body that holds a serialized object
or custom-serialized object whose declared name length matches its name (`O:8:"stdClass":1:{`,
`C:11:"ArrayObject":…:{`), as sent, base64-encoded (`Tzo…`, `Qzo…`: phpggc's `-b`) or percent-encoded;
or a `phar://` path. Serialized arrays and scalars (`a:2:{…}`, `s:3:"abc";`: what some applications
keep in their own cookies) run no class's code and are no finding.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable

from threats.catalogue import PHP_OBJECT_INJECTION, Hit, excerpt_of
from workers.detect.decode import body_and_values

# a serialized object (`O`) or custom-serialized one (`C`): its name's length, the name, its property
# count or data length, and the opening brace
_OBJECT = re.compile(rb"\b([OC]):\+?(\d{1,4}):\"([A-Za-z_\x80-\xff\\][\w\x80-\xff\\]{0,255})\":\d{1,6}:\{")
# the same, base64-encoded: `O:` and `C:` open with these four characters whatever follows
_OBJECT_BASE64 = re.compile(rb"(?<![A-Za-z0-9+/])(?:Tz[o-r]|Qz[o-r])[A-Za-z0-9+/]{12,}={0,2}")
_PHAR = re.compile(rb"\bphar://[\w./\\~-]", re.I)


def check_php_object(body: bytes, values: Iterable[str]) -> Hit | None:
    """A serialized PHP object or a `phar://` path in the body (one not parsed into `values`) or in any of
    `values` (percent-decoded; base64 of an object decoded), or None. Byte searches first: most requests
    hold neither."""
    return php_object_in(body_and_values(body, values))


def php_object_in(texts: Iterable[bytes]) -> Hit | None:
    """`check_php_object` on texts `body_and_values` gave (shared by the checks that read them)."""
    for text in texts:
        hit = _check(text)
        if hit is not None:
            return hit
    return None


def _check(text: bytes) -> Hit | None:
    if b":" in text:  # (an object's and a phar:// path's: most values hold none)
        if b':"' in text:
            hit = _object(text, "")
            if hit is not None:
                return hit
        if b":/" in text:
            found = _PHAR.search(text)
            if found is not None:
                why = "a phar:// path (its metadata is deserialized)"
                return Hit(PHP_OBJECT_INJECTION, why, excerpt_of(found.group()))
    return _encoded(text) if b"Tz" in text or b"Qz" in text else None


def _encoded(text: bytes) -> Hit | None:
    for m in _OBJECT_BASE64.finditer(text):
        raw = m.group().rstrip(b"=")
        try:
            decoded = base64.b64decode(raw + b"=" * (-len(raw) % 4))
        except (binascii.Error, ValueError):
            continue
        hit = _object(decoded, " (base64)")
        if hit is not None:
            return hit
    return None


def _object(text: bytes, how: str) -> Hit | None:
    for m in _OBJECT.finditer(text):
        kind, length, name = m.group(1), int(m.group(2)), m.group(3)
        if length == len(name):  # (what PHP wrote, or a tool that writes as PHP does)
            what = "object" if kind == b"O" else "custom-serialized object"
            why = f"a serialized PHP {what}{how} of class {name.decode('latin-1')[:40]}"
            return Hit(PHP_OBJECT_INJECTION, why, excerpt_of(text[m.start() :]))
    return None
