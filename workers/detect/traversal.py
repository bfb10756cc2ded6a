"""Path traversal in an HTTP request's target: a path that climbs out of the directory an application
serves files from (`/static/../../etc/passwd`, `?file=../../../etc/passwd`), or names a system file
outright (`?page=/etc/passwd`, `?f=C:\\Windows\\win.ini`).

The target is read as an application reads it: percent escapes decoded (twice: `%252e%252e`), overlong
UTF-8 (`%c0%ae`) and `%u002e` as the characters they spell, a backslash as a separator (Windows and
many file APIs), and a segment of dots only (`....//`, which a filter that strips `../` once leaves as
`../`) or `..;` (Tomcat's path parameters) as a climb.

- **In the path** (before `?`): any climb. A browser resolves `..` segments before it sends a URL (RFC
  3986, 5.2.4) and so do curl and every HTTP library a client uses by default; only a tool that sends
  the path as written (`curl --path-as-is`, scanners) puts one on the wire.
- **In a value** (the query's, a form's, a cookie's, a header's, a JSON string, a multipart field or file
  name): a climb of `min_levels` levels or more (3: a relative link in a value goes up one or two,
  `../img/a.png`, `../../css/site.css`), or any climb to a system file; or a value that is the path of
  a system file (`/etc/passwd`, `/proc/self/environ`, `C:\\boot.ini`, `file:///etc/…`).

System files are the ones file-disclosure probes read: `/etc/passwd` and its kin, `/proc/self/…`,
`win.ini`, `boot.ini`, `WEB-INF/web.xml`, `.htpasswd`, an SSH key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from itertools import islice

from threats.catalogue import PATH_TRAVERSAL, Hit, excerpt_of
from threats.settings import ThreatSettings
from workers.detect.decode import percent_decode

MAX_TARGET = 4096  # characters of a target read
MAX_VALUES = 256  # values read per request part (query, body, headers)

# a character that may spell a dot, a slash or a backslash once decoded: no traversal without one
_MAY_CLIMB = re.compile(r"\.\.|%|\\|/(?:etc|proc|windows|boot)|file:|web-inf|\.ht|\.ssh|win\.ini", re.I)
# a climb: a segment of two dots or more (`..`, `....`), or `..;…` (Tomcat), with more path after it (a
# trailing `/..` names the parent directory itself: a server answers its index, nothing outside)
_CLIMB = re.compile(r"(?:^|/)(?:\.{2,}|\.\.;[^/]*)(?=/.)")
_SYSTEM_FILE_NAMES = (
    r"(?:etc/(?:passwd|shadow|group|hosts|issue|sudoers|crontab|os-release)|proc/self/"
    r"|windows/(?:win\.ini|system32/(?:drivers/etc/hosts|config/sam))|boot\.ini|win\.ini|web-inf/web\.xml|\.htpasswd|\.ssh/(?:id_|authorized))"
)
_SYSTEM_FILE = re.compile(rf"(?:^|/){_SYSTEM_FILE_NAMES}", re.I)
# a value that is itself the path of a system file (absolute, a file URL, a Windows drive path)
_SYSTEM_PATH = re.compile(rf"(?:file:)?/*(?:[a-z]:/)?{_SYSTEM_FILE_NAMES}", re.I)
_SEGMENTS_SLASHES = re.compile(r"/+")


def _decoded(text: str) -> str:
    """`text` percent-decoded until it stops changing (at most three times), backslashes as slashes."""
    for _ in range(3):
        decoded = percent_decode(text)
        if decoded == text:
            break
        text = decoded
    return _SEGMENTS_SLASHES.sub("/", text.replace("\\", "/"))


def _climbs(path: str) -> int:
    return len(_CLIMB.findall(path))


def check_target(uri: bytes, settings: ThreatSettings) -> Hit | None:
    """A path traversal in a request target (`uri`: path and query as sent), or None."""
    text = uri[:MAX_TARGET].decode("latin-1")
    if not _MAY_CLIMB.search(text):
        return None
    raw_path, _, query = text.partition("?")
    path = _decoded(raw_path)
    if _climbs(path):
        return Hit(PATH_TRAVERSAL, f"a climb in the path ({_climbs(path)} up)", excerpt_of(path))
    values = (pair.partition("=")[2] for pair in query.split("&"))
    return check_path_values(values, settings, "a query value")


def check_path_values(values: Iterable[str], settings: ThreatSettings, where: str = "a value") -> Hit | None:
    """A path traversal in one of `values` (as sent: query, form and cookie values, header values,
    JSON strings, multipart fields and file names), or None."""
    levels = settings.threshold(PATH_TRAVERSAL, "min_levels")
    for raw in islice(values, MAX_VALUES):
        if not raw or not _MAY_CLIMB.search(raw):
            continue
        value = _decoded(raw[:MAX_TARGET].replace("+", " ")).strip()
        up = _climbs(value)
        if up >= levels:
            return Hit(PATH_TRAVERSAL, f"a climb of {up} levels in {where}", excerpt_of(value))
        if up and _SYSTEM_FILE.search(value):
            return Hit(PATH_TRAVERSAL, f"a climb to a system file in {where}", excerpt_of(value))
        if _SYSTEM_PATH.match(value):
            return Hit(PATH_TRAVERSAL, f"the path of a system file as {where}", excerpt_of(value))
    return None
