"""GRO/GSO on: a 64 KiB POST reaches the node as GSO super-packets, and the DPI of an inspected flow
sees every byte of it. Default configuration (every new flow inspected, whole packets copied, bodies
handed to the detectors in `max_event_bytes` parts): an SQL injection after byte 10,000 of the body, or
at ~30 KiB of a chunked one, is blocked in Protect; the same bodies without it are served whole. With
the copy range cut to 3,800 bytes the truncated packets take the counted `truncated` failure action."""

from __future__ import annotations

import hashlib
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.enforcer import LabEnforcer
from lab.topology import Lab
from tests.integration.conftest import counter_total, serving, threat_events

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
# A server that reads the whole body (by length or de-chunked), then answers 200 with its size and hash.
SERVER = f"""
import hashlib, http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_POST(self):
        if self.headers.get("Transfer-Encoding") == "chunked":
            body = b""
            while size := int(self.rfile.readline().split(b";")[0], 16):
                body += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
        else:
            body = self.rfile.read(int(self.headers["Content-Length"]))
        answer = f"{{len(body)}} {{hashlib.sha256(body).hexdigest()}}\\n".encode()
        self.send_response(200); self.send_header("Content-Length", str(len(answer))); self.end_headers()
        self.wfile.write(answer)
    def log_message(self, *a): pass
s = http.server.ThreadingHTTPServer(("0.0.0.0", {PORT}), H)
print("ready", flush=True)
s.serve_forever()
"""
# One 64 KiB form POST in a single send (the client's TSO/GSO makes super-packets of it), the value `q`
# after `at` bytes, framed by Content-Length or chunked (16 KiB chunks); prints "ok SIZE SHA256" of the
# body the server read, or "reset".
CLIENT = f"""
import socket, sys
value = b"1%27+or+%271%27%3D%271" if sys.argv[2] == "inject" else b"blue+shoes"
at, chunked = int(sys.argv[3]), sys.argv[4] == "chunked"
filler = b"a=" + b"x" * at + b"&q=" + value + b"&b="
body = filler + b"y" * (65536 - len(filler))
head = b"POST /form HTTP/1.1\\r\\nHost: web\\r\\nContent-Type: application/x-www-form-urlencoded\\r\\n"
if chunked:
    step = 16384
    framed = b"".join(b"%x\\r\\n%s\\r\\n" % (len(body[i : i + step]), body[i : i + step]) for i in range(0, len(body), step))
    request = head + b"Transfer-Encoding: chunked\\r\\n\\r\\n" + framed + b"0\\r\\n\\r\\n"
else:
    request = head + b"Content-Length: " + str(len(body)).encode() + b"\\r\\n\\r\\n" + body
s = socket.create_connection((sys.argv[1], {PORT}), timeout=5)
try:
    s.sendall(request)
    got = b""
    while not got.partition(b"\\r\\n\\r\\n")[2].endswith(b"\\n"):  # the answer: one line after the head
        more = s.recv(4096)
        if not more:
            break
        got += more
    print("ok " + got.split(b"\\r\\n\\r\\n", 1)[1].decode() if got.startswith(b"HTTP/1.1 200") else "reset")
except OSError:
    print("reset")
"""


def _body(at: int, value: bytes) -> bytes:
    """The body the client sends (to check that the server read all of it)."""
    filler = b"a=" + b"x" * at + b"&q=" + value + b"&b="
    return filler + b"y" * (65536 - len(filler))


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
    try:
        with serving(lab, ("s1", sys.executable, "-c", SERVER)):
            yield lab
    finally:
        _offloads(lab, False)


def _post(lab: Lab, what: str, at: int = 10000, framing: str = "length") -> str:
    addr = lab.host("s1").ipv4
    argv = (sys.executable, "-c", CLIENT, addr, what, str(at), framing)
    return lab.exec("c1", *argv, check=False, timeout=30).stdout.strip()


def _served_whole(answer: str, at: int) -> bool:
    body = _body(at, b"blue+shoes")
    return answer == f"ok {len(body)} {hashlib.sha256(body).hexdigest()}"


def _policy(tmp: Path) -> Path:
    path = tmp / "policy.yaml"
    path.write_text(POLICY)
    return path


def test_an_injection_after_byte_10000_of_a_64k_post_is_blocked_with_gso_on(gso_lab: Lab) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        # the default configuration: bodies reach the detectors in max_event_bytes (4096) parts
        with LabEnforcer(gso_lab, {}, policy=_policy(Path(tmp))) as e:
            answer = _post(gso_lab, "benign")
            assert _served_whole(answer, 10000), answer  # no false positive; every byte arrived
            assert _post(gso_lab, "inject") == "reset"
            threats = threat_events(e, "sql_injection")
            assert threats and threats[0]["action"] in ("reset", "block"), e.events()
            # the detectors saw the body beyond its first part
            assert counter_total(e, "worker", "dpi.http.body_parts") >= 65536 // 4096
            # nothing was cut: the super-packets were copied whole
            assert counter_total(e, "reader", "reader.truncated", timeout=1.0) == 0
            assert counter_total(e, "worker", "dpi.stream.gap", timeout=1.0) == 0


def test_an_injection_at_30k_of_a_chunked_64k_post_is_blocked_and_the_benign_one_served_whole(
    gso_lab: Lab,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        with LabEnforcer(gso_lab, {}, policy=_policy(Path(tmp))) as e:
            answer = _post(gso_lab, "benign", 30000, "chunked")
            assert _served_whole(answer, 30000), answer
            assert _post(gso_lab, "inject", 30000, "chunked") == "reset"
            threats = threat_events(e, "sql_injection")
            assert threats and threats[0]["action"] in ("reset", "block"), e.events()
            assert counter_total(e, "reader", "reader.truncated", timeout=1.0) == 0


def test_a_copy_range_shorter_than_the_super_packets_is_counted_and_takes_the_truncated_action(
    gso_lab: Lab,
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        overrides = {"queues": {"copy_range": 3800}, "failure": {"truncated": "pass"}}
        with LabEnforcer(gso_lab, overrides, policy=_policy(Path(tmp))) as e:
            answer = _post(gso_lab, "benign")  # passed: cut packets never reach a worker
            assert _served_whole(answer, 10000), answer
            assert counter_total(e, "reader", "reader.truncated") > 0
            assert counter_total(e, "reader", "verdict.pass") > 0
