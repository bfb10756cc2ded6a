"""Decoding of request values before injection checks: what evasions hide, undone.

An attacker writes `%2527%20OR%201=1`, `&#39;+OR+1=1`, `/*!50000UNION*/` or `UnIoN` so that a naive
matcher sees nothing; the application then decodes it and runs the injection. `variants(value)` returns
the value as the application may see it after each decoding layer (percent-encoding incl. `%uXXXX` and
double encoding, overlong UTF-8 (`%c0%a7` is `'`), `+` as space in form/query context, HTML entities, `\\u0027`/`\\x27` escapes, full-width
forms, typographic quotes, UTF-7, 7-bit stripped Latin-1, NUL bytes, MySQL version comments),
deduplicated, so the engine checks each. Every function is total (never raises) and bounded: at most
`MAX_DECODE_ROUNDS` layers of at most `MAX_DECODE_INPUT` characters.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable
from urllib.parse import unquote_to_bytes

# Three layers cover double and triple encoding; deeper nesting is not decoded further (and is rare in
# legitimate traffic).
MAX_DECODE_ROUNDS = 3
# Longest value decoded; the rest of a longer value is checked undecoded (bounded CPU per value).
MAX_DECODE_INPUT = 8192

# What evasion evidence (an encoding no client uses but to hide a character) adds to a scorer's total
EVASION_WEIGHT = 1
PAIR_SEPARATOR = re.compile(r"[&;]")  # between the pairs of a query string, form body or cookie header
_FULL_WIDTH = re.compile("[\uff01-\uff5e]")
# Overlong UTF-8: a character encoded in more bytes than it needs (`\xc0\xa7` for `'`). No encoder
# writes it and RFC 3629 forbids it, but lenient decoders (old IIS, some Java and PHP paths) accept it:
# sent only to slip a character past a filter. Two-byte forms (lead byte C0/C1) and three-byte forms
# (E0 then 80-9F) spell characters below U+0080 and U+0800.
_OVERLONG = re.compile(rb"[\xc0\xc1][\x80-\xbf]|\xe0[\x80-\x9f][\x80-\xbf]")
_OVERLONG_ESCAPE = re.compile(r"%(?:c[01]%[89ab][0-9a-f]|e0%[89][0-9a-f]%[89ab][0-9a-f])", re.I)
_PERCENT_U = re.compile(r"%[uU]([0-9A-Fa-f]{4})")
# MySQL executes the content of /*!...*/ (optionally with a version number); to it these are not comments.
_MYSQL_VERSIONED = re.compile(r"/\*!\d{0,6}(.*?)\*/", re.S)
_WS_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
_WS_FEEDS = str.maketrans("\x0b\x0c", "  ")  # vertical tab and form feed separate like a space
# JavaScript/JSON/C escapes an application or a template may decode: \u0027, \x27
_BACKSLASH_ESCAPE = re.compile(r"\\(?:u([0-9A-Fa-f]{4})|x([0-9A-Fa-f]{2}))")
# Quote look-alikes that a database or a charset conversion turns into the ASCII quote (MySQL folds
# U+2019 to `'` under some collations; a Latin-1 column stores `´` next to `'`)
_QUOTE_LIKE = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201b": "'", "\u00b4": "'", "\u02bc": "'",
                             "\u201c": '"', "\u201d": '"'})  # fmt: skip
_QUOTE_LIKE_CHARS = frozenset("\u2018\u2019\u201b\u00b4\u02bc\u201c\u201d")
# UTF-7 shifted runs (`+ADw-` is `<`): old browsers sniffed UTF-7 and ran markup written so
_UTF7_RUN = re.compile(r"\+[A-Za-z0-9/]{2,}-?")
_UTF7_MARKUP = re.compile(r"[<>\"']")
# Latin-1 characters whose low seven bits are `<`, `>` or a quote: a US-ASCII decoder that drops the
# high bit turns `\xbcscript\xbe` into `<script>`
_HIGH_BIT_MARKUP = frozenset("\xbc\xbe\xa2\xa7")


def percent_decode(value: str, plus: bool = False) -> str:
    """Decode %XX (UTF-8 where the bytes form it, else Latin-1) and %uXXXX; `plus`: '+' is a space.
    Malformed sequences (`%zz`, a trailing `%4`) stay as they are."""
    if plus and "+" in value:
        value = value.replace("+", " ")
    if "%" not in value:
        return value
    if "%u" in value or "%U" in value:
        value = _PERCENT_U.sub(_unicode_escape, value)
        if "%" not in value:
            return value
    raw = unquote_to_bytes(value)  # C-speed split/join; the text's own characters become UTF-8 bytes
    if b"\xc0" in raw or b"\xc1" in raw or b"\xe0" in raw:
        raw = _OVERLONG.sub(_overlong_char, raw)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _overlong_char(m: re.Match[bytes]) -> bytes:
    """The character an overlong sequence spells, as the (shortest) UTF-8 a strict decoder reads."""
    b = m.group()
    code = ((b[0] & 0x1F) << 6 | b[1] & 0x3F) if len(b) == 2 else ((b[1] & 0x3F) << 6 | b[2] & 0x3F)
    return chr(code).encode("utf-8")


def overlong_escapes(value: str) -> bool:
    """Whether `value` holds a percent-escaped overlong UTF-8 sequence (`%c0%a7`): evasion evidence,
    since no client encodes a character so but to hide it."""
    return "%" in value and _OVERLONG_ESCAPE.search(value) is not None


def _unicode_escape(m: re.Match[str]) -> str:
    code = int(m.group(1), 16)
    return "\ufffd" if 0xD800 <= code <= 0xDFFF else chr(code)  # a lone surrogate is no character


# Bytes of a body, and of a request's values joined, that the checks of serialized objects, templates and
# property paths read (`body_and_values`): what opens near a value's start fits.
MAX_VALUE_TEXT = 64 * 1024


def body_and_values(body: bytes, values: Iterable[str], limit: int = MAX_VALUE_TEXT) -> list[bytes]:
    """What a check of a request's body and values reads, each text in one look: the body's first `limit`
    bytes (when there is a body) and `joined_values`."""
    return ([body[:limit]] if body else []) + joined_values(values, limit)


def joined_values(values: Iterable[str], limit: int = MAX_VALUE_TEXT) -> list[bytes]:
    """A request's values joined by NULs, their first `limit` characters percent-decoded: one text, or none
    when there is no value."""
    joined = "\x00".join(v[:limit] for v in values)[:limit]
    if not joined:
        return []
    return [(percent_decode(joined) if "%" in joined else joined).encode("latin-1", "replace")]


def html_decode(value: str) -> str:
    """Decode HTML character references (named, decimal, hex; with or without the semicolon)."""
    return html.unescape(value) if "&" in value else value


def expose_mysql_comments(value: str) -> str:
    """Replace MySQL version comments `/*!50000UNION*/` by their content, which MySQL executes."""
    return _MYSQL_VERSIONED.sub(r" \1 ", value) if "/*!" in value else value


def backslash_decode(value: str) -> str:
    """Decode `\\uXXXX` and `\\xXX` escapes (lone surrogates become U+FFFD)."""
    if "\\" not in value:
        return value
    return _BACKSLASH_ESCAPE.sub(_backslash_escape, value)


def _backslash_escape(m: re.Match[str]) -> str:
    code = int(m.group(1) or m.group(2), 16)
    return "\ufffd" if 0xD800 <= code <= 0xDFFF else chr(code)


def fold_width(value: str) -> str:
    """Full-width forms (`＜script＞`, `＇`) as the ASCII characters they fold to (NFKC, as some
    frameworks normalise input); other text is left alone."""
    if value.isascii() or not _FULL_WIDTH.search(value):
        return value
    return _FULL_WIDTH.sub(lambda m: chr(ord(m.group()) - 0xFEE0), value)


def fold_quotes(value: str) -> str:
    """Typographic and accent quote look-alikes as the ASCII quotes a database may read them as."""
    if value.isascii() or _QUOTE_LIKE_CHARS.isdisjoint(value):
        return value
    return value.translate(_QUOTE_LIKE)


def utf7_decode(value: str) -> str:
    """Decode UTF-7 shifted runs that spell markup (`+ADw-script+AD4-`); any other value, with none, not
    valid UTF-7, or whose runs are text (`a+AND+b` in a form: spaces), is returned as it is."""
    if "+A" not in value or not value.isascii() or not _UTF7_RUN.search(value):
        return value
    try:
        decoded = value.encode("ascii").decode("utf-7")
    except UnicodeDecodeError:
        return value
    return decoded if _UTF7_MARKUP.search(decoded) and decoded.isascii() else value


def strip_high_bit(value: str) -> str:
    """Latin-1 characters with their eighth bit dropped, as a 7-bit decoder reads them (only when one
    of them becomes markup and the bytes are no UTF-8 text; otherwise the value is returned as it is)."""
    if value.isascii() or _HIGH_BIT_MARKUP.isdisjoint(value):
        return value
    if max(value) <= "\xff":  # raw bytes read as Latin-1: UTF-8 text (`м` is `Ð¼`) is text, not 7-bit markup
        try:
            value.encode("latin-1").decode("utf-8")
            return value
        except UnicodeDecodeError:
            pass
    return "".join(chr(ord(c) & 0x7F) if 0x80 <= ord(c) <= 0xFF else c for c in value)


def strip_controls(value: str) -> str:
    """Drop NUL and other control characters that parsers skip but matchers trip on; vertical tab and
    form feed, which HTML and SQL read as whitespace, become spaces."""
    value = _WS_CONTROL.sub("", value)
    return value.translate(_WS_FEEDS) if "\x0b" in value or "\x0c" in value else value


# ASCII text without what any decoding layer reads: `%`, `&`, `\`, `+` (a space in a form, UTF-7) and
# control characters (`/*!` is looked for apart)
_UNDECODABLE = re.compile(r"[^%&\\+\x00-\x1f\x7f-\U0010ffff]*\Z")


def variants(value: str, plus: bool = False) -> list[str]:
    """The value and each distinct form it takes after successive decoding layers (bounded)."""
    if len(value) > MAX_DECODE_INPUT:
        value = value[:MAX_DECODE_INPUT]
    if "/*!" not in value and _UNDECODABLE.match(value):
        return [value]  # no layer changes it (most values): no round of ten decoders
    out = [value]
    current = value
    for _ in range(MAX_DECODE_ROUNDS):
        nxt = html_decode(strip_high_bit(utf7_decode(percent_decode(current, plus))))
        nxt = strip_controls(expose_mysql_comments(fold_quotes(fold_width(backslash_decode(nxt)))))
        if nxt == current:
            break
        out.append(nxt)
        current = nxt
        plus = False  # '+' means space only in the outermost (form) layer
    return out


def split_pairs(text: str, max_pairs: int) -> list[tuple[str, str]]:
    """Split a query string or form body into raw (name, value) pairs (`&` or `;` separated), bounded."""
    pairs = []
    for part in PAIR_SEPARATOR.split(text, maxsplit=max_pairs):
        if not part:
            continue
        name, _, val = part.partition("=")
        pairs.append((name, val))
        if len(pairs) >= max_pairs:
            break
    return pairs
