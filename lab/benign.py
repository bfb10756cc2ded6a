"""Real benign load tools run from a lab client (ApacheBench, wrk, dnsperf), each bounded in time, and
what they report, read from their own summaries. For tests that check Protect answers ordinary load."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.enforcer import LabEnforcer
from lab.topology import Lab

TOOL_GRACE_S = 30.0  # beyond a tool's own run time: process start and teardown on a loaded machine


def _url(addr: str, port: int, path: str = "/") -> str:
    host = f"[{addr}]" if ":" in addr else addr
    return f"http://{host}:{port}{path}"


def _count(pattern: str, text: str) -> int:
    found = re.search(pattern, text)
    return int(found.group(1)) if found else 0


def ab(
    lab: Lab, client: str, addr: str, port: int, requests: int = 1500, concurrency: int = 10
) -> tuple[int, int]:
    """ApacheBench (a new connection per request): (complete requests, failed or non-2xx)."""
    cmd = ["ab", "-q", "-n", str(requests), "-c", str(concurrency), "-s", "10", "-r", _url(addr, port)]
    out = lab.exec(client, *cmd, check=False, timeout=240).stdout
    complete = re.search(r"Complete requests:\s+(\d+)", out)
    failed = re.search(r"Failed requests:\s+(\d+)", out)
    assert complete and failed, out[-800:]
    return int(complete.group(1)), int(failed.group(1)) + _count(r"Non-2xx responses:\s+(\d+)", out)


@dataclass(frozen=True)
class WrkResult:
    requests: int
    socket_errors: int  # connect + read + write + timeout
    non_2xx_3xx: int
    output: str

    @property
    def clean(self) -> bool:
        return self.requests > 0 and not self.socket_errors and not self.non_2xx_3xx


def parse_wrk(out: str) -> WrkResult:
    """wrk prints its socket errors and non-2xx/3xx count only when there are some."""
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return WrkResult(
        requests=_count(r"(\d+) requests in ", out),
        socket_errors=sum(int(n) for n in errors.groups()) if errors else 0,
        non_2xx_3xx=_count(r"Non-2xx or 3xx responses:\s+(\d+)", out),
        output=out,
    )


def wrk(lab: Lab, client: str, addr: str, port: int, threads: int = 2, connections: int = 16,
        seconds: int = 5) -> WrkResult:  # fmt: skip
    """wrk: `connections` kept-alive HTTP/1.1 connections for `seconds`."""
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s", _url(addr, port)]
    result = lab.exec(client, *cmd, check=False, timeout=seconds + TOOL_GRACE_S)
    return parse_wrk(result.stdout + result.stderr)


@dataclass(frozen=True)
class DnsperfResult:
    sent: int
    completed: int
    lost: int
    noerror: int
    output: str

    @property
    def clean(self) -> bool:
        return self.sent > 0 and self.completed == self.sent == self.noerror and not self.lost


def parse_dnsperf(out: str) -> DnsperfResult:
    return DnsperfResult(
        sent=_count(r"Queries sent:\s+(\d+)", out),
        completed=_count(r"Queries completed:\s+(\d+)", out),
        lost=_count(r"Queries lost:\s+(\d+)", out),
        noerror=_count(r"Response codes:.*?NOERROR (\d+)", out),
        output=out,
    )


def dnsperf(lab: Lab, client: str, server: str, port: int, queries: Path, qps: int = 300, seconds: int = 5,
            timeout_s: int = 3) -> DnsperfResult:  # fmt: skip
    """dnsperf at `qps` queries a second for `seconds` (the names of `queries` in turn); a query without
    an answer `timeout_s` after it was sent counts as lost."""
    cmd = ["dnsperf", "-s", server, "-p", str(port), "-d", str(queries), "-Q", str(qps), "-l", str(seconds),
           "-t", str(timeout_s)]  # fmt: skip
    result = lab.exec(client, *cmd, check=False, timeout=seconds + timeout_s + TOOL_GRACE_S)
    return parse_dnsperf(result.stdout + result.stderr)


def threats(e: LabEnforcer) -> list[dict[str, Any]]:
    """The threat events the lab enforcer has reported so far."""
    return [ev for ev in e.events() if ev["type"] == "threat"]


def dst_of(event: dict[str, Any]) -> str:
    """An event's destination address ("" for findings about a source rather than a flow)."""
    return str((event.get("flow") or {}).get("dst", ""))


__all__ = [
    "DnsperfResult",
    "WrkResult",
    "ab",
    "dnsperf",
    "dst_of",
    "parse_dnsperf",
    "parse_wrk",
    "threats",
    "wrk",
]
