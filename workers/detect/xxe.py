"""XML external entities (XXE) in an HTTP request: XML that makes the application's parser read a file or
a URL, or expand entities without end.

A parser that resolves a document's DTD reads what its entities name: `<!ENTITY x SYSTEM
"file:///etc/passwd">` puts a file into the document (disclosure), an `http:` one makes the server fetch a
URL (SSRF, or out-of-band exfiltration through a parameter entity, `<!ENTITY % d SYSTEM "http://…">`), and
entities made of other entities (`<!ENTITY b "&a;&a;&a;…">`, "billion laughs") expand to gigabytes.
Requests that carry XML (SOAP, SAML, XML-RPC, AMF-X, SVG and office uploads) declare no entity of their
own: a document type that names a standard DTD by its public id (`<!DOCTYPE svg PUBLIC "-//W3C//…">`)
defines none, and stays quiet.

A finding is one of:
- an external entity: `<!ENTITY name SYSTEM "…">` or `PUBLIC`, a parameter entity (`%`) too;
- an external DTD given by a URL alone (`<!DOCTYPE x SYSTEM "http://198.18.0.9/evil.dtd">`): what it
  declares is out of sight, and standard DTDs are named by a public id;
- an expansion: an entity whose text refers to other entities three times or more.

Looked for in a request's body (whatever its type: XML travels as `application/x-amf` or `text/plain`
too, and a multipart upload holds its file), in its URI decoded and in a form body decoded (XML sent as
a parameter), over at most `MAX_XML_TEXT` bytes of each.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from threats.catalogue import XXE, Hit, excerpt_of
from workers.detect.decode import percent_decode

MAX_XML_TEXT = 64 * 1024  # bytes of each text read (a DTD comes first in a document)

_DECLARATION = re.compile(rb"<!(?:entity|doctype)\b", re.I)
_ESCAPED_DECLARATION = re.compile(
    rb"%3c(?:%21|!)", re.I
)  # `<!` escaped (a form or a URI is decoded only then)
_EXTERNAL_ENTITY = re.compile(rb"<!entity\s+(?:%\s*)?[^\s<>\"']{1,100}\s+(?:system|public)\s*[\"']", re.I)
_EXTERNAL_DTD = re.compile(
    rb"<!doctype\s+[^\s<>\[]{1,100}\s+system\s*[\"']\s*(?:https?|ftp|file|php|jar|gopher|netdoc|expect|data):",
    re.I,
)
# an entity whose replacement text refers to other entities three times or more
_EXPANSION = re.compile(
    rb"<!entity\s+[^\s<>\"']{1,100}\s+([\"'])(?:(?!\1).){0,4096}?(?:&[\w.:-]{1,60};[^&\"']{0,64}){3}",
    re.I | re.S,
)


def check_xml(texts: Iterable[bytes]) -> Hit | None:
    """An external entity, an external DTD by URL, or an entity expansion in one of `texts`, or None."""
    for text in texts:
        head = text[:MAX_XML_TEXT]
        if b"<!" not in head or _DECLARATION.search(head) is None:
            continue
        for why, pattern in (
            ("an external entity", _EXTERNAL_ENTITY),
            ("an external DTD by URL", _EXTERNAL_DTD),
            ("an entity expansion", _EXPANSION),
        ):
            found = pattern.search(head)
            if found is not None:
                return Hit(XXE, why, excerpt_of(head[found.start() :]))
    return None


def xml_texts(uri: bytes, body: bytes, content_type: str) -> list[bytes]:
    """Where XML with a DTD may come in: the body (any type; a multipart upload holds its file), the URI
    (decoded when it holds `<!` escaped) and a form body decoded (XML sent as a parameter); none of
    them when nothing can hold a declaration."""
    texts = [body] if body else []
    if b"<!" in uri:
        texts.append(uri)
    elif b"%" in uri and _ESCAPED_DECLARATION.search(uri):
        texts.append(percent_decode(uri.decode("latin-1"), plus=True).encode("latin-1", "replace"))
    if "x-www-form-urlencoded" in content_type and _ESCAPED_DECLARATION.search(body, 0, MAX_XML_TEXT):
        form = body[:MAX_XML_TEXT].decode("latin-1")
        texts.append(percent_decode(form, plus=True).encode("latin-1", "replace"))
    return texts
