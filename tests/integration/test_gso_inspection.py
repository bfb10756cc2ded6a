"""GRO/GSO on: a 64 KiB POST reaches the node as GSO super-packets, and the DPI of an inspected flow
sees every byte of it. Default configuration (every new flow inspected, whole packets copied): an SQL
injection after byte 10,000 of the body is blocked in Protect; the same body without it is served. With
the copy range cut to 3,800 bytes the truncated packets take the counted `truncated` failure action."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.enforcer import LabEnforcer
from lab.topology import Lab
from tests.integration.conftest import counter_total

pytestmark = pytest.mark.netns

PORT = 8010
# An L3/L4 rule (no application named): the flow is inspected because inspection is on by default.
POLICY = f"""
version: 1
default_mode: monitor
groups:
  - {{name: clients, mode: monitor, members: [198.18.1.0/24, "fd00:198:18:1::/64"]}}
  - {{name: web, mode: protect, members: [198.18.2.11/32, "fd00:198:18:2::b/128"]}}
rules:
  - {{id: 70, from: clients, to: web, ports: [tcp/{PORT}], action: allow}}
"""
# A server that reads the whole body, then answers 200.
SERVER = f"""
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *a): pass
s = http.server.ThreadingHTTPServer(("0.0.0.0", {PORT}), H)
print("ready", flush=True)
s.serve_forever()
"""
# One 64 KiB POST in a single send (the client's TSO/GSO makes super-packets of it); "ok", or "reset".
CLIENT = f"""
import socket, sys
inject = sys.argv[2] == "inject"
filler = b"a=" + b"x" * 10000 + b"&q=" + (b"1%27+or+%271%27%3D%271" if inject else b"blue+shoes") + b"&b="
body = filler + b"y" * (65536 - len(filler))
head = (b"POST /form HTTP/1.1\\r\\nHost: web\\r\\nContent-Type: application/x-www-form-urlencoded\\r\\n"
        b"Content-Length: " + str(len(body)).encode() + b"\\r\\n\\r\\n")
s = socket.create_connection((sys.argv[1], {PORT}), timeout=5)
try:
    s.sendall(head + body)
    got = s.recv(4096)
    print("ok" if got.startswith(b"HTTP/1.1 200") else "reset")
except OSError:
    print("reset")
"""


def _offloads(lab: Lab, on: bool) -> None:
    """GRO/GSO/TSO on (or back off) on the lab's veths only: the pods' eth0 and their peers in the node."""
    state = "on" if on else "off"
    for name in ("c1", "s1"):
        lab.exec(name, "ethtool", "-K", "eth0", "gso", state, "tso", state, "gro", state, check=False)
        peer = f"v{lab.prefix}{name}"[:15]
        lab.node_exec("ethtool", "-K", peer, "gso", state, "tso", state, "gro", state, check=False)


@pytest.fixture(scope="module")
def gso_lab(lab: Lab) -> Iterator[Lab]:
    _offloads(lab, True)
    server = lab.popen("s1", sys.executable, "-c", SERVER, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        yield lab
    finally:
        server.terminate()
        server.wait(timeout=5)
        _offloads(lab, False)


def _post(lab: Lab, what: str) -> str:
    addr = lab.host("s1").ipv4
    return lab.exec("c1", sys.executable, "-c", CLIENT, addr, what, check=False, timeout=30).stdout.strip()


def _policy(tmp: Path) -> Path:
    path = tmp / "policy.yaml"
    path.write_text(POLICY)
    return path


def _threats(e: LabEnforcer, name: str, timeout: float = 8.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        found = [ev for ev in e.events() if ev["type"] == "threat" and ev.get("name") == name]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.3)


def test_an_injection_after_byte_10000_of_a_64k_post_is_blocked_with_gso_on(gso_lab: Lab) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        # Detectors see a body up to max_event_bytes: raised so the whole body is one event.
        overrides = {"dpi": {"max_event_bytes": 70000}}
        with LabEnforcer(gso_lab, overrides, policy=_policy(Path(tmp))) as e:
            assert _post(gso_lab, "benign") == "ok"
            assert _post(gso_lab, "inject") == "reset"
            threats = _threats(e, "sql_injection")
            assert threats and threats[0]["action"] in ("reset", "block"), e.events()
            # nothing was cut: the super-packets were copied whole
            assert counter_total(e, "reader", "reader.truncated", timeout=1.0) == 0
            assert counter_total(e, "worker", "dpi.stream.gap", timeout=1.0) == 0


def test_a_copy_range_shorter_than_the_super_packets_is_counted_and_takes_the_truncated_action(
    gso_lab: Lab,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        overrides = {"queues": {"copy_range": 3800}, "failure": {"truncated": "pass"}}
        with LabEnforcer(gso_lab, overrides, policy=_policy(Path(tmp))) as e:
            assert _post(gso_lab, "benign") == "ok"  # passed: cut packets never reach a worker
            assert counter_total(e, "reader", "reader.truncated") > 0
            assert counter_total(e, "reader", "verdict.pass") > 0
