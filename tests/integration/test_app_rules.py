"""Application-aware rules on real traffic: the DPI decides what the port cannot."""

from __future__ import annotations

import time

import pytest

from lab.enforcer import LabEnforcer
from lab.topology import Lab

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
        workers = [c["counters"] for c in e.status()["children"] if c["name"].startswith("worker")]
        assert sum(w.get("packets", 0) for w in workers) > 0  # the decision was the workers'
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            denied = [ev for ev in e.events() if ev["type"] == "violation" and ev.get("app") == "SSH"]
            if denied:
                break
            time.sleep(0.2)
        assert denied and denied[0]["action"] == "deny" and denied[0]["server_group"] == "web", e.events()
