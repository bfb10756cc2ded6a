"""Replay decides as the live node did: a capture recorded on a client while the real enforcer ran in
Protect mode, replayed by `enforcer replay --policy` with the same policy and configuration, gives every
flow the verdict the live enforcer gave it, and the same policy and threat events.

The capture is taken on the client's side (c1's eth0): it holds every packet the client sent, allowed or
not, and what came back. For a blocked TCP connection that is the SYN (or the request) and the reset the
enforcer sent in the server's name; replay sees the same SYN or request, decides it, and leaves the reset
to the kernel's connection mark, as live. So the live verdict per flow is what the client got (served,
reset, silence), and it is checked against both the live events and the replay.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dpkt
import pytest

from lab.enforcer import LabEnforcer
from lab.http import http_servers, http_status
from lab.topology import Lab
from tests.integration.conftest import ping, tcp

pytestmark = pytest.mark.netns

HTTP_PORT = 8000
BENIGN_PORT, SQLI_PORT = 42001, 42002  # the curl clients' own ports: the two HTTP flows apart
POLICY = f"""
version: 1
default_mode: protect
groups:
  - {{name: clients, mode: protect, members: [198.18.1.0/24]}}
  - {{name: web, mode: protect, members: [198.18.2.11/32]}}
  - {{name: db, mode: protect, members: [198.18.2.12/32]}}
rules:
  - {{id: 70, from: clients, to: web, ports: [tcp/80, udp/53], action: allow}}
  - {{id: 71, from: clients, to: web, ports: [tcp/{HTTP_PORT}], applications: [HTTP], action: allow}}
  - {{id: 72, from: clients, to: db, ports: [tcp/5201], action: allow}}
  - {{id: 79, from: clients, to: db, ports: [tcp/22], action: deny}}
"""
SQLI = "q=1' or '1'='1"


def udp_dns(lab: Lab, client: str, addr: str, port: int, count: int, timeout: float) -> dict[str, object]:
    """DNS queries to the lab's UDP echo server (`lab.traffic udp --dns`)."""
    out = lab.exec(
        client, sys.executable, "-m", "lab.traffic", "udp", addr, str(port), "--count", str(count),
        "--timeout", str(timeout), "--dns", check=False, timeout=count * timeout + 10,
    )  # fmt: skip
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def http_server(lab: Lab) -> Iterator[str]:
    """A real HTTP server (python -m http.server) on s1; its address."""
    addr = lab.host("s1").ipv4
    with http_servers(lab, ("s1",), HTTP_PORT, bind=addr):
        yield addr


def curl(lab: Lab, addr: str, path: str, data: str, local_port: int) -> str:
    """The HTTP status c1 got ("000": no response, e.g. the connection was reset)."""
    return http_status(lab, "c1", addr, HTTP_PORT, path, data, local_port)


class Capture:
    """tcpdump on a lab host's eth0, writing a pcap (packet-buffered, so stopping loses nothing)."""

    def __init__(self, lab: Lab, host: str, path: Path) -> None:
        self.path = path
        self.proc = lab.popen(
            host, "tcpdump", "-i", "eth0", "-n", "-U", "--immediate-mode", "-s", "0", "-B", "8192", "-Z", "root",
            "-w", str(path),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline()  # "listening on eth0 ..." once it captures
        assert "listening" in line, line

    def stop(self, last_ports: tuple[int, ...]) -> int:
        """Stop once the file holds packets of the last flows (client ports `last_ports`: a loaded machine
        can leave them unread in tcpdump's buffer for a while, and stopping then loses them); the packets
        the kernel dropped before tcpdump read them."""
        deadline = time.monotonic() + 10
        while not set(last_ports) <= _client_ports(self.path) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.3)  # the answers and resets after them
        self.proc.terminate()
        _, err = self.proc.communicate(timeout=10)
        m = re.search(r"(\d+) packets? dropped by kernel", err)
        return int(m.group(1)) if m else 0


def _client_ports(pcap: Path) -> set[int]:
    """TCP source ports of the packets written so far (a file still being written may end mid-record)."""
    ports: set[int] = set()
    try:
        with pcap.open("rb") as f:
            for _ts, frame in dpkt.pcap.Reader(f):
                ip = dpkt.ethernet.Ethernet(frame).data
                if isinstance(ip, dpkt.ip.IP | dpkt.ip6.IP6) and isinstance(ip.data, dpkt.tcp.TCP):
                    ports.add(ip.data.sport)
    except (OSError, ValueError, dpkt.UnpackError):
        pass  # not yet written, or cut at the end: what was read so far
    return ports


