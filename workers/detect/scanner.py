"""A request from a known attack tool or vulnerability scanner, by the name its default User-Agent (or a
header of its own) gives: nikto, sqlmap, nmap's scripts, nuclei, wpscan, dirbuster and gobuster, ffuf and
wfuzz, hydra, masscan and zgrab, Acunetix, Netsparker, AppScan, WebInspect, Arachni, w3af, OpenVAS,
Nessus, commix, skipfish, WhatWeb, and their kin.

A tool run with a browser's User-Agent (`--random-agent`) is not found here: its probes are the other
classes' findings. What this class adds is the earliest word: the first request of a scan, a benign-
looking one included, names its tool. Clients that are no attack tools (curl, wget, python-requests,
Go's and Java's HTTP clients, ApacheBench, load testers, monitoring probes) are not named.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from threats.catalogue import SCANNER_DETECTED, Hit, excerpt_of

MAX_AGENT = 512  # bytes of a User-Agent read
# Attack tools and scanners as their default User-Agent names them (whole words, any case)
_TOOL_AGENT = re.compile(
    rb"\b(?:nikto|sqlmap|nmap scripting engine|nmap nse|nuclei|wpscan|joomscan|droopescan|cmsmap|dirbuster"
    rb"|gobuster|feroxbuster|dirsearch|fuzz faster u fool|ffuf|wfuzz|masscan|zgrab|zmeu|acunetix"
    rb"|netsparker|invicti|appscan|webinspect|arachni|w3af|openvas|nessus|commix|skipfish|whatweb|paros"
    rb"|sqlninja|havij|jaeles|dalfox|xsstrike|fimap|wapiti|bsqlbf|morfeus|jorgee|tplmap|sstimap|ysoserial"
    rb"|metasploit|msfconsole)\b",
    re.I,
)
# THC-Hydra's agent names it in parentheses (`Mozilla/4.0 (Hydra)`); Ory Hydra, an OAuth server, is no tool
_HYDRA = re.compile(rb"\(hydra\)", re.I)
# Headers some scanners add to every request (their names; present at all, a scan)
_TOOL_HEADERS = frozenset(
    (b"acunetix-product", b"acunetix-scanning-agreement", b"acunetix-user-agreement", b"x-wipp",
     b"x-scan-memo", b"x-request-memo", b"x-scanner", b"x-ratproxy-loop", b"netsparker")
)  # fmt: skip


def check_scanner(headers: Iterable[tuple[bytes, bytes]]) -> Hit | None:
    """An attack tool named by a request's User-Agent or one of its own headers, or None."""
    for name, value in headers:
        low = name.lower()
        if low == b"user-agent":
            found = _TOOL_AGENT.search(value[:MAX_AGENT]) or _HYDRA.search(value[:MAX_AGENT])
            if found is not None:
                tool = found.group().decode("latin-1").strip("()").lower()
                return Hit(SCANNER_DETECTED, f"an attack tool's User-Agent ({tool})", excerpt_of(value))
        elif low in _TOOL_HEADERS:
            return Hit(
                SCANNER_DETECTED, f"a scanner's own header ({low.decode('latin-1')})", excerpt_of(value)
            )
    return None
