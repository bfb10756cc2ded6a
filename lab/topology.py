"""The lab: network namespaces for client pods, server pods, an external host, and a node that routes
between them (where the enforcer runs). Used by the demo, the tests and the load test.

Every address is from the benchmarking range 198.18.0.0/15 and the ULA prefix fd00::/8, and exists only
inside the lab's namespaces; nothing is added to the machine's root namespace. Each subnet is a bridge
in the node namespace, so traffic between subnets is routed by the node and crosses its FORWARD hook.
`down()` removes every namespace with the lab's prefix, and the context manager calls it on any exit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import FrameType, TracebackType
from typing import Any

# Subnets of the lab: name → (IPv4 /24 prefix, IPv6 /64 prefix)
SUBNETS = {
    "clients": ("198.18.1", "fd00:198:18:1"),
    "servers": ("198.18.2", "fd00:198:18:2"),
    "external": ("198.18.9", "fd00:198:18:9"),
}


@dataclass(frozen=True)
class Host:
    name: str  # short name, e.g. "c1"
    netns: str  # namespace name
    subnet: str
    ipv4: str
    ipv6: str


class LabError(RuntimeError):
    pass


def _run(cmd: Sequence[str], check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise LabError(f"{' '.join(cmd)}: {result.stderr.strip() or result.stdout.strip()}")
    return result


class Lab:
    def __init__(self, prefix: str = "enf", clients: int = 2, servers: int = 2, external: int = 1) -> None:
        if not prefix.isalnum() or len(prefix) > 6:
            raise LabError("lab prefix: at most 6 letters or digits")
        self.prefix = prefix
        self.node = f"{prefix}-node"
        self.hosts: dict[str, Host] = {}
        for subnet, count, letter in (
            ("clients", clients, "c"),
            ("servers", servers, "s"),
            ("external", external, "x"),
        ):
            v4, v6 = SUBNETS[subnet]
            for i in range(1, count + 1):
                name = f"{letter}{i}"
                self.hosts[name] = Host(
                    name, f"{prefix}-{name}", subnet, f"{v4}.{10 + i}", f"{v6}::{10 + i:x}"
                )
        self._old_handlers: dict[int, Any] = {}

    # ---- building ------------------------------------------------------------------------------

    def up(self) -> Lab:
        self.down()
        try:
            self._build()
        except BaseException:
            self.down()
            raise
        return self

    def _build(self) -> None:
        node = self.node
        _run(["ip", "netns", "add", node])
        self.node_exec("ip", "link", "set", "lo", "up")
        for key, value in (
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv6.conf.all.forwarding", "1"),
            ("net.ipv6.conf.default.accept_dad", "0"),
            ("net.netfilter.nf_conntrack_tcp_loose", "1"),
        ):
            self.node_exec("sysctl", "-qw", f"{key}={value}", check=False)
        for subnet, (v4, v6) in SUBNETS.items():
            br = f"br-{subnet[:3]}"
            self.node_exec("ip", "link", "add", br, "type", "bridge")
            self.node_exec("ip", "addr", "add", f"{v4}.1/24", "dev", br)
            self.node_exec("ip", "-6", "addr", "add", f"{v6}::1/64", "dev", br, "nodad")
            self.node_exec("ip", "link", "set", br, "up")
        for host in self.hosts.values():
            self._add_host(host)
        self._wait_reachable()

    def _add_host(self, host: Host) -> None:
        ns = host.netns
        _run(["ip", "netns", "add", ns])
        self.exec(host.name, "ip", "link", "set", "lo", "up")
        self.exec(host.name, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", check=False)
        self.exec(host.name, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0", check=False)
        outer = f"v{self.prefix}{host.name}"[:15]
        # Create the pair inside the pod's namespace, then move one end to the node: nothing ever
        # appears in the root namespace.
        self.exec(host.name, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", outer)
        self.exec(host.name, "ip", "link", "set", outer, "netns", self.node)
        self.node_exec("ip", "link", "set", outer, "master", f"br-{host.subnet[:3]}")
        self.node_exec("ip", "link", "set", outer, "up")
        v4, v6 = SUBNETS[host.subnet]
        self.exec(host.name, "ip", "addr", "add", f"{host.ipv4}/24", "dev", "eth0")
        self.exec(host.name, "ip", "-6", "addr", "add", f"{host.ipv6}/64", "dev", "eth0", "nodad")
        self.exec(host.name, "ip", "link", "set", "eth0", "up")
        self.exec(host.name, "ip", "route", "add", "default", "via", f"{v4}.1")
        self.exec(host.name, "ip", "-6", "route", "add", "default", "via", f"{v6}::1")

    def _wait_reachable(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        for host in self.hosts.values():
            for addr in (host.ipv4, host.ipv6):
                while self.node_exec("ping", "-c1", "-W1", "-q", addr, check=False).returncode != 0:
                    if time.monotonic() > deadline:
                        raise LabError(f"{host.name} ({addr}) is not reachable from the node")
                    time.sleep(0.1)

    def down(self) -> None:
        """Remove every namespace of this lab (also leftovers of an interrupted run). Processes still
        running inside them keep the namespace's network alive only until they exit."""
        listed = _run(["ip", "netns", "list"], check=False).stdout.split("\n")
        ours = [line.split()[0] for line in listed if line.startswith(f"{self.prefix}-")]
        for ns in ours:
            _run(["ip", "netns", "del", ns], check=False)

    # ---- using ---------------------------------------------------------------------------------

    def host(self, name: str) -> Host:
        return self.hosts[name]

    def in_ns(self, netns: str, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", netns, *cmd]

    def exec(
        self, host: str, *cmd: str, check: bool = True, timeout: float = 20
    ) -> subprocess.CompletedProcess[str]:
        return _run(self.in_ns(self.hosts[host].netns, *cmd), check=check, timeout=timeout)

    def node_exec(
        self, *cmd: str, check: bool = True, timeout: float = 20
    ) -> subprocess.CompletedProcess[str]:
        return _run(self.in_ns(self.node, *cmd), check=check, timeout=timeout)

    def popen(self, host: str, *cmd: str, **kwargs: Any) -> subprocess.Popen[Any]:
        netns = self.node if host == "node" else self.hosts[host].netns
        return subprocess.Popen(self.in_ns(netns, *cmd), **kwargs)

    def by_subnet(self, subnet: str) -> Iterator[Host]:
        return (h for h in self.hosts.values() if h.subnet == subnet)

    # ---- always clean up -----------------------------------------------------------------------

    def __enter__(self) -> Lab:
        def interrupted(signum: int, frame: FrameType | None) -> None:
            raise KeyboardInterrupt(f"signal {signum}")

        for sig in (signal.SIGTERM, signal.SIGHUP):
            self._old_handlers[sig] = signal.signal(sig, interrupted)
        return self.up()

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.down()
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, iptables inside them)")
