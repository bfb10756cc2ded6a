"""SQL injection and XSS detection over request values and database queries.

Engine choice: libinjection (the `libinjection-python` binding of the C library used by ModSecurity CRS
and many WAFs). It tokenises a value as SQL the way a database would, in each quoting context, and
matches the token fingerprint against a curated list learnt from real attack tools; its XSS half runs
an HTML5 tokenizer. That beats regular expressions (NeuVector's eight) on both detection and false
positives, and it is fast: measured here ~400k SQLi and ~2M XSS checks/s on short values (the issue's
own figures, ~93k and 1.1M, are on longer values). What it does not do is decoding or context, which is
ours: `workers.detect.decode.variants` undoes percent/plus/entity/comment evasions before each check,
and the request is split into the values an application would see (path segments, query and form
pairs, cookie pairs, JSON strings).

libinjection is built for fragments of user input, not whole statements, so SQL text captured from a
database protocol (MySQL COM_QUERY, PostgreSQL Query, TDS batch, TNS) is checked by `check_sql_query`:
a small lexer and structural rules (tautology after OR, comment cutting a string, unterminated string,
UNION SELECT of constants, stacked statement after a string, time-delay and command functions).
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import re
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain, islice
from typing import Any

import libinjection

from threats.catalogue import COMMAND_INJECTION, LDAP_INJECTION, SQL_INJECTION, XSS, Hit, Threat, excerpt_of
from workers.detect import jsassembly, ldap, multipart, shell
from workers.detect.bodypart import json_part_values
from workers.detect.decode import (
    EVASION_WEIGHT,
    PAIR_SEPARATOR,
    html_decode,
    overlong_escapes,
    percent_decode,
    variants,
)
from workers.detect.sqli import injected

# Values checked per request (query, form, cookie and JSON values together): a request with more is
# checked up to this bound and the excess counted by the caller as not inspected.
MAX_VALUES_PER_REQUEST = 512
VALUE_CACHE_ENTRIES = 8192  # checked values remembered (each at most MAX_CACHED_VALUE characters)
MAX_CACHED_VALUE = 256  # longer values (bodies, long tokens) are checked every time
# Largest JSON body parsed; larger bodies are checked as plain text values.
MAX_JSON_BYTES = 256 * 1024
# Depth of JSON nesting walked.
MAX_JSON_DEPTH = 32
# Longest SQL statement analysed (bytes beyond are not lexed).
MAX_SQL_QUERY = 64 * 1024

# Values made only of these cannot carry SQL injection (no spaces, quotes, operators or parentheses).
_SQLI_SAFE = re.compile(r"(?!.*@@)[\w.\-@]*\Z", re.A)
# ... nor XSS (no markup, quotes, attribute or scheme punctuation, script brackets or comments).
_XSS_SAFE = re.compile(r"[^<>\"'`=:&(\\%\[*]*\Z")
# ... nor command injection (no separator or substitution, nor an escape or reference that could
# decode to one), nor LDAP injection (no parenthesis or star, nor what could decode to one).
# Percent escapes of other characters (`%20`) and ASCII text leave a value free; escapes of what a check
# needs, of `%` itself (double encoding), `%u`, overlong lead bytes, `&` (character references), `\`
# (escapes) and non-ASCII text (full-width forms fold to ASCII) do not. (A value without `%` is judged
# by the plain character class: one C-speed scan.)
_SHELL_FREE_PLAIN = re.compile(r"[^;|&`\n\r$%\\(\x80-\U0010ffff]*\Z")
# (the escapes spelt in both cases by hand: under re.I a negated class would also refuse `i`, `k` and
# `s`, whose case folds lie in the non-ASCII range it excludes)
_SHELL_FREE_ESCAPED = re.compile(
    r"(?:[^;|&`\n\r$%\\(\x80-\U0010ffff]|%(?!3[bB]|7[cC]|26|60|0[aAdD]|24|28|5[cC]|25|[cC][01]|[eE]0|[uU]))*\Z"
)
# ... nor a command line of its own, a glob, a FOR loop or a function definition (`shell.needs_check`):
# no option's dash, path's slash, redirection, glob, `(` or `{`, nor an escape of one
_LINE_FREE_PLAIN = re.compile(r"[^-/\\<>~\[?*{(&\x80-\U0010ffff]*\Z")
_LINE_FREE_ESCAPED = re.compile(
    r"(?:[^-/\\<>~\[?*{(&%\x80-\U0010ffff]|%(?!2[dDfFaA58]|5[cCbB]|3[cCeEfF]|7[eEbB]|25|[cC][01]|[eE]0|[uU]|[aA][dD]))*\Z"
)
# (neither a separator's nor a command line's character: `_SHELL_FREE_PLAIN` and `_LINE_FREE_PLAIN`)
_COMMAND_FREE_PLAIN = re.compile(r"[^;|&`\n\r$%\\(\x80-\U0010ffff/<>~\[?*{-]*\Z")
# (what may decode to `shell`'s `_LINE_SPACING`: a plus, any escape, a reference, non-ASCII text)
_LINE_FREE_SPACING = re.compile(r"[\s+$<>\[?*(%&\\\x80-\U0010ffff]")
_LDAP_FREE_PLAIN = re.compile(r"[^()*%&\\\x80-\U0010ffff]*\Z")
_LDAP_FREE_ESCAPED = re.compile(
    r"(?:[^()*%&\\\x80-\U0010ffff]|%(?!2[89aA]|26|5[cC]|25|[cC][01]|[eE]0|[uU]))*\Z"
)


def _free(value: str, plain: re.Pattern[str], escaped: re.Pattern[str]) -> bool:
    if "+A" in value:  # a UTF-7 run (`+ADwAOw-` is `<;`), decoded with markup
        return False
    return (escaped if "%" in value else plain).match(value) is not None


def command_free(value: str) -> bool:
    """Whether no decoding of `value` can hold what the command check scores (`shell_free` and
    `line_free`; most values are told by one C-speed scan)."""
    if "%" not in value and "+A" not in value and _COMMAND_FREE_PLAIN.match(value):
        return True
    return shell_free(value) and line_free(value)


def shell_free(value: str) -> bool:
    """Whether no decoding of `value` can hold a command separator or substitution."""
    return _free(value, _SHELL_FREE_PLAIN, _SHELL_FREE_ESCAPED)


MIN_ENCODED_VALUE = 12  # characters: shorter base64 or hex spells no command worth the decoding
_BASE64_VALUE = re.compile(r"[A-Za-z0-9+/]+={0,2}\Z")
_ESCAPED_PADDING = re.compile(r"[A-Za-z0-9+/]+(?:%3[dD]){1,2}\Z")
_HEX_VALUE = re.compile(r"(?:[0-9a-fA-F]{2})+\Z")
_PRINTABLE_TEXT = re.compile(r"[\t\n\r\x20-\x7e]*\Z")


def encoded_text(value: str) -> str | None:
    """`value` hex- or base64-decoded, when it is the encoding of printable ASCII text with a space or
    punctuation a command needs (hashes, random tokens and IDs decode to bytes, not text); else None."""
    if "%" in value:  # `%3D%3D`: the padding escaped in a query (any other escape: no encoding)
        if not _ESCAPED_PADDING.match(value):
            return None
        value = value[: value.index("%")] + "=" * value.count("%")
    if len(value) < MIN_ENCODED_VALUE or len(value) % 2:
        return None
    try:
        if _HEX_VALUE.match(value):
            raw = bytes.fromhex(value)
        elif len(value) % 4 == 0 and _BASE64_VALUE.match(value):
            raw = base64.b64decode(value, validate=True)
        else:
            return None
        text = raw.decode("ascii")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return text if _PRINTABLE_TEXT.match(text) and not command_free(text) else None


def line_free(value: str) -> bool:
    """Whether no decoding of `value` can hold what a command line of its own needs
    (`shell.needs_check`): an argument's punctuation, and a space, a redirection, a glob or a parenthesis
    beside it (a date, a slug or a path alone is free)."""
    return _free(value, _LINE_FREE_PLAIN, _LINE_FREE_ESCAPED) or _LINE_FREE_SPACING.search(value) is None


def ldap_free(value: str) -> bool:
    """Whether no decoding of `value` can hold filter syntax (a parenthesis or a star)."""
    return _free(value, _LDAP_FREE_PLAIN, _LDAP_FREE_ESCAPED)


_ENTITY = re.compile(r"&(?:#\d+;?|#x[0-9a-f]+;?|[a-z]+;)", re.I)
_SCRIPT_SCHEME = ("javascript:", "vbscript:", "livescript:", "mocha:", "data:text/html")
# The same schemes as an attribute value (browsers drop tabs and newlines inside a scheme: `jav&#9;ascript:`)
_SCHEME_IN_ATTRIBUTE = re.compile(r"[=\"'(`](?:javascript|vbscript|livescript|mocha):|[=\"'(`]data:text/html")
# What libinjection's HTML5 view does not cover: breaking out of a JavaScript string into a call, and
# client-side template injection (AngularJS sandbox escapes).
_XSS_EXTRA = re.compile(
    r"['\"`]\s*[;)+,|&-]+\s*(?:alert|prompt|confirm|eval|print|fetch)\s*[(`]"
    r"|\{\{[^}]{0,200}(?:constructor|\$eval|\$on)[^}]{0,200}\}\}",
    re.I,
)
# Markup libinjection's tag and attribute lists do not name: any tag with an event-handler attribute
# (browsers add handlers faster than lists follow: `<x onpointerrawupdate=`), tags that load or run
# code or rewrite the document whatever their attributes, Netscape's `&{…}` script entities, and
# namespaced elements that load a source (VML's `<v:vmlframe src=`).
_XSS_MARKUP = re.compile(
    r"<[a-z](?:[^>\"']|\"[^\"]{0,200}\"|'[^']{0,200}'){0,200}?(?:[\s/\"'`]|(?<=[\"']))on[a-z]{3,30}\s*="
    r"|<(?:script|iframe|frame|frameset|object|embed|applet|meta|base|link|layer|ilayer|xml|import|bgsound"
    r"|html|body|style|svg|math|form|isindex|marquee|template|portal)[\s/>]"
    r"|&\{[^}]{0,200}\}"
    r"|<[a-z]{0,20}:[a-z]{1,30}\b[^>]{0,200}?\b(?:src|href|data)\s*=",
    re.I,
)
# Script with no markup, for values an application writes into a script or an event handler: a call
# to a dialog or code sink written as code (no space before the parenthesis), and the DOM properties
# that steal or redirect (`document.cookie`, `window.location`).
_XSS_SCRIPT = re.compile(
    # (a dialog called, or a sink called with an argument: prose about code names `eval()` with none; a
    # tagged template's name has no backtick before it: `` `eval` `` is a string, or Markdown's code span)
    r"(?<![\w$])(?:(?P<tick>`)|(?<!`))(?:(?:alert|prompt|confirm|msgbox)(?:\(|(?(tick)(?!)|`))"
    r"|(?:eval|settimeout|setinterval|execscript|fromcharcode)(?:\((?!\s*\))|(?(tick)(?!)|`)))"
    # (JavaScript's constructor of code from a string is `Function`: a changelog's `New function (foo)` is prose)
    r"|\bnew\s+(?-i:Function)\s*\("
    # the document's cookie, domain and location, and its `write` (a window has none: `self.write()` is
    # some other program's method)
    r"|[=(+,;:]\s*(?:(?:document|window|self|top|parent)\s*(?:\.\s*|\[\s*['\"])(?:cookie|domain|location)"
    r"|document\s*(?:\.\s*|\[\s*['\"])write)\b"
    r"|\b(?:(?:document|window|self|top|parent)\s*(?:\.\s*|\[\s*['\"])(?:cookie|domain|location)"
    r"|document\s*(?:\.\s*|\[\s*['\"])write)['\"\]]?\s*[=)+;,(]"
    # the DOM rewritten by script: markup assigned (`.innerHTML=`), or an element of the document found
    # or made and its text or source set (`document.querySelector("p").textContent="…"`)
    r"|\.\s*(?:innerhtml|outerhtml)\s*=(?!=)|\binsertadjacenthtml\s*\("
    r"|\bdocument\s*\.\s*(?:body|head|queryselector(?:all)?|getelementby\w{2,4}|createelement)\b[^;]{0,200}?"
    r"\.\s*(?:textcontent|innertext|src|href|srcdoc)\s*=(?!=)"
    # an element that runs or loads code made by script (`appendChild(createElement('script'))`)
    r"|\bcreateelement\s*\(\s*['\"`]?(?:script|iframe|embed|object)\b"
    # a sink called through another name, so that its own name is never followed by a bracket: made an
    # alias, then the alias called (`a=eval;b=alert;a(b(1))`, `$$$=eval,$$$(…)`), or called by `.call`
    r"|(?<![\w$.])(?P<alias>[a-z_$][\w$]{0,30})\s*=\s*(?:eval|alert|prompt|confirm|settimeout|setinterval|execscript)"
    r"\s*[;,][^\n]{0,200}?(?<![\w$.])(?P=alias)\("
    r"|(?<![\w$])(?:eval|alert|prompt|confirm|settimeout|setinterval|execscript)\s*\.\s*(?:call|apply)\s*\(",
    re.I,
)
# a global object's member named at run time, by an expression (a call, strings or regular expressions
# joined), and called: `self[atob('YWxlcnQ=')](1)`; the name of what runs is hidden from every other
# signal (written as code: no spaces around the brackets, so only values holding `](` are searched)
_GLOBAL_CALL = re.compile(
    r"\b(?:window|self|top|parent|frames|globalthis)\[(?=[^\]]{0,200}['\"(/+`])[^\]]{1,200}\]\(", re.I
)
# a word every `_XSS_SCRIPT` match holds: one C-speed scan spares the expression on most values
_SCRIPT_WORD = re.compile(
    "alert|prompt|confirm|msgbox|eval|settimeout|setinterval|execscript|fromcharcode|function|cookie|domain|location"
    "|write|html|document|createelement",
    re.I,
)
# JavaScript written to hide its names: comments between tokens (`document/*x*/.cookie`), bracket
# access by string (`window["alert"]`), a name in brackets (`(document)["cookie"]`). Undone before the
# script signals look (`_js_normal`).
_JS_COMMENT = re.compile(r"/\*.{0,200}?\*/", re.S)
_JS_BRACKET_NAME = re.compile(r"\[\s*(['\"])([a-z_$][\w$]{0,40})\1\s*\]", re.I)
_JS_PAREN_NAME = re.compile(r"\(\s*([a-z_$][\w$]{0,40})\s*\)(?=\s*[.\[])", re.I)
_JS_DOT_SPACE = re.compile(r"\s*\.\s*")
# string literals joined by `+` (`'ev'+'al'`, `"java"+""+"script:"`): read as the one string they make
_JS_CONCAT = re.compile(r"(['\"])\s*\+\s*\1")
_DOM_SINK = re.compile(
    r"\b(?:document|window|self|top|parent)\.(?:cookie|domain|location|write|alert|eval)\b", re.I
)
# Script that runs without a call in parentheses: a tagged template (`` [].sort.call`${alert}` ``), a sink
# interpolated into a template, and JSFuck (`(![]+[])[+!+[]]`: code from six characters)
_XSS_TEMPLATE_CALL = re.compile(
    r"\.\s*(?:call|apply|bind)\s*`|`[^`]{0,200}\$\{\s*(?:alert|prompt|confirm|eval|navigation|location|fetch|import)\b"
    r"|[([+]\s*!+\[\]|!+\[\]\s*\+\s*\[\]|\+\s*\[\]\s*\)|\[\]\s*\[\s*\(",
    re.I,
)
# CSS that runs script or loads code: IE's `expression(`, `behavior:`, Firefox's `-moz-binding`, and a
# `url(` with a script scheme (`background:url(javascript:…)`)
_CSS_SCRIPT = re.compile(
    # (a property's value: `expression (x)` and `behavior:` are prose too)
    r":\s*(?:/\*.*?\*/\s*)*expression\s*\(|-moz-binding\s*:|\bbehavior\s*:\s*(?:/\*.*?\*/\s*)*url\s*\("
    r"|url\s*\(\s*['\"]?\s*(?:javascript|vbscript|livescript)",
    re.I,
)
# CSS escapes (`\75 rl(`, `-\mo\z-b\i\nd\in\g`), which a browser decodes before it reads a property:
# undone where a `style` is written, so that `_CSS_SCRIPT` sees what the browser sees
_CSS_ESCAPE = re.compile(r"\\(?:([0-9a-f]{1,6})\s?|(.))", re.I | re.S)


def _css_unescaped(text: str) -> str:
    return _CSS_ESCAPE.sub(_css_char, text)


def _css_char(m: re.Match[str]) -> str:
    """One CSS escape: a hex code point (none for 0, a surrogate or beyond Unicode), or the character."""
    if not m.group(1):
        return m.group(2)
    code = int(m.group(1), 16)
    return chr(code) if 0 < code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF else ""


# A value that starts by closing an attribute and opens one that runs script: `"onzoom=`, `' formaction=`
_ATTRIBUTE_BREAKOUT = re.compile(r"\A\s*<?\s*['\"`]\s*/?\s*(?:on[a-z]{3,40}|formaction|srcdoc)\s*=", re.I)
# libinjection counts any `style` attribute as XSS; without CSS that runs script it only restyles, so
# the attribute is renamed before libinjection looks when `_CSS_SCRIPT` finds nothing
_STYLE_ATTRIBUTE = re.compile(r"\bstyle(?=\s*=)", re.I)
# XML bodies: attribute values and text, each a value (a bounded scan, no XML parser: no entities or
# external references resolved).
# An XML or XMP declaration (`<?xml version="1.0"?>`, `<?xpacket begin=…?>`): HTML reads `<?` up to the
# next `>` as a comment, so only what follows it can be markup (PHP's `<?php` and `<?=` stay code)
_XML_DECLARATION = re.compile(r"<\?(?:xml|xpacket)[^>]*>", re.I)
_XML_VALUE = re.compile(
    r"=\s*\"([^\"]{1,4096})\"|=\s*'([^']{1,4096})'|>([^<]{1,4096})(?=<)|<!\[CDATA\[(.{1,4096}?)\]\]>", re.S
)
_SPACE_CONTROL = re.compile(r"[\s\x00-\x1f]+")
# An HTML comment (`<!-- added: v1.2 `host` option -->`, or one the value leaves open): libinjection
# flags any comment holding a backtick, which ended a comment in Internet Explorer only; a browser of
# today reads it to `-->` (or to the page's end), and markup smuggled after a backtick is looked for by
# the other signals all the same
_COMMENT = re.compile(r"<!--.{0,4096}?(?:-->|\Z)", re.S)


def _backticks_quoted(m: re.Match[str]) -> str:
    return m.group().replace("`", "'")


def _encodable(text: str) -> str:
    """`text` with characters UTF-8 cannot encode (lone surrogates) replaced."""
    return text.encode("utf-8", "replace").decode("utf-8")


def _forms(value: str, plus: bool) -> list[str]:
    """The forms of a value to check. In query/form context (`plus`) the application always decodes,
    so the still-encoded form is skipped when decoding changed it."""
    forms = variants(value, plus)
    return forms[1:] if plus and len(forms) > 1 else forms


# The checks of one value share its decoded forms: the first check that needs them decodes the value
# into the list the caller passes (`_value_hits`), the others read them there.
Forms = list[list[str]]


def _shared_forms(value: str, plus: bool, shared: Forms | None) -> list[str]:
    if shared is None:
        return _forms(value, plus)
    if not shared:
        shared.append(_forms(value, plus))
    return shared[0]


def _evasion(value: str) -> int:
    """The weight of the evasion evidence `value` was sent with (overlong UTF-8 escapes)."""
    return EVASION_WEIGHT if overlong_escapes(value) else 0


def sqli_value(value: str, plus: bool = False, shared: Forms | None = None) -> Hit | None:
    """Check one user-supplied value (query/form/cookie/JSON string) for SQL injection."""
    if _SQLI_SAFE.match(value):
        return None
    evasion = -1  # looked for once a form is worth scoring
    for form in _shared_forms(value, plus, shared):
        if _SQLI_SAFE.match(form):
            continue
        if evasion < 0:
            evasion = _evasion(value)
        try:
            result = libinjection.is_sql_injection(form)
        except UnicodeEncodeError:  # a lone surrogate (JSON "\ud800") must not switch the check off
            form = _encodable(form)
            result = libinjection.is_sql_injection(form)
        signals = injected(form, result["fingerprint"] if result["is_sqli"] else None, evasion)
        if signals is not None:
            return Hit(SQL_INJECTION, signals, excerpt_of(form))
    return None


def command_value(value: str, plus: bool = False, shared: Forms | None = None) -> Hit | None:
    """Check one user-supplied value for OS command injection (`workers.detect.shell`)."""
    if command_free(value):
        decoded = encoded_text(value) if len(value) >= MIN_ENCODED_VALUE else None
        if decoded is None:
            return None
        # a value the application decodes before running it (commix's `base64encode`, `hexencode`)
        signals = shell.injected(decoded)
        return Hit(COMMAND_INJECTION, f"encoded {signals}", excerpt_of(decoded)) if signals else None
    evasion = -1  # looked for once a form is worth scoring
    for form in _shared_forms(value, plus, shared):
        if evasion < 0:
            evasion = _evasion(value)
        signals = shell.injected(form, evasion)  # (None at once for a form with nothing to score)
        if signals is not None:
            return Hit(COMMAND_INJECTION, signals, excerpt_of(form))
    return None


def ldap_value(value: str, plus: bool = False, shared: Forms | None = None) -> Hit | None:
    """Check one user-supplied value for LDAP injection (`workers.detect.ldap`)."""
    if ldap_free(value):
        return None
    forms = _shared_forms(value, plus, shared)
    if "%00" in value:  # a NUL the decoded forms drop (`*))%00`): the value decoded once, NUL kept
        forms = [percent_decode(value, plus), *forms]
    for form in (f for f in forms if ldap.needs_check(f)):
        signals = ldap.injected(form, _evasion(value))
        if signals is not None:
            return Hit(LDAP_INJECTION, signals, excerpt_of(form))
    return None


def xss_value(value: str, plus: bool = False, shared: Forms | None = None) -> Hit | None:
    """Check one user-supplied value for cross-site scripting."""
    if _XSS_SAFE.match(value) and "+A" not in value:  # `+A…-`: UTF-7 markup (`+ADw-` is `<`)
        return _encoded_markup(value)
    for form in _shared_forms(value, plus, shared):
        if _XSS_SAFE.match(form):
            continue
        low = form.lower()
        # each `_CSS_SCRIPT` match holds one of these words
        css = "url" in low or "expression" in low or "binding" in low or "behavior" in low
        css_script = _CSS_SCRIPT.search(form) if css else None
        if css_script is None and "\\" in form and "style" in low:
            css_script = _CSS_SCRIPT.search(_css_unescaped(form))
        if css_script is not None:
            return Hit(XSS, f"CSS {css_script.group()[:24]!r}", excerpt_of(form))
        # restyling is no script: a `style` attribute is looked at as any other attribute
        judged = _STYLE_ATTRIBUTE.sub("title", form) if "style" in low else form
        if "<?x" in low:  # an XML declaration is a comment to HTML, up to its first `>` (as HTML reads it)
            judged = _XML_DECLARATION.sub(" ", judged)
        if "<!--" in judged and "`" in judged:  # a backtick ends a comment in old IE only (`_COMMENT`)
            judged = _COMMENT.sub(_backticks_quoted, judged)
        try:
            xss = libinjection.is_xss(judged)["is_xss"]
        except UnicodeEncodeError:
            form = judged = _encodable(form)
            xss = libinjection.is_xss(judged)["is_xss"]
        if xss:
            return Hit(XSS, "libinjection html5 context", excerpt_of(form))
        squashed = _SPACE_CONTROL.sub("", form).lower()
        if squashed.startswith(_SCRIPT_SCHEME) or _SCHEME_IN_ATTRIBUTE.search(squashed):
            return Hit(XSS, "script URL scheme", excerpt_of(form))
        other = _XSS_EXTRA.search(form)
        if other is not None:
            return Hit(XSS, "script breakout or template injection", excerpt_of(form))
        breakout = _ATTRIBUTE_BREAKOUT.search(form) if "=" in form else None
        if breakout is not None:
            return Hit(XSS, f"attribute breakout {breakout.group()[:24]!r}", excerpt_of(form))
        if "(" in form or "`" in form or "." in form or "[" in form:
            hidden = (
                "/*" in form
                or "[" in form
                or " ." in form
                or ")." in form
                or "\t." in form
                or "\n." in form
                or "+" in form
            )
            js = _js_normal(form) if hidden else form
            script = _XSS_SCRIPT.search(js) if _SCRIPT_WORD.search(js) else None
            if script is None and ("`" in js or "[]" in js):
                script = _XSS_TEMPLATE_CALL.search(js)
            if script is None and "](" in js:
                script = _GLOBAL_CALL.search(js)
            if script is None and js != form:  # a DOM name spelt to hide it is no prose about it
                script = _DOM_SINK.search(js)
            if script is not None:
                return Hit(XSS, f"script {script.group()[:24]!r}", excerpt_of(form))
            # (a piece that names what `[…](` calls, or two pieces joined by `+`)
            if "](" in form or (
                "+" in form and (form.count("'") + form.count('"') >= 4 or "source" in form or "</" in form)
            ):
                sink = jsassembly.assembled_sink(form)
                if sink is not None:
                    return Hit(XSS, f"script name assembled from pieces {sink[:24]!r}", excerpt_of(form))
        markup = _XSS_MARKUP.search(form) if "<" in form or "&{" in form else None
        if markup is not None:
            return Hit(XSS, f"markup {markup.group()[:24]!r}", excerpt_of(form))
    return _encoded_markup(value)


# what `encoded_text` decodes, in one C-speed match: base64 (its padding maybe escaped) or hex
_ENCODED_SHAPE = re.compile(rf"[A-Za-z0-9+/]{{{MIN_ENCODED_VALUE},}}(?:={{0,2}}|(?:%3[dD]){{1,2}})\Z")


def _encoded_markup(value: str) -> Hit | None:
    """XSS in a value sent base64- or hex-encoded, for an application that decodes it before it writes
    it into a page (`PHNjcmlwdD5…`: `<script>…`); hashes, tokens and IDs decode to bytes, not text."""
    if _ENCODED_SHAPE.match(value) is None:
        return None
    decoded = encoded_text(value)
    if decoded is None or ("<" not in decoded and ":" not in decoded):
        return None
    hit = xss_value(decoded)
    return Hit(XSS, f"encoded {hit.detail}", hit.excerpt) if hit is not None else None


def _js_normal(text: str) -> str:
    """`text` with the JavaScript spellings that hide a name undone: comments dropped, string literals
    joined, `["name"]` as `.name`, `(name).` as `name.`, spaces around dots removed (where one precedes a
    dot: prose puts spaces after its full stops only)."""
    if "/*" in text:
        text = _JS_COMMENT.sub("", text)
    if "+" in text:
        text = _JS_CONCAT.sub("", text)
    if "[" in text:
        text = _JS_BRACKET_NAME.sub(r".\2", text)
    if ")." in text or ")[" in text or ") " in text:
        text = _JS_PAREN_NAME.sub(r"\1", text)
    return _JS_DOT_SPACE.sub(".", text) if " ." in text or "\t." in text or "\n." in text else text


# -- request values ------------------------------------------------------------------------------------


def path_values(path: str) -> Iterator[str]:
    """Path segments (an injection can hide in a REST path: /item/1'or'1'='1)."""
    for segment in path.split("/"):
        if segment:
            yield segment


def pair_values(text: str) -> Iterator[str]:
    """Names and values of a query string, form body or cookie header (undecoded: `variants` decodes)."""
    count = 0
    for part in PAIR_SEPARATOR.split(text):
        if not part:
            continue
        name, _, value = part.partition("=")
        yield name.strip()
        if value:
            yield value
        count += 1
        if count >= MAX_VALUES_PER_REQUEST:
            return


def _whole_values(text: str) -> list[str]:
    """The `&`-separated values of a query string or form body that hold `;`: a statement separator to
    SQL, a pair separator to a few frameworks only, so `id=1;SELECT *` is one value to most
    applications (bounded like the pairs)."""
    if ";" not in text:
        return []
    parts = text.split("&", MAX_VALUES_PER_REQUEST)[:MAX_VALUES_PER_REQUEST]
    return [v for part in parts for v in part.partition("=")[2:] if ";" in v]


def json_values(body: bytes | str) -> Iterator[str]:
    """String keys and values of a JSON document, depth- and count-bounded; invalid JSON: the raw text."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    if len(text) > MAX_JSON_BYTES:
        yield text[:MAX_JSON_BYTES]
        return
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        yield text
        return
    yield from _json_strings(doc)


