"""Independent evaluation of the request-level injection checks (`check_request`).

    python scripts/eval_detect.py --crs DIR [--seclists DIR] [--fuzzdb DIR] [--h5sc DIR] [--wfuzz DIR] [--shapes]
        [--sqlmap-log F] [--commix-log F] [--wapiti-log F] [--prose DIR] [--passwords] [--misses N] [--json] [--against REF]

Scores `workers.detect.injection.check_request` (URI, body, content type, cookie, logged headers), with
the worker's path-traversal (`workers.detect.traversal`), log4shell, XXE and SSRF checks beside it, on
public material nobody here wrote, fetched outside the repository (payload files are never committed).
Each corpus row is scored twice: by the check of its own class (an SQLi payload detected as
`sql_injection`; a benign request flagged as SQLi or XSS), and, in its `[any class]` twin, by every
injection check together, as a WAF blocks a request (an SQLi payload stopped by any of `sql_injection`,
`xss`, `command_injection`, `ldap_injection`; a benign request flagged by any of them). `--against REF`
scores the detection code of git revision REF on the same inputs in the same run and prints both.

- OWASP Core Rule Set regression tests, `coreruleset/coreruleset` (Apache-2.0), files
  `tests/regression/tests/REQUEST-941-*/*.yaml` (XSS), `REQUEST-942-*/*.yaml` (SQLi) and
  `REQUEST-932-*/*.yaml` (remote command execution: rows `crs rce`, scored as `command_injection`;
  its negative cases in a row of their own, `crs rce negative (benign)`), and `REQUEST-921-*/921200.yaml`
  (LDAP injection: rows `crs ldap`, scored as `ldap_injection`). `--crs` is a
  checkout or a bare git directory (read at HEAD with `git show`); the commit is printed. Evaluated at
  2cbd1d019cb7c85319ba4d9102a382c9de7a8e53. A stage with `expect_ids` naming a 941/942 rule is an attack
  of that class; the rule's paranoia level (its `paranoia-level/N` tag in `rules/*.conf`) is reported
  beside it: PL1-2 rules look for injections, PL3-4 rules for unusual characters (`((((`, `foo....`),
  which no value-level check of injections aims at. SQLi cases whose every value is one word at most
  once decoded (`COS(`, `>>`, `xp_cmdshell`: `crs_probe`, the rule used for SecLists' probes) are
  reported in a row of their own. Stages with only `no_expect_ids` are CRS's negative
  cases: benign for the rule they test, though a few are attacks another rule catches, so they are
  reported in their own row and listed with `--misses`; those whose own description (or their rule's
  attack cases) show them to be attacks (`CRS_NEGATIVE_ATTACKS`, each with its reason) are scored apart,
  as attacks of either class; attack cases CRS describes as its own "expected (rare) false positive" (a
  Stripe signature, a JWT) are benign requests and scored so. A POST body without a Content-Type is read as a
  form, as the CRS test runner sends it.
- SecLists, `danielmiessler/SecLists` (MIT), `Fuzzing/Databases/SQLi/Generic-SQLi.txt` (at
  07fe6cea123732d88013cbdac1c020d6a5b9adc6), `quick-SQLi.txt` (f5db82f8a5760293ea37f8af1ff1b3ab98147110),
  `Fuzzing/XSS/robot-friendly/XSS-BruteLogic.txt` (a640d292f7205ac2042a526cd0ba986e8ca031b3) and
  `XSS-RSNAKE.txt` (3cbbb9c7197bd4000b23f5f9a2bd80984cef6df3), kept under the same paths in `--seclists`.
  Each line is one payload, sent as a query-string value (`/search?q=`, percent-encoded unless it already
  is); `__TIME__` placeholders become 5. SQLi lines that are a single word or punctuation (`update`,
  `having`, `'`, `%28`) are lists of probe tokens, not injections: counted apart as "probes".
  With `--shapes`, every SecLists payload (probes aside) and every benign value is also sent in each
  other place a request carries values (`SHAPES`: a form body, a JSON body, a multipart form field,
  JSON sent as `text/plain`, a cookie, a header): rows `... as <shape>`.
- fuzzdb, `fuzzdb-project/fuzzdb` (BSD-3-Clause; payloads CC BY 3.0), at
  5656ab25dc6bb43bae32236fab775658a90d7380: `attack/xss/` (`xss-other.txt`, `xss-rsnake.txt`,
  `xss-uri.txt`, `XSSPolyglot.txt`, and the `Exploit String:` lines of `JHADDIX_XSS_WITH_CONTEXT.doc.txt`)
  `attack/sql-injection/` (`detect/`, `exploit/`, `payloads-sql-blind/`) and `attack/os-cmd-execution/`
  (`command-execution-unix.txt`, `OSCommandInject.Windows.txt`, `useful-commands-*.txt`: rows `fuzzdb
  rce`, scored as `command_injection`; `attack/ip/localhost.txt`, each spelling of the loopback address as
  the host of a URL in a query value (`/fetch?url=http://0x7f.1/`): rows `fuzzdb ssrf`, those written
  plainly (a name, four dotted decimals, `::1`) in `fuzzdb ssrf probes`;
  `attack/http-protocol/crlf-injection.txt` as a redirect's query value: rows `fuzzdb crlf` (a header or
  a status line after the break; the rest, a break alone or markup after it, in `fuzzdb crlf probes`); `web-backdoors/`,
  each web shell a server runs by its extension uploaded through a form's file field under its own name:
  row `fuzzdb upload`, scored as `webshell_upload`; `\n` in a line is a newline, and the Windows list's `+` a space,
  as those lists write them), sent as SecLists' are
  (`--fuzzdb`, a checkout or a bare git directory). Its lists mix classes (an LDAP filter among the
  SQLi probes, `' or 2=2` among the XSS): the `[any class]` rows score them as a WAF would.
- OWASP CRS's 934200 and 934180 (server-side template injection: rows `crs ssti`) and 934130 (prototype
  pollution: rows `crs prototype`), with their negative cases, from the same checkout as above.
- HTML5 Security Cheatsheet, `cure53/H5SC` (MPL-2.0), at 1a91bbc085426579ebcdefb1bc5450760db3dad5:
  every vector of `items.js` (its `data`, with the `%placeholders%` of `payloads.js` filled in), sent
  as a query value (`--h5sc`). A few of them only restyle a page (CSS parser quirks with no script):
  they are listed as misses, not left out.
- Benign documentation (`--prose DIR`, repeatable): every sentence (20 to 400 characters) of the READMEs,
  changelogs, licences and text files under DIR, plain or gzip (Debian's `/usr/share/doc` and
  `/usr/share/common-licenses` hold about 640,000), posted as a comment form's value: rows `benign prose`
  and `benign technical text` (sentences holding markup or shell characters: commands, code, markup
  quoted in a sentence). Text people wrote for people, none of it an attack.
- Benign passwords (`--passwords`): 12,000 passwords as a password manager generates them (Bitwarden's
  default alphabet with `!@#$%^&*`, and every printable ASCII symbol; 12, 16 and 20 characters; a seeded
  generator), posted to a login form: rows `benign passwords, …`.
- Benign: the project's own request shapes (`tests/detect/corpus/benign_*.txt`): values people type
  (O'Brien, prose with SQL words) sent as query, form, JSON and path; realistic URIs; bodies of JSON APIs
  and form posts; plus browser-style requests built here (User-Agent, Referer with a query, cookies).

- sqlmap (PyPI `sqlmap`, GPL-2.0, run as a program, not imported), live: `--run-sqlmap DIR` makes a
  network namespace of its own (loopback only, removed after), serves there a small vulnerable web app
  (SQLite; `/item?id=` numeric, `/search?q=` quoted, errors shown) that logs every request, and runs
  sqlmap against both parameters with every technique (BEUSTQ) and with tamper scripts; `--sqlmap-log
  FILE` scores the logged requests. A request whose value differs from the original (`1`, `widget`)
  is an attack, except values of letters and digits only (sqlmap's dynamicity checks): "probes".

- commix (`commixproject/commix`, GPL-3.0, run as a program from a checkout, not imported), live:
  `--run-commix DIR` serves the same app in a namespace of its own and runs commix against `/ping?addr=`
  with the classic technique at level 3, the eval-, file- and time-based techniques, and each of
  `COMMIX_TAMPERS`; `--commix-log FILE` scores the logged requests (the app runs no command, so commix
  sends every payload of each technique). Evaluated at commix 8530a489 (v4.2.dev90).

- wapiti (PyPI `wapiti3`, GPL-2.0, run as a program, not imported), live: `--run-wapiti WAPITI` serves the
  same app in a namespace of its own and runs wapiti's attack modules one at a time (`WAPITI_MODULES`,
  level 2), each crawling from the app's index (`/lab`: links and forms to every endpoint, and
  `/greet`, which writes its value back unescaped, so that the XSS modules send their payloads);
  `--wapiti-log FILE` scores the logged requests (query, form and headers) by the class of the module
  that sent them. Evaluated with wapiti3 3.2.3.

- wfuzz (`xmendez/wfuzz`, GPL-2.0), its wordlists: `--wfuzz DIR` scores the directory-traversal lists
  (`wordlist/vulns/dirTraversal-nix.txt`, `-win.txt`, generated spellings of every encoding, and
  `wordlist/Injections/Traversal.txt`) as a query value and as a path, and its SQL and XSS injection
  lists as query values. Evaluated at 1b695ee9.

Reserved for a later, independent evaluation and never used here: PayloadsAllTheThings, payloadbox,
libinjection's own data files, Zeek's test traces.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, quote, quote_plus, urlsplit

import yaml

ROOT = Path(__file__).resolve().parent.parent
# `--tree DIR` (used by `--against`): import the detection code from another checkout
_TREE = sys.argv[sys.argv.index("--tree") + 1] if "--tree" in sys.argv[:-1] else str(ROOT)
sys.path.insert(0, _TREE)

from workers.detect.decode import percent_decode  # noqa: E402
from workers.detect.injection import check_request, json_values, xml_values  # noqa: E402

CORPUS = ROOT / "tests" / "detect" / "corpus"
SECLISTS_SQLI = ("Fuzzing/Databases/SQLi/Generic-SQLi.txt", "Fuzzing/Databases/SQLi/quick-SQLi.txt")
SECLISTS_XSS = ("Fuzzing/XSS/robot-friendly/XSS-BruteLogic.txt", "Fuzzing/XSS/robot-friendly/XSS-RSNAKE.txt")

try:  # the request checks besides check_request's (older trees `--against` may lack one: it finds nothing)
    from workers.detect.xxe import check_xml, xml_texts
except ImportError:

    def check_xml(texts: Iterable[bytes]) -> None:  # type: ignore[misc]
        return None

    def xml_texts(uri: bytes, body: bytes, content_type: str) -> list[bytes]:  # type: ignore[misc]
        return []


try:
    from workers.detect.ssrf import check_ssrf
except ImportError:

    def check_ssrf(values: Iterable[str]) -> None:  # type: ignore[misc]
        return None


try:
    from workers.detect.crlf import check_crlf
except ImportError:

    def check_crlf(target: bytes, values: Iterable[str]) -> None:  # type: ignore[misc]
        return None


try:
    from workers.detect.deserialize import check_deserialization
except ImportError:

    def check_deserialization(body: bytes, values: Iterable[str]) -> None:  # type: ignore[misc]
        return None


try:
    from workers.detect.phpobject import check_php_object
except ImportError:

    def check_php_object(body: bytes, values: Iterable[str]) -> None:  # type: ignore[misc]
        return None


try:
    from workers.detect.sensitive import check_sensitive_path
except ImportError:

    def check_sensitive_path(uri: bytes) -> None:  # type: ignore[misc]
        return None


try:
    from workers.detect.spring import check_spring, spring_texts
except ImportError:

    def check_spring(texts: Sequence[bytes]) -> None:  # type: ignore[misc]
        return None

    def spring_texts(
        uri: bytes, headers: Sequence[tuple[bytes, bytes]], body: bytes, ctype: str
    ) -> list[bytes]:  # type: ignore[misc]
        return []


try:
    from workers.detect.jwt import check_jwt
except ImportError:

    def check_jwt(texts: Iterable[bytes]) -> None:  # type: ignore[misc]
        return None


try:
    from workers.detect.upload import check_upload
except ImportError:

    def check_upload(  # type: ignore[misc]
        body: bytes, content_type: str, path: bytes, method: bytes = b""
    ) -> None:
        return None


try:
    from workers.detect.serialized import check_serialized
except ImportError:

    def check_serialized(body: bytes, values: Iterable[str]) -> None:  # type: ignore[misc]
        return None


try:
    from workers.detect.prototype import check_prototype
except ImportError:

    def check_prototype(  # type: ignore[misc]
        body: bytes, values: Iterable[str], document: bytes = b""
    ) -> None:
        return None


try:
    from workers.detect.template import check_template
except ImportError:

    def check_template(  # type: ignore[misc]
        texts: Iterable[bytes], body: bytes, values: Iterable[str]
    ) -> None:
        return None


try:
    from threats.settings import DEFAULT_SETTINGS
    from workers.detect.injection import pair_values, parsed_body
    from workers.detect.jndi import check_lookups
    from workers.detect.traversal import check_path_values, check_target

    def other_threats(req: Request) -> set[str]:
        """path_traversal, log4shell, xxe, ssrf, crlf_injection, java_deserialization, spring_rce,
        php_object_injection, sensitive_file_access, template_injection, prototype_pollution,
        insecure_deserialization, webshell_upload and jwt_forgery, as the worker looks for them in a
        request."""
        cookies = list(pair_values(req.cookie))
        body = list(parsed_body(req.body, req.ctype)[0]) if req.body else []
        values = [*cookies, *req.headers, *body]
        path, _, query = req.uri.partition("?")
        forged = check_ssrf([path, *pair_values(query), *values])
        split = check_crlf(req.uri.encode("latin-1", "replace"), [*cookies, *body])
        gadget = check_deserialization(req.body, [*pair_values(query), *cookies, *body])
        probed = check_sensitive_path(req.uri.encode("latin-1", "replace"))
        unserialized = check_php_object(b"" if body else req.body, [*pair_values(query), *cookies, *body])
        head = [
            (b"Cookie", req.cookie.encode("latin-1", "replace")),
            *((b"X", v.encode()) for v in req.headers),
        ]
        bound = check_spring(spring_texts(req.uri.encode("latin-1", "replace"), head, req.body, req.ctype))
        document = req.body if body and "json" in req.ctype.lower() else b""
        polluted = check_prototype(
            b"" if body else req.body, [*pair_values(query), *cookies, *body], document
        )
        rebuilt = check_serialized(req.body, [*pair_values(query), *cookies, *body])
        token = check_jwt([v.encode("latin-1", "replace") for v in (req.uri, req.cookie, *values)])
        shell = check_upload(req.body, req.ctype, req.uri.encode("latin-1", "replace"), b"POST")
        evaluated = check_template(
            (percent_decode(path).encode("latin-1", "replace"),),
            b"" if body else req.body,
            [*pair_values(query), *values],
        )
        found = check_target(req.uri.encode("latin-1", "replace"), DEFAULT_SETTINGS) or check_path_values(
            values, DEFAULT_SETTINGS
        )
        texts = (
            req.uri.encode("latin-1", "replace"),
            req.body,
            *(h.encode("latin-1", "replace") for h in req.headers),
        )
        lookup = check_lookups(texts)
        entity = check_xml(xml_texts(req.uri.encode("latin-1", "replace"), req.body, req.ctype))
        return {
            h.threat.name
            for h in (
                found,
                lookup,
                entity,
                forged,
                split,
                gadget,
                bound,
                unserialized,
                probed,
                evaluated,
                polluted,
                rebuilt,
                shell,
                token,
            )
            if h is not None
        }

except ImportError:

    def other_threats(req: Request) -> set[str]:
        return set()


try:  # the header values the worker hands check_request: every header but those of a fixed syntax
    from workers.detect.hooks import injectable_header_values
except ImportError:  # an older tree (`--against`): the logged headers only

    def injectable_header_values(headers: list[tuple[bytes, bytes]]) -> list[str]:
        logged = (b"user-agent", b"referer", b"x-forwarded-for")
        return [v.decode("latin-1") for n, v in headers if n.lower() in logged]


_PROBE = re.compile(r"\W*\w*\W*")  # one word at most: a probe token, not an injection
_PL_TAG = re.compile(r"paranoia-level/(\d)")
# CRS negative cases (`no_expect_ids` only) that are attacks all the same: the rule under test misses
# them by design, as the test's own description or its rule's attack cases say. Scored apart, as attacks.
CRS_NEGATIVE_ATTACKS = {
    "941100-5": "the <script>…setTimeout payload of 941100's attack case 1, sent in Referer",
    "941110-10": "<script>alert(1);</script> in US-ASCII with the high bit set (GH issue 1481)",
    "941140-14": "url(javascript:alert(1)), the attack of 941140's cases 1-3 without a name=",
    "941310-8": "941310's 7-bit <script>alert(…) attack with its last byte cut",
    "941310-9": "941310's 7-bit <script>alert(…) attack with one byte cut",
    "942101-10": "9'union all: a quote broken out of and a UNION begun",
    "942101-11": "24 union all select 1,2,3 from aa: UNION SELECT",
    "942120-30": "user'collate foo--: 942120's attack case 27 with another collation name",
    "942131-7": "'1' not regexp '1': a false comparison of literals after a quote, the other half of a boolean-blind"
    " probe (942131 looks for true ones only)",
    "942340-10": "'ortrue: quote, OR, true (an auth bypass; the rule wants whitespace)",
    "942350-9": "described as an injection this rule cannot catch (see 942500)",
    "942360-29": "DBMS_LDAP.INIT in a subquery (GH issue 1816: 942360's pattern, not the payload, is at fault)",
    "942360-30": "pg_sleep in a subquery (GH issue 1816)",
    "942360-31": "sqlmap's UNION ALL SELECT NULL,…CONCAT marker (GH issue 1816)",
    "942520-17": "x'~email--: described as 'SQL auth bypass with binary operators'",
    "942521-15": "described as a false negative (not detected with escapes)",
    "942522-5": "described as 'normal SQLi' the rule does not block",
}
# 932's negative cases whose own description calls them an attack (the rule under test leaves them to
# another), and those shaped as the rule's own attack cases: scored apart, as command injections
_RCE_SAID_ATTACK = re.compile(r"\b(?:rce|command injection|obvious payload|positive test)\b", re.I)
_EDITOR_RUNS_A_COMMAND = "`;vi`/`;vim`/`;ex -c:\\!pwd`: an editor made to run a command (`-c:!pwd`), the shape of 932230's attack case 45 (`;gdb … -ex !whoami`)"
CRS_RCE_NEGATIVE_ATTACKS = {
    **dict.fromkeys(
        ("932250-1", "932250-2", "932260-3"),
        "`tar -xzf /var/www/exfiltrate.tar.gz /etc` (alone, or after `;`): /etc archived into the web root, a"
        " test that the rule leaves `tar` to another",
    ),
    "932260-2": "`exec 5<>/dev/tcp/8.8.8.8/80`: a socket to a remote host opened by the shell, 932236's attack"
    " case 40 word for word",
    "932260-1": '`bash -c "echo test"`: a shell given code to run, the shape of 932230\'s attack cases (`time sh'
    " -c whoami`); 932260 leaves it to that rule",
    "932230-46": "`;cat /path/file.gz`: 932230's own attack cases' shape (`;ex -c`, `;gdb … !whoami`) with a"
    " command the rule leaves to another",
    **dict.fromkeys(("932230-42", "932230-43", "932230-44", "932236-9"), _EDITOR_RUNS_A_COMMAND),
}
# CRS cases whose description says they were taken from a corpus reserved for an independent
# evaluation (payloadbox, PayloadsAllTheThings): left out, and counted
_RESERVED_ORIGIN = re.compile(r"payloadbox|payloadsallthethings|swisskyrepo", re.I)
_RULE_ID = re.compile(r"\bid:(\d{6})")
CRS_FAMILIES = {
    "932": "rce",
    "941": "xss",
    "942": "sqli",
    "921200": "ldap",
    "934200": "ssti",
    "934180": "ssti",
    "934130": "prototype",
}
# the threat a row's attacks are scored by (its own class), by the row's class word
OWN_THREAT = {
    "sqli": "sql_injection",
    "xss": "xss",
    "rce": "command_injection",
    "ldap": "ldap_injection",
    "traversal": "path_traversal",
    "log4shell": "log4shell",
    "xxe": "xxe",
    "ssrf": "ssrf",
    "crlf": "crlf_injection",
    "deserialization": "java_deserialization",
    "spring": "spring_rce",
    "php": "php_object_injection",
    "sensitive": "sensitive_file_access",
    "ssti": "template_injection",
    "prototype": "prototype_pollution",
    "serialized": "insecure_deserialization",
    "upload": "webshell_upload",
    "jwt": "jwt_forgery",
}
INJECTION_THREATS = frozenset(OWN_THREAT.values())
OWN_BENIGN = {
    "rce": {"command_injection"},
    "ldap": {"ldap_injection"},
    "ssti": {"template_injection"},
    "prototype": {"prototype_pollution"},
}  # a new class's benign rows
ANY = " [any class]"  # the suffix of a row's twin, scored by every injection check


@dataclass
class Request:
    uri: str
    body: bytes = b""
    ctype: str = ""
    cookie: str = ""
    headers: list[str] = field(default_factory=list)
    label: str = ""

    def threats(self) -> set[str]:
        hits = check_request(self.uri, self.body, self.ctype, self.cookie, header_values=self.headers)
        return {h.threat.name for h in hits} | other_threats(self)


# -- sources -------------------------------------------------------------------------------------------


class Source:
    """Files of a checkout, or of a bare git directory at HEAD."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.bare = not (path / ".git").exists() and (path / "HEAD").is_file()

    def _git(self, *args: str) -> str:
        where = ["--git-dir", str(self.path)] if self.bare else ["-C", str(self.path)]
        out = subprocess.run(["git", *where, *args], check=True, capture_output=True).stdout
        return out.decode("utf-8", "replace")

    def commit(self) -> str:
        try:
            return self._git("rev-parse", "HEAD").strip()
        except (subprocess.CalledProcessError, FileNotFoundError):
            return "(not a git tree)"

    def files(self, prefix: str) -> list[str]:
        if self.bare:
            return self._git("ls-tree", "-r", "--name-only", "HEAD", prefix).split()
        return sorted(str(p.relative_to(self.path)) for p in (self.path / prefix).rglob("*") if p.is_file())

    def read(self, name: str) -> str:
        if self.bare:
            return self._git("show", f"HEAD:{name}")
        return (self.path / name).read_text("utf-8", "replace")


