"""HTTP threats on plain values: negative Content-Length, request smuggling, Slowloris, slow bodies,
login brute force, Struts RCE (OGNL from a request, XStream), Range requests that make the server build a part per range.

Header checks take the raw header list as the parser saw it (names unnormalised, so `Transfer-Encoding :`
with a space before the colon, a duplicated header or a value like `xchunked` stays visible); the
Slowloris tracker takes when a request started and when its headers completed, with time passed in.
Request smuggling (desync) forms: CL.TE and TE.CL (both headers), TE obfuscation (an unknown coding such
as `xchunked`, control bytes, a padded or repeated header, chunked not last), duplicate
Content-Length headers or list members with different values (identical repeats are allowed by RFC 9110
§8.6 and stay quiet), a Content-Length that is not a number, and (from the parser's anomalies) a
malformed or oversized chunk size.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence

from threats.catalogue import (
    HTTP_BRUTE_FORCE,
    HTTP_NEGATIVE_LENGTH,
    HTTP_RANGE_DOS,
    HTTP_SLOW_BODY,
    HTTP_SLOWLORIS,
    HTTP_SMUGGLING,
    STRUTS_RCE,
    Hit,
    Threat,
    excerpt_of,
)
from threats.settings import ThreatSettings
from threats.window import LruTable
from workers.detect.decode import percent_decode
from workers.detect.shared_counts import Counts, LocalCounts

Header = tuple[bytes, bytes]

_CONTENT_LENGTH = b"content-length"
_TRANSFER_ENCODING = b"transfer-encoding"
_CODINGS = frozenset({b"chunked", b"gzip", b"x-gzip", b"deflate", b"compress", b"identity", b"br"})
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_DIGITS = re.compile(rb"\d+\Z")


def check_headers(headers: Sequence[Header]) -> list[Hit]:
    """Content-Length / Transfer-Encoding checks on one request's (or response's) raw headers."""
    hits: list[Hit] = []
    lengths: list[bytes] = []
    encodings: list[Header] = []
    for name, value in headers:
        low = name.lower()
        stripped = low.strip()
        if stripped == _CONTENT_LENGTH:
            lengths.append(value)
        elif stripped == _TRANSFER_ENCODING:
            encodings.append((name, value))
            if low != stripped or not _TOKEN.match(name.strip()):
                hits.append(
                    Hit(
                        HTTP_SMUGGLING,
                        "Transfer-Encoding header name padded",
                        excerpt_of(name + b":" + value),
                    )
                )
    parsed: set[int] = set()
    for value in lengths:
        for part in value.split(b","):
            part = part.strip(b" \t")
            if part.startswith(b"-") and _DIGITS.match(part[1:]):
                hits.append(Hit(HTTP_NEGATIVE_LENGTH, "negative Content-Length", excerpt_of(value)))
            elif not _DIGITS.match(part):
                hits.append(Hit(HTTP_SMUGGLING, "Content-Length not a number", excerpt_of(value)))
            else:
                parsed.add(int(part))
    if len(parsed) > 1:
        hits.append(Hit(HTTP_SMUGGLING, "conflicting Content-Length values", excerpt_of(b",".join(lengths))))
    if encodings:
        if len(encodings) > 1:
            hits.append(Hit(HTTP_SMUGGLING, "several Transfer-Encoding headers", excerpt_of(encodings[1][1])))
        for _name, value in encodings:
            if _obfuscated_coding(value):
                hits.append(Hit(HTTP_SMUGGLING, "obfuscated Transfer-Encoding", excerpt_of(value)))
                break
        if lengths:
            hits.append(
                Hit(HTTP_SMUGGLING, "Content-Length with Transfer-Encoding", excerpt_of(encodings[0][1]))
            )
    return _dedupe(hits)


_RANGE_SPEC = re.compile(rb"\s*(\d*)\s*-\s*(\d*)\s*\Z")
# A range end no file reaches (2^63): `bytes=0-18446744073709551615` overflows HTTP.sys's arithmetic
# (MS15-034, CVE-2015-1635: a crash or code execution); scanners probe with it
RANGE_OVERFLOW = 1 << 63


def check_range(headers: Sequence[Header], settings: ThreatSettings) -> Hit | None:
    """A `Range: bytes=…` header with more ranges than `max_ranges`, or with more than `max_overlapping`
    ranges that overlap another (`bytes=0-,5-0,5-1,…`: each overlapping range is a copy the server builds
    and sends), or with an end past 2^63 (`RANGE_OVERFLOW`). Suffix ranges (`-500`) count, but their place
    in the file is unknown: no overlap."""
    for name, value in headers:
        if name.lower().strip() != b"range":
            continue
        unit, _, ranges = value.partition(b"=")
        if unit.strip().lower() != b"bytes":
            return None
        count = ranges.count(b",") + 1
        if count > settings.threshold(HTTP_RANGE_DOS, "max_ranges"):
            return Hit(HTTP_RANGE_DOS, f"{count} ranges", excerpt_of(value))
        spans = []
        for spec in ranges.split(b","):
            m = _RANGE_SPEC.match(spec)
            if m is not None and m.group(2) and int(m.group(2)) >= RANGE_OVERFLOW:
                return Hit(
                    HTTP_RANGE_DOS,
                    "a range end past any file (HTTP.sys overflow, MS15-034)",
                    excerpt_of(value),
                )
            if m is not None and m.group(1):
                spans.append((int(m.group(1)), int(m.group(2)) if m.group(2) else float("inf")))
        spans.sort()
        overlapping, reach = 0, -1.0
        for start, end in spans:
            if start <= reach:
                overlapping += 1
            reach = max(reach, end)
        if overlapping > settings.threshold(HTTP_RANGE_DOS, "max_overlapping"):
            return Hit(HTTP_RANGE_DOS, f"{overlapping} overlapping ranges of {count}", excerpt_of(value))
        return None
    return None


def _obfuscated_coding(value: bytes) -> bool:
    if any(c < 0x20 and c != 0x09 or c >= 0x7F for c in value):
        return True
    codings = [c.strip(b" \t").lower() for c in value.split(b",")]
    if any(c not in _CODINGS for c in codings):
        return True
    # chunked must be the final coding, and only once
    return b"chunked" in codings and (codings[-1] != b"chunked" or codings.count(b"chunked") > 1)


def _dedupe(hits: list[Hit]) -> list[Hit]:
    seen: set[int] = set()
    out = []
    for hit in hits:
        if hit.threat.id not in seen:
            seen.add(hit.threat.id)
            out.append(hit)
    return out


# -- Struts: OGNL from a request (CVE-2017-5638 and kin) -----------------------------------------------------

# OGNL, Struts 2's expression language, evaluated from request data: an expression that reads its context
# or calls a static method (`%{#context['…']}`, `${(#_memberAccess['allowStaticMethodAccess']=true)…}`,
# `%{@java.lang.Runtime@getRuntime()…}`). CVE-2017-5638 (S2-045) puts it in Content-Type, S2-046 in a
# multipart file name, S2-057 in the path's namespace, S2-032 in a `method:` parameter. A template's
# `${user.name}` or a format's `%{count}` reads no `#` variable and calls no `@class@`.
_OGNL = re.compile(
    rb"%\{\s*\(*\s*(?:#[a-z_]|@[a-z_][\w.]*@)"
    # `${…}` is also the shell's: `${#name}` and `${#arr[@]}` are lengths, so a `#` must open a group
    # or name what OGNL keeps in its context
    rb"|\$\{\s*(?:\(+\s*#|#(?:context|_memberaccess|application|request|session|parameters|attr)\b|\(*\s*@[a-z_][\w.]*@)"
    rb"|#_memberaccess\b|@ognl\.ognlcontext@|@java\.lang\.[a-z]+@",
    re.I,
)
MAX_OGNL_TEXT = 16 * 1024  # bytes of each text looked at (the expression opens near its start)
# an escaped `{`, `#`, `@` or `%`: what an encoded OGNL expression holds (nothing else is decoded for it)
_OGNL_ESCAPE = re.compile(rb"%(?:7b|23|40|25)", re.I)


def ognl_texts(uri: bytes, headers: Sequence[Header], body: bytes, content_type: str) -> list[bytes]:
    """Where Struts reads an OGNL expression from: the URI (decoded too), every header value, the body (a
    form's decoded too)."""
    texts = [uri, *(v for _n, v in headers), body[:MAX_OGNL_TEXT]]
    if b"%" in uri and _OGNL_ESCAPE.search(uri):
        texts.append(percent_decode(uri.decode("latin-1")).encode("latin-1", "replace"))
    if body and "x-www-form-urlencoded" in content_type and _OGNL_ESCAPE.search(body, 0, MAX_OGNL_TEXT):
        form = body[:MAX_OGNL_TEXT].decode("latin-1")
        texts.append(percent_decode(form, plus=True).encode("latin-1", "replace"))
    return texts


def check_ognl(texts: Sequence[bytes]) -> Hit | None:
    """An OGNL expression that reaches Struts' evaluator in any of a request's texts (its URI decoded,
    its header values, a form body decoded; each at most `MAX_OGNL_TEXT` bytes), or None. One look over
    them all joined: most requests hold no `#` or `@` at all."""
    joined = b"\x00".join(texts)
    if b"#" not in joined and b"@" not in joined:
        return None
    found = _OGNL.search(joined)
    if found is None:
        return None
    return Hit(STRUTS_RCE, "an OGNL expression", excerpt_of(joined[found.start() :].split(b"\x00", 1)[0]))


# -- Struts CVE-2017-9805 ---------------------------------------------------------------------------------

# The XStream gadget chains published for CVE-2017-9805 name these classes inside a <map><entry>.
_STRUTS_GADGETS = (
    b"javax.imageio.imageio$containsfilter",
    b"java.lang.processbuilder",
    b"jdk.nashorn.internal.objects.nativestring",
    b"com.sun.xml.internal.bind.v2.runtime.unmarshaller.base64data",
    b"javax.crypto.cipherinputstream",
    b"java.beans.eventhandler",
)
# Bytes of a body searched (the gadget sits near the start of the payload).
MAX_STRUTS_BODY = 64 * 1024


def check_struts_body(body: bytes, content_type: str = "") -> Hit | None:
    """An XStream deserialisation payload (CVE-2017-9805) in an XML request body."""
    head = body[:MAX_STRUTS_BODY]
    if "xml" not in content_type.lower() and not head.lstrip().startswith(b"<"):
        return None
    low = head.lower()
    if b"<map" not in low or b"<entry" not in low:
        return None
    for gadget in _STRUTS_GADGETS:
        if gadget in low:
            return Hit(STRUTS_RCE, f"XStream gadget {gadget.decode()}", excerpt_of(head[low.find(gadget) :]))
    return None


# -- Slowloris ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class _Pending:
    started: float
    fired: bool = False


class SlowlorisTracker:
    """Requests whose headers have started but not completed; fires when one exceeds the budget.

    The key is whatever names a request stream (a flow key and direction). Bounded by `capacity`: the
    least recently touched request is forgotten first (a flood of slow connections fills the table, and
    each of them fires on its next packet or sweep before it is evicted in normal sizing)."""

    def __init__(self, capacity: int = 65536) -> None:
        self._pending: LruTable[object, _Pending] = LruTable(capacity)

    def headers_started(self, key: object, now: float) -> None:
        if key not in self._pending:
            self._pending.put(key, _Pending(now))

    def headers_done(self, key: object) -> None:
        self._pending.pop(key)

    def check(self, key: object, now: float, settings: ThreatSettings) -> Hit | None:
        """On more header bytes for `key`: has the request taken too long?"""
        pending = self._pending.get(key)
        if pending is None or pending.fired or HTTP_SLOWLORIS.id not in settings.on:
            return None
        budget = settings.threshold(HTTP_SLOWLORIS, "header_seconds")
        if now - pending.started < budget:
            return None
        pending.fired = True
        return Hit(HTTP_SLOWLORIS, f"headers incomplete after {now - pending.started:.1f}s")

    def sweep(
        self, now: float, settings_for: Callable[[object], ThreatSettings], limit: int = 512
    ) -> list[tuple[object, Hit]]:
        """Check up to `limit` of the oldest pending requests (for connections that went silent)."""
        out = []
        for key, _pending in self._pending.oldest(limit):
            hit = self.check(key, now, settings_for(key))
            if hit is not None:
                out.append((key, hit))
        return out

    def __len__(self) -> int:
        return len(self._pending)


# -- slow bodies (slow POST) --------------------------------------------------------------------------------


def check_slow_body(head_done: float, body_bytes: int, now: float, settings: ThreatSettings) -> Hit | None:
    """A request whose head completed at `head_done` and whose body has brought `body_bytes` since:
    too slow once it is still incomplete after `body_seconds` at under `min_bytes_per_second`."""
    elapsed = now - head_done
    if elapsed < settings.threshold(HTTP_SLOW_BODY, "body_seconds"):
        return None
    rate = body_bytes / elapsed
    if rate >= settings.threshold(HTTP_SLOW_BODY, "min_bytes_per_second"):
        return None
    return Hit(HTTP_SLOW_BODY, f"request body incomplete after {elapsed:.1f}s at {rate:.1f} bytes/s")


# -- login brute force --------------------------------------------------------------------------------------

# Phrases of login failure pages (English; what form-based logins and the usual test applications answer
# with a 200). Searched in the first bytes of a response to a POST only.
_LOGIN_FAILED = re.compile(
    rb"(?i)(login|log in|sign[ -]?in|authentication) (failed|failure|unsuccessful)|"
    rb"(invalid|incorrect|wrong|bad) (user ?name|login|password|credentials|e-?mail)|"
    rb"(user ?name|password|credentials) (is |are )?(invalid|incorrect|wrong)"
)
MAX_FAILURE_BODY = 4096  # bytes of a response searched for a failure phrase


def login_failed(method: bytes, authorization: bool, status: int, body: bytes) -> bool:
    """Does this response refuse a login? 401 to a request with credentials; 401/403 or a failure page
    answering a POST."""
    if status == 401:
        return authorization or method == b"POST"
    if method != b"POST":
        return False
    if status == 403:
        return True
    return 200 <= status < 300 and bool(_LOGIN_FAILED.search(body[:MAX_FAILURE_BODY]))


class LoginFailures:
    """Refused logins per (client, server, path) in a window, for one brute-force threat: more than its
    `failures_per_window` in its `window` is a finding. `http_brute_force` counts per login path; SSH
    counts the refusals the SSH parser sees inside connections (`workers.dpi.parsers.ssh`) with no path,
    so a guesser that tries as many passwords per connection as the server allows (hydra: 10 on dropbear)
    is counted per guess, whichever way its guesses are spread over connections. Bounded by `capacity`
    keys. `counts` may be the node's workers' table (`workers.detect.shared_counts`): the count is then
    the node's, over every worker the flow hash spread the guesser's connections to."""

    def __init__(self, capacity: int = 65536, threat: Threat = HTTP_BRUTE_FORCE) -> None:
        self.threat = threat
        self.counts: Counts = LocalCounts(capacity)

    def on_failure(
        self, client: bytes, server: bytes, path: bytes, now: float, settings: ThreatSettings
    ) -> Hit | None:
        window = settings.threshold(self.threat, "window")
        key = b"%d:%b%d:%b%b" % (len(client), client, len(server), server, path)
        count = self.counts.add(self.threat.id, key, now, window)
        if count <= settings.threshold(self.threat, "failures_per_window"):
            return None
        return Hit(self.threat, f"{count:.0f} refused logins in {window:g}s", excerpt_of(path))