def _json_strings(doc: Any) -> Iterator[str]:
    """String keys and values of a parsed JSON document (depth- and count-bounded)."""
    stack: list[tuple[Any, int]] = [(doc, 0)]
    count = 0
    while stack and count < MAX_VALUES_PER_REQUEST:
        node, depth = stack.pop()
        if isinstance(node, str):
            count += 1
            yield node
        elif depth >= MAX_JSON_DEPTH:
            continue
        elif isinstance(node, dict):
            for k, v in node.items():
                count += 1
                yield k
                stack.append((v, depth + 1))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


def xml_values(body: bytes) -> Iterator[str]:
    """Attribute values, text nodes and CDATA sections of an XML document (undecoded: `variants` decodes
    entities)."""
    text = body[:MAX_JSON_BYTES].decode("utf-8", "replace")
    for count, m in enumerate(_XML_VALUE.finditer(text)):
        if count >= MAX_VALUES_PER_REQUEST:
            return
        value = m.group(1) or m.group(2) or m.group(3) or m.group(4)
        if value.strip():
            yield value


# The request-level classes, in the order `_value_hits` returns their hits.
CLASSES: tuple[Threat, ...] = (SQL_INJECTION, XSS, COMMAND_INJECTION, LDAP_INJECTION)
_CHECKS = (sqli_value, xss_value, command_value, ldap_value)


