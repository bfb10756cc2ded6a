"""path_traversal: a climb in a request's path, a far climb or a system file in a query value, through
every encoding an application decodes; relative links, dotted names and prose are no traversal. Every
target here was written for these tests."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.verdict import WorkerVerdict
from threats import catalogue as C
from threats.settings import DEFAULT_SETTINGS, compile_threat_settings
from workers.detect.traversal import check_target

from .test_body_parts import flow
from .test_engine import Lab
from .test_headers import CURL, request

TRAVERSALS = [
    ("/static/../../etc/passwd", "climbs in the path, as a tool sends it (`--path-as-is`)"),
    ("/files/..%2f..%2f..%2fetc/hosts", "encoded slashes"),
    ("/%2e%2e/%2e%2e/etc/group", "encoded dots"),
    ("/a/%252e%252e/%252e%252e/etc/issue", "double encoding"),
    ("/a/%c0%ae%c0%ae/%c0%ae%c0%ae/etc/hosts", "overlong UTF-8 dots"),
    ("/a/..%5c..%5cwindows/win.ini", "backslashes"),
    ("/app/..;/manager/html", "Tomcat's path parameter after a climb"),
    ("/download?file=../../../etc/passwd", "a far climb in a query value"),
    ("/view?f=....//....//....//etc/shadow", "dot runs a naive filter strips to `../`"),
    ("/dl?name=..%5C..%5Cboot.ini", "a climb to a Windows system file"),
    ("/img?src=../WEB-INF/web.xml", "one level up to a deployment descriptor"),
    ("/p?page=/etc/passwd", "a system file's absolute path as the value"),
    ("/p?page=%2Fproc%2Fself%2Fenviron", "an encoded /proc path"),
    ("/p?doc=file:///etc/hosts", "a file URL"),
    ("/p?f=C:%5CWindows%5Cwin.ini", "a Windows drive path"),
    ("/p?a=1&b=..%2F..%2F..%2F..%2Fhome%2Fu%2F.ssh%2Fid_rsa", "the second value, to an SSH key"),
    ("/cgi?..%2F..%2F..%2F..%2Fetc%2Fgroup", "a query that is one value (no `=`), as CGI reads it"),
    ("/p?f=%2Fetc%2Fservices", "another file probes read"),
    ("/p?f=C:/Windows/System32/drivers/etc/networks", "a Windows one"),
    ("/p?f=file://C:%5CWindows%5Cwin.ini", "a file URL of a drive path"),
    ("/p?page=php://filter/convert.base64-encode/resource=index", "a PHP stream wrapper reading a file"),
    ("/p?page=php%3A%2F%2Finput", "an encoded one"),
    ("/p?cmd=expect://ls", "PHP's expect wrapper"),
    ("/p?page=zip://uploads/avatar.jpg%23shell.php", "an uploaded archive's script, through zip://"),
    ("/p?page=compress.zlib:///etc/passwd", "the compression wrapper"),
    ("/p?page=data://text/plain;base64,PD9waHAgc3lzdGVtKCRfR0VUWydjJ10pOz8%2B", "a data URL of PHP code"),
    ("/p?page=data:text/plain,%3C?php%20phpinfo();?%3E", "a data URL of PHP code in clear"),
    ("/p?page=index.php::$DATA", "a script's NTFS data stream (its source, on IIS)"),
    ("/p?page=index.asp%3A%3A%24data", "an encoded one"),
    ("/p?f=%uff0e%uff0e/%uff0e%uff0e/%uff0e%uff0e/etc/hosts", "full-width dots, as IIS folds them"),
    ("/p?f=..%ef%bc%8f..%ef%bc%8f..%ef%bc%8fwin.ini", "full-width slashes in UTF-8"),
    ("/p?f=..%u2215..%u2215..%u2215etc%u2215group", "division slashes"),
    ("/p?f=/./././etc/shadow", "same-directory segments before a system file"),
    ("/p?f=..%00/..%00/..%00/etc/passwd", "NULs inside the climbs"),
    ("/index.php%00.txt", "a NUL in the path: the script's source"),
    ("/p?f=%c0%2e%c0%2e/%c0%2e%c0%2e/%c0%2e%c0%2e/etc/passwd", "dots a lenient UTF-8 decoder reads"),
    ("/p?f=0x2e0x2e0x2f0x2e0x2e0x2f0x2e0x2e0x2fetc0x2fpasswd", "dots and slashes spelt as hex literals"),
    ("/p?f=..%uEFC8..%uEFC8..%uEFC8etc/passwd", "private-use slashes generators send"),
]

BENIGN = [
    "/img?src=../img/logo.png",
    "/css?f=../../css/site.css",
    "/r?next=/account/settings",
    "/docs/etc/passwd-file-format",  # a page about the file, no climb
    "/a.b..c/d..e/f",  # dots inside names
    "/search?q=wait...what",
    "/v?version=1.2..3",
    "/notes?text=see+/etc/passwd+for+users",  # prose naming the file, not a path value
    "/compare/main...feature",
    "/static/js/app.min.js?v=3",
    "/get/..",  # the parent directory itself, nothing below it
    "/",
    "/search?php",  # a query of one word
    "/p?url=https://php.net/manual/en/wrappers.php",  # a URL about the wrappers
    "/docs?q=what+is+php://filter",  # prose naming one
    "/p?f=/shop/etc/services",  # a path of the site
    "/p?note=a::b::c",
    "/p?f=./a/./b.txt",  # same-directory segments, no system file
    "/p?q=%E6%97%A5%E6%9C%AC%E8%AA%9E%EF%BC%8E",  # Japanese text ending in a full-width full stop
    "/p?mask=0x2f&color=0x2e2e2e",  # hex literals
    "/p?avatar=data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAAB",  # a data URL of an image
    "/p?q=unzip+archive.zip://+fails",  # prose
]


@pytest.mark.parametrize(("target", "why"), TRAVERSALS)
def test_a_traversal_is_found(target: str, why: str) -> None:
    hit = check_target(target.encode(), DEFAULT_SETTINGS)
    assert hit is not None and hit.threat is C.PATH_TRAVERSAL, why


@pytest.mark.parametrize("target", BENIGN)
def test_links_dotted_names_and_prose_are_no_traversal(target: str) -> None:
    assert check_target(target.encode(), DEFAULT_SETTINGS) is None


def test_the_query_climb_needed_is_a_setting_per_group() -> None:
    target = b"/css?f=../../css/site.css"
    assert check_target(target, DEFAULT_SETTINGS) is None
    strict = compile_threat_settings({"path_traversal": {"min_levels": 2}})
    hit = check_target(target, strict)
    assert hit is not None and "2 levels" in hit.detail


@given(st.binary(max_size=300))
def test_the_check_is_total(target: bytes) -> None:
    hit = check_target(target, DEFAULT_SETTINGS)
    assert hit is None or (hit.threat is C.PATH_TRAVERSAL and len(hit.excerpt) <= C.MAX_FINDING_EXCERPT)


def test_a_traversal_is_reset_in_protect_and_a_relative_link_served() -> None:
    lab = Lab()
    verdicts = lab.send(flow(request("GET", CURL, path="/download?file=../../../etc/passwd"), 42500))
    assert verdicts[-1] is WorkerVerdict.RESET_FLOW
    [event] = lab.threats("path_traversal")
    assert event["action"] == "reset" and event["group"] == "web"
    quiet = Lab()
    verdicts = quiet.send(flow(request("GET", CURL, path="/img?src=../img/logo.png"), 42501))
    assert WorkerVerdict.RESET_FLOW not in verdicts and quiet.threats() == []


FORM = ("Content-Type", "application/x-www-form-urlencoded")
JSON = ("Content-Type", "application/json")
BOUNDARY = "----formboundary7MA4YWxk"
UPLOAD = (
    f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="doc"; filename="../../../../etc/cron.d/x"\r\n'
    f"Content-Type: text/plain\r\n\r\nhello\r\n--{BOUNDARY}--\r\n"
).encode()


@pytest.mark.parametrize(
    ("headers", "body", "port"),
    [
        ([*CURL, FORM], b"arg=..%2F..%2F..%2Fetc%2Fpasswd&x=1", 42510),  # a form value
        ([*CURL, JSON], b'{"template": "..\\\\..\\\\..\\\\windows\\\\win.ini"}', 42511),  # a JSON string
        (
            [*CURL, ("Content-Type", f"multipart/form-data; boundary={BOUNDARY}")],
            UPLOAD,
            42512,
        ),  # a file name
        ([*CURL, ("Cookie", "lang=en; tpl=../../../../proc/self/environ")], b"", 42513),  # a cookie
        ([*CURL, ("X-Include", "/etc/shadow")], b"", 42514),  # a custom header
    ],
)
def test_a_traversal_in_a_body_cookie_or_header_is_reset(
    headers: list[tuple[str, str]], body: bytes, port: int
) -> None:
    lab = Lab()
    verdicts = lab.send(flow(request("POST" if body else "GET", headers, body), port))
    assert verdicts[-1] is WorkerVerdict.RESET_FLOW
    assert [e["name"] for e in lab.threats()] == ["path_traversal"]


def test_relative_links_in_a_form_and_a_referer_stay_quiet() -> None:
    lab = Lab()
    headers = [*CURL, FORM, ("Referer", "https://shop.example/a/b/../c?x=1")]
    body = b"back=..%2F..%2Fcart&img=..%2Fimg%2Flogo.png&note=see+%2Fetc%2Fpasswd+docs"
    verdicts = lab.send(flow(request("POST", headers, body), 42515))
    assert WorkerVerdict.RESET_FLOW not in verdicts and lab.threats() == []
