"""Application attacks from real clients (curl, dig) through the real enforcer, against a real HTTP
server and a DNS-over-TCP listener in the lab: Protect cuts the attack and reports it, the same request
without the attack is served, Monitor only reports."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from lab.enforcer import LabEnforcer
from lab.http import http_servers, http_status
from lab.topology import Lab
from tests.integration.conftest import serving

pytestmark = pytest.mark.netns

HTTP_PORT, DNS_PORT = 8000, 5353
POLICY = f"""
version: 1
default_mode: monitor
groups:
  - {{name: clients, mode: monitor, members: [198.18.1.0/24, "fd00:198:18:1::/64"]}}
  - {{name: web, mode: protect, members: [198.18.2.11/32, "fd00:198:18:2::b/128"]}}
  - {{name: api, mode: monitor, members: [198.18.2.12/32, "fd00:198:18:2::c/128"]}}
rules:
  - {{id: 50, from: clients, to: web, ports: [tcp/{HTTP_PORT}], applications: [HTTP], action: allow}}
  - {{id: 51, from: clients, to: web, ports: [tcp/{DNS_PORT}], applications: [DNS], action: allow}}
  - {{id: 60, from: clients, to: api, ports: [tcp/{HTTP_PORT}], applications: [HTTP], action: allow}}
  - {{id: 61, from: clients, to: api, ports: [tcp/{DNS_PORT}], applications: [DNS], action: allow}}
"""
SQLI = "q=1' or '1'='1"
XSS = "bio=<script>alert(document.cookie)</script>"


@pytest.fixture(scope="module")
def servers(lab: Lab) -> Iterator[None]:
    """A real HTTP server (python -m http.server) and a TCP listener for DNS on s1 and s2."""
    dns = (sys.executable, "-m", "lab.traffic", "serve", "--seconds", "300", "--tcp", str(DNS_PORT))
    with serving(lab, ("s1", *dns), ("s2", *dns)), http_servers(lab, ("s1", "s2"), HTTP_PORT):
        yield


def curl(lab: Lab, addr: str, path: str, data: str = "") -> str:
    """The HTTP status c1 got ("000": no response, e.g. the connection was reset)."""
    return http_status(lab, "c1", addr, HTTP_PORT, path, data)


def dig_axfr(lab: Lab, addr: str) -> str:
    cmd = ["dig", f"@{addr}", "-p", str(DNS_PORT), "+tcp", "+time=2", "+tries=1", "example.test", "AXFR"]
    return lab.exec("c1", *cmd, check=False, timeout=15).stdout


def threats(e: LabEnforcer, timeout: float = 8.0, **match: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        found = [
            ev for ev in e.events()
            if ev["type"] == "threat" and all(ev.get(k) == v or (ev.get("flow") or {}).get(k) == v
                                              for k, v in match.items())
        ]  # fmt: skip
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.3)


def test_curl_injection_and_xss_are_reset_in_protect_and_benign_requests_served(
    lab: Lab, servers: None, tmp_path
) -> None:
    web = lab.host("s1").ipv4
    policy = tmp_path / "attacks.yaml"
    policy.write_text(POLICY)
    with LabEnforcer(lab, policy=policy) as e:
        assert curl(lab, web, "/search", "q=O'Brien pizza") == "404"  # served (http.server: no such path)
        assert curl(lab, web, "/search", SQLI) == "000"  # reset before any answer
        assert curl(lab, web, "/profile", XSS) == "000"
        assert curl(lab, web, "/search", "q=select the best union rep") == "404"
        sqli = threats(e, name="sql_injection", dst=web)
        xss = threats(e, name="xss", dst=web)
        assert sqli and sqli[0]["action"] == "reset" and sqli[0]["group"] == "web", sqli
        assert xss and xss[0]["action"] == "reset", xss


def test_the_same_attacks_are_reported_and_pass_in_monitor(lab: Lab, servers: None, tmp_path) -> None:
    api = lab.host("s2").ipv4
    policy = tmp_path / "attacks.yaml"
    policy.write_text(POLICY)
    with LabEnforcer(lab, policy=policy) as e:
        assert curl(lab, api, "/search", SQLI) == "404"
        found = threats(e, name="sql_injection", dst=api)
        assert found and found[0]["action"] == "alert" and found[0]["group"] == "api", found


@pytest.mark.parametrize(("server", "action"), [("s1", "reset"), ("s2", "alert")])
def test_dig_zone_transfer_is_cut_in_protect_and_reported_in_monitor(
    lab: Lab, servers: None, tmp_path, server: str, action: str
) -> None:
    addr = lab.host(server).ipv4
    policy = tmp_path / "attacks.yaml"
    policy.write_text(POLICY)
    with LabEnforcer(lab, policy=policy) as e:
        dig_axfr(lab, addr)
        found = threats(e, name="dns_zone_transfer", dst=addr)
        assert found and found[0]["action"] == action, [ev.get("name") for ev in e.events()]