@functools.lru_cache(maxsize=VALUE_CACHE_ENTRIES)
def _value_hits(value: str, plus: bool) -> tuple[Hit | None, ...]:
    """Every check of a short value, remembered: requests repeat most of their values (User-Agent,
    paths, common parameters), and the checks are pure functions of the value."""
    shared: Forms = []
    return tuple(check(value, plus, shared) for check in _CHECKS)


def value_cache_entries() -> int:
    """Values remembered now (at most VALUE_CACHE_ENTRIES): a soak waits for this table to be full."""
    return _value_hits.cache_info().currsize


def _first(values: Iterable[str], plus: bool, wanted: set[Threat]) -> list[Hit]:
    """The first hit of each class in `wanted` among `values`; the classes found leave `wanted`."""
    hits: list[Hit] = []
    for n, value in enumerate(values):
        if n >= MAX_VALUES_PER_REQUEST or not wanted:
            break
        if len(value) <= MAX_CACHED_VALUE:
            found = _value_hits(value, plus)
        else:
            shared: Forms = []
            found = tuple(
                check(value, plus, shared) if c in wanted else None
                for c, check in zip(CLASSES, _CHECKS, strict=True)
            )
        for hit in found:
            if hit is not None and hit.threat in wanted:
                hits.append(hit)
                wanted.discard(hit.threat)
    return hits