def crs_paranoia(src: Source) -> dict[int, int]:
    levels: dict[int, int] = {}
    for name in src.files("rules"):
        if re.search(r"REQUEST-9(?:21|32|41|42)-.*\.conf$", name):
            for chunk in re.split(r"\nSecRule ", src.read(name)):
                rule, level = _RULE_ID.search(chunk), _PL_TAG.search(chunk)
                if rule and level:
                    levels[int(rule.group(1))] = int(level.group(1))
    return levels


def _raw_request(text: str) -> dict:
    head, _, body = text.partition("\r\n\r\n")
    lines = head.split("\r\n")
    parts = lines[0].split(" ")
    headers = dict(line.split(":", 1) for line in lines[1:] if ":" in line)
    return {"method": parts[0], "uri": parts[1] if len(parts) > 1 else "/", "headers": headers, "data": body}


def crs_request(stage: dict) -> Request:
    if stage.get("encoded_request"):
        stage = _raw_request(base64.b64decode(stage["encoded_request"]).decode("latin-1"))
    headers = {str(k).lower(): str(v) for k, v in (stage.get("headers") or {}).items()}
    data = stage.get("data") or ""
    if isinstance(data, list):
        data = "\r\n".join(data)
    ctype = headers.get("content-type", "")
    if data and not ctype and stage.get("method", "GET").upper() != "GET":
        ctype = "application/x-www-form-urlencoded"
    return Request(
        uri=str(stage.get("uri") or "/"),
        body=str(data).encode("utf-8", "surrogateescape"),
        ctype=ctype,
        cookie=headers.get("cookie", ""),
        headers=injectable_header_values(
            [(k.encode("latin-1", "replace"), v.encode("latin-1", "replace")) for k, v in headers.items()]
        ),
    )


