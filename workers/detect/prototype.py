"""Prototype pollution in an HTTP request: a parameter name, JSON key or property path that walks from an
object to `Object.prototype` (`__proto__[isAdmin]=true`, `{"__proto__": {…}}`, `constructor.prototype.x`).
A Node.js server that merges or sets what a client sends into an object (lodash's `merge`/`set`/
`defaultsDeep`, `qs`, jQuery's `extend`, hand-written deep merges) then gives every object of the process
that property: an authorization check bypassed, a template engine's option that runs code.

A finding is `__proto__` as a segment of a name or path (followed by `[`, `.`, `]`, `=`, the name's end)
or `constructor` followed by `prototype` (`.prototype`, `[prototype]`), in the query's and cookie's names
and values, a form's or JSON document's keys and values (or a body no parser read), percent-decoded and
with `\\uXXXX` escapes decoded. Prose naming `__proto__` ("the __proto__ property") is no finding.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from threats.catalogue import PROTOTYPE_POLLUTION, Hit, excerpt_of
from workers.detect.decode import MAX_VALUE_TEXT, backslash_decode, body_and_values

# (a name starts after a NUL of the joined values, or a separator of a path, a pair or a JSON string: not
# after `(`, where code quoted in prose passes `constructor.prototype` to a function)
_POLLUTION = re.compile(
    rb"(?:^|[\x00.\[&;?=\"'\s])(?:__proto__(?:[.\[\]=\x00\"'&;]|$)"
    rb"|constructor\s*(?:\.|\]?\[\s*['\"]?)\s*prototype\b)",
    re.M,
)
# a JSON object under the key `constructor` whose keys include `prototype`
_NESTED = re.compile(rb'"constructor"\s*:\s*\{(?:[^{}]|\{[^{}]*\})*?"prototype"\s*:')


def check_prototype(body: bytes, values: Iterable[str], document: bytes = b"") -> Hit | None:
    """A walk to `Object.prototype` in the body (one no parser read into `values`), in `values` (names
    and values, JSON keys; percent-decoded) or, when its keys hold both `constructor` and `prototype`, in
    the JSON `document` the values were read from (its keys' nesting is lost in the values), or None."""
    return prototype_in(body_and_values(body, values), document)


def prototype_in(texts: Iterable[bytes], document: bytes = b"") -> Hit | None:
    """`check_prototype` on texts `body_and_values` gave (shared by the checks that read them)."""
    for text in texts:
        if b"\\" in text and b"\\u" in text:  # (JavaScript reads `__\\u0070roto__` as `__proto__`)
            text = backslash_decode(text.decode("latin-1")).encode("latin-1", "replace")
        if b"proto" not in text:  # (both forms hold it)
            continue
        found = _POLLUTION.search(text)
        if found is not None:
            return _polluted(text[found.start() :])
        if document and b"constructor" in text and b"\x00prototype" in text:
            nested = _NESTED.search(document[:MAX_VALUE_TEXT])
            if nested is not None:
                return _polluted(nested.group())
    return None


def _polluted(excerpt: bytes) -> Hit:
    return Hit(PROTOTYPE_POLLUTION, "a walk to Object.prototype", excerpt_of(excerpt))
