"""Path traversal in an HTTP request's target: a path that climbs out of the directory an application
serves files from (`/static/../../etc/passwd`, `?file=../../../etc/passwd`), or names a system file
outright (`?page=/etc/passwd`, `?f=C:\\Windows\\win.ini`).

The target is read as an application reads it: percent escapes decoded (twice: `%252e%252e`), overlong
UTF-8 (`%c0%ae`) and `%u002e` as the characters they spell, a backslash as a separator (Windows and
many file APIs), and a segment of dots only (`....//`, which a filter that strips `../` once leaves as
`../`) or `..;` (Tomcat's path parameters) as a climb.

- **In the path** (before `?`): any climb, and a NUL (`/index.php%00.txt`: the file API stops at it, the
  server sends the script's source). A browser resolves `..` segments before it sends a URL (RFC
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
from workers.detect.decode import fold_width, percent_decode

MAX_TARGET = 4096  # characters of a target read
MAX_VALUES = 256  # values read per request part (query, body, headers)

# a climb: a segment of two dots or more (`..`, `....`), or `..;…` (Tomcat), with more path after it (a
# trailing `/..` names the parent directory itself: a server answers its index, nothing outside)
_CLIMB = re.compile(r"(?:^|/)(?:\.{2,}|\.\.;[^/]*)(?=/.)")
_SYSTEM_FILE_NAMES = (
    r"(?:etc/(?:passwd|shadow|group|hosts|issue|sudoers|crontab|os-release|services|fstab|resolv\.conf)|proc/self/"
    r"|windows/(?:win\.ini|system32/(?:drivers/etc/(?:hosts|services|networks|protocols)|config/sam))|boot\.ini"
    r"|win\.ini|web-inf/web\.xml|\.htpasswd|\.ssh/(?:id_|authorized))"
)
_SYSTEM_FILE = re.compile(rf"(?:^|/){_SYSTEM_FILE_NAMES}", re.I)
# a value that is itself the path of a system file (absolute, a file URL, a Windows drive path; a
# relative `etc/passwd` climbs nowhere)
_SYSTEM_PATH = re.compile(rf"(?:file:/*(?:[a-z]:/+)?|/+|[a-z]:/+){_SYSTEM_FILE_NAMES}", re.I)
# NTFS's default data stream named after a file (`index.asp::$DATA`): IIS serves the script's source
_DATA_STREAM = re.compile(r"::\$data\b", re.I)
# PHP's stream wrappers that read a file or run a command when an application includes the value
# (`php://filter/convert.base64-encode/resource=index.php`, `expect://id`, `zip://upload.jpg#shell.php`,
# `compress.zlib://`, `glob://`), or a data URL whose content is PHP code (`data://text/plain;base64,PD9w…`,
# `<?php` base64-encoded): never a value of its own (a data URL of an image is no code)
_PHP_WRAPPER = re.compile(
    r"\x00\s*(?:php:/+(?:filter|input|fd)|expect:/+|phar:/+|zip:/+|compress\.(?:zlib|bzip2):/+|glob:/+"
    r"|data:(?://)?[\w/+.-]*(?:;[\w=.-]+)*,\s*(?:<\?|PD[89]))",
    re.I,
)
_SEGMENTS_SLASHES = re.compile(r"/+")
_CURRENT_SEGMENTS = re.compile(r"(^|/)(?:\./)+")  # `/./`: the same directory (not the dot of `../`)
# division slash, set minus, one-dot leader, small full stop: read as `/`, `\`, `.` by best-fit mappings
# (and U+EFC8, U+F025: private-use characters traversal generators send as slashes)
_LOOK_ALIKES = str.maketrans(
    {"\u2215": "/", "\u2216": "\\", "\u2024": ".", "\ufe52": ".", "\uefc8": "/", "\uf025": "/"}
)
# `%c0%2e` (`.`, and `/`, `\`): no UTF-8 at all, but a decoder that masks a lead byte's bits off without
# checking what follows reads the character; traversal generators send it beside the overlong `%c0%ae`
_LENIENT_OVERLONG = re.compile(r"%c0%(2e|2f|5c)", re.I)
# a dot or a separator spelt as a C hex literal (`0x2e0x2e0x2f`): generators send it; read as meant
_HEX_SPELLED = re.compile(r"0x(2e|2f|5c)", re.I)
# a value (in values each after a NUL) opening as a drive path or a file URL (a literal first: a fast scan)
_DRIVE_OR_FILE = re.compile(r"\x00\s*(?:[A-Za-z]:/|[Ff][Ii][Ll][Ee]:)")


def _decoded(text: str) -> str:
    """`text` percent-decoded until it stops changing (at most three times); full-width and other
    look-alike dots and slashes as the ASCII ones a server folds them to (IIS, NFKC), `0x2e`-style hex
    spellings as their characters, backslashes as slashes, NULs dropped (`..%00/`: a C API stops at one,
    a filter skips it); `/./` segments as `/`."""
    for _ in range(3):
        if "%c0%" in text or "%C0%" in text:
            text = _LENIENT_OVERLONG.sub(lambda m: chr(int(m.group(1), 16)), text)
        decoded = percent_decode(text)
        if decoded == text:
            break
        text = decoded
    if not text.isascii():
        text = fold_width(text).translate(_LOOK_ALIKES)
    if "0x" in text or "0X" in text:
        text = _HEX_SPELLED.sub(lambda m: chr(int(m.group(1), 16)), text)
    text = _SEGMENTS_SLASHES.sub("/", text.replace("\\", "/").replace("\x00", ""))
    return _CURRENT_SEGMENTS.sub(r"\1", text) if "./" in text else text


def _climbs(path: str) -> int:
    return len(_CLIMB.findall(path))


def check_target(uri: bytes, settings: ThreatSettings) -> Hit | None:
    """A path traversal in a request target (`uri`: path and query as sent), or None."""
    text = uri[:MAX_TARGET].decode("latin-1")
    raw_path, _, query = text.partition("?")
    if "%00" in raw_path or "\x00" in raw_path:  # (`/index.php%00.txt`: served as the script's source)
        return Hit(PATH_TRAVERSAL, "a NUL in the path (a file API stops at it)", excerpt_of(raw_path))
    if _may_climb(raw_path):
        path = _decoded(raw_path)
        up = _climbs(path)
        if up:
            return Hit(PATH_TRAVERSAL, f"a climb in the path ({up} up)", excerpt_of(path))
    if not query:
        return None
    # a pair's value; a pair with no `=` is a value of its own (`?../../etc/passwd`: a CGI script reads
    # the whole query)
    values = (value if eq else name for name, eq, value in (pair.partition("=") for pair in query.split("&")))
    return check_path_values(values, settings, "a query value")


def check_path_values(values: Iterable[str], settings: ThreatSettings, where: str = "a value") -> Hit | None:
    """A path traversal in one of `values` (as sent: query, form and cookie values, header values,
    JSON strings, multipart fields and file names), or None."""
    listed = list(islice(values, MAX_VALUES))
    joined = "\x00" + "\x00".join(listed)  # one look over them all first: most requests have nothing
    if not (_may_climb(joined) or "\x00/" in joined or _DRIVE_OR_FILE.search(joined)):
        return _named_stream(joined, where)
    for raw in listed:
        if not raw:
            continue
        if not _may_climb(raw):  # (most values: a system file's path is all that is left to look for)
            if _absolute(raw):
                path = _decoded(raw.lstrip()) if "./" in raw else raw.lstrip()
                if _SYSTEM_PATH.match(path):
                    return Hit(PATH_TRAVERSAL, f"the path of a system file as {where}", excerpt_of(raw))
            continue
        value = _decoded(raw[:MAX_TARGET].replace("+", " ")).strip()
        up = _climbs(value)
        if up and up >= settings.threshold(PATH_TRAVERSAL, "min_levels"):
            return Hit(PATH_TRAVERSAL, f"a climb of {up} levels in {where}", excerpt_of(value))
        if up and _SYSTEM_FILE.search(value):
            return Hit(PATH_TRAVERSAL, f"a climb to a system file in {where}", excerpt_of(value))
        if _SYSTEM_PATH.match(value):
            return Hit(PATH_TRAVERSAL, f"the path of a system file as {where}", excerpt_of(value))
        stream = _named_stream("\x00" + value, where) if ":" in value else None  # (slashes collapsed)
        if stream is not None:
            return stream
    return _named_stream(joined, where)


def _named_stream(joined: str, where: str) -> Hit | None:
    """A PHP stream wrapper opening one of the values (each after a NUL in `joined`), or an NTFS data
    stream named in one."""
    found = _PHP_WRAPPER.search(joined) if ":/" in joined or "data:" in joined else None
    if found is not None:
        return Hit(
            PATH_TRAVERSAL, f"a PHP stream wrapper as {where}", excerpt_of(found.group().strip("\x00 "))
        )
    found = _DATA_STREAM.search(joined) if "::$" in joined else None
    if found is not None:
        return Hit(PATH_TRAVERSAL, f"a file's NTFS data stream in {where}", excerpt_of(found.group()))
    return None


def _absolute(text: str) -> bool:
    """Whether `text` opens as an absolute path, a drive path or a file URL (a cheap look first)."""
    text = text.lstrip()
    return text[:1] == "/" or text[1:2] == ":" or text[:5].lower() == "file:"


def _may_climb(text: str) -> bool:
    """Whether `text` holds two dots, or an escape, a backslash, a full-width dot or a hex literal that may
    spell a climb once decoded."""
    return ".." in text or "%" in text or "\\" in text or "\uff0e" in text or "0x2" in text or "0X2" in text