def crs_cases(src: Source) -> Iterator[tuple[str, Request]]:
    """(row, request): rows `crs sqli PL1-2`, `crs xss PL3-4`, `crs negative`, ..."""
    levels = crs_paranoia(src)
    for name in src.files("tests/regression/tests"):
        family = re.search(
            r"REQUEST-(932|941|942)-|REQUEST-921-.*/(921200)\.yaml$|REQUEST-934-.*/(934200|934180|934130)\.yaml$",
            name,
        )
        if not family or not name.endswith(".yaml"):
            continue
        rule = family.group(1) or family.group(2) or family.group(3)
        cls = CRS_FAMILIES[rule]
        low_id, high_id = (
            (int(rule), int(rule) + 1) if len(rule) == 6 else (int(rule) * 1000, int(rule) * 1000 + 1000)
        )
        doc = yaml.safe_load(src.read(name))
        for test in doc.get("tests") or []:
            if _RESERVED_ORIGIN.search(str(test.get("desc", ""))):
                RESERVED_LEFT_OUT.append(f"{doc.get('rule_id')}-{test.get('test_id')}")
                continue
            for n, stage in enumerate(test.get("stages") or []):
                stage = stage.get("stage", stage)  # older files nest each stage once more
                log = ((stage.get("output") or {}).get("log")) or {}
                expect = [i for i in log.get("expect_ids") or [] if low_id <= i < high_id]
                req = crs_request(stage.get("input") or {})
                req.label = f"{doc.get('rule_id')}-{test.get('test_id')}.{n}"
                if expect and "expected (rare) false positive" in str(test.get("desc", "")).lower():
                    yield "crs benign (CRS's expected FPs)", req  # a Stripe signature, a JWT
                elif expect:
                    pl = levels.get(expect[0], 1)
                    row = f"crs {cls} PL{'1-2' if pl <= 2 else '3-4'}"
                    yield (row + " one-token probes" if cls == "sqli" and crs_probe(req) else row), req
                elif log.get("no_expect_ids") and cls in ("ldap", "ssti", "prototype"):
                    yield f"crs {cls} negative (benign)", req
                elif log.get("no_expect_ids") and cls == "rce":
                    said = _RCE_SAID_ATTACK.search(str(test.get("desc", "")))
                    attack = said or req.label.rpartition(".")[0] in CRS_RCE_NEGATIVE_ATTACKS
                    yield (
                        (
                            "crs rce negative, an attack all the same"
                            if attack
                            else "crs rce negative (benign)"
                        ),
                        req,
                    )
                elif log.get("no_expect_ids"):
                    attack = CRS_NEGATIVE_ATTACKS.get(req.label.rpartition(".")[0])
                    yield ("crs negative, an attack all the same" if attack else "crs negative (benign)"), req


