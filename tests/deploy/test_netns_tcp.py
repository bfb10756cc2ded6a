""".ci/netns-tcp.py, the traffic check of the container test, between two namespaces this test makes:
it must say `arrive` when the payload comes back and `blocked` when a firewall in the server's
namespace drops or rejects the connection — and fail when the expectation is the wrong one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from .support import REPO

pytestmark = pytest.mark.netns

TOOL = REPO / ".ci" / "netns-tcp.py"
SERVER_V4, CLIENT_V4 = "198.18.250.1", "198.18.250.2"
SERVER_V6, CLIENT_V6 = "fd00:dead:250::1", "fd00:dead:250::2"


def _sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=10)


@pytest.fixture
def pair() -> Iterator[tuple[str, str]]:
    server, client = f"dp-srv-{os.getpid()}", f"dp-cli-{os.getpid()}"
    veth_s, veth_c = f"dps{os.getpid() % 100000}", f"dpc{os.getpid() % 100000}"
    try:
        _sh("ip", "netns", "add", server)
        _sh("ip", "netns", "add", client)
        _sh(
            "ip", "-n", server, "link", "add", veth_s, "type", "veth", "peer", "name", veth_c, "netns", client
        )
        for ns, dev, v4, v6 in (
            (server, veth_s, SERVER_V4, SERVER_V6),
            (client, veth_c, CLIENT_V4, CLIENT_V6),
        ):
            _sh("ip", "-n", ns, "link", "set", "lo", "up")
            _sh("ip", "-n", ns, "addr", "add", f"{v4}/30", "dev", dev)
            _sh("ip", "-n", ns, "addr", "add", f"{v6}/64", "dev", dev, "nodad")
            _sh("ip", "-n", ns, "link", "set", dev, "up")
        yield server, client
    finally:
        for ns in (server, client):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def _run(server: str, client: str, addr: str, expect: str, port: int = 7001) -> tuple[int, dict[str, object]]:
    proc = subprocess.run(
        [sys.executable, str(TOOL), "--server-ns", server, "--client-ns", client, "--addr", addr]
        + ["--port", str(port), "--expect", expect, "--timeout", "1.5"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert proc.stdout, proc.stderr
    result = json.loads(proc.stdout)
    assert isinstance(result, dict)
    return proc.returncode, result


@pytest.mark.parametrize("addr", [SERVER_V4, SERVER_V6])
def test_open_path_arrives(pair: tuple[str, str], addr: str) -> None:
    rc, result = _run(*pair, addr, "arrive")
    assert rc == 0 and result["ok"] is True
    assert result["server_received"] == len("enforcer-container-check")
    # the wrong expectation fails
    rc, result = _run(*pair, addr, "blocked", port=7002)
    assert rc == 1 and result["ok"] is False


@pytest.mark.parametrize("target", ["DROP", "REJECT"])
def test_firewalled_path_is_blocked(pair: tuple[str, str], target: str) -> None:
    server, client = pair
    extra = ["--reject-with", "tcp-reset"] if target == "REJECT" else []
    _sh("ip", "netns", "exec", server, "iptables", "-w", "-A", "INPUT", "-p", "tcp", "--dport", "7001",
        "-j", target, *extra)  # fmt: skip
    rc, result = _run(server, client, SERVER_V4, "blocked")
    assert rc == 0 and result["ok"] is True
    assert result["server_received"] == 0
    rc, result = _run(server, client, SERVER_V4, "arrive")
    assert rc == 1 and result["ok"] is False


def test_bad_usage_exits_2() -> None:
    proc = subprocess.run(
        [sys.executable, str(TOOL), "--server-ns", "x", "--client-ns", "y", "--addr", SERVER_V4]
        + ["--port", "0", "--expect", "arrive"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert proc.returncode == 2