def check_request(
    uri: str,
    body: bytes = b"",
    content_type: str = "",
    cookie: str = "",
    sqli: bool = True,
    xss: bool = True,
    header_values: Sequence[str] = (),
    command: bool = True,
    ldap: bool = True,
    body_values: BodyValues | None = None,
) -> list[Hit]:
    """SQL injection, XSS, command injection and LDAP injection in one HTTP request (each class whose
    flag is set): path segments, query pairs, cookie pairs, the given header values (User-Agent,
    Referer, X-Forwarded-For: where scanners inject too) and the body (form, JSON or XML by content
    type; a multipart form's field names, file names and text fields: `workers.detect.multipart`;
    `body_values`: the body's values read already, `parsed_body`). At most one hit per class."""
    flags = (sqli, xss, command, ldap)
    wanted = {c for c, on in zip(CLASSES, flags, strict=True) if on}
    if not wanted:
        return []
    path, _, query = uri.partition("?")
    hits = _first(path_values(path), False, wanted)
    # The whole query string too when it holds HTML character references, which the pair split cuts
    # apart (`&#39;` splits at `&` and `;`), and its values split once the references are decoded
    # (`q=&apos;%20OR` holds the value `' OR`).
    whole = [query, *pair_values(html_decode(query))] if _ENTITY.search(query) else []
    # ... and its `&`-separated values when it holds `;` (`_whole_values`)
    whole += _whole_values(query)
    sources: tuple[tuple[Iterable[str], bool], ...] = (
        (pair_values(query), True),
        (whole, True),
        (pair_values(cookie), False),
        (header_values, False),
    )
    for values, plus in sources:
        if wanted:
            hits += _first(values, plus, wanted)
    if (body or body_values) and wanted:
        values, plus = body_values if body_values is not None else request_body_values(body, content_type)
        hits += _first(values, plus, wanted)
    return hits