RESERVED_LEFT_OUT: list[str] = []  # CRS tests not scored (`_RESERVED_ORIGIN`)


def crs_probe(req: Request) -> bool:
    """Whether every value a CRS test sends (query, form and cookie pairs, a pair without `=` counting
    by its name; JSON strings; XML attribute values and text) is one word at most once decoded: `COS(`, `>>`, `xp_cmdshell`, `pay=<=>`. The same rule as
    SecLists' one-word probes: tokens a rule's regular expression is tested on, not injections."""
    query = urlsplit(req.uri).query
    form = req.body.decode("latin-1") if "x-www-form-urlencoded" in req.ctype else ""
    values = []
    for text in (query, form, req.cookie):
        for part in re.split(r"[&;]", text):
            name, eq, value = part.partition("=")
            values.append(value if eq else name)
    values = [percent_decode(v, plus=True) for v in values if v.strip()]
    if req.body and not form:  # JSON keys and strings, XML attribute values and text
        prolog_free = re.sub(rb"<\?xml[^>]*\?>", b"", req.body)  # `version="1.0"` is no value sent
        values += list(json_values(req.body) if "json" in req.ctype else xml_values(prolog_free))
    return bool(values) and all(_PROBE.fullmatch(v.strip()) for v in values)


def as_query(payload: str) -> str:
    """A payload as a client sends it in a query string (already-encoded payloads as they are)."""
    if re.search(r"%[0-9a-fA-F]{2}", payload) or "&#" in payload:
        return quote_plus(payload, safe="%&#;")
    return quote_plus(payload)


def list_case(corpus: str, cls: str, payload: str) -> tuple[str, Request]:
    """One payload of a list as a query value, in the row of its class (one-word SQLi lines: probes)."""
    probe = cls == "sqli" and _PROBE.fullmatch(payload.strip())
    return f"{corpus} {cls}" + (" probes" if probe else ""), Request(
        "/search?q=" + as_query(payload), label=payload
    )


