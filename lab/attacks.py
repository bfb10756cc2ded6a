"""Real attack tools against lab hosts (hping3 floods, nmap scans), bounded in time, and the counters
that say what reached the target. Used by the flood tests and `scripts/bench_synflood.py`.

Only lab namespaces are involved: the tools run in a lab host and aim at another lab host's address.
"""

from __future__ import annotations

import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from lab.topology import Lab

MAX_ATTACK_SECONDS = 30.0  # no attack helper runs longer than this
# The lab policy with web open to everyone on tcp/80 (a public site): a flood from forged sources is then
# allowed by the rules, and only the flood detection stands between it and the server.
PUBLIC_WEB_RULE = "  - {id: 40, from: external, to: web, ports: [tcp/80], action: allow}\n"


def public_web_policy(directory: Path) -> Path:
    from lab.enforcer import LAB_POLICY

    text = LAB_POLICY.read_text()
    assert text.rstrip().splitlines()[-1].startswith("  - {id:"), "the lab policy must end with its rules"
    path = directory / "public-web.yaml"
    path.write_text(text.rstrip("\n") + "\n" + PUBLIC_WEB_RULE)
    return path


def ip_received(lab: Lab, host: str) -> int:
    """IP packets the host's network namespace has received (Ip: InReceives of /proc/net/snmp)."""
    lines = [line.split() for line in lab.exec(host, "cat", "/proc/net/snmp").stdout.splitlines()]
    names, values = [row for row in lines if row and row[0] == "Ip:"][:2]
    return int(values[names.index("InReceives")])


def tcp_arrivals(lab: Lab, host: str, source: str, sports: tuple[int, int], dport: int) -> ArrivalCounter:
    """Count the TCP packets from `source` ports `sports` (first, last) to `dport` that reach `host`:
    an iptables counting rule inside the host's own lab namespace (never the root namespace). Unlike the
    namespace-wide IP counters it sees only the packets the test sent, not a stray one of another flow."""
    return ArrivalCounter(
        lab, host, ["-s", source, "-p", "tcp", "--sport", f"{sports[0]}:{sports[1]}", "--dport", str(dport)]
    )


class ArrivalCounter:
    """A counting rule (no target) at the top of INPUT in a lab host's namespace, removed on exit."""

    def __init__(self, lab: Lab, host: str, match: list[str]) -> None:
        self.lab, self.host, self.match = lab, host, match

    def __enter__(self) -> ArrivalCounter:
        self.lab.exec(self.host, "iptables", "-w", "5", "-I", "INPUT", *self.match)
        return self

    def __exit__(self, *exc: object) -> None:
        self.lab.exec(self.host, "iptables", "-w", "5", "-D", "INPUT", *self.match, check=False)

    def packets(self) -> int:
        out = self.lab.exec(self.host, "iptables", "-w", "5", "-L", "INPUT", "1", "-v", "-x", "-n").stdout
        return int(out.split()[0])


@dataclass(frozen=True)
class QueueState:
    """One NFQUEUE of the node, as /proc/net/netfilter/nfnetlink_queue shows it. The counters belong to
    the queue's instance: a reader that binds anew (after a restart) starts them from zero."""

    number: int
    waiting: int  # packets handed to the reader and still awaiting its verdict (queue_total)
    dropped: int  # refused because the queue was full and fail-open is off (queue_dropped)
    user_dropped: int  # could not be handed to the reader (its socket buffer full): never judged
    handed: int  # packets handed to the reader so far (id_sequence)


def queue_states(lab: Lab) -> dict[int, QueueState]:
    """The node's bound NFQUEUEs by number (a queue with no reader bound has no line)."""
    out = lab.node_exec("cat", "/proc/net/netfilter/nfnetlink_queue", check=False).stdout
    states = {}
    for line in out.splitlines():
        f = line.split()
        if len(f) > 7:
            states[int(f[0])] = QueueState(int(f[0]), int(f[2]), int(f[5]), int(f[6]), int(f[7]))
    return states


