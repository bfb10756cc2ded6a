"""Benign load never trips the flood or session-flood checks in Protect: one client pod runs real load
tools (wrk at 16 kept-alive connections, ApacheBench at concurrency 16, dnsperf at 300 queries/s)
before, during and after its own real attacks (curl SQL injections, an hping3 SYN burst, an nmap scan)
through the real enforcer with the default configuration (`workers.inspect = "new"`, default threat
settings). Every benign request must be answered, and the only threat events are the attacks'."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.attacks import hping3_burst, nmap_syn_scan
from lab.benign import DnsperfResult, WrkResult, ab, dnsperf, dst_of, threats, wrk
from lab.enforcer import LabEnforcer
from lab.http import http_status
from lab.topology import Lab
from tests.integration.conftest import serving, settled_counters

pytestmark = pytest.mark.netns

HTTP_PORT, DNS_PORT = 8000, 5353  # port 53 of every server already carries the lab's UDP echo (conftest)
AB_REQUESTS, CONCURRENCY, QPS, SECONDS = 2000, 16, 300, 5
POLICY = f"""
version: 1
default_mode: monitor
groups:
  - {{name: clients, mode: monitor, members: [198.18.1.0/24, "fd00:198:18:1::/64"]}}
  - {{name: web, mode: protect, members: [198.18.2.11/32, "fd00:198:18:2::b/128"]}}
  - {{name: api, mode: monitor, members: [198.18.2.12/32, "fd00:198:18:2::c/128"]}}
rules:
  - {{id: 50, from: clients, to: web, ports: [tcp/{HTTP_PORT}], applications: [HTTP], action: allow}}
  - {{id: 51, from: clients, to: web, ports: [udp/{DNS_PORT}], action: allow}}
  - {{id: 60, from: clients, to: api, ports: any, action: allow}}