def seclists_cases(src: Source) -> Iterator[tuple[str, Request]]:
    for cls, names in (("sqli", SECLISTS_SQLI), ("xss", SECLISTS_XSS)):
        for name in names:
            for line in src.read(name).splitlines():
                payload = line.replace("__TIME__", "5")
                if not payload.strip() or payload.startswith("# "):
                    continue
                yield list_case("seclists", cls, payload)


FUZZDB_XSS = tuple(
    f"attack/xss/{n}" for n in ("xss-other.txt", "xss-rsnake.txt", "xss-uri.txt", "XSSPolyglot.txt")
)
FUZZDB_XSS_WITH_CONTEXT = "attack/xss/JHADDIX_XSS_WITH_CONTEXT.doc.txt"  # `Exploit String: …` lines
FUZZDB_CRLF = "attack/http-protocol/crlf-injection.txt"  # line breaks, some with a header or markup after
FUZZDB_SSRF = "attack/ip/localhost.txt"  # spellings of the loopback address, as a fetched URL's host
# web shells (PHP, ASP, JSP, ColdFusion, Perl CGI), each uploaded through a form's file field under its own
# name; only those a web server runs by their extension (the collection's Java sources, classes, WAR
# parts, C source and Windows binary are built or deployed otherwise)
FUZZDB_WEB_SHELLS = "web-backdoors"
_RUNNABLE = re.compile(r"\.(?:php\d?|asp|aspx|asmx|ashx|jsp|jspx|cfm|pl|cgi)$", re.I)
# a host written plainly: a name, four dotted decimals, an IPv6 literal with no IPv4 address in it (the
# other spellings of fuzzdb's list are written to get past a filter)
_PLAIN_HOST = re.compile(
    r"[a-z][a-z0-9.-]*|(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)|[0:]+1",
    re.I,
)
FUZZDB_SQLI_DIRS = (
    "attack/sql-injection/detect/",
    "attack/sql-injection/exploit/",
    "attack/sql-injection/payloads-sql-blind/",
)

FUZZDB_RCE = tuple(
    f"attack/os-cmd-execution/{n}"
    for n in (
        "command-execution-unix.txt",
        "OSCommandInject.Windows.txt",
        "useful-commands-unix.txt",
        "useful-commands-windows.txt",
    )
)


def fuzzdb_cases(src: Source) -> Iterator[tuple[str, Request]]:
    payloads: list[tuple[str, str]] = []
    for name in FUZZDB_RCE:
        # the lists' notations: `\n` written for a newline; the Windows list is URL-encoded (`%26%26`,
        # `c:%255c`), a space written `+`
        windows_encoded = name.endswith("OSCommandInject.Windows.txt")
        for line in src.read(name).splitlines():
            line = line.strip()
            payloads.append(("rce", line.replace("+", " ") if windows_encoded else line.replace("\\n", "\n")))
    for name in FUZZDB_XSS:
        payloads += (("xss", line) for line in src.read(name).splitlines())
    for line in src.read(FUZZDB_XSS_WITH_CONTEXT).splitlines():
        if line.startswith("Exploit String: "):
            payloads.append(("xss", line.removeprefix("Exploit String: ")))
    for folder in FUZZDB_SQLI_DIRS:
        for name in src.files(folder):
            if name.endswith(".txt"):
                payloads += (("sqli", line) for line in src.read(name).splitlines())
    for line in dict.fromkeys(src.read(FUZZDB_CRLF).splitlines()):
        if line.strip():  # (a line break alone, or markup after it: a probe, or XSS through the body)
            row = "fuzzdb crlf" if re.search(r"\w:|HTTP/", line) else "fuzzdb crlf probes"
            yield row, Request("/redirect?to=" + as_query(line.strip()), label=line.strip())
    for line in dict.fromkeys(src.read(FUZZDB_SSRF).splitlines()):
        host = line.strip()
        if host:
            url = f"http://[{host}]/" if ":" in host else f"http://{host}/"
            row = "fuzzdb ssrf probes" if _PLAIN_HOST.fullmatch(host) else "fuzzdb ssrf"
            yield row, Request("/fetch?url=" + quote(url, safe=""), label=host)
    for name in src.files(FUZZDB_WEB_SHELLS):
        base = name.rsplit("/", 1)[-1]
        if _RUNNABLE.search(base):
            part = f'--b\r\nContent-Disposition: form-data; name="file"; filename="{base}"\r\n\r\n'
            body = (part + src.read(name) + "\r\n--b--\r\n").encode("utf-8", "replace")
            yield "fuzzdb upload", Request("/upload", body, "multipart/form-data; boundary=b", label=name)
    for cls, line in payloads:
        payload = line if cls == "rce" else line.strip()  # (a command list's newlines are its payload's)
        if not payload.strip() or payload.startswith("#"):
            continue
        yield list_case("fuzzdb", cls, payload)


# wfuzz's payload lists: directory traversal (generated spellings of every encoding, to a Unix and a
# Windows system file), and its SQL and XSS injections
WFUZZ_TRAVERSAL = (
    "wordlist/vulns/dirTraversal-nix.txt",
    "wordlist/vulns/dirTraversal-win.txt",
    "wordlist/Injections/Traversal.txt",
)
WFUZZ_INJECTIONS = (("sqli", "wordlist/Injections/SQL.txt"), ("xss", "wordlist/Injections/XSS.txt"))


def wfuzz_cases(src: Source) -> Iterator[tuple[str, Request]]:
    """wfuzz's traversal lines as a query value and as a path (`wfuzz traversal`, `... in the path`:
    sent as written, a space, `?` or `#` escaped in the path), and its injection lists as query values."""
    for name in WFUZZ_TRAVERSAL:
        for line in dict.fromkeys(src.read(name).splitlines()):
            if not line.strip() or line.startswith("#"):
                continue
            yield "wfuzz traversal", Request("/download?file=" + as_query(line), label=line)
            path = line.replace(" ", "%20").replace("?", "%3F").replace("#", "%23")
            yield "wfuzz traversal in the path", Request("/static/" + path.lstrip("/"), label=line)
    for cls, name in WFUZZ_INJECTIONS:
        for line in src.read(name).splitlines():
            if line.strip() and not line.startswith("#"):
                yield list_case("wfuzz", cls, line.strip())


_JS_STRING = r"'((?:[^'\\]|\\.)*)'"  # a single-quoted JavaScript string literal
_JS_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|x[0-9a-fA-F]{2}|.)", re.S)


def _js_unquoted(text: str) -> str:
    def one(m: re.Match[str]) -> str:
        e = m.group(1)
        if e[0] in "ux" and len(e) > 1:
            return chr(int(e[1:], 16))
        return {"n": "\n", "t": "\t", "r": "\r", "0": "\0"}.get(e, e)

    return _JS_ESCAPE.sub(one, text)


def h5sc_cases(src: Source) -> Iterator[tuple[str, Request]]:
    fills = {
        k: _js_unquoted(v) for k, v in re.findall(r"'(\w+)'\s*:\s*" + _JS_STRING, src.read("payloads.js"))
    }
    for m in re.finditer(r"'id'\s*:\s*(\d+).*?'data'\s*:\s*" + _JS_STRING, src.read("items.js"), re.S):
        vector = re.sub(r"%(\w+)%", lambda p: fills.get(p.group(1), p.group(0)), _js_unquoted(m.group(2)))
        yield "h5sc xss", Request("/search?q=" + as_query(vector), label=f"{m.group(1)}: {vector}")


