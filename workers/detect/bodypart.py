"""A part of a request body cut out of its document, shaped so the request checks judge its values.

The HTTP parser hands a long body out in parts (`workers.dpi.events.HttpBodyPart`). A form part is
pairs (cut at `&`, or with an overlap) and an XML part is matched by a value pattern: both are judged
as they are. A JSON part is no document (`json.loads` fails on it), and it may start inside a string,
so which side of its first quote is string is unknown. Its pieces between unescaped quotes are taken on
both sides: those that are only JSON punctuation, numbers and literals are dropped, the rest (string
contents, JSON escapes undone) become one JSON array, which `check_request` walks value by value as it
walks a whole document's strings.
"""

from __future__ import annotations

import json
import re

# An unescaped quote (a quote after an escaped backslash, `\\"`, is taken as escaped: a piece is only
# cut differently, never lost).
_QUOTE = re.compile(rb'(?<!\\)"')
# Pieces between strings: punctuation, whitespace, numbers, true/false/null (no injection fits in these)
_STRUCTURE = re.compile(rb"[\s:,{}\[\]0-9.eE+\-truefalsn]*\Z")
# Pieces taken from one part (the request checks bound the values they look at as well).
MAX_PIECES = 2048


def json_part_values(data: bytes) -> list[str]:
    """The string contents of a JSON fragment cut anywhere (see the module's docstring)."""
    values: list[str] = []
    for piece in _QUOTE.split(data, MAX_PIECES)[:MAX_PIECES]:
        if _STRUCTURE.match(piece):
            continue
        text = piece.decode("utf-8", "replace")
        if "\\" in text:
            try:
                text = json.loads('"' + text + '"')
            except ValueError:
                pass  # a piece cut inside an escape, or not a JSON string: checked as sent
        values.append(text)
    return values


def body_values(data: bytes, content_type: str) -> bytes:
    """`data`, a part of a body of `content_type`, as the body `check_request` should judge."""
    if "json" not in content_type.lower():
        return data
    # Fast path: the pieces are JSON string contents already (escapes as sent), so joined as an array
    # they are a document whenever the cut fell clear of an escape; each distinct piece once.
    split = _QUOTE.split(data, MAX_PIECES) if b'\\"' in data else data.split(b'"', MAX_PIECES)
    pieces = [p for p in dict.fromkeys(split[:MAX_PIECES]) if not _STRUCTURE.match(p)]
    joined = b'["' + b'","'.join(pieces) + b'"]'
    try:
        json.loads(joined)
    except ValueError:
        return json.dumps(json_part_values(data)).encode()
    return joined