# a body's values and whether `+` is a space in them (`parsed_body`)
BodyValues = tuple[Sequence[str], bool]


def parsed_body(body: bytes, content_type: str) -> BodyValues:
    """`request_body_values`, read up to the values a request's checks look at, for several checks."""
    values, plus = request_body_values(body, content_type)
    return list(islice(values, MAX_VALUES_PER_REQUEST)), plus


def request_body_values(body: bytes, content_type: str) -> tuple[Iterable[str], bool]:
    """The values of a request body by its content type (form pairs, JSON strings, XML values, multipart
    fields and file names; none for data types), and whether `+` is a space in them."""
    ctype = content_type.lower()
    if "json" in ctype:
        return json_values(body), False
    if "x-www-form-urlencoded" in ctype or not ctype.strip():
        # a body without a content type is read as a form: PHP and CGI-style applications parse it so
        # whatever the method, and CRS inspects it so too
        form = body.decode("latin-1")
        return chain(pair_values(form), _whole_values(form)), True
    if "xml" in ctype:
        return xml_values(body), False
    if "multipart/form-data" in ctype:
        boundary = multipart.boundary_of(content_type, body)
        return (multipart.scan(body, boundary)[0] if boundary is not None else ()), False
    if not _DATA_TYPE.match(ctype):
        return sniffed_values(body, ctype), True
    return (), False


