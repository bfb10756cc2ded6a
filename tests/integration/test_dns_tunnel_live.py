"""A real DNS tunnel (iodine and iodined, Debian's packages) through the real enforcer. In Monitor the
tunnel comes up, carries a ping and is reported as `dns_tunneling`; in Protect it never carries a packet:
its first NULL query blocks the client's flow, and the flow stays blocked though the policy is published
again meanwhile (the kernel keeps no connection mark for a UDP flow blocked on its first datagram, so the
reader's table is what blocks the next ones: before, a new generation let them through and the tunnel
came up in Protect).

The lab is the test's own: its servers run iodined on port 53, where the shared lab runs its UDP server.
The tunnel's addresses are in 198.19.99.0/27 (the benchmarking range), `-r` keeps iodine on DNS (no
raw-UDP shortcut to the server), and every iodine run is bounded in time.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab.enforcer import LabEnforcer
from lab.topology import Lab

pytestmark = pytest.mark.netns

DOMAIN = "t.lab.example"
SECRET = "lab-tunnel-secret"
SERVER_TUNNEL, CLIENT_TUNNEL = "198.19.99.1", "198.19.99.2"
POLICY = """
version: 1
default_mode: monitor
groups:
  - {name: clients, mode: monitor, members: [198.18.1.0/24]}
  - {name: web, mode: protect, members: [198.18.2.11/32]}
  - {name: api, mode: monitor, members: [198.18.2.12/32]}
rules:
  - {id: 80, from: clients, to: web, ports: [udp/53], action: allow}
  - {id: 81, from: clients, to: api, ports: [udp/53], action: allow}
"""
TUNNEL_UP_S = 45  # iodine's handshake and probing, or its giving up (about 20 s of retries)


@pytest.fixture(scope="module")
def tunnel_lab() -> Iterator[Lab]:
    with Lab("dnst") as lab:
        yield lab


def iodined(lab: Lab, host: str, log: Path) -> subprocess.Popen[Any]:
    return lab.popen(
        host, "iodined", "-f", "-c", "-P", SECRET, f"{SERVER_TUNNEL}/27", DOMAIN,
        stdout=log.open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip


def run_tunnel(lab: Lab, server: str, log: Path) -> tuple[bool, str]:
    """iodine from c1 to `server`'s iodined, bounded; whether a ping crossed the tunnel, and iodine's
    output."""
    client = lab.popen(
        "c1", "iodine", "-f", "-r", "-P", SECRET, lab.host(server).ipv4, DOMAIN,
        stdout=log.open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + TUNNEL_UP_S
        while time.monotonic() < deadline and client.poll() is None:
            if "Connection setup complete" in log.read_text():
                break
            time.sleep(0.5)
        ping = lab.exec("c1", "ping", "-c", "3", "-W", "2", SERVER_TUNNEL, check=False, timeout=20)
        return ping.returncode == 0, log.read_text()
    finally:
        client.terminate()
        try:
            client.wait(timeout=5)
        except subprocess.TimeoutExpired:
            client.kill()
            client.wait(timeout=5)


def dns_threats(e: LabEnforcer, timeout: float = 8.0) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        found = [
            ev for ev in e.events()
            if ev["type"] == "threat" and ev["name"] in ("dns_tunneling", "dns_null_type")
        ]  # fmt: skip
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.3)


def test_an_iodine_tunnel_is_reported_in_monitor_and_never_carries_a_packet_in_protect(
    tunnel_lab: Lab, tmp_path: Path
) -> None:
    lab = tunnel_lab
    policy = tmp_path / "tunnel.yaml"
    policy.write_text(POLICY)
    servers = [iodined(lab, host, tmp_path / f"iodined-{host}.log") for host in ("s1", "s2")]
    try:
        with LabEnforcer(lab, {"workers": {"inspect": "new"}}, policy=policy) as e:
            # Monitor (api): the tunnel works and is reported
            crossed, out = run_tunnel(lab, "s2", tmp_path / "iodine-monitor.log")
            assert crossed, out
            found = [ev for ev in dns_threats(e) if ev["flow"]["dst"] == lab.host("s2").ipv4]
            names = {ev["name"] for ev in found}
            assert "dns_tunneling" in names and {ev["action"] for ev in found} == {"alert"}, found
            # Protect (web): blocked from its first query on, though the policy is published again
            # meanwhile (iodine is a new workload process: the runtime's members update republishes)
            crossed, out = run_tunnel(lab, "s1", tmp_path / "iodine-protect.log")
            assert not crossed, out
            assert "Connection setup complete" not in out, out
            blocked = [ev for ev in dns_threats(e) if ev["flow"]["dst"] == lab.host("s1").ipv4]
            assert blocked and {ev["action"] for ev in blocked} == {"block"}, blocked
    finally:
        for proc in servers:
            proc.terminate()
            proc.wait(timeout=5)
