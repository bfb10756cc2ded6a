"""Server-side request forgery (SSRF) in an HTTP request: a value that points the server's own fetch (a
webhook, an image by URL, a PDF renderer, a proxy) at what only the server can reach.

In a cluster the prize is the node's cloud metadata service: from a pod, `http://169.254.169.254/` hands
out the node's credentials (AWS, Azure, GCP `metadata.google.internal`, Alibaba `100.100.100.200`, AWS
IPv6 `fd00:ec2::254`, ECS task credentials `169.254.170.2`). No client passes that address to a server
as a value. Loopback and private addresses are another story: `redirect_uri=http://localhost:8080/`
is how command-line tools log in, and internal service URLs are configuration; so an address is flagged
only when it is spelt to get past a filter, which nobody does by accident:

- a numeric host in any form but four dotted decimals: `http://2130706433/`, `0x7f000001`, `0177.0.0.1`,
  `127.1`, `0` (the C library's `inet_aton` reads them all as an address, and so do the clients that
  fetch the URL);
- an IPv6 literal that carries an IPv4 address (`[::ffff:127.0.0.1]`, `[::ffff:7f00:1]`) or is the
  unspecified address `[::]`;
- digits and dots from other scripts that a URL parser folds to ASCII (`①②⑦.⓪.⓪.①`, `127。0。0。1`), or
  a host in percent escapes (`%31%32%37.0.0.1`, `%6c%6f%63%61%6c%68%6f%73%74`);
- a scheme only a forged request uses: `gopher://` (writes raw bytes to any TCP port: Redis, SMTP),
  `dict://`, `tftp://`, Java's `jar:http…` and `netdoc:`.

Looked for in query, form, JSON, cookie and header values and in the decoded path (`/proxy/http://…`),
percent-decoded (twice, as double encoding hides it), a host NFKC-folded, over at most `MAX_SSRF_TEXT`
characters of all of them joined: substring tests on the joined text first, so a request without `//`,
a forged scheme or a metadata name costs a few C-speed scans (2 µs for a browser's request head, 10 µs
with a Referer and a URL in its query).
"""

from __future__ import annotations

import ipaddress
import re
import socket
import unicodedata
from collections.abc import Iterable
from itertools import islice

from threats.catalogue import SSRF, Hit, excerpt_of
from workers.detect.decode import percent_decode

MAX_SSRF_VALUES = 256  # values looked at per request
MAX_SSRF_TEXT = 64 * 1024  # characters of them, joined

# the metadata services of the clouds a node runs in, by address and by name
_METADATA_V4 = frozenset({"169.254.169.254", "169.254.170.2", "100.100.100.200"})
_METADATA_V6 = frozenset({ipaddress.IPv6Address("fd00:ec2::254")})
_METADATA_NAMES = re.compile(
    r"(?:metadata\.google\.internal|metadata\.goog|instance-data(?:\.ec2\.internal)?|metadata\.tencentyun\.com)\.?\Z"
)
# what a text needs for a finding (lower case; plain substring tests, C-speed): a URL's `//`, a forged
# request's scheme, a metadata service named opening a value
_SCHEME_NEEDLES = ("gopher:", "dict:", "tftp:", "jar:", "netdoc:")
_BARE_NEEDLES = ("169.254.169.254", "169.254.170.2", "100.100.100.200", "metadata.", "instance-data")
_FORGED_SCHEME = re.compile(r"(?<![\w.+-])(?:(?:gopher|dict|tftp)://|jar:(?:https?|ftp|file):|netdoc:)", re.I)
# a URL's host: after `//` (userinfo dropped), where a scheme or the value's start comes before it
# (`_after_scheme`: the regular expression starts with its literal, which the engine finds fast)
_HOST_CHARS = r"(\[[0-9a-f:.%\w]{2,64}\]|[^\s/?#:@\x00\\\[\]=&;,'\"<>]{1,253})"
_URL_HOST = re.compile(r"//(?:[^\s/?#@\x00]{0,128}@)?" + _HOST_CHARS, re.I)
# ... or a host opening a value with no scheme, where only a metadata service counts
# (`169.254.169.254/latest/…`)
_BARE_HOST = re.compile(r"\x00" + _HOST_CHARS)
_NUMERIC_HOST = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+)){0,3}\.?\Z", re.I)
_DOTTED_QUAD = re.compile(
    r"(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\Z"
)