"""
SQLI = "q=1' or '1'='1"  # as the inline attack tests send it
# Ordinary names a pod looks up, and long legitimate cloud names (written for this test) with their type.
QUERIES = (
    ("web.lab", "A"),
    ("api.lab", "AAAA"),
    ("www.example.com", "A"),
    ("mail.example.org", "MX"),
    ("kubernetes.default.svc.cluster.local", "A"),
    ("internal-k8s-default-myingres-2f8b1d3c6a-1234567890.us-west-2.elb.amazonaws.com", "A"),
    ("d111111abcdef8.cloudfront.net", "A"),
    ("e12345.dscx.akamaiedge.net", "AAAA"),
    ("myendpoint-a1b2c3d4e5f6g7h8.z01.azurefd.net", "A"),
    ("selector1._domainkey.example.com", "TXT"),
    ("4yxkd6gqmb2cw7ixjmhvejs3wvfxemtd._domainkey.example.com", "TXT"),
    ("_acme-challenge.checkout.shop.example.com", "TXT"),
)
# What the attacks earn (the injections, the scan's probes, the burst toward the monitored group, the
# tools as processes); any other finding is about benign load.
EARNED = {"sql_injection", "port_scan", "runtime.suspicious_process"}
BURST = {"syn_flood", "bad_packet"}


@pytest.fixture(scope="module")
def servers(lab: Lab) -> Iterator[None]:
    """On s1: an HTTP/1.1 keep-alive server (lab.load) and a DNS responder (lab.dns), both real."""
    http = ("s1", sys.executable, "-m", "lab.load", "http-serve", "--port", str(HTTP_PORT), "--seconds", "300")  # fmt: skip
    dns = ("s1", sys.executable, "-m", "lab.dns", "--port", str(DNS_PORT), "--seconds", "300")
    with serving(lab, http, dns):
        yield


def wrk_problem(tag: str, r: WrkResult) -> list[str]:
    if r.clean:
        return []
    return [f"{tag}: wrk {r.requests} requests, {r.socket_errors} socket errors, {r.non_2xx_3xx} non-2xx/3xx: "
            f"{r.output[-400:]}"]  # fmt: skip


def dnsperf_problem(tag: str, r: DnsperfResult) -> list[str]:
    if r.clean:
        return []
    return [f"{tag}: dnsperf {r.sent} sent, {r.completed} completed, {r.lost} lost, {r.noerror} NOERROR: "
            f"{r.output[-400:]}"]  # fmt: skip


def load_window(lab: Lab, web: str, queries: Path, tag: str, attacks: list[Any] | None = None) -> list[str]:
    """wrk and dnsperf side by side for SECONDS (the attacks, when given, in the same window); what went
    wrong, as text."""
    results: dict[str, Any] = {}
    tools = [
        threading.Thread(target=lambda: results.__setitem__("wrk", wrk(lab, "c1", web, HTTP_PORT, 2, CONCURRENCY, SECONDS))),
        threading.Thread(target=lambda: results.__setitem__("dns", dnsperf(lab, "c1", web, DNS_PORT, queries, QPS, SECONDS))),
    ]  # fmt: skip
    for t in tools:
        t.start()
    for attack in attacks or []:
        attack()
    for t in tools:
        t.join(timeout=SECONDS + 60)
    if set(results) != {"wrk", "dns"}:
        return [f"{tag}: a load tool did not finish: {sorted(results)}"]
    return wrk_problem(tag, results["wrk"]) + dnsperf_problem(tag, results["dns"])


def ab_problem(lab: Lab, web: str, tag: str) -> list[str]:
    complete, failed = ab(lab, "c1", web, HTTP_PORT, requests=AB_REQUESTS, concurrency=CONCURRENCY)
    if complete == AB_REQUESTS and not failed:
        return []
    return [f"{tag}: ab {complete} complete, {failed} failed or non-2xx"]


def test_benign_load_is_answered_around_attacks_without_flood_findings(
    lab: Lab, servers: None, tmp_path: Path
) -> None:
    web, api, client = lab.host("s1").ipv4, lab.host("s2").ipv4, lab.host("c1").ipv4
    policy = tmp_path / "benign-load.yaml"
    policy.write_text(POLICY)
    queries = tmp_path / "queries.txt"
    queries.write_text("".join(f"{name} {qtype}\n" for name, qtype in QUERIES))
    wrong: list[str] = []
    with LabEnforcer(lab, {"workers": {"inspect": "new"}}, policy=policy) as e:
        wrong += load_window(lab, web, queries, "before")
        wrong += ab_problem(lab, web, "before")

        # Attacks from the same pod while wrk and dnsperf run: injections at the protected server (reset),
        # a SYN burst and a scan at the monitored one (alerts).
        injections: list[str] = []
        attacks = [
            lambda: injections.append(http_status(lab, "c1", web, HTTP_PORT, "/search", SQLI)),
            lambda: hping3_burst(lab, "c1", api),
            lambda: nmap_syn_scan(lab, "c1", api, ports="1-300", seconds=SECONDS),
            lambda: injections.append(http_status(lab, "c1", web, HTTP_PORT, "/search", SQLI)),
        ]
        wrong += load_window(lab, web, queries, "during", attacks)

        # ApacheBench right after one more injection reset, then both load tools again.
        injections.append(http_status(lab, "c1", web, HTTP_PORT, "/search", SQLI))
        wrong += ab_problem(lab, web, "after")
        wrong += load_window(lab, web, queries, "after")
        settled_counters(e, "worker")  # what the workers saw has reached the events, not a fixed sleep
        found = threats(e)
        blocked = f"-s {client}/32" in e.rules()
    assert not wrong, wrong
    assert injections == ["000"] * 3, injections  # each injection reset before any answer
    names = {(ev["name"], dst_of(ev), ev["action"]) for ev in found}
    assert ("sql_injection", web, "reset") in names, names
    assert any(n == "port_scan" and dst == api and act == "alert" for n, dst, act in names), names
    benign = [ev for ev in found if not (ev["name"] in EARNED or (ev["name"] in BURST and dst_of(ev) == api))]
    assert not benign, [(ev["name"], ev.get("action"), ev.get("flow"), ev.get("detail")) for ev in benign]
    assert all((ev.get("flow") or {}).get("src") == client for ev in found if ev["name"] == "sql_injection")
    assert not blocked, "the client pod's source was blocked"
