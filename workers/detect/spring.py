"""Spring remote code execution in an HTTP request: data binding to the class loader, and Spring
Expression Language (SpEL) that reaches a class that runs code.

- **Spring4Shell** (CVE-2022-22965, and CVE-2010-1622 before it): Spring MVC binds request parameters to
  an object's properties by their dotted names, and `class.module.classLoader.…` walks from any object to
  Tomcat's class loader, whose log valve an attacker points at a JSP of their own. A parameter *name*
  that opens with `class.` (or `class[`) and goes on to the module, the class loader or the protection
  domain is that walk; no form names a field so.
- **SpEL** (Spring Cloud Function's `spring.cloud.function.routing-expression` header, CVE-2022-22963;
  Spring Cloud Gateway's actuator routes, CVE-2022-22947; any application evaluating a value): a type
  reference to a class that runs or loads code (`T(java.lang.Runtime).getRuntime().exec(…)`,
  `T(org.springframework.cglib.core.ReflectUtils).defineClass(…)`) or a process built (`new
  java.lang.ProcessBuilder(`). Prose and templates do not write a Java type inside `T(…)`.

Looked for in the target (decoded once), every header value and the body's first `MAX_SPRING_TEXT` bytes
(a form's decoded, a multipart form's field names as they are written).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from threats.catalogue import SPRING_RCE, Hit, excerpt_of
from workers.detect.decode import percent_decode

MAX_SPRING_TEXT = 16 * 1024  # bytes of a body looked at (a parameter or an expression opens near its start)
# A parameter's name that walks to the class loader, read where `class` opens a query or form pair, a
# text, or a multipart field's quoted name (Java's names are case-sensitive: `Class.module` binds nothing)
_BINDING = re.compile(rb"class\s*(?:\.|\[\s*['\"]?)\s*(?:module|classLoader|protectionDomain)\b")
_PAIR_START = b"?&;\x00\"'"
# SpEL: a type reference to a class that runs or loads code, or a process built (a Java package name in
# each: what a request must hold for the expression to be looked for)
_SPEL = re.compile(
    rb"\bT\s*\(\s*(?:java\.lang\.(?:Runtime|ProcessBuilder|System|Thread|ClassLoader|Class)"
    rb"|org\.springframework\.cglib\.core\.ReflectUtils|javax\.script\.ScriptEngineManager"
    rb"|java\.net\.URLClassLoader|java\.lang\.reflect\.\w+)\s*\)"
    rb"|\bnew\s+java\.lang\.ProcessBuilder\s*\("
)
MAX_CLASS_WORDS = 64  # occurrences of `class` looked at per request (prose and markup hold many)


def spring_texts(
    uri: bytes, headers: Sequence[tuple[bytes, bytes]], body: bytes, content_type: str
) -> list[bytes]:
    """Where Spring reads a parameter name or an expression from: the target (decoded too), every header
    value, the body's first part (a form's decoded too)."""
    texts = [uri, *(v for _n, v in headers)]
    if b"%" in uri:
        texts.append(percent_decode(uri.decode("latin-1")).encode("latin-1", "replace"))
    if body:
        head = body[:MAX_SPRING_TEXT]
        texts.append(head)
        if "x-www-form-urlencoded" in content_type.lower() and b"%" in head:
            texts.append(percent_decode(head.decode("latin-1"), plus=True).encode("latin-1", "replace"))
    return texts


def check_spring(texts: Sequence[bytes]) -> Hit | None:
    """Data binding to the class loader or SpEL that runs code in any of a request's texts, or None. One
    look over them all joined, by byte search first: most requests name neither."""
    joined = b"\x00".join(texts)
    at = joined.find(b"class")
    for _ in range(MAX_CLASS_WORDS):
        if at < 0:
            break
        if (at == 0 or joined[at - 1] in _PAIR_START) and _BINDING.match(joined, at):
            return Hit(
                SPRING_RCE, "a parameter bound to the class loader (Spring4Shell)", _excerpt(joined, at)
            )
        at = joined.find(b"class", at + 5)
    if b"java." in joined or b"springframework" in joined:
        found = _SPEL.search(joined)
        if found is not None:
            why = f"SpEL {found.group().decode('latin-1')[:40]!r}"
            return Hit(SPRING_RCE, why, _excerpt(joined, found.start()))
    return None


def _excerpt(joined: bytes, at: int) -> bytes:
    return excerpt_of(joined[at:].split(b"\x00", 1)[0])