def check_ssrf(values: Iterable[str]) -> Hit | None:
    """A forged request's target in one of `values` (as sent: undecoded), or None."""
    text = "\x00" + "\x00".join(islice(values, MAX_SSRF_VALUES))
    texts = [text[:MAX_SSRF_TEXT]]
    if "%" in texts[0]:
        texts[0] = percent_decode(texts[0], plus=True)  # the values as the application reads them
        if "%" in texts[0]:  # ... and decoded again (`%252F%252F`; a host spelt in escapes)
            texts.append(percent_decode(texts[0]))
    for text in texts:
        low = text.lower()
        if any(n in low for n in _SCHEME_NEEDLES):
            scheme = _FORGED_SCHEME.search(text)
            if scheme is not None:
                return Hit(
                    SSRF, f"a forged request's scheme {scheme.group()!r}", excerpt_of(text[scheme.start() :])
                )
        hosts = (
            [(m, False) for m in _URL_HOST.finditer(text) if _after_scheme(text, m.start())]
            if "//" in text
            else []
        )
        if any(n in low for n in _BARE_NEEDLES):
            hosts += ((m, True) for m in _BARE_HOST.finditer(text))
        for m, opens_value in hosts:
            why = _target(m.group(1), opens_value)
            if why is not None:
                return Hit(SSRF, why, excerpt_of(text[m.start() :].lstrip("\x00")))
    return None


def _after_scheme(text: str, at: int) -> bool:
    """Whether the `//` at `at` follows a URL's scheme (`http:`) or opens a value."""
    before = text[at - 1 : at]
    return before == "\x00" or before == ":" and text[at - 2 : at - 1].isalnum()


def _target(spelt: str, opens_value: bool) -> str | None:
    """Why the host `spelt` is a forged request's target, or None. `opens_value`: the host opens a value
    with no scheme (`169.254.169.254/latest/…`), where only a metadata address counts."""
    host = percent_decode(spelt) if "%" in spelt else spelt  # (`%31%32%37.0.0.1`: escapes in a host)
    if not host.isascii():  # digits and dots of other scripts, as a URL parser folds them
        host = unicodedata.normalize("NFKC", host).replace("\u3002", ".")
    host = host.lower().rstrip(".")
    if host == "localhost" and spelt.lower() != "localhost":
        return f"an address spelt to pass a filter {spelt!r} (localhost)"
    if host.startswith("["):
        return _ipv6_target(host[1:-1].partition("%")[0])
    if host in _METADATA_V4 or _METADATA_NAMES.match(host) and ("." in host or not opens_value):
        return f"the cloud metadata service {host!r}"
    if opens_value or not _NUMERIC_HOST.match(host):
        return None
    try:
        address = socket.inet_ntoa(socket.inet_aton(host))
    except OSError:
        return None
    if address in _METADATA_V4:
        return f"the cloud metadata service {host!r} ({address})"
    if not _DOTTED_QUAD.match(host) or host != spelt:
        return f"an address spelt to pass a filter {spelt!r} ({address})"
    return None


def _ipv6_target(literal: str) -> str | None:
    try:
        address = ipaddress.IPv6Address(literal)
    except ValueError:
        return None
    mapped = address.ipv4_mapped
    if address in _METADATA_V6 or mapped is not None and str(mapped) in _METADATA_V4:
        return f"the cloud metadata service [{literal}]"
    if mapped is not None or address.is_unspecified:
        return f"an address spelt to pass a filter [{literal}]"
    return None