def queued_packets(lab: Lab) -> int:
    """Packets the node's NFQUEUEs have handed to user space so far (each queue's id sequence in
    /proc/net/netfilter/nfnetlink_queue). Packets the kernel let by unjudged because a queue was full
    (fail-open) get no id, so this tells what the readers really judged."""
    out = lab.node_exec("cat", "/proc/net/netfilter/nfnetlink_queue", check=False).stdout
    return sum(int(fields[7]) for fields in (line.split() for line in out.splitlines()) if len(fields) > 7)


@dataclass
class FloodResult:
    sent: int  # packets hping3 reports as transmitted
    seconds: float
    received: int  # IP packets the target received meanwhile (flood, its replies' answers, other traffic)
    started: float  # wall time hping3 started, taken in the attacker's namespace just before it runs
    queued: int = 0  # packets the node's queues handed to the readers meanwhile (all traffic)
    blocked: int = 0  # packets our kernel block rules (block-source) dropped meanwhile, before any queue

    @property
    def unjudged(self) -> int:
        """Flood packets neither judged by a reader nor dropped by our kernel block: passed by a full queue
        (failure.queue_full = pass), or lost before it. At most: other traffic the readers judged counts
        as flood."""
        return max(self.sent - self.queued - self.blocked, 0)

    @property
    def judged_passed(self) -> int:
        """Packets the target received that went through a reader's judgement: what the detection let by,
        whatever a full queue passed unjudged on a slow machine."""
        return max(self.received - self.unjudged, 0)

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0


def syn_flood(
    lab: Lab, attacker: str, target: str, port: int, seconds: float, rand_source: bool = False
) -> FloodResult:
    """`hping3 -S --flood` from `attacker` to `target`:`port` for `seconds` (stopped by SIGINT)."""
    return _hping3(
        lab, attacker, target, seconds, ["-S", "-p", str(port)] + (["--rand-source"] if rand_source else [])
    )


def icmp_flood(lab: Lab, attacker: str, target: str, seconds: float) -> FloodResult:
    """`hping3 --icmp --flood` (echo requests, one ICMP id) from `attacker` to `target` for `seconds`."""
    return _hping3(lab, attacker, target, seconds, ["--icmp"])


def udp_flood(lab: Lab, attacker: str, target: str, port: int, seconds: float) -> FloodResult:
    """`hping3 --udp --flood` from `attacker` to `target`:`port` for `seconds`: hping3 moves its source
    port with every datagram, so each one is a new flow that the node's queue hands to a reader."""
    return _hping3(lab, attacker, target, seconds, ["--udp", "-p", str(port)])


def kernel_blocked(lab: Lab, chain: str = "ENFORCER-BLOCK") -> int:
    """Packets dropped so far by the enforcer's block-source rules in the node (IPv4 and IPv6)."""
    total = 0
    for tool in ("iptables", "ip6tables"):
        out = lab.node_exec(tool, "-w", "5", "-L", chain, "-v", "-x", "-n", check=False).stdout
        total += sum(
            int(f[0]) for f in (line.split() for line in out.splitlines()[2:]) if f and f[0].isdigit()
        )
    return total


def _hping3(lab: Lab, attacker: str, target: str, seconds: float, mode: list[str]) -> FloodResult:
    seconds = min(seconds, MAX_ATTACK_SECONDS)
    before = ip_received(lab, target_host(lab, target))
    queued_before = queued_packets(lab)
    blocked_before = kernel_blocked(lab)
    # The start time is taken in the attacker's namespace right before hping3 runs: starting processes
    # through `ip netns exec` takes a loaded machine a good part of a second, which is not the flood's.
    hping = ["timeout", "-s", "INT", f"{seconds}", "hping3", "-q", *mode, "--flood", target]
    cmd = ["sh", "-c", 'date +%s.%N; exec "$@"', "flood", *hping]
    out = lab.exec(attacker, *cmd, check=False, timeout=seconds + 15)
    received = ip_received(lab, target_host(lab, target)) - before
    queued = queued_packets(lab) - queued_before
    blocked = kernel_blocked(lab) - blocked_before
    m = re.search(r"(\d+) packets transmitted", out.stdout + out.stderr)
    if m is None:
        raise RuntimeError(f"hping3 did not report its count: {out.stderr.strip()[-300:]}")
    started = float(out.stdout.split("\n", 1)[0])
    return FloodResult(int(m.group(1)), time.time() - started, received, started, queued, blocked)