# Content types of data applications store or stream rather than parse into values
_DATA_TYPE = re.compile(
    r"\s*(?:image|audio|video|font|model)/|\s*application/(?:octet-stream|pdf|zip|gzip|x-tar|x-7z|x-rar|"
    r"grpc|(?:x-)?protobuf|msgpack|x-msgpack|cbor|vnd\.ms-|vnd\.openxmlformats|vnd\.oasis)"
)
# A JSON member (`"key": value`): a part of a long JSON document cut anywhere holds some
_JSON_MEMBER = re.compile(rb'"\s*:\s*(?:["\[{tfn]|-?\d)')
# A body that is a form whatever its content type says: name=value pairs and nothing else
_FORM_LIKE = re.compile(rb"[\w.\-\[\]%+]{1,256}=[^&\s]*(?:&[\w.\-\[\]%+]{1,256}=[^&\s]*)*\s*\Z")
# Types whose whole body is one value to the application (a GraphQL document, its arguments strings in
# it). Not `text/plain`: raw text bodies are log lines, metrics, scripts and SQL for database consoles
# (ClickHouse's HTTP interface takes a query so), whose content is no user input to an application.
_TEXT_VALUE_TYPE = re.compile(r"\s*application/graphql")


def sniffed_values(body: bytes, content_type: str) -> list[str]:
    """The values of a body whose content type names no structure checked above (`text/plain`,
    `application/graphql`, a vendor type, a wrong type): applications that read JSON whatever the
    type (a common setting of web frameworks), or a form, are sent exactly that to evade a WAF that
    trusts the header. So a body that parses as JSON is read as JSON, one that is only name=value pairs
    as a form, and a GraphQL document is one value (its arguments are strings in it). Other bodies
    (raw text, `text/html` pages, scripts, CSV) are not values."""
    if body[:64].lstrip()[:1] in (b"{", b"["):
        try:
            return list(_json_strings(json.loads(body[:MAX_JSON_BYTES])))
        except (ValueError, RecursionError):
            pass  # not JSON after all, or a part of a long document cut off (below)
    if _JSON_MEMBER.search(body, 0, MAX_JSON_BYTES):  # a part of a JSON document: its string contents
        return json_part_values(body[:MAX_JSON_BYTES])
    if _FORM_LIKE.match(body[:MAX_JSON_BYTES]):
        return list(pair_values(body.decode("latin-1")))
    if _TEXT_VALUE_TYPE.match(content_type):
        return [body[:MAX_JSON_BYTES].decode("utf-8", "replace")]
    return []


