"""Script names assembled from pieces, the way filter-evading XSS hides them from every signal that
reads a name whole: string literals joined (`'ev'+'al'`, `s1='java';s2='script:';URL=s1+s2`), regular
expressions' sources (`/ev/.source+/al/.source`), E4X literals (`<_>ev</_>+<_>al</_>`), escapes inside
a string (`"ev\\a\\l"`).

The signal: whole pieces, joined in the order they are written, spell a sink's name that no single piece
holds, and what stands between those pieces is code (an operator, a statement break, a short variable),
not prose (`'Eva', 'Lucy'` spells `eval` across a comma and a space: no operator, no signal). A piece
that is a callable sink's name by itself counts when the value calls a member it names at run time
(`y=<a>alert</a>;content[y](1)`).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from itertools import accumulate, islice

from workers.detect.decode import backslash_decode

# a string literal (an escaped quote inside one is not looked for), a regular expression's source, an E4X
# element's text; each short: a piece, not prose
_PIECE = re.compile(
    r"'([^'\n]{0,40})'"
    r"|\"([^\"\n]{0,40})\""
    r"|/([^/\s*]{1,40})/\s*\.\s*source\b"
    r"|<(\w{1,8})>([^<]{0,40})</\4>",
    re.S,
)
MAX_PIECES = 64  # pieces read per value: an obfuscated payload needs a handful
# what a hidden name is: a code sink, a script scheme, the DOM properties that steal or redirect, an
# element that loads a page (looked for at every position: one name may start inside another)
_SINK = re.compile(
    r"(?=(eval|alert|prompt|confirm|settimeout|setinterval|fromcharcode|(?:java|vb)?script:?|location"
    r"|cookie|innerhtml|iframe))",
    re.I,
)
# a piece that names a callable sink by itself (`content[y](1)` with `y` holding it)
_CALLABLE = re.compile(r"eval|alert|prompt|confirm|settimeout|setinterval|execscript|call|apply", re.I)
# an escape JavaScript reads as the character itself once `\x41` and `\u0041` are decoded (`"ev\a\l"`)
_OTHER_ESCAPE = re.compile(r"\\(.)", re.S)
# between two pieces of one name: code, not prose: an operator or a statement break, and no word of
# three letters (`+`, `||''+'';s2=`, `;b+=0||`), within a short stretch
_JOIN = re.compile(r"[+|&;=]")
_WORD = re.compile(r"[a-z]{3}", re.I)
MAX_GAP = 32  # characters between two pieces of one name


def _unescaped(text: str) -> str:
    return _OTHER_ESCAPE.sub(r"\1", backslash_decode(text)) if "\\" in text else text


def _pieces(text: str) -> list[tuple[int, int, str]]:
    """(start, end, text) of each non-empty piece, in order, unescaped."""
    found = []
    for m in islice(_PIECE.finditer(text), MAX_PIECES):
        body = m.group(m.lastindex or 0)  # (the last group matched holds the text: an E4X name comes first)
        if body:
            found.append((m.start(), m.end(), _unescaped(body)))
    return found


def _code_between(text: str, pieces: list[tuple[int, int, str]], first: int, last: int) -> bool:
    for (_, end, _), (start, _, _) in zip(pieces[first:last], pieces[first + 1 : last + 1], strict=True):
        gap = text[end:start]
        if len(gap) > MAX_GAP or not _JOIN.search(gap) or _WORD.search(gap):
            return False
    return True


def assembled_sink(text: str) -> str | None:
    """The sink's name `text` assembles from pieces (as it is spelt joined), or None."""
    pieces = _pieces(text)
    if not pieces:
        return None
    if "](" in text:
        named = next((p for _, _, p in pieces if _CALLABLE.fullmatch(p.strip())), None)
        if named is not None:
            return named.strip()
    if len(pieces) < 2:
        return None
    joined = "".join(p for _, _, p in pieces)
    # where each piece starts in the joined text (and the end): a hidden name is made of whole pieces
    # (`'ev'+'al'`; `'eva'+'luate'` spells another word)
    offsets = list(accumulate((len(p) for _, _, p in pieces), initial=0))
    for m in _SINK.finditer(joined):
        start, end = m.span(1)
        first, last = bisect_right(offsets, start) - 1, bisect_right(offsets, end - 1) - 1
        whole = start == offsets[first] and end == offsets[last + 1]
        if first != last and whole and _code_between(text, pieces, first, last):
            return m.group(1)
    return None
