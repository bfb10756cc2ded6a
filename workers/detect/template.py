"""Server-side template injection (SSTI) in an HTTP request: a value that a template engine evaluates when
an application builds a template out of it (Jinja2, Twig, Django, Tornado, Mako, Freemarker, Velocity,
Thymeleaf, Smarty, ERB, Pug, Handlebars, Razor, Java EL), probed by scanners (SSTImap, tplmap, nuclei)
with `{{7*7}}` and exploited with an engine's way from the template to the interpreter.

A delimiter alone is no finding: `{{username}}`, `#{name}`, `<%= title %>` and `${HOME}` are what
templates, shells and prose write. A finding is, scored by what probes and exploits put there:

- **inside an expression** (`{{…}}`, `{%…%}`, `${…}`, `#{…}`, `*{…}`, `@{…}`, `~{…}`, `<%…%>`, `@(…)`):
  arithmetic on number literals alone (`7*7`, `7*'7'`, `191*7`: the probe that comes back as 49), Python's
  dunder walk to a class or the builtins (`''.__class__.__mro__`, `__globals__`, `\\x5f\\x5f` spelt out),
  or a call that runs a command, loads a class or reads the environment (`system(`, `popen(`,
  `getRuntime(`, `forName(`, `require(`, `process.mainModule`, `File.open(`, `constructor`; a backtick
  command in ERB or Ruby's `#{…}`);
- **an engine's own gadget** anywhere in the value: Freemarker's `freemarker.template.utility.Execute`
  and `?new()`, Twig's `_self.env` and filters that call a PHP function by name (`|filter('system')`),
  Smarty's `{php}` and `{system(…)}`, Velocity's `#set` to a class, `{% import os %}`, Thymeleaf's
  preprocessed `__${…}__::`, `{% debug %}`;
- **a template statement block** opened and closed in one value (`{% if 1 %}49{% endif %}`,
  `<% if x %>…<% end %>`, `<#if …>…</#if>`): control flow that only a template engine reads.

Looked for in the query's and the cookie's names and values, a form's or JSON document's values (or a
body no parser read), the path and the free-text headers, percent-decoded, and with character references
decoded where a value holds them (`&#x7B;&#x7B;7*7&#x7D;&#x7D;` in an XML attribute). Spring's own expression
language reaching `java.lang.Runtime` is `spring_rce`'s, and OGNL is `struts_rce`'s.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from threats.catalogue import TEMPLATE_INJECTION, Hit, excerpt_of
from workers.detect.decode import MAX_VALUE_TEXT, body_and_values, html_decode

MAX_EXPRESSIONS = 64  # expression openers looked at per text (markup holds many braces)
_EXPRESSION_BYTES = 400  # an expression's content read up to its closer
_CLOSER = {b"{{": b"}}", b"{%": b"%}", b"<%": b"%>", b"@(": b")"}  # the rest close with `}`
# `{{` and `{%`: a literal first byte, which the expression engine skips ahead to (a JSON document is mostly
# other braces); the other openers' first bytes are rare, found with memchr before their search.
_BRACE_OPENER = re.compile(rb"\{[{%]")
_RARE_OPENERS = (b"${", b"#{", b"*{", b"@{", b"~{", b"<%", b"@(")

# arithmetic on number literals, the whole of an expression (after `=`, `-` or braces of the syntax)
_ARITHMETIC = re.compile(rb"[\s{(=!:-]*(['\"]?)\d{1,12}\1\s*(?:\*\*?|\+)\s*(['\"]?)\d{1,12}\2[\s)}]*-?", re.S)
_DUNDER = re.compile(
    rb"__(?:class|mro|base|bases|subclasses|globals|builtins|import|init|dict|getattribute|reduce_ex|code"
    rb"|loader|spec|proto)__|\\x5f\\x5f|\\u005f\\u005f|\[\s*['\"]_['\"]\s*\*\s*2",
    re.I,
)
# a called function that runs a command, loads a class or reads a file or the environment (lowered)
_CODE_CALLS = frozenset(
    b"system popen exec execsync spawn spawnsync eval passthru shell_exec proc_open pcntl_exec getruntime "
    b"forname getmethod newinstance loadclass defineclass getenv readfilesync readfile file_get_contents "
    b"check_output getoutput import_module processbuilder scriptenginemanager getclass require".split()
)
_CALLED = re.compile(rb"([A-Za-z_]\w*)\s*\(")
# a name that reaches the interpreter without a call of its own (lowered; each holds `.` but the first two)
_REACHES = re.compile(
    rb"constructor|child_process|process\s*\.\s*mainmodule"
    rb"|\b(?:file|io|dir|kernel|open3)\s*\.\s*(?:open|read|popen|readlines|foreach|entries|exec|spawn|system)\b"
    rb"|\bos\s*\.\s*(?:system|popen|environ|listdir)|\bsubprocess\s*\.|\bprocess\s*\.\s*start"
    rb"|\bjava\s*\.\s*lang"
)
# Ruby's command literals, in ERB and in Ruby's own interpolation only (a shell's `${PWD=`pwd`}` and
# Markdown's code spans hold backticks too)
_RUBY_COMMAND = re.compile(rb"`[^`]{1,100}`|%x[({]")
_RUBY_OPENERS = (b"<%", b"#{")
# an expression of a single object that leaks the application's configuration (Flask, Django, Symfony)
_CONFIG = re.compile(
    rb"\s*(?:config(?:\s*\.\s*items\s*\(\s*\))?|settings\s*\.\s*SECRET_KEY|app\s*\.\s*request\s*\.\s*server"
    rb"(?:\s*\.\s*all)?|request\s*\.\s*application)\s*"
)
# An engine's gadget, searched in the lowered text: every alternative opens with a literal, so the
# expression engine skips ahead to the bytes that can open one.
_GADGET = re.compile(
    rb"freemarker\s*\.\s*template\s*\.\s*utility\s*\.\s*(?:execute|objectconstructor|jythonruntime)"
    rb"|\?\s*(?:new\s*\(\s*\)|api\s*\.\s*\w+\s*\()"
    rb"|_self\s*\.\s*env\b|registerundefinedfiltercallback|getfilter\s*\("
    rb"|\|\s*(?:filter|map|sort|reduce|find)\s*\(\s*['\"]?(?:system|passthru|exec|shell_exec|popen|proc_open"
    rb"|file_get_contents)\b"
    rb"|\{\s*(?:php\s*\}|(?:system|exec|passthru|shell_exec|readfile|file_get_contents)\s*\("
    rb"|\$smarty\s*\.\s*(?:version|template_object))"
    rb"|smarty_internal_write_file"
    rb"|#set\s*\(\s*\$\w+\s*=[^)]{0,200}(?:getclass|forname|runtime|\.class\b)"
    rb"|\$class\s*\.\s*inspect\s*\("
    rb"|\{%-?\s*(?:import\s+(?:os|subprocess|sys|builtins|posix)\b|debug\s*-?%\})"
    rb"|<%!?\s*import\s+(?:os|subprocess|sys)\b"
    rb"|__\$\{.{1,300}?\}__\s*::",
    re.S,
)
# Gadgets that need no expression opener: Freemarker's built-ins, Smarty's tags
_FREEMARKER_BUILTIN = re.compile(rb"\?\s*(?:new\s*\(\s*\)|api\s*\.)", re.I)
_SMARTY_TAG = re.compile(
    rb"\{\s*(?:php\s*\}|(?:system|exec|passthru|shell_exec|readfile|file_get_contents)\s*\(|\$smarty\s*\.)",
    re.I,
)
# A statement block, behind its opener.
_STATEMENT_BLOCKS = tuple(
    (needle, re.compile(pattern, re.I | re.S))
    for needle, pattern in (
        (
            b"{%",
            rb"\{%-?\s*(if|for|with|macro|call|filter|block)\b[^%]{0,200}%\}.{0,400}?\{%-?\s*end\1\s*-?%\}",
        ),
        (b"<%", rb"<%[=-]?\s*(?:if|unless|while|for)\b[^%]{0,200}%>.{0,400}?<%[=-]?\s*end\w*\s*-?%>"),
        (b"<#", rb"<#(if|list|assign|attempt)\b[^>]{0,200}>.{0,400}?</#\1\s*>"),
    )
)


def check_template(texts: Iterable[bytes], body: bytes, values: Iterable[str]) -> Hit | None:
    """A template expression that runs code or probes the engine in any of `texts` (as they are: the
    decoded path, header values), the body (one no parser read into `values`) or `values`
    (percent-decoded), or None."""
    return template_in((*texts, *body_and_values(body, values)))


def template_in(texts: Iterable[bytes]) -> Hit | None:
    """`check_template` on texts as they are (`body_and_values`' among them)."""
    for text in texts:
        if len(text) > MAX_VALUE_TEXT:
            text = text[:MAX_VALUE_TEXT]
        if b"&" in text and b"&#" in text:  # braces written as character references (XML, HTML decode them)
            text = html_decode(text.decode("latin-1")).encode("latin-1", "replace")
        # (every opener and gadget holds one of these bytes; memchr finds that most texts hold none)
        if b"{" in text or b"<" in text or b"@" in text or b"#" in text:
            hit = _check(text)
            if hit is not None:
                return hit
    return None


def _openers(text: bytes) -> list[tuple[int, bytes]]:
    """(position, opener) of the text's expression openers, up to `MAX_EXPRESSIONS`."""
    found = [(m.start(), m.group()) for m in _BRACE_OPENER.finditer(text)] if b"{" in text else []
    for opener in _RARE_OPENERS:
        if opener[:1] in text:  # (memchr: most texts hold none of these bytes)
            i = text.find(opener)
            while i >= 0 and len(found) < MAX_EXPRESSIONS:
                found.append((i, opener))
                i = text.find(opener, i + 2)
    return found[:MAX_EXPRESSIONS]


def _may_hold_gadget(text: bytes) -> bool:
    """Whether a text without expression openers may still hold a gadget (byte tests before any search)."""
    return (
        b"freemarker" in text
        or (b"?" in text and _FREEMARKER_BUILTIN.search(text) is not None)
        or (b"#" in text and b"#set" in text)
        or (b"$" in text and b"$class" in text)
        or (b"{" in text and _SMARTY_TAG.search(text) is not None)
        or b"Smarty_Internal" in text
    )


def _check(text: bytes, spaced: bool = False) -> Hit | None:
    """A finding in one text; `spaced`: a retry with a form's `+` read as spaces."""
    openers = _openers(text)
    for where, opener in openers:
        start = where + len(opener)
        end = text.find(_CLOSER.get(opener, b"}"), start, start + _EXPRESSION_BYTES)
        if end < 0:
            continue
        why = _expression(text[start:end], opener)
        if why:
            return Hit(TEMPLATE_INJECTION, f"{why} in a template expression", excerpt_of(text[where:]))
    if openers or _may_hold_gadget(text):
        found = _GADGET.search(text.lower())
        if found is not None:
            gadget = text[found.start() : found.end()]  # (lowering keeps every byte's place)
            return Hit(TEMPLATE_INJECTION, "a template engine's way to code", excerpt_of(gadget))
    kinds = {opener for _where, opener in openers}
    if b"<" in text and b"<#" in text:
        kinds.add(b"<#")
    for needle, block in _STATEMENT_BLOCKS:
        if needle in kinds:
            found = block.search(text)
            if found is not None:
                return Hit(TEMPLATE_INJECTION, "a template statement block", excerpt_of(found.group()))
    if openers and not spaced and b"+" in text:  # a query's or form's spaces (a JSON value's `+` is itself)
        return _check(text.replace(b"+", b" "), spaced=True)
    return None


def _expression(content: bytes, opener: bytes) -> str:
    """Why an expression's content is an injection ("": it is not)."""
    if _ARITHMETIC.fullmatch(content):
        return "arithmetic on numbers"
    # (each test behind bytes it needs: most expressions are a name or two)
    if (b"_" in content or b"\\" in content) and _DUNDER.search(content):
        return "a walk to Python's classes"
    low = content.lower()
    if b"(" in low and any(m.group(1) in _CODE_CALLS for m in _CALLED.finditer(low)):
        return "a call that runs code"
    if (b"." in low or b"constructor" in low or b"child_process" in low) and _REACHES.search(low):
        return "a call that runs code"
    if opener in _RUBY_OPENERS and _RUBY_COMMAND.search(content):
        return "a call that runs code"
    if (b"config" in low or b"settings" in low or b"request" in low) and _CONFIG.fullmatch(content):
        return "the application's configuration"
    return ""