def check_values(values: Iterable[str], classes: Iterable[Threat]) -> list[Hit]:
    """The request-level checks of `classes` over values already cut out of a request (a multipart
    body's fields): at most one hit per class."""
    return _first(values, False, set(classes))


# -- SQL text from database protocols --------------------------------------------------------------------

_SQL_TOKEN = re.compile(
    r"""
     (?P<ws>\s+)
    |(?P<lc>(?:--|\#)[^\n]*)
    |(?P<bc>/\*.*?(?:\*/|\Z))
    |(?P<str>'(?:[^'\\]|\\.|'')*(?:'|\Z)|"(?:[^"\\]|\\.|"")*(?:"|\Z))
    |(?P<num>0x[0-9a-f]+|\d+(?:\.\d+)?(?:e[+-]?\d+)?)
    |(?P<word>[a-z_@$][\w$@.]*|`[^`]*`|\[[^\]]*\])
    |(?P<op><>|!=|<=|>=|==|\|\||&&|[=<>+\-*/%(),;.!|&^~])
    |(?P<other>.)
    """,
    re.X | re.I | re.S,
)
_DANGEROUS_CALLS = frozenset(
    {"sleep", "benchmark", "pg_sleep", "load_file", "xp_cmdshell", "sp_oacreate", "dbms_pipe.receive_message",
     "dbms_lock.sleep", "utl_http.request", "sys_eval", "sys_exec"}
)  # fmt: skip
_PROBES = frozenset({"version", "@@version", "user", "database", "current_user", "system_user", "schema"})
_COMPARE = frozenset({"=", "==", "<>", "!=", "<", ">", "<=", ">=", "like"})


