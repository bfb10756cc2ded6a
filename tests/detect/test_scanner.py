"""scanner_detected: attack tools and scanners named by their default User-Agent or a header of their own;
browsers and ordinary HTTP clients are not. An alert by default: the scan's probes are the other classes'
findings, and a reset for one of them still comes."""

from __future__ import annotations

import pytest

from core.verdict import WorkerVerdict
from threats import catalogue as C
from workers.detect.scanner import check_scanner

from .test_body_parts import flow
from .test_engine import Lab
from .test_headers import CURL, request

TOOLS = [
    ("User-Agent", "Mozilla/5.00 (Nikto/2.5.0) (Evasions:None) (Test:000003)"),
    ("User-Agent", "sqlmap/1.10.10#stable (https://sqlmap.org)"),
    ("User-Agent", "Mozilla/5.0 (compatible; Nmap Scripting Engine; https://nmap.org/book/nse.html)"),
    ("User-Agent", "Nuclei - Open-source project (github.com/projectdiscovery/nuclei)"),
    ("User-Agent", "WPScan v3.8.25 (https://wpscan.com/wordpress-security-scanner)"),
    ("User-Agent", "gobuster/3.6"),
    ("User-Agent", "Fuzz Faster U Fool v2.1.0"),
    ("User-Agent", "Wfuzz/3.1.0"),
    ("User-Agent", "Mozilla/4.0 (Hydra)"),
    ("User-Agent", "masscan/1.3 (https://github.com/robertdavidgraham/masscan)"),
    ("User-Agent", "Mozilla/5.0 zgrab/0.x"),
    ("Acunetix-Product", "WVS/10.0 (Acunetix Web Vulnerability Scanner - Free Edition)"),
    ("X-Scanner", "Netsparker"),
]
CLIENTS = [
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
    "curl/8.5.0",
    "Wget/1.21.4",
    "python-requests/2.32.3",
    "Go-http-client/1.1",
    "ApacheBench/2.3",
    "kube-probe/1.31",
    "Prometheus/2.53.0",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Ory Hydra/2.2.0",  # an OAuth server's own requests, not THC-Hydra
]


@pytest.mark.parametrize(("name", "value"), TOOLS)
def test_an_attack_tool_is_named_by_its_user_agent_or_header(name: str, value: str) -> None:
    hit = check_scanner([(b"Host", b"shop"), (name.encode(), value.encode())])
    assert hit is not None and hit.threat is C.SCANNER_DETECTED


@pytest.mark.parametrize("agent", CLIENTS)
def test_browsers_and_ordinary_clients_are_no_finding(agent: str) -> None:
    assert check_scanner([(b"Host", b"shop"), (b"User-Agent", agent.encode())]) is None


def test_a_scanners_request_is_reported_and_served_and_its_injection_reset() -> None:
    lab = Lab()
    nikto = [("Host", "shop"), ("User-Agent", "Mozilla/5.00 (Nikto/2.5.0) (Evasions:None) (Test:Port Check)")]
    verdicts = lab.send(flow(request("GET", nikto, b"", "/"), 42990))
    assert WorkerVerdict.RESET_FLOW not in verdicts  # an alert: the request goes on
    [event] = lab.threats("scanner_detected")
    assert event["action"] == "alert" and "nikto" in event["message"]
    sqlmap = [*CURL[:1], ("User-Agent", "sqlmap/1.10.10#stable (https://sqlmap.org)")]
    verdicts = lab.send(
        flow(request("GET", sqlmap, b"", "/item?id=1%27%20UNION%20SELECT%20password%20FROM%20users--"), 42991)
    )
    assert verdicts[-1] is WorkerVerdict.RESET_FLOW  # the injection is still reset
    assert lab.threats("sql_injection")  # (the second scanner finding joins the first's aggregate)
