"""Application-aware rules on real traffic: the DPI decides what the port cannot."""

from __future__ import annotations

import time

import pytest

from lab.enforcer import LabEnforcer
from lab.topology import Lab
from tests.integration.conftest import counter_total

pytestmark = pytest.mark.netns

# Talk to the echo server on web:8080 (rule 12 allows only HTTP there) with the given first bytes.
SCRIPT = """
import socket, sys, time
s = socket.create_connection((sys.argv[1], 8080), timeout=3)
first = sys.argv[2].encode().decode("unicode_escape").encode("latin-1")
try:
    s.sendall(first)
    got = b""
    while len(got) < len(first):
        chunk = s.recv(4096)
        if not chunk:
            break
        got += chunk
    time.sleep(0.3)
    s.sendall(b"more bytes after identification")
    rest = s.recv(4096)
    print("ok" if got == first and rest else "short")
except ConnectionResetError:
    print("reset")
except OSError as exc:
    print("error", exc)
"""


def _talk(lab: Lab, first: str, family: str = "ipv4") -> str:
    addr = getattr(lab.host("s1"), family)
    return lab.exec("c1", "python3", "-c", SCRIPT, addr, first, check=False, timeout=20).stdout.strip()


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_http_is_allowed_and_ssh_is_reset_on_the_same_port(lab: Lab, family: str) -> None:
    with LabEnforcer(lab) as e:
        assert (
            _talk(lab, "GET /index.html HTTP/1.1\\r\\nHost: web\\r\\nUser-Agent: lab\\r\\n\\r\\n", family)
            == "ok"
        )
        assert _talk(lab, "SSH-2.0-OpenSSH_9.6\\r\\n", family) == "reset"
        assert counter_total(e, "worker", "packets") > 0  # the decision was the workers'
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            denied = [ev for ev in e.events() if ev["type"] == "violation" and ev.get("app") == "SSH"]
            if denied:
                break
            time.sleep(0.2)
        assert denied and denied[0]["action"] == "deny" and denied[0]["server_group"] == "web", e.events()


def _client_hello(sni: str) -> str:
    """A TLS 1.2 client hello naming `sni`, as the escaped text `_talk` sends."""
    import struct

    name = sni.encode()
    entry = struct.pack("!BH", 0, len(name)) + name
    ext = struct.pack("!HHH", 0, len(entry) + 2, len(entry)) + entry
    body = b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
    body += struct.pack("!H", len(ext)) + ext
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    record = struct.pack("!BHH", 22, 0x0301, len(hs)) + hs
    return "".join(f"\\x{b:02x}" for b in record)


HOST_RULES = """
version: 1
default_mode: monitor
groups:
  - {name: clients, mode: monitor, members: [198.18.1.0/24, "fd00:198:18:1::/64"]}
  - {name: web, mode: protect, members: [198.18.2.11/32, "fd00:198:18:2::b/128"]}
rules:
  - {id: 12, from: clients, to: web, ports: [tcp/8080], applications: [HTTP, TLS],
     hosts: [shop.lab.test, "*.api.lab.test"], action: allow}
"""


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_host_rules_follow_http_host_and_tls_sni(lab: Lab, tmp_path, family: str) -> None:
    policy = tmp_path / "hosts.yaml"
    policy.write_text(HOST_RULES)
    get = "GET / HTTP/1.1\\r\\nHost: %s\\r\\nUser-Agent: lab\\r\\n\\r\\n"
    with LabEnforcer(lab, policy=policy) as e:
        assert _talk(lab, get % "shop.lab.test:8080", family) == "ok"
        assert _talk(lab, _client_hello("v1.api.lab.test"), family) == "ok"
        assert _talk(lab, get % "admin.lab.test", family) == "reset"
        assert _talk(lab, _client_hello("api.lab.test.evil.test"), family) == "reset"
        assert _talk(lab, "SSH-2.0-OpenSSH_9.6\\r\\n", family) == "reset"
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            denied = [ev for ev in e.events() if ev["type"] == "violation" and ev.get("action") == "deny"]
            if len(denied) >= 3:
                break
            time.sleep(0.2)
        assert sorted(ev["app"] for ev in denied) == ["HTTP", "SSH", "TLS/SSL"], e.events()
