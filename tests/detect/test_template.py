"""template_injection: what a template engine would evaluate (arithmetic probes, Python's dunder walk, a
call that runs code, an engine's own gadget, a statement block) in a request's values, path and
headers; a template's plain placeholders, shells' variables and prose are no finding. Every payload here
was written for these tests, in the shapes the engines' documentation and public scanners use."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.verdict import WorkerVerdict
from threats import catalogue as C
from workers.detect.template import check_template

from .test_body_parts import flow
from .test_engine import Lab
from .test_headers import CURL, request

FORM = "application/x-www-form-urlencoded"

ATTACKS = [
    ("{{7*7}}", "Jinja2/Twig probe"),
    ("${7*7}", "Freemarker/EL probe"),
    ("#{7*7}", "Ruby/Pug/EL probe"),
    ("<%= 7*7 %>", "ERB probe"),
    ("{{7*'7'}}", "the probe that tells Jinja2 from Twig"),
    ("${{7*7}}", "a probe for two syntaxes at once"),
    ("@(191*7)", "Razor probe"),
    ("*{7*7}", "Thymeleaf selection"),
    ("{{= 1337*1337 }}", "doT probe"),
    ("{{''.__class__.__mro__[1].__subclasses__()}}", "Jinja2's walk to every class"),
    ("{{ lipsum.__globals__['os'].popen('id').read() }}", "Jinja2's globals"),
    ("{{request|attr('application')|attr('\\x5f\\x5fglobals\\x5f\\x5f')}}", "the dunder spelt in escapes"),
    ("{{ config.items() }}", "Flask's configuration"),
    ("#{T(java.lang.Runtime).getRuntime().exec('id')}", "EL reaching Runtime"),
    ("${''.getClass().forName('java.lang.Runtime')}", "EL loading a class"),
    ("<% system('id') %>", "ERB running a command"),
    ("<%= `id` %>", "ERB's backticks"),
    ("#{File.open('/etc/passwd').read}", "Ruby interpolation reading a file"),
    ("#{root.process.mainModule.require('child_process').execSync('id')}", "Pug reaching Node"),
    ('{{range.constructor("return process")()}}', "a JavaScript sandbox escape"),
    ('<#assign ex="freemarker.template.utility.Execute"?new()>${ex("id")}', "Freemarker's Execute"),
    ('{{_self.env.registerUndefinedFilterCallback("exec")}}{{_self.env.getFilter("id")}}', "Twig 1"),
    ("{{['id']|filter('system')}}", "Twig's filter calling a PHP function"),
    ("{php}echo `id`;{/php}", "Smarty's php tag"),
    ("{system('id')}", "Smarty calling a function"),
    ('#set($x=$e.getClass().forName("java.lang.Runtime"))', "Velocity reaching Runtime"),
    ("{% import os %}{{ os.popen('id').read() }}", "Tornado importing os"),
    ("__${T(java.lang.Runtime).getRuntime().exec('id')}__::.x", "Thymeleaf preprocessing"),
    ("{% if True %}49{% endif %}", "a statement block"),
    ("<%= if true %>49<% end %>", "an ERB statement block"),
    ("<#if 7==7>49</#if>", "a Freemarker statement block"),
    ("{% debug %}", "Django's debug tag"),
]
BENIGN = [
    ("{{username}}", "a placeholder"),
    ("<%= title %>", "an ERB placeholder"),
    ("#{name}", "an EL placeholder"),
    ("${HOME}/bin", "a shell variable"),
    ("${PWD=`pwd`}", "a shell's own command substitution"),
    ("Price: {{ item.price }} ({{ item.currency }})", "a template's fields"),
    ('{{ url_for("static", filename="site.css") }}', "a template's helper"),
    ("It costs 7*7 = 49 euros", "arithmetic in prose"),
    ("{7*7}", "braces alone"),
    ('{"a": {"b": [1, 2]}, "c": "7*7"}', "JSON"),
    ("the __init__ method of a class", "a dunder in prose"),
    ("doubled braces (`{{` and `}}`)", "a changelog on braces"),
    ("see {{#each items}}{{this}}{{/each}}", "Handlebars' block"),
    ("a@(b) c", "an at sign before a parenthesis"),
]


def values(text: str) -> bool:
    hit = check_template((), b"", [text])
    assert hit is None or hit.threat is C.TEMPLATE_INJECTION
    return hit is not None


@pytest.mark.parametrize(("payload", "why"), ATTACKS)
def test_template_expressions_that_run_code_or_probe_are_template_injection(payload: str, why: str) -> None:
    assert values(payload), why


@pytest.mark.parametrize(("text", "why"), BENIGN)
def test_placeholders_shell_variables_and_prose_are_no_finding(text: str, why: str) -> None:
    assert not values(text), why


def test_percent_encoded_and_character_reference_forms_are_read() -> None:
    assert values("%7B%7B7*7%7D%7D")
    assert values("%3C%25%3D+7*7+%25%3E") and values("{%+if+1+%}49{%+endif+%}")  # a form's spaces
    assert check_template((), b'<a probe="&#x7B;&#x7B;7*7&#x7D;&#x7D;"/>', []) is not None
    assert check_template((b"/hello/{{7*7}}",), b"", []) is not None  # a probe in the path


@given(st.text(max_size=300))
def test_the_check_is_total(text: str) -> None:
    hit = check_template(
        (text.encode("utf-8", "replace"),), b"{{" + text.encode(), ["${" + text, "<%" + text]
    )
    assert hit is None or (hit.threat is C.TEMPLATE_INJECTION and len(hit.excerpt) <= C.MAX_FINDING_EXCERPT)


@pytest.mark.parametrize(
    ("method", "headers", "body", "path", "port"),
    [
        ("GET", CURL, b"", "/hello?name=%7B%7B7*7%7D%7D", 42940),
        ("POST", [*CURL, ("Content-Type", FORM)], b"bio=%7B%7Bconfig.items()%7D%7D", "/profile", 42941),
        ("POST", [*CURL, ("Content-Type", "application/json")], b'{"t": "<%= `id` %>"}', "/render", 42942),
        ("GET", [*CURL, ("User-Agent", "${7*7}")], b"", "/", 42943),
        ("GET", CURL, b"", "/hello/%7B%7B7*7%7D%7D", 42944),
    ],
)
def test_template_injection_is_reset_in_protect(
    method: str, headers: list[tuple[str, str]], body: bytes, path: str, port: int
) -> None:
    lab = Lab()
    verdicts = lab.send(flow(request(method, headers, body, path), port))
    assert verdicts[-1] is WorkerVerdict.RESET_FLOW
    [event] = lab.threats("template_injection")
    assert event["action"] == "reset" and event["group"] == "web"


def test_a_form_with_placeholders_stays_quiet() -> None:
    lab = Lab()
    body = b"subject=Hello+%7B%7Bfirst_name%7D%7D&body=Your+order+%23%7Border.id%7D+ships+soon"
    verdicts = lab.send(flow(request("POST", [*CURL, ("Content-Type", FORM)], body, "/mail"), 42945))
    assert WorkerVerdict.RESET_FLOW not in verdicts and lab.threats() == []
