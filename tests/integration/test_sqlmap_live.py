"""Real sqlmap in a lab client against a deliberately injectable app (`lab.vulnapp`: SQLite, a numeric
and a quoted parameter, in the query string or in a multipart or JSON body) in a lab server, through the
real enforcer. In Monitor sqlmap finds both
parameters injectable (so the app and the run can find them) and the enforcer reports sql_injection;
in Protect sqlmap finds nothing, the enforcer reports sql_injection and resets, and a benign request
from the same client is still answered. Also an injection in a custom header (curl), reset in Protect.

sqlmap (PyPI, GPL-2.0) is run as a program, never imported."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.enforcer import LabEnforcer
from lab.http import http_status
from lab.topology import Lab
from tests.integration.conftest import vulnapps

pytestmark = pytest.mark.netns

PORT = 8000
POLICY = f"""
version: 1
default_mode: monitor
groups:
  - {{name: clients, mode: monitor, members: [198.18.1.0/24, "fd00:198:18:1::/64"]}}
  - {{name: shop, mode: protect, members: [198.18.2.11/32, "fd00:198:18:2::b/128"]}}
  - {{name: shopdev, mode: monitor, members: [198.18.2.12/32, "fd00:198:18:2::c/128"]}}
rules:
  - {{id: 70, from: clients, to: shop, ports: [tcp/{PORT}], applications: [HTTP], action: allow}}
  - {{id: 71, from: clients, to: shopdev, ports: [tcp/{PORT}], applications: [HTTP], action: allow}}
"""
MULTIPART = '--lab7MA4YWxkTrZu0gW\r\nContent-Disposition: form-data; name="q"\r\n\r\nwidget\r\n--lab7MA4YWxkTrZu0gW--\r\n'
# (target, sqlmap's extra arguments): numeric and quoted context in the query string, then the quoted
# parameter in a multipart form body and in JSON sent as text/plain (the app parses JSON whatever the type)
TARGETS = (
    ("/item?id=1", ()),
    ("/search?q=widget", ()),
    (
        "/search",
        ("--data", MULTIPART, "-H", "Content-Type: multipart/form-data; boundary=lab7MA4YWxkTrZu0gW"),
    ),
    ("/search", ("--data", '{"q": "widget"}', "-H", "Content-Type: text/plain;charset=UTF-8")),
)
TARGET_IDS = ("query-numeric", "query-quoted", "multipart", "json-as-text")
SQLMAP_TIMEOUT_S = 60  # one run; the bounded flags below keep it to a few seconds here
# A persistent attacker: past the heuristic probe (which would end the run at its first reset) and past
# sqlmap's "continuous problem with connection" question, so every payload of each technique is sent.
SQLMAP_FLAGS = ("--batch", "--flush-session", "--technique=BEUST", "--level=1", "--risk=1", "--timeout=5",
                "--retries=1", "--time-sec=1", "--disable-coloring", "--skip-heuristics",
                "--answers=continuous problem with connection=Y")  # fmt: skip
FOUND = "sqlmap identified the following injection point"
LAST_TECHNIQUE = "testing 'Generic UNION query"  # the U of BEUST, tested last
NOT_FOUND = ("all tested parameters do not appear to be injectable", "no injection")


@pytest.fixture(scope="module")
def apps(lab: Lab) -> Iterator[None]:
    """`lab.vulnapp` on s1 (Protect) and s2 (Monitor)."""
    with vulnapps(lab, ("s1", "s2"), PORT):
        yield


@pytest.fixture
def enforcer(lab: Lab, apps: None, tmp_path: Path) -> Iterator[LabEnforcer]:
    policy = tmp_path / "shop.yaml"
    policy.write_text(POLICY)
    with LabEnforcer(lab, policy=policy) as e:
        yield e


def sqlmap(lab: Lab, addr: str, target: tuple[str, tuple[str, ...]], out: Path) -> str:
    """sqlmap's output for one target from c1 (bounded by its flags and `SQLMAP_TIMEOUT_S`)."""
    program = str(Path(sys.executable).with_name("sqlmap"))
    url, extra = target
    cmd = [program, "-u", f"http://{addr}:{PORT}{url}", *SQLMAP_FLAGS, *extra, "--output-dir", str(out)]
    done = lab.exec("c1", *cmd, check=False, timeout=SQLMAP_TIMEOUT_S)
    return done.stdout + done.stderr


def sqli_threats(e: LabEnforcer, addr: str, timeout: float = 8.0) -> list[dict[str, Any]]:
    """The enforcer's sql_injection events against `addr`, waited for (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [
            ev for ev in e.events()
            if ev["type"] == "threat" and ev.get("name") == "sql_injection"
            and (ev.get("flow") or {}).get("dst") == addr
        ]  # fmt: skip
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.3)


@pytest.mark.parametrize("target", TARGETS, ids=TARGET_IDS)
def test_sqlmap_finds_the_injection_in_monitor_and_the_enforcer_reports_it(
    lab: Lab, enforcer: LabEnforcer, tmp_path: Path, target: tuple[str, tuple[str, ...]]
) -> None:
    addr = lab.host("s2").ipv4
    output = sqlmap(lab, addr, target, tmp_path / "sqlmap")
    assert FOUND in output, output[-3000:]
    found = sqli_threats(enforcer, addr)
    assert found and all(ev["action"] == "alert" and ev["group"] == "shopdev" for ev in found), found


@pytest.mark.parametrize("target", TARGETS, ids=TARGET_IDS)
def test_sqlmap_finds_nothing_in_protect_and_benign_requests_are_served(
    lab: Lab, enforcer: LabEnforcer, tmp_path: Path, target: tuple[str, tuple[str, ...]]
) -> None:
    addr = lab.host("s1").ipv4
    assert http_status(lab, "c1", addr, PORT, target[0]) == "200"  # the app answers this client
    output = sqlmap(lab, addr, target, tmp_path / "sqlmap")
    assert FOUND not in output, output[-3000:]
    assert any(phrase in output for phrase in NOT_FOUND), output[-3000:]
    assert LAST_TECHNIQUE in output, output[-3000:]  # it went through every technique, it did not give up
    found = sqli_threats(enforcer, addr)
    assert found and all(ev["action"] == "reset" and ev["group"] == "shop" for ev in found), found
    assert http_status(lab, "c1", addr, PORT, "/search?q=gadget") == "200"  # no collateral damage


def curl_with_header(lab: Lab, addr: str, header: str) -> str:
    cmd = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "5", "-H", header]
    return lab.exec("c1", *cmd, f"http://{addr}:{PORT}/item?id=2", check=False, timeout=15).stdout.strip()


def test_an_injection_in_a_custom_header_is_reset_in_protect(lab: Lab, enforcer: LabEnforcer) -> None:
    addr = lab.host("s1").ipv4
    assert curl_with_header(lab, addr, "X-Api-Filter: name desc, id asc") == "200"
    assert curl_with_header(lab, addr, "X-Api-Filter: 1' OR '1'='1") == "000"  # reset before any answer
    found = sqli_threats(enforcer, addr)
    assert found and found[0]["action"] == "reset", found
    assert curl_with_header(lab, addr, "X-Request-Id: 7f1c2a9e-3b4d-4e5f-8a6b-1c2d3e4f5a6b") == "200"
