"""Log4Shell (CVE-2021-44228, CVE-2021-45046): a JNDI lookup in anything a Java service may log.

Log4j 2 before 2.15 expands `${…}` lookups in the text it logs, so a request that carries
`${jndi:ldap://host/x}` in any header, its path, a parameter or its body makes a vulnerable service
fetch and run the attacker's class. Scanners and exploit kits hide the word from filters with Log4j's
own lookups, which Log4j resolves first: a default value (`${env:NOPE:-j}`, `${::-n}`, `${k8s:x:-d}`),
case (`${lower:J}`, `${upper:i}`), a date pattern's quoted text (`${date:'j'}`). `jndi_lookup` resolves
them the same way, innermost first and each to what Log4j would print for an unset name, then looks for
a lookup whose name is `jndi`. Anything else stays as it is: `${project.version}` in a build request or
`${HOME}` in a script is no JNDI lookup. Percent-encoding (once or twice) and JSON's `\\u0024` are undone
first (`workers.detect.decode.variants`). Bounded: at most `MAX_TEXT` characters and `MAX_LOOKUPS`
lookups resolved per text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from threats.catalogue import LOG4SHELL, Hit, excerpt_of
from workers.detect.decode import variants

MAX_TEXT = 8192  # characters of one text looked at
MAX_LOOKUPS = 64  # lookups resolved per text (each step resolves the innermost ones)

# the byte spellings of `${` a request may carry it in (one C-speed search before anything is decoded)
_OPENER = re.compile(rb"\$\{|%24%7b|\$%7b|%2524|\\u0024", re.I)
_INNERMOST = re.compile(r"\$\{([^${}]{0,4096})\}")
_JNDI = re.compile(r"\s*jndi\s*:", re.I)
_QUOTED = re.compile(r"'([^']*)'")


def check_lookups(texts: Iterable[bytes]) -> Hit | None:
    """log4shell in any of a request's texts (its URI, header values, a body part). Most requests hold
    no spelling of `${` at all: one search over them all says so."""
    parts = list(texts)
    if _OPENER.search(b"\n".join(parts)) is None:
        return None
    for data in parts:
        if _OPENER.search(data):
            found = jndi_lookup(data.decode("latin-1"))
            if found is not None:
                return Hit(LOG4SHELL, "JNDI lookup", excerpt_of(found))
    return None


def jndi_lookup(text: str) -> str | None:
    """The JNDI lookup `text` makes Log4j perform once its lookups are resolved, or None."""
    for form in variants(text[:MAX_TEXT], False):
        if "${" in form:
            found = _resolve(form)
            if found is not None:
                return found
    return None


def _resolve(text: str) -> str | None:
    """Resolve the innermost lookups step by step; the first JNDI lookup met, or None."""
    for _ in range(MAX_LOOKUPS):
        innermost = list(_INNERMOST.finditer(text))
        if not innermost:
            return None
        for m in innermost:
            if _JNDI.match(m.group(1)):
                return m.group()
        text = _INNERMOST.sub(lambda m: _printed(m.group(1)), text)
    return None


def _printed(body: str) -> str:
    """What Log4j prints for the lookup `${body}` when the name it asks for is unset."""
    if ":-" in body:
        return body.split(":-", 1)[1]  # the default value
    prefix, _, arg = body.partition(":")
    prefix = prefix.strip().lower()
    if prefix == "lower":
        return arg.lower()
    if prefix == "upper":
        return arg.upper()
    if prefix == "date":
        return "".join(_QUOTED.findall(arg))  # a date pattern prints its quoted text as it is
    return ""  # an unset variable, a system property, a name Log4j does not know