def _sql_tokens(text: str) -> list[tuple[str, str]]:
    tokens = []
    for m in _SQL_TOKEN.finditer(text[:MAX_SQL_QUERY]):
        kind = m.lastgroup or "other"
        if kind != "ws":
            tokens.append((kind, m.group()))
    return tokens


def _literal(tok: tuple[str, str]) -> tuple[bool, Any]:
    kind, text = tok
    if kind == "num":
        try:
            return True, float(int(text, 16) if text.lower().startswith("0x") else text)
        except ValueError:
            return False, None
    if kind == "str" and len(text) >= 2 and text[-1] == text[0]:
        return True, text[1:-1]
    if kind == "word" and text.lower() in ("true", "null"):
        return True, text.lower()
    return False, None


def _true_comparison(left: tuple[str, str], op: str, right: tuple[str, str]) -> bool:
    op = op.lower()
    if op not in _COMPARE:
        return False
    if left[0] == "word" and right[0] == "word" and op in ("=", "==", "like"):
        return left[1].lower() == right[1].lower()  # OR id=id
    lit_l, a = _literal(left)
    lit_r, b = _literal(right)
    if not (lit_l and lit_r):
        return False
    if type(a) is not type(b):
        a, b = str(a), str(b)
        if a.endswith(".0"):
            a = a[:-2]
        if b.endswith(".0"):
            b = b[:-2]
    if isinstance(a, str) and isinstance(b, str):  # default collations compare case-insensitively
        a, b = a.lower(), b.lower()
    try:
        if op in ("=", "==", "like"):
            return bool(a == b)
        if op in ("<>", "!="):
            return bool(a != b)
        if op == "<":
            return bool(a < b)
        if op == ">":
            return bool(a > b)
        if op == "<=":
            return bool(a <= b)
        return bool(a >= b)
    except TypeError:
        return False


def check_sql_query(text: str) -> Hit | None:
    """Structural SQL-injection rules over a whole statement sent on a database protocol."""
    toks = _sql_tokens(text)
    n = len(toks)
    for i, (kind, val) in enumerate(toks):
        low = val.lower()
        if kind == "str" and (len(val) < 2 or val[-1] != val[0] or val.endswith("\\" + val[0])):
            return Hit(SQL_INJECTION, "unterminated string literal", excerpt_of(text[-120:]))
        if kind == "lc" and i > 0 and toks[i - 1][0] == "str" and ("'" in val or '"' in val):
            return Hit(SQL_INJECTION, "comment cuts the statement after a string", excerpt_of(val))
        if kind == "word":
            if low in _DANGEROUS_CALLS and (i + 1 < n and toks[i + 1][1] == "(" or low.startswith("xp_")):
                return Hit(SQL_INJECTION, f"call to {low}", excerpt_of(text[:120]))
            if low == "waitfor" and i + 1 < n and toks[i + 1][1].lower() in ("delay", "time"):
                return Hit(SQL_INJECTION, "waitfor delay", excerpt_of(text[:120]))
            if low == "into" and i + 1 < n and toks[i + 1][1].lower() in ("outfile", "dumpfile"):
                return Hit(SQL_INJECTION, f"into {toks[i + 1][1].lower()}", excerpt_of(text[:120]))
            if low == "or" and i + 1 < n:
                nxt = toks[i + 1]
                if i + 3 < n and _true_comparison(nxt, toks[i + 2][1], toks[i + 3]):
                    return Hit(
                        SQL_INJECTION,
                        "tautology after OR",
                        excerpt_of(" ".join(t[1] for t in toks[i : i + 4])),
                    )
                is_lit, value = _literal(nxt)
                ends = i + 2 >= n or toks[i + 2][0] in ("lc", "bc") or toks[i + 2][1] in (")", ";")
                if is_lit and value not in (0.0, "", "null") and ends:
                    return Hit(SQL_INJECTION, "constant true after OR", excerpt_of(f"or {nxt[1]}"))
            if low == "union" and _union_of_constants(toks, i + 1):
                return Hit(SQL_INJECTION, "UNION SELECT of constants or probes", excerpt_of(text[:120]))
        if val == ";" and i > 0 and toks[i - 1][0] == "str" and i + 1 < n and toks[i + 1][0] == "word":
            return Hit(SQL_INJECTION, "statement stacked after a string", excerpt_of(text[:120]))
    return None


def _union_of_constants(toks: list[tuple[str, str]], i: int) -> bool:
    n = len(toks)
    if i < n and toks[i][1].lower() in ("all", "distinct"):
        i += 1
    if i >= n or toks[i][1].lower() != "select":
        return False
    items: list[list[tuple[str, str]]] = [[]]
    depth = 0
    for kind, val in toks[i + 1 :]:
        low = val.lower()
        if depth == 0 and (low in ("from", "where", "union", "limit", "order", ";") or kind in ("lc", "bc")):
            break
        if val == "(":
            depth += 1
        elif val == ")":
            depth -= 1
        if val == "," and depth == 0:
            items.append([])
        else:
            items[-1].append((kind, val))
    items = [it for it in items if it]
    if not items:
        return False
    for item in items:
        first = item[0][1].lower()
        if first in _PROBES:
            return True
    return all(len(item) == 1 and (_literal(item[0])[0] or item[0][1].lower() == "null") for item in items)