def target_host(lab: Lab, address: str) -> str:
    for name, host in lab.hosts.items():
        if address in (host.ipv4, host.ipv6):
            return name
    raise KeyError(address)


@dataclass
class ClientProbe:
    """A real client making one TCP connection after another (bounded) while something else happens."""

    lab: Lab
    client: str
    target: str
    port: int
    count: int = 8
    interval: float = 0.3
    results: list[dict[str, object]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> ClientProbe:
        self._thread.start()
        return self

    def join(self, timeout: float = 60.0) -> list[dict[str, object]]:
        self._thread.join(timeout)
        return self.results

    def _run(self) -> None:
        import json

        for _ in range(self.count):
            t0 = time.monotonic()
            out = self.lab.exec(
                self.client, sys.executable, "-m", "lab.traffic", "tcp", self.target, str(self.port),
                "--bytes", "2000", "--timeout", "6", check=False, timeout=20,
            )  # fmt: skip
            try:
                result = json.loads(out.stdout)
            except ValueError:
                result = {"ok": False, "error": out.stderr.strip()[-200:]}
            result["seconds"] = round(time.monotonic() - t0, 3)
            self.results.append(result)
            time.sleep(self.interval)


def hping3_burst(lab: Lab, attacker: str, target: str, count: int = 300) -> None:
    """A bounded SYN burst (hping3, random source ports) at about 1000 packets/s."""
    cmd = ["hping3", "-q", "-S", "-p", "80", "-c", str(count), "-i", "u1000", target]
    lab.exec(attacker, *cmd, check=False, timeout=30)


def nmap_syn_scan(lab: Lab, scanner: str, target: str, ports: str = "1-1200", seconds: float = 20) -> str:
    """`nmap -sS` of `target` from `scanner` (no ping, no DNS), bounded by nmap's own host timeout."""
    seconds = min(seconds, MAX_ATTACK_SECONDS)
    cmd = ["nmap", "-sS", "-Pn", "-n", "-T4", "--max-retries", "0", "--host-timeout", f"{int(seconds)}s"]
    result = lab.exec(scanner, *cmd, "-p", ports, target, check=False, timeout=seconds + 15)
    return result.stdout


def nmap_script(lab: Lab, scanner: str, target: str, port: int, script: str, seconds: float = 30) -> str:
    """One of nmap's NSE scripts against `target`:`port` from `scanner` (no ping, no DNS), bounded by
    nmap's host timeout: a real scanner's probes and exploit attempts (`http-passwd`'s traversals,
    `http-vuln-cve2017-5638`'s OGNL Content-Type, ...)."""
    seconds = min(seconds, MAX_ATTACK_SECONDS)
    cmd = ["nmap", "-Pn", "-n", "-p", str(port), "--script", script, "--host-timeout", f"{int(seconds)}s"]
    result = lab.exec(scanner, *cmd, target, check=False, timeout=seconds + 15)
    return result.stdout


def nmap_http_passwd(lab: Lab, scanner: str, target: str, port: int, seconds: float = 30) -> str:
    """nmap's `http-passwd` script against `target`:`port` from `scanner`: the directory-traversal probes
    (`/../../etc/passwd`, encoded and query-string variants) a scanner sends."""
    return nmap_script(lab, scanner, target, port, "http-passwd", seconds)


__all__ = [
    "ClientProbe",
    "FloodResult",
    "QueueState",
    "hping3_burst",
    "icmp_flood",
    "ip_received",
    "nmap_http_passwd",
    "nmap_script",
    "nmap_syn_scan",
    "queue_states",
    "syn_flood",
    "udp_flood",
]
