"""Real tools, real traffic: captures recorded in a pair of network namespaces, replayed through detection.

Two namespaces joined by a veth pair (198.18.200.0/24, created and removed by the fixture); tcpdump
records on the server side while nmap, hping3, curl and dig run on the client side against a Python
HTTP server and a bare TCP listener on port 53. The capture then runs through the worker's detection
core. This proves detection on traffic we did not craft; enforcement inline (Protect drops, Monitor
alerts) is the packet path's integration suite. Needs root, iproute2, tcpdump, nmap, hping3, curl, dig.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.replay import read_capture
from node.threats_replay import replay_threats, threat_totals
from workers.detect.engine import compile_threat_policy

pytestmark = pytest.mark.netns

TOOLS = ("ip", "tcpdump", "nmap", "hping3", "curl", "dig")
CLIENT_IP, SERVER_IP = "198.18.200.1", "198.18.200.2"
TOOL_TIMEOUT = 30  # seconds any one tool may run


def _missing() -> str:
    if os.geteuid() != 0:
        return "needs root"
    absent = [t for t in TOOLS if shutil.which(t) is None]
    return f"needs {', '.join(absent)}" if absent else ""


def sh(*cmd: str, timeout: float = TOOL_TIMEOUT, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {result.stderr.strip()}")
    return result


class Pair:
    def __init__(self) -> None:
        tag = f"{os.getpid() % 100000}"
        self.client, self.server = f"dt-c-{tag}", f"dt-s-{tag}"
        self.procs: list[subprocess.Popen[bytes]] = []

    def up(self) -> None:
        sh("ip", "netns", "add", self.client)
        sh("ip", "netns", "add", self.server)
        sh(
            "ip",
            "link",
            "add",
            "dtc0",
            "netns",
            self.client,
            "type",
            "veth",
            "peer",
            "name",
            "dts0",
            "netns",
            self.server,
        )
        for ns, dev, ip in ((self.client, "dtc0", CLIENT_IP), (self.server, "dts0", SERVER_IP)):
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")

    def spawn(self, ns: str, *cmd: str, stderr: int = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *cmd], stdout=subprocess.DEVNULL, stderr=stderr)
        self.procs.append(proc)
        return proc

    def run(self, ns: str, *cmd: str, timeout: float = TOOL_TIMEOUT) -> None:
        sh("ip", "netns", "exec", ns, *cmd, timeout=timeout, check=False)

    def down(self) -> None:
        for proc in self.procs:  # only what we started, by its own handle
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        for ns in (self.client, self.server):
            sh("ip", "netns", "del", ns, check=False)


@pytest.fixture
def pair() -> Iterator[Pair]:
    reason = _missing()
    if reason:
        pytest.fail(f"live detection test {reason} (run the non-netns tests with -m 'not netns')")
    p = Pair()
    try:
        p.up()
        yield p
    finally:
        p.down()


def capture(pair: Pair, path: Path) -> subprocess.Popen[bytes]:
    proc = pair.spawn(
        pair.server, "tcpdump", "-i", "dts0", "-U", "--immediate-mode", "-s", "2048", "-w", str(path),
        stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    ready, _, _ = select.select([proc.stderr], [], [], 10)
    assert ready, "tcpdump did not start"
    proc.stderr.readline()  # "listening on dts0 ..."
    return proc


def stop(proc: subprocess.Popen[bytes], path: Path) -> None:
    """Stop once the file has stopped growing: a loaded machine can leave the last packets unread in
    tcpdump's buffer for a while, and stopping then loses them."""
    size, still, deadline = -1, 0, time.monotonic() + 10
    while still < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
        now = path.stat().st_size if path.exists() else 0
        still = still + 1 if now == size else 0
        size = now
    proc.terminate()
    proc.wait(timeout=10)


def servers(pair: Pair) -> None:
    pair.spawn(pair.server, sys.executable, "-m", "http.server", "8080", "--bind", SERVER_IP)
    listener = (
        "import socket,time\n"
        "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        f"s.bind(('{SERVER_IP}', 53)); s.listen(8); s.settimeout(30)\n"
        "end=time.time()+30\n"
        "while time.time()<end:\n"
        "    c,_=s.accept(); c.settimeout(5); c.recv(4096); time.sleep(0.2); c.close()\n"
    )
    pair.spawn(pair.server, sys.executable, "-c", listener)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # bounded wait for the HTTP server
        if sh("ip", "netns", "exec", pair.client, "curl", "-s", "-o", "/dev/null", "-m", "1",
              f"http://{SERVER_IP}:8080/", check=False).returncode == 0:  # fmt: skip
            return
        time.sleep(0.2)
    raise RuntimeError("HTTP server did not come up")


def test_real_tools_raise_their_threats(pair: Pair, tmp_path: Path) -> None:
    servers(pair)
    pcap = tmp_path / "attacks.pcap"
    dump = capture(pair, pcap)
    c = pair.client
    pair.run(c, "curl", "-s", "-o", "/dev/null", "-m", "3", "-G", f"http://{SERVER_IP}:8080/search",
             "--data-urlencode", "q=1' or '1'='1")  # fmt: skip
    pair.run(c, "curl", "-s", "-o", "/dev/null", "-m", "3", "-G", f"http://{SERVER_IP}:8080/profile",
             "--data-urlencode", "bio=<script>alert(document.cookie)</script>")  # fmt: skip
    pair.run(c, "dig", f"@{SERVER_IP}", "example.com", "AXFR", "+tcp", "+time=2", "+tries=1")
    pair.run(c, "nmap", "-sS", "-Pn", "-n", "-p", "1-300", "-T4", "--max-retries", "0", SERVER_IP)
    pair.run(c, "hping3", "-q", "-S", "-p", "8081", "-i", "u400", "-c", "3000", SERVER_IP)
    pair.run(c, "hping3", "-q", "--icmp", "-i", "u1000", "-c", "1200", SERVER_IP)
    stop(dump, pcap)
    events, _, _ = replay_threats(read_capture(str(pcap)), compile_threat_policy(1))
    totals = threat_totals(events)
    expected = {"sql_injection", "xss", "dns_zone_transfer", "port_scan", "syn_flood", "icmp_flood"}
    assert expected <= set(totals), totals
    assert set(totals) - expected <= {"source_session_flood"}, totals  # nothing unexpected


def test_ordinary_use_of_the_same_tools_is_quiet(pair: Pair, tmp_path: Path) -> None:
    servers(pair)
    pcap = tmp_path / "benign.pcap"
    dump = capture(pair, pcap)
    c = pair.client
    for query in ("q=O'Brien pizza", "q=rock & roll", "q=select the best union rep"):
        pair.run(c, "curl", "-s", "-o", "/dev/null", "-m", "3", "-G", f"http://{SERVER_IP}:8080/search",
                 "--data-urlencode", query)  # fmt: skip
    pair.run(c, "curl", "-s", "-o", "/dev/null", "-m", "3", f"http://{SERVER_IP}:8080/")
    pair.run(c, "dig", f"@{SERVER_IP}", "www.example.com", "A", "+tcp", "+time=2", "+tries=1")
    pair.run(c, "nmap", "-sS", "-Pn", "-n", "-p", "22,53,80,8080", "--max-retries", "0", SERVER_IP)
    pair.run(c, "hping3", "-q", "--icmp", "-c", "3", "-i", "u200000", SERVER_IP)
    stop(dump, pcap)
    events, _, _ = replay_threats(read_capture(str(pcap)), compile_threat_policy(1))
    assert threat_totals(events) == {}
