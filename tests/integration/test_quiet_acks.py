"""Quiet ACKs, live: once an inspected connection's first bare ACK has been let through, the kernel passes
its later bare ACKs itself (`node/netfilter.py`), and nothing that carries a byte of payload slips past
the workers with them. Default configuration (every new flow inspected), IPv4 and IPv6:

- a 256 KiB answer on an inspected keep-alive connection: the client's ACKs pass in the kernel (the
  ACK chain's counters), the answer arrives whole;
- after that, a request dripped one byte per segment (each segment as small as an ACK plus one byte)
  carrying an SQL injection is reset in Protect; the same request without it is answered.
With `netfilter.quiet_acks = false` no ACK passes in the kernel (so the counters can tell). A stack
sets PSH on such segments, which the chain never passes; that a crafted segment with one byte and no PSH
is queued too is proven on the kernel with crafted packets (`tests/pipeline/test_netfilter.py`)."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.enforcer import LabEnforcer
from lab.topology import Lab
from tests.integration.conftest import counter_total, serving, threat_events

pytestmark = pytest.mark.netns

PORT = 8011
ANSWER_BYTES = 256 * 1024
POLICY = f"""
version: 1
default_mode: monitor
groups:
  - {{name: clients, mode: monitor, members: [198.18.1.0/24, "fd00:198:18:1::/64"]}}
  - {{name: web, mode: protect, members: [198.18.2.11/32, "fd00:198:18:2::b/128"]}}
rules:
  - {{id: 71, from: clients, to: web, ports: [tcp/{PORT}], action: allow}}
"""
# Keep-alive HTTP on both families: /big answers ANSWER_BYTES, anything else a short "ok".
SERVER = f"""
import http.server, socket
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = b"z" * {ANSWER_BYTES} if self.path == "/big" else b"ok"
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
class S(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()
s = S(("::", {PORT}), H)
print("ready", flush=True)
s.serve_forever()
"""
# One connection: GET /big (read whole), then GET /search?q=VALUE sent one byte per segment. Prints the
# size of the first answer and "ok" or "reset" for the second.
CLIENT = f"""
import socket, sys, time
value = "1%27%20OR%20%271%27%3D%271" if sys.argv[2] == "inject" else "blue%20shoes"
s = socket.create_connection((sys.argv[1], {PORT}), timeout=5)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
def answer():
    got = b""
    while b"\\r\\n\\r\\n" not in got:
        more = s.recv(65536)
        if not more:
            raise ConnectionResetError
        got += more
    head, _, body = got.partition(b"\\r\\n\\r\\n")
    length = int(head.split(b"Content-Length: ")[1].split(b"\\r\\n")[0])
    while len(body) < length:
        more = s.recv(65536)
        if not more:
            raise ConnectionResetError
        body += more
    return head, body
try:
    s.sendall(b"GET /big HTTP/1.1\\r\\nHost: web\\r\\n\\r\\n")
    print(len(answer()[1]))
    for byte in f"GET /search?q={{value}} HTTP/1.1\\r\\nHost: web\\r\\n\\r\\n".encode():
        s.send(bytes([byte]))
        time.sleep(0.01)
    head, body = answer()
    print("ok" if head.startswith(b"HTTP/1.1 200") else "refused")
except OSError:
    print("reset")
"""


@pytest.fixture(scope="module")
def web_lab(lab: Lab) -> Iterator[Lab]:
    with serving(lab, ("s1", sys.executable, "-c", SERVER)):
        yield lab


def _client(lab: Lab, address: str, what: str) -> list[str]:
    out = lab.exec("c1", sys.executable, "-c", CLIENT, address, what, check=False, timeout=60)
    return out.stdout.split()


def _kernel_passed_acks(lab: Lab) -> int:
    """Packets the ACK chains' RETURN rules let on in the node (both families)."""
    total = 0
    for tool in ("iptables-save", "ip6tables-save"):
        listing = lab.node_exec(tool, "-c", check=False).stdout
        for line in listing.splitlines():
            if " -A ENFORCER-ACKS " in line and line.endswith("-j RETURN"):
                total += int(line[1:].split(":")[0])
    return total


def _policy(tmp: Path) -> Path:
    path = tmp / "policy.yaml"
    path.write_text(POLICY)
    return path


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_later_bare_acks_pass_in_the_kernel_and_a_dripped_injection_is_still_reset(
    web_lab: Lab, family: str
) -> None:
    address = getattr(web_lab.host("s1"), family)
    with tempfile.TemporaryDirectory() as tmp, LabEnforcer(web_lab, {}, policy=_policy(Path(tmp))) as e:
        assert _client(web_lab, address, "benign") == [str(ANSWER_BYTES), "ok"]
        # a 256 KiB answer in MSS-sized segments: the client acknowledged it with many bare ACKs (how many depends on GRO and timing)
        passed = _kernel_passed_acks(web_lab)
        assert passed >= 8, passed
        assert counter_total(e, "reader", "verdict.learn_quiet") >= 1
        before = passed
        assert _client(web_lab, address, "inject") == [str(ANSWER_BYTES), "reset"]
        assert _kernel_passed_acks(web_lab) > before  # the second connection went quiet too
        found = threat_events(e, "sql_injection")
        assert found and found[0]["action"] in ("reset", "block"), e.events()


def test_with_quiet_acks_off_every_bare_ack_is_queued(web_lab: Lab) -> None:
    address = web_lab.host("s1").ipv4
    overrides = {"netfilter": {"quiet_acks": False}}
    with (
        tempfile.TemporaryDirectory() as tmp,
        LabEnforcer(web_lab, overrides, policy=_policy(Path(tmp))) as e,
    ):
        assert _client(web_lab, address, "benign") == [str(ANSWER_BYTES), "ok"]
        assert _kernel_passed_acks(web_lab) == 0
        assert "ENFORCER-ACKS" not in web_lab.node_exec("iptables-save", check=False).stdout
        assert counter_total(e, "reader", "verdict.learn_quiet", timeout=0.5) == 0
        assert counter_total(e, "reader", "verdict.pass_learn") >= 8  # the ACKs went through a reader