# -- sqlmap, live ----------------------------------------------------------------------------------------

SQLMAP_ORIGINAL = {"id": "1", "q": "widget"}
SQLMAP_RUNS = (  # (url, extra sqlmap arguments)
    ("/item?id=1", []),
    ("/search?q=widget", []),
    ("/item?id=1", ["--tamper=space2comment,between,randomcase"]),
    ("/search?q=widget", ["--tamper=charencode"]),
    ("/search?q=widget", ["--tamper=apostrophenullencode,space2plus"]),
)


@contextlib.contextmanager
def injectable_app(log: Path, port: int) -> Iterator[list[str]]:
    """The lab's injectable app (`lab.vulnapp`) on 127.0.0.1:`port` in a network namespace made for it
    (root; removed after), logging every request's path to `log`. Yields the command prefix that runs a
    program in that namespace."""
    log.write_text("")
    ns = f"evaldetect{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    inside = ["ip", "netns", "exec", ns]
    try:
        subprocess.run([*inside, "ip", "link", "set", "lo", "up"], check=True)
        app = [sys.executable, "-m", "lab.vulnapp", "127.0.0.1", str(port), "--log", str(log)]
        server = subprocess.Popen([*inside, *app], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None
            if server.stdout.readline().strip() != "ready":
                raise SystemExit("the injectable app did not start")
            yield inside
        finally:
            server.terminate()
            server.wait()
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def run_sqlmap(work: Path, port: int = 8081) -> Path:
    """sqlmap against the lab's injectable app; the request log."""
    work.mkdir(parents=True, exist_ok=True)
    log = work / "requests.log"
    with injectable_app(log, port) as inside:
        sqlmap = Path(sys.executable).with_name("sqlmap")
        for url, extra in SQLMAP_RUNS:
            cmd = [str(sqlmap), "-u", f"http://127.0.0.1:{port}{url}", "--batch", "--flush-session"]
            cmd += ["--technique=BEUSTQ", "--level=3", "--risk=2", "--time-sec=1", "--dbms=SQLite"]
            cmd += ["--output-dir", str(work / "out"), "--threads=4", *extra]
            subprocess.run([*inside, *cmd], stdout=subprocess.DEVNULL, check=False)
    return log


def logged_targets(log: Path) -> Iterator[str]:
    """The target of each distinct GET request in a log of the lab app (JSON lines; a path a line in logs
    of older trees)."""
    for line in dict.fromkeys(log.read_text("utf-8").splitlines()):
        if not line.startswith("{"):
            yield line
        elif (entry := json.loads(line))["method"] == "GET":
            yield entry["path"]


def sqlmap_cases(log: Path) -> Iterator[tuple[str, Request]]:
    for uri in dict.fromkeys(logged_targets(log)):  # each distinct request once
        query = urlsplit(uri).query
        values = {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}
        name = "id" if "id" in values else "q"
        value = values.get(name, "")
        if value == SQLMAP_ORIGINAL[name]:
            continue
        row = "sqlmap sqli probes" if re.fullmatch(r"[\w.-]*", value) else "sqlmap sqli"
        yield row, Request(uri, label=uri)


# -- commix, live ----------------------------------------------------------------------------------------

COMMIX_ORIGINAL = "198.18.0.7"
COMMIX_URL = f"/ping?addr={COMMIX_ORIGINAL}"
COMMIX_TAMPERS = (
    "space2ifs,dollaratsigns",
    "backslashes,caret",
    "doublequotes,uninitializedvariable",
    "singlequotes,slash2env",
    "base64encode",
    "hexencode",
    "rev",
    "nested,backticks",
    "printf2echo,sleep2timeout",
    "randomcase,multiplespaces",
    "space2htab",
)
COMMIX_RUNS = (  # extra commix arguments per run
    ["--technique=c", "--level=3"],  # every prefix, separator and suffix of the classic technique
    ["--technique=eft", "--time-sec=1"],  # eval-based (PHP), file-based, time-based
    *(["--technique=c", f"--tamper={t}"] for t in COMMIX_TAMPERS),
)


def run_commix(commix: Path, work: Path, port: int = 8082) -> Path:
    """commix (a checkout: `commix.py`) against the lab's injectable app; the request log. The app runs
    no command: commix sends every payload of each technique and finds nothing."""
    work.mkdir(parents=True, exist_ok=True)
    log = work / "commix-requests.log"
    with injectable_app(log, port) as inside:
        for extra in COMMIX_RUNS:
            cmd = [sys.executable, str(commix / "commix.py"), "--batch", "--url"]
            cmd += [f"http://127.0.0.1:{port}{COMMIX_URL}", "--output-dir", str(work / "out"), *extra]
            subprocess.run([*inside, *cmd], stdout=subprocess.DEVNULL, check=False, timeout=900)
    return log


def commix_cases(log: Path) -> Iterator[tuple[str, Request]]:
    """Each distinct request commix sent to `/ping`: an attack when its `addr` differs from the original
    (`commix rce`), a probe when every value is a few letters (`commix rce probes`: its random markers;
    a hex-encoded payload is one word too, and an attack)."""
    for uri in dict.fromkeys(logged_targets(log)):
        url = urlsplit(uri)
        values = [v for vs in parse_qs(url.query, keep_blank_values=True).values() for v in vs]
        if url.path != "/ping" or values == [COMMIX_ORIGINAL]:
            continue
        probe = all(re.fullmatch(r"[A-Za-z]{0,8}", v) for v in values)  # (its random markers: `QWE`)
        yield ("commix rce probes" if probe else "commix rce"), Request(uri, label=uri)


# -- wapiti, live ----------------------------------------------------------------------------------------

# each attack module run alone, and the class its requests are scored by
WAPITI_MODULES = {
    "sql": "sqli",
    "timesql": "sqli",
    "xss": "xss",
    "permanentxss": "xss",
    "exec": "rce",
    "shellshock": "rce",
    "file": "traversal",
    "ldap": "ldap",
    "xxe": "xxe",
}
# the values of the lab app's index (`/lab`): a request that sends only these is the crawl
WAPITI_ORIGINAL = {"id": "1", "q": "widget", "name": "guest", "addr": COMMIX_ORIGINAL}


def run_wapiti(wapiti: Path, work: Path, port: int = 8083) -> Path:
    """wapiti (its program) against the lab's injectable app, one attack module at a time, crawling from
    the app's index; the request log, each request marked with the module that sent it."""
    work.mkdir(parents=True, exist_ok=True)
    raw, log = work / "wapiti-raw.log", work / "wapiti-requests.log"
    with injectable_app(raw, port) as inside, log.open("w", encoding="utf-8") as out:
        for module in WAPITI_MODULES:
            seen = raw.stat().st_size
            cmd = [str(wapiti), "-u", f"http://127.0.0.1:{port}/lab", "--scope", "domain", "-m", module]
            cmd += ["-l", "2", "--flush-session", "--store-session", str(work / "session")]
            cmd += ["-f", "json", "-o", str(work / f"report-{module}.json"), "--max-scan-time", "300"]
            subprocess.run([*inside, *cmd], stdout=subprocess.DEVNULL, check=False, timeout=900)
            with raw.open(encoding="utf-8") as sent:
                sent.seek(seen)
                for line in sent:
                    out.write(json.dumps({"module": module, **json.loads(line)}) + "\n")
    return log


def wapiti_cases(log: Path) -> Iterator[tuple[str, Request]]:
    """Each distinct request wapiti sent, scored by its module's class (`wapiti sqli`, ...): an attack when
    a value differs from the index's, or a header (Referer aside: the crawl's links) from what the
    module's first request (the crawl's start) sent; a probe when every such value is one word (its
    markers)."""
    entries = [json.loads(line) for line in dict.fromkeys(log.read_text("utf-8").splitlines())]
    first: dict[str, dict] = {}  # each module's first request: the crawl's start
    for e in entries:
        first.setdefault(e["module"], e)
    crawl_headers = {(m, str(k).lower(), str(v)) for m, e in first.items() for k, v in e["headers"]}
    for entry in entries:
        headers = [(str(k).lower(), str(v)) for k, v in entry.get("headers", [])]
        sent = {k: v for k, v in headers if (entry["module"], k, v) not in crawl_headers and k != "referer"}
        form = "x-www-form-urlencoded" in entry["type"]
        pairs = parse_qs(urlsplit(entry["path"]).query, keep_blank_values=True)
        if form:
            pairs.update(parse_qs(entry["body"], keep_blank_values=True))
        # what was sent in place of a value (a query or body sent whole is a name with no value)
        values = {
            k: v if k in WAPITI_ORIGINAL else f"{k}={v}".rstrip("=")
            for k, vs in pairs.items()
            for v in vs
            if WAPITI_ORIGINAL.get(k) != v
        }
        values.update(sent)
        other_body = bool(entry["body"]) and not form  # (XML, JSON: an attack whatever its values)
        if not values and not other_body:
            continue  # the crawl
        row = f"wapiti {WAPITI_MODULES[entry['module']]}"
        probe = not other_body and all(re.fullmatch(r"[\w.-]*", v) for v in values.values())
        label = f"{entry['module']}: {entry['method']} {entry['path']} {entry['body'][:200]}".rstrip()
        label += "".join(f" [{k}: {v[:100]}]" for k, v in sent.items())
        body = entry["body"].encode("latin-1")
        cookie = dict(headers).get("cookie", "")
        free = injectable_header_values([(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers])
        request = Request(entry["path"], body, entry["type"], cookie, free, label)
        yield (row + " probes" if probe else row), request


def _lines(name: str) -> list[str]:
    text = (CORPUS / name).read_text("utf-8")
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


BROWSER_UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0"


def benign_cases() -> Iterator[tuple[str, Request]]:
    for v in _lines("benign_values.txt"):
        yield "benign values", Request("/search?q=" + quote_plus(v) + "&page=2", label=v)
        yield (
            "benign values",
            Request("/api/items", json.dumps({"query": v, "n": 3}).encode(), "application/json", label=v),
        )
        yield (
            "benign values",
            Request(
                "/form",
                f"name={quote_plus(v)}&note={quote_plus(v)}".encode(),
                "application/x-www-form-urlencoded",
                label=v,
            ),
        )
        yield "benign values", Request("/wiki/" + quote(v, safe=""), label=v)
    for uri in _lines("benign_requests.txt"):
        referer = "https://shop.example/" + uri.lstrip("/")
        yield (
            "benign browser requests",
            Request(
                uri,
                cookie='sid=3f9a2c1b; theme=dark; consent={"ads":false}',
                headers=[BROWSER_UA, referer],
                label=uri,
            ),
        )
    for line in _lines("benign_bodies.txt"):
        ctype, _, body = line.partition("\t")
        yield "benign bodies", Request("/api/submit", body.encode(), ctype, label=line)


# Passwords a password manager generates (`--passwords`), posted to a login form: Bitwarden's default
# alphabet (letters, digits, `!@#$%^&*`) and every printable ASCII symbol, 12, 16 and 20 characters long;
# a seeded generator, so that every run scores the same passwords
PASSWORD_ALPHABETS = {
    "default symbols": "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!@#$%^&*",
    "all symbols": "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
}
PASSWORDS_PER_LENGTH = 2000


def password_cases() -> Iterator[tuple[str, Request]]:
    import random

    rnd = random.Random(2026)
    for name, alphabet in PASSWORD_ALPHABETS.items():
        for length in (12, 16, 20):
            for _ in range(PASSWORDS_PER_LENGTH):
                pw = "".join(rnd.choice(alphabet) for _ in range(length))
                body = f"username=ann&password={quote_plus(pw)}".encode()
                yield (
                    f"benign passwords, {name}",
                    Request("/login", body, "application/x-www-form-urlencoded", label=pw),
                )


# Where a request carries a value besides the query string (`--shapes`): a payload list and the benign
# values each sent in every shape, rows `... as <shape>`
_BOUNDARY = "----eval7MA4YWxkTrZu0gW"
SHAPES: dict[str, Callable[[str], Request]] = {
    "form": lambda v: Request(
        "/form", f"a=1&q={quote_plus(v)}".encode(), "application/x-www-form-urlencoded"
    ),
    "json": lambda v: Request("/api", json.dumps({"q": v, "n": 1}).encode(), "application/json"),
    "multipart": lambda v: Request(
        "/upload",
        (
            f'--{_BOUNDARY}\r\nContent-Disposition: form-data; name="q"\r\n\r\n{v}\r\n--{_BOUNDARY}--\r\n'
        ).encode(),
        f"multipart/form-data; boundary={_BOUNDARY}",
    ),
    "json as text/plain": lambda v: Request(
        "/api", json.dumps({"q": v}).encode(), "text/plain;charset=UTF-8"
    ),
    "cookie": lambda v: Request("/", cookie=f"sid=3f9a2c1b; pref={quote(v, safe='')}"),
    "header": lambda v: Request("/", headers=[v]),
}


def shaped_cases(src: Source) -> Iterator[tuple[str, Request]]:
    """SecLists' payloads (not the one-word probes) and the benign values, each in every shape."""
    for row, req in seclists_cases(src):
        if not row.endswith("probes"):
            for shape, build in SHAPES.items():
                yield f"{row} as {shape}", dataclasses.replace(build(req.label), label=req.label)
    for value in _lines("benign_values.txt"):
        for shape, build in SHAPES.items():
            yield f"benign values as {shape}", dataclasses.replace(build(value), label=value)


# Sentences of documentation people wrote (`--prose DIR`): READMEs, changelogs, licences. A sentence is
# posted as a comment form's value, as a user posts text; those with no markup or shell characters are
# prose, the rest technical text (commands, code, markup quoted in a sentence).
PROSE_FILE = re.compile(
    r"(?:readme|changelog|news|copyright|faq|todo|authors|[^/]*\.(?:txt|md|rst))[^/]*$", re.I
)
PROSE_SENTENCE = (20, 400)  # characters of a sentence scored (shorter: a heading; longer: not a sentence)
PROSE_FILE_BYTES = 1 << 20  # bytes read per file
_TECHNICAL = re.compile(r"[<>{}$|`=\\;]")


def prose_sentences(paths: Iterable[Path]) -> list[str]:
    """Every sentence of the documentation files under `paths` (gzip or plain text), once, sorted."""
    import gzip

    sentences: set[str] = set()
    for top in paths:
        files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
        for path in files:
            if not PROSE_FILE.search(path.name.removesuffix(".gz")) and path != top:
                continue
            try:
                with gzip.open(path) if path.suffix == ".gz" else path.open("rb") as f:
                    text = f.read(PROSE_FILE_BYTES).decode("utf-8", "replace")
            except (OSError, EOFError):
                continue
            for paragraph in re.split(r"\n\s*\n", text):
                for sentence in re.split(r"(?<=[.!?])\s+", " ".join(paragraph.split())):
                    if PROSE_SENTENCE[0] <= len(sentence) <= PROSE_SENTENCE[1]:
                        sentences.add(sentence)
    return sorted(sentences)


def prose_cases(paths: Iterable[Path]) -> Iterator[tuple[str, Request]]:
    for sentence in prose_sentences(paths):
        row = "benign technical text" if _TECHNICAL.search(sentence) else "benign prose"
        body = f"name=Ann&comment={quote_plus(sentence)}".encode()
        yield row, Request("/comment", body, "application/x-www-form-urlencoded", label=sentence)


# -- report ----------------------------------------------------------------------------------------------


def evaluate(cases: Iterator[tuple[str, Request]]) -> dict[str, dict]:
    """Per row and per `[any class]` twin: requests, requests flagged, and the misses (attacks not
    flagged, benign requests flagged)."""
    rows: dict[str, dict] = {}
    for row, req in cases:
        found = req.threats() & INJECTION_THREATS
        if "benign" in row:  # a false positive of the classes the row was first scored by
            own = bool(found & OWN_BENIGN.get(row.split()[1], {"sql_injection", "xss"}))
        elif row.startswith("crs negative"):  # an attack of either class
            own = bool(found & {"sql_injection", "xss"})
        else:
            cls = next(word for word in row.split() if word in OWN_THREAT)
            own = OWN_THREAT[cls] in found
        for name, flagged in ((row, own), (row + ANY, bool(found))):
            r = rows.setdefault(name, {"total": 0, "hit": 0, "misses": []})
            r["total"] += 1
            if flagged:
                r["hit"] += 1
            if flagged == ("benign" in row):  # a false positive, or an attack missed
                r["misses"].append(req.label or req.uri)
    return rows


def reference_rows(ref: str, argv: list[str]) -> dict[str, dict]:
    """The rows of git revision `ref`'s detection code on the same inputs (this script, its corpora)."""
    import io
    import tarfile

    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True).stdout
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        cmd = [sys.executable, __file__, *argv, "--json", "--tree", tmp]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(out)["rows"])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--crs", type=Path, help="coreruleset checkout or git directory")
    parser.add_argument("--seclists", type=Path, help="SecLists checkout, or a directory with its files")
    parser.add_argument("--fuzzdb", type=Path, help="fuzzdb checkout or git directory")
    parser.add_argument(
        "--h5sc", type=Path, help="HTML5 Security Cheatsheet (cure53/H5SC) checkout or git directory"
    )
    parser.add_argument("--wfuzz", type=Path, help="wfuzz checkout or git directory (its wordlists)")
    parser.add_argument("--sqlmap-log", type=Path, help="requests logged during a live sqlmap run")
    parser.add_argument("--run-sqlmap", type=Path, metavar="DIR", help="run sqlmap live first (root)")
    parser.add_argument("--commix-log", type=Path, help="requests logged during a live commix run")
    parser.add_argument(
        "--run-commix", type=Path, metavar="COMMIX", help="run commix (a checkout) live first (root)"
    )
    parser.add_argument("--wapiti-log", type=Path, help="requests logged during a live wapiti run")
    parser.add_argument(
        "--run-wapiti", type=Path, metavar="WAPITI", help="run wapiti (its program) live first (root)"
    )
    parser.add_argument(
        "--prose",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="documentation to post as comments",
    )
    parser.add_argument("--passwords", action="store_true", help="generated passwords posted to a login form")
    parser.add_argument("--misses", type=int, default=0, help="list up to N misses / false positives per row")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--shapes",
        action="store_true",
        help="also send SecLists and benign values in every body/header shape",
    )
    parser.add_argument("--against", metavar="REF", help="score git revision REF's detection code too")
    parser.add_argument("--tree", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.run_sqlmap:
        args.sqlmap_log = run_sqlmap(args.run_sqlmap)
    if args.run_commix:
        args.commix_log = run_commix(args.run_commix, Path(tempfile.mkdtemp(prefix="commix-")))
    if args.run_wapiti:
        args.wapiti_log = run_wapiti(args.run_wapiti, Path(tempfile.mkdtemp(prefix="wapiti-")))
    cases: list[tuple[str, Request]] = []
    sources = {}
    readers: dict[str, tuple[str, Callable[[Source], Iterator[tuple[str, Request]]]]] = {
        "crs": ("coreruleset", crs_cases),
        "seclists": ("seclists", seclists_cases),
        "fuzzdb": ("fuzzdb", fuzzdb_cases),
        "h5sc": ("h5sc", h5sc_cases),
        "wfuzz": ("wfuzz", wfuzz_cases),
    }
    for arg, (name, read) in readers.items():
        if getattr(args, arg):
            src = Source(getattr(args, arg))
            sources[name] = src.commit()
            cases += read(src)
            if arg == "seclists" and args.shapes:
                cases += shaped_cases(src)
    if args.sqlmap_log:
        cases += sqlmap_cases(args.sqlmap_log)
    if args.commix_log:
        cases += commix_cases(args.commix_log)
    if args.wapiti_log:
        cases += wapiti_cases(args.wapiti_log)
    cases += benign_cases()
    if args.prose:
        cases += prose_cases(args.prose)
    if args.passwords:
        cases += password_cases()
    rows = evaluate(iter(cases))
    if args.json:
        print(json.dumps({"sources": sources, "rows": rows}, indent=1))
        return 0
    before: dict[str, dict] = {}
    if args.against:
        sqlmap_log = ["--sqlmap-log", str(args.sqlmap_log)] if args.sqlmap_log else []
        sqlmap_log += ["--commix-log", str(args.commix_log)] if args.commix_log else []
        sqlmap_log += ["--wapiti-log", str(args.wapiti_log)] if args.wapiti_log else []
        sqlmap_log += [f"--prose={p}" for p in args.prose]
        sqlmap_log += ["--passwords"] if args.passwords else []
        plain = [a for a in readers if getattr(args, a)]
        shapes = ["--shapes"] if args.shapes else []
        before = reference_rows(
            args.against, [*(f"--{a}={getattr(args, a)}" for a in plain), *sqlmap_log, *shapes]
        )
    for name, commit in sources.items():
        print(f"source {name}: {commit}")
    if RESERVED_LEFT_OUT:
        print(
            f"left out: {len(RESERVED_LEFT_OUT)} CRS tests taken from a reserved corpus ({', '.join(RESERVED_LEFT_OUT)})"
        )
    ref_column = f"{args.against[:12]:>18} " if args.against else ""
    print(f"{'corpus / class':48} {ref_column}{'detected':>18} {'false positives':>18}")
    for row, r in sorted(rows.items()):
        share = _share(r)
        old = f"{_share(before[row]) if row in before else '-':>18} " if args.against else ""
        print(f"{row:48} {old}{'' if 'benign' in row else share:>18} {share if 'benign' in row else '':>18}")
        for miss in r["misses"][: args.misses]:
            print(f"    {'FP' if 'benign' in row else 'missed'}: {miss[:150]!r}")
    return 0


def _share(r: dict) -> str:
    return f"{r['hit']}/{r['total']} = {r['hit'] / r['total']:6.1%}"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
