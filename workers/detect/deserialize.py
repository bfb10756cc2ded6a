"""Java deserialization in an HTTP request: an object graph that a Java server rebuilds from the request
and that runs code while it is rebuilt (a "gadget chain", as ysoserial, marshalsec and scanners send).

A server that deserializes what a client sends (JBoss's invoker servlets, Jenkins' CLI, WebLogic's
XMLDecoder services, a `rememberMe` cookie, a JSON API with polymorphic types) rebuilds whatever classes
the data names. A finding is one of:
- a Java serialized object (`AC ED 00 05`, also base64 `rO0AB…` and hex `aced0005…`, in the body or a
  value) that names a class of a known gadget chain (Commons Collections' transformers, `TemplatesImpl`,
  `BadAttributeValueExpException`, Spring's and Groovy's handlers, `JdbcRowSetImpl`, …);
- XMLDecoder markup that builds a process or calls a method (`<java><object class="java.lang.
  ProcessBuilder">`: WebLogic's CVE-2017-10271 and its kin);
- JSON that asks a polymorphic parser (Fastjson's `@type`, Jackson's default typing `["class", {…}]`)
  for a class that looks up JNDI or loads bytecode (`com.sun.rowset.JdbcRowSetImpl`, `TemplatesImpl`,
  `JndiDataSourceFactory`, …).

A serialized object alone is no finding: Java applications exchange them (Spring's HTTP invoker, RMI
over HTTP, session replication); a gadget class in one is never data. Looked for in the body (a base64
or hex stream decoded), and in cookie, query and form values (percent-decoded), over at most
`decode.MAX_VALUE_TEXT` bytes of the body and of the values joined.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable

from threats.catalogue import JAVA_DESERIALIZATION, Hit, excerpt_of
from workers.detect.decode import body_and_values

MIN_VALUE = 24  # characters of the shortest value read (no gadget's name or stream is shorter)

# the classes gadget chains are made of (lower case, as found in a stream, a document or a JSON type)
GADGETS = tuple(
    g.encode()
    for g in (
        "org.apache.commons.collections.functors.invokertransformer",
        "org.apache.commons.collections.functors.instantiatetransformer",
        "org.apache.commons.collections.functors.chainedtransformer",
        "org.apache.commons.collections4.functors.invokertransformer",
        "org.apache.commons.collections4.functors.instantiatetransformer",
        "org.apache.commons.collections4.functors.chainedtransformer",
        "org.apache.commons.collections.keyvalue.tiedmapentry",
        "org.apache.commons.beanutils.beancomparator",
        "com.sun.org.apache.xalan.internal.xsltc.trax.templatesimpl",
        "org.apache.xalan.xsltc.trax.templatesimpl",
        "javax.management.badattributevalueexpexception",
        "org.codehaus.groovy.runtime.convertedclosure",
        "org.codehaus.groovy.runtime.methodclosure",
        "org.springframework.beans.factory.objectfactory",
        "org.springframework.core.serializablertypeutils",
        "com.sun.rowset.jdbcrowsetimpl",
        "org.apache.tomcat.dbcp.dbcp2.basicdatasource",
        "org.apache.ibatis.datasource.jndi.jndidatasourcefactory",
        "org.hibernate.engine.spi.typedvalue",
        "com.mchange.v2.c3p0.poolbackeddatasource",
        "com.mchange.v2.c3p0.jndirefforwardingdatasource",
        "com.mchange.v2.c3p0.wrappermanagedconnectionpooldatasource",
        "org.apache.xbean.naming.context.contextutil",
        "sun.rmi.server.unicastref",
        "java.rmi.server.remoteobjectinvocationhandler",
        "ysoserial",
    )
)
_GADGET = re.compile(b"|".join(re.escape(g) for g in GADGETS), re.I)  # (a stream's names: one scan)
_PACKAGES = (b"org.", b"com.", b"sun.", b"java", b"ysoserial")  # what every gadget's name holds one of
_SERIALIZED = b"\xac\xed\x00\x05"
_SERIALIZED_BASE64 = re.compile(rb"rO0AB[A-Za-z0-9+/=_-]{20,}")
_SERIALIZED_HEX = re.compile(rb"aced0005(?:[0-9a-f]{2}){10,}", re.I)
# XMLDecoder building a process, a runtime, a script engine, a class loader or a Spring context
_XML_DECODER = re.compile(
    rb"<java\b[^>]{0,200}>.{0,2000}?<(?:object|void)\s+class\s*=\s*[\"'](?:java\.lang\.(?:processbuilder|runtime)"
    rb"|javax\.script\.|java\.net\.urlclassloader|org\.springframework\.context\.support)",
    re.I | re.S,
)
# a polymorphic type asked for by name in JSON: Fastjson's `@type`, Jackson's `["class", …]` form
_JSON_TYPE = re.compile(
    rb"[\"']@type[\"']\s*:\s*[\"']([\w.$]{4,200})|\[\s*\"([a-z][\w.$]{4,200})\"\s*,\s*\{", re.I
)


def check_deserialization(body: bytes, values: Iterable[str]) -> Hit | None:
    """A gadget chain in the request `body` or one of `values` (cookie, query and form values, as sent),
    or None."""
    return deserialization_in(body_and_values(body, (v for v in values if len(v) >= MIN_VALUE)))


def deserialization_in(texts: Iterable[bytes]) -> Hit | None:
    """`check_deserialization` on texts `body_and_values` gave (the request's joined values shared with
    other checks)."""
    for text in texts:
        hit = _check(text)
        if hit is not None:
            return hit
    return None


def _check(text: bytes) -> Hit | None:
    for stream, how in _streams(text):
        gadget = _GADGET.search(stream)
        if gadget is not None:
            why = f"a Java serialized object{how} with the gadget {gadget.group().decode().lower()}"
            return Hit(JAVA_DESERIALIZATION, why, excerpt_of(stream[gadget.start() :]))
    if b"<java" not in text and b"@type" not in text and b'["' not in text and b"[ " not in text:
        return None
    if b"<java" in text:  # (XML's names are case-sensitive)
        found = _XML_DECODER.search(text)
        if found is not None:
            why = "XMLDecoder builds a process or calls a class"
            return Hit(JAVA_DESERIALIZATION, why, excerpt_of(found.group()))
    low = text.lower()
    if any(p in low for p in _PACKAGES) and any(g in low for g in GADGETS):  # (a JSON type: only if named)
        for m in _JSON_TYPE.finditer(text):
            name = (m.group(1) or m.group(2)).lower()
            if any(name.startswith(g) for g in GADGETS):
                why = f"JSON asks for the gadget type {name.decode()}"
                return Hit(JAVA_DESERIALIZATION, why, excerpt_of(m.group()))
    return None


def _streams(text: bytes) -> list[tuple[bytes, str]]:
    """The Java serialized objects in `text`: as sent, and decoded from base64 or hex."""
    out = []
    at = text.find(_SERIALIZED)
    if at >= 0:
        out.append((text[at:], ""))
    if b"rO0AB" in text:
        for m in _SERIALIZED_BASE64.finditer(text):
            raw = m.group().replace(b"-", b"+").replace(b"_", b"/").rstrip(b"=")
            try:
                out.append((base64.b64decode(raw + b"=" * (-len(raw) % 4)), " (base64)"))
            except (binascii.Error, ValueError):
                continue
    if b"aced0005" in text or b"ACED0005" in text:
        out += ((bytes.fromhex(m.group().decode()), " (hex)") for m in _SERIALIZED_HEX.finditer(text))
    return out