def _violations(events: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
    return {
        (
            e["rule_id"],
            e["action"],
            e["flow"]["proto"],
            e["flow"]["src"],
            e["flow"]["dst"],
            e["flow"]["dport"],
        )
        for e in events
        if e.get("type") == "violation"
    }


def _threats(events: list[dict[str, Any]]) -> set[tuple[Any, ...]]:
    """Threats of the packet path (the runtime monitor's, about processes, have no flow and no packets)."""
    return {
        (e["name"], e["action"], e["flow"]["src"], e["flow"]["sport"], e["flow"]["dst"], e["flow"]["dport"])
        for e in events
        if e.get("type") == "threat" and e.get("flow")
    }


class LiveRun:
    """What one live run gave: the client's outcome per flow, the enforcer's events, the replay's output,
    and the packets the client-side capture lost."""

    def __init__(self, lab: Lab, policy: Path, pcap: Path) -> None:
        web, db = lab.host("s1").ipv4, lab.host("s2").ipv4
        self.live: dict[tuple[str, str, int], str] = {}  # (proto, server, port or client port) → outcome
        self.events: list[dict[str, Any]] = []
        self.replay: subprocess.CompletedProcess[str] | None = None
        with LabEnforcer(lab, policy=policy) as e:
            capture = Capture(lab, "c1", pcap)
            try:
                for server, port in ((web, 80), (web, 22), (db, 5201), (db, 22), (db, 8080)):
                    ok = tcp(lab, "c1", server, port, nbytes=4000, timeout=2)["ok"]
                    self.live[("tcp", server, port)] = "allowed" if ok else "blocked"
                for server in (web, db):
                    # DNS queries: every flow is inspected by default, and pattern bytes to port 53 of a
                    # Protect server are rightly a DNS overflow
                    got = udp_dns(lab, "c1", server, 53, count=2, timeout=0.5)["received"]
                    self.live[("udp", server, 53)] = "allowed" if got else "blocked"
                self.live[("icmp", web, 0)] = "allowed" if ping(lab, "c1", web) else "blocked"
                benign = curl(lab, web, "/search", "q=O'Brien pizza", BENIGN_PORT)
                attack = curl(lab, web, "/search", SQLI, SQLI_PORT)
                self.live[("tcp", web, BENIGN_PORT)] = "allowed" if benign == "404" else "blocked"
                self.live[("tcp", web, SQLI_PORT)] = "allowed" if attack == "404" else "blocked"
            finally:
                self.dropped = capture.stop(last_ports=(BENIGN_PORT, SQLI_PORT))
            if self.dropped:
                return
            deadline = time.monotonic() + 10  # events reach the events file on the processes' timers
            while not _threats(e.events()) or len(_violations(e.events())) < 5:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.3)
            self.events = e.events()
            self.replay = subprocess.run(
                [sys.executable, "-m", "node.cli", "replay", str(pcap), "--policy", str(policy),
                 "--config", str(e.config_path), "--json"],
                capture_output=True, text=True, timeout=120, check=False,
            )  # fmt: skip


def test_replay_of_a_client_capture_matches_the_live_verdicts_and_events(
    lab: Lab, http_server: str, tmp_path: Path
) -> None:
    web, db = lab.host("s1").ipv4, lab.host("s2").ipv4
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    pcap = tmp_path / "client.pcap"
    # A capture that lost packets (tcpdump too slow on a loaded machine) is not the traffic the enforcer
    # judged: the measurement is taken again, at most three times; the comparison is never relaxed.
    for _attempt in range(3):
        run = LiveRun(lab, policy, pcap)
        if not run.dropped:
            break
    assert not run.dropped and run.replay is not None, f"every capture lost packets ({run.dropped} last)"
    live, live_events, out = run.live, run.events, run.replay
    # What the policy says the live enforcer must have done (so a broken lab cannot make both agree).
    assert live == {
        ("tcp", web, 80): "allowed", ("tcp", web, 22): "blocked", ("tcp", db, 5201): "allowed",
        ("tcp", db, 22): "blocked", ("tcp", db, 8080): "blocked", ("udp", web, 53): "allowed",
        ("udp", db, 53): "blocked", ("icmp", web, 0): "blocked", ("tcp", web, BENIGN_PORT): "allowed",
        ("tcp", web, SQLI_PORT): "blocked",
    }, live  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    flows = [o for o in lines if o["kind"] == "flow"]
    replayed: dict[tuple[str, str, int], set[str]] = {}
    for flow in flows:
        server, port = flow["server"].rsplit(":", 1)
        client_port = int(flow["client"].rsplit(":", 1)[1])
        key = (flow["proto"], server, client_port if client_port in (BENIGN_PORT, SQLI_PORT) else int(port))
        if flow["proto"] == "icmp":
            key = ("icmp", server, 0)
        replayed.setdefault(key, set()).add(flow["verdict"])
    assert {k: {v} for k, v in live.items()} == {k: v for k, v in replayed.items() if k in live}
    assert set(replayed) == set(live), sorted(set(replayed) ^ set(live))
    # The same events: the policy's reports and the SQL injection the worker cut.
    replay_events = [o for o in lines if o["kind"] == "event"]
    assert _threats(replay_events) == _threats(live_events), [e for e in live_events if e["type"] == "threat"]
    client = lab.host("c1").ipv4
    assert ("sql_injection", "reset", client, SQLI_PORT, web, HTTP_PORT) in _threats(replay_events)
    assert _violations(replay_events) == _violations(live_events)
    assert (79, "deny", 6, client, db, 22) in _violations(replay_events)
