"""A two-node lab cluster: each node a network namespace routing its own pod subnet, the nodes linked
by a veth "underlay" with routes, one enforcer per node and one controller (groups across nodes).

    node A (<p>-na)  198.18.250.1 ──underlay── 198.18.250.2  node B (<p>-nb)
      br-pods 198.18.11.1/24                                  br-pods 198.18.12.1/24
      pods <p>-<name> 198.18.11.x                              pods <p>-<name> 198.18.12.x

Like `lab.topology`, every address is from 198.18.0.0/15 and fd00::/8 and exists only inside the lab's
namespaces; nothing is added to the machine's root namespace, and `down()` removes every namespace
with the lab's prefix (also on any exception, through the context manager).

On one machine every process sees every other's /proc, so each node's enforcer would find the other
node's pods as its own workloads. A real node sees only its own, so each enforcer runs in its own PID
namespace with its own /proc (`unshare --pid --mount-proc`), and a node's pod processes are started
inside that PID namespace (`nsenter --pid`): each runtime child then finds exactly its node's pods.
Pods get only the intrinsic labels the runtime child derives (`netns` = the pod namespace's name);
`rename_pod` gives a running pod a new name, which is how a test relabels a pod.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.enforcer import LabController, LabEnforcer
from lab.topology import LabError, _run

UNDERLAY = {"a": ("198.18.250.1", "fd00:198:18:250::1"), "b": ("198.18.250.2", "fd00:198:18:250::2")}
POD_SUBNETS = {"a": ("198.18.11", "fd00:198:18:11"), "b": ("198.18.12", "fd00:198:18:12")}
CONTROLLER_PORT = 18411


@dataclass(frozen=True)
class Pod:
    name: str
    netns: str
    node: str  # "a" or "b"
    ipv4: str
    ipv6: str


class NodeView:
    """One node of the cluster as `lab.enforcer` sees a `Lab`: commands in the node's namespace; with
    `own_pids`, the enforcer started through it runs in a PID namespace of its own."""

    def __init__(self, cluster: Cluster, node: str, own_pids: bool) -> None:
        self.cluster, self.node_id, self.own_pids = cluster, node, own_pids
        self.node = cluster.node_ns(node)

    def in_ns(self, netns: str, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", netns, *cmd]

    def node_exec(
        self, *cmd: str, check: bool = True, timeout: float = 20
    ) -> subprocess.CompletedProcess[str]:
        return _run(self.in_ns(self.node, *cmd), check=check, timeout=timeout)

    def popen(self, host: str, *cmd: str, **kwargs: Any) -> subprocess.Popen[Any]:
        if host != "node":
            raise LabError("a node view starts processes in the node only (pods: Cluster.start_in_pod)")
        if self.own_pids:
            # The namespace's init is the enforcer; --propagation slave lets pod names added or renamed
            # later (`ip netns` mounts under /run/netns) reach the enforcer's private mount namespace.
            cmd = ("unshare", "--pid", "--fork", "--mount-proc", "--propagation", "slave", *cmd)
        return subprocess.Popen(self.in_ns(self.node, *cmd), **kwargs)


class ClusterEnforcer(LabEnforcer):
    """`enforcer run` in one node of the cluster, in the node's own PID namespace."""

    def init_pid(self, timeout: float = 10.0) -> int:
        """The enforcer's PID (as the machine sees it): the child `unshare` forked."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
            except OSError:
                children = []
            if children:
                return int(children[0])
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise LabError(f"the enforcer of {self.lab.node} did not start:\n{self.log()}")

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM to the enforcer itself (`unshare` forwards nothing), then wait for `unshare`."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            try:
                os.kill(self.init_pid(timeout=1.0), signal.SIGTERM)
            except (LabError, ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        return self.proc.returncode


class ClusterController(LabController):
    """The reference controller in node A's namespace, listening on the underlay so node B reaches it,
    with one enrolled key per node."""

    def __init__(self, cluster: Cluster, policy: Path, node_grace_s: float = 120.0) -> None:
        from policy.keys import generate_keypair

        super().__init__(NodeView(cluster, "a", own_pids=False), node=cluster.node_name("a"),  # type: ignore[arg-type]
                         port=CONTROLLER_PORT, policy=policy)  # fmt: skip
        self.cluster = cluster
        self.node_grace_s = node_grace_s
        other = cluster.node_name("b")
        generate_keypair(self.keys, other)
        (self.clients / f"{other}.key").write_bytes((self.keys / f"{other}.key").read_bytes())

    def overrides_for(self, node: str) -> dict[str, dict[str, Any]]:
        name = self.cluster.node_name(node)
        return {
            "node": {"name": name},
            "controller": {
                "join_addr": f"{UNDERLAY['a'][0]}:{self.port}",
                "server_key": str(self.keys / "controller.key"),
                "client_key": str(self.keys / f"{name}.key_secret"),
                "heartbeat_s": 1,
                "timeout_s": 4,
            },
        }

    def start(self) -> ClusterController:
        log = open(self.tmp / "controller.log", "ab")
        self.proc = self.lab.popen(
            "node", sys.executable, "-m", "node.cli", "controller",
            "--policy-dir", str(self.policy_dir), "--db", str(self.db),
            "--listen", f"tcp://{UNDERLAY['a'][0]}:{self.port}", "--heartbeat", "1",
            "--node-grace", str(self.node_grace_s),
            "--secret-key", str(self.keys / "controller.key_secret"), "--clients", str(self.clients),
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        return self

    def log(self) -> str:
        try:
            return (self.tmp / "controller.log").read_text(errors="replace")[-6000:]
        except OSError:
            return ""


class Cluster:
    """Two lab nodes and their pods: `pods` maps a node ("a", "b") to its pods' short names."""

    def __init__(self, prefix: str, pods: dict[str, Sequence[str]]) -> None:
        if not prefix.isalnum() or len(prefix) > 6:
            raise LabError("cluster prefix: at most 6 letters or digits")
        self.prefix = prefix
        self.pods: dict[str, Pod] = {}
        for node, names in pods.items():
            v4, v6 = POD_SUBNETS[node]
            for i, name in enumerate(names, start=1):
                self.pods[name] = Pod(name, f"{prefix}-{name}", node, f"{v4}.{10 + i}", f"{v6}::{10 + i:x}")
        self._procs: list[subprocess.Popen[Any]] = []

    def node_ns(self, node: str) -> str:
        return f"{self.prefix}-n{node}"

    def node_name(self, node: str) -> str:
        return f"{self.prefix}-node-{node}"

    def view(self, node: str) -> NodeView:
        return NodeView(self, node, own_pids=True)

    # ---- building ------------------------------------------------------------------------------

    def up(self) -> Cluster:
        self.down()
        try:
            self._build()
        except BaseException:
            self.down()
            raise
        return self

    def _node_exec(self, node: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run(["ip", "netns", "exec", self.node_ns(node), *cmd], check=check)

    def _build(self) -> None:
        for node in ("a", "b"):
            _run(["ip", "netns", "add", self.node_ns(node)])
            self._node_exec(node, "ip", "link", "set", "lo", "up")
            for key, value in (
                ("net.ipv4.ip_forward", "1"),
                ("net.ipv6.conf.all.forwarding", "1"),
                ("net.ipv6.conf.default.accept_dad", "0"),
                ("net.netfilter.nf_conntrack_tcp_loose", "1"),
            ):
                self._node_exec(node, "sysctl", "-qw", f"{key}={value}", check=False)
            v4, v6 = POD_SUBNETS[node]
            self._node_exec(node, "ip", "link", "add", "br-pods", "type", "bridge")
            self._node_exec(node, "ip", "addr", "add", f"{v4}.1/24", "dev", "br-pods")
            self._node_exec(node, "ip", "-6", "addr", "add", f"{v6}::1/64", "dev", "br-pods", "nodad")
            self._node_exec(node, "ip", "link", "set", "br-pods", "up")
        # The underlay: a veth pair made inside node A, one end moved to node B.
        self._node_exec("a", "ip", "link", "add", "underlay", "type", "veth", "peer", "name", "underlay-b")
        self._node_exec("a", "ip", "link", "set", "underlay-b", "netns", self.node_ns("b"))
        self._node_exec("b", "ip", "link", "set", "underlay-b", "name", "underlay")
        for node, other in (("a", "b"), ("b", "a")):
            v4, v6 = UNDERLAY[node]
            self._node_exec(node, "ip", "addr", "add", f"{v4}/30", "dev", "underlay")
            self._node_exec(node, "ip", "-6", "addr", "add", f"{v6}/64", "dev", "underlay", "nodad")
            self._node_exec(node, "ip", "link", "set", "underlay", "up")
            o4, o6 = POD_SUBNETS[other]
            self._node_exec(node, "ip", "route", "add", f"{o4}.0/24", "via", UNDERLAY[other][0])
            self._node_exec(node, "ip", "-6", "route", "add", f"{o6}::/64", "via", UNDERLAY[other][1])
        for pod in self.pods.values():
            self._add_pod(pod)
        self._wait_reachable()

    def _add_pod(self, pod: Pod) -> None:
        _run(["ip", "netns", "add", pod.netns])
        pod_exec = ["ip", "netns", "exec", pod.netns]
        _run([*pod_exec, "ip", "link", "set", "lo", "up"])
        _run([*pod_exec, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0"], check=False)
        _run([*pod_exec, "sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0"], check=False)
        outer = f"v{self.prefix}{pod.name}"[:15]
        _run([*pod_exec, "ip", "link", "add", "eth0", "type", "veth", "peer", "name", outer])
        _run([*pod_exec, "ip", "link", "set", outer, "netns", self.node_ns(pod.node)])
        self._node_exec(pod.node, "ip", "link", "set", outer, "master", "br-pods")
        self._node_exec(pod.node, "ip", "link", "set", outer, "up")
        v4, v6 = POD_SUBNETS[pod.node]
        _run([*pod_exec, "ip", "addr", "add", f"{pod.ipv4}/24", "dev", "eth0"])
        _run([*pod_exec, "ip", "-6", "addr", "add", f"{pod.ipv6}/64", "dev", "eth0", "nodad"])
        _run([*pod_exec, "ip", "link", "set", "eth0", "up"])
        _run([*pod_exec, "ip", "route", "add", "default", "via", f"{v4}.1"])
        _run([*pod_exec, "ip", "-6", "route", "add", "default", "via", f"{v6}::1"])

    def _wait_reachable(self, timeout: float = 10.0) -> None:
        """Every pod answers from the other node (across the underlay), before any enforcer runs."""
        deadline = time.monotonic() + timeout
        for pod in self.pods.values():
            other = "b" if pod.node == "a" else "a"
            for addr in (pod.ipv4, pod.ipv6):
                while self._node_exec(other, "ping", "-c1", "-W1", "-q", addr, check=False).returncode != 0:
                    if time.monotonic() > deadline:
                        raise LabError(f"pod {pod.name} ({addr}) is not reachable from node {other}")
                    time.sleep(0.1)

    def down(self) -> None:
        """Stop the pod processes we started, remove every namespace of this cluster (also renamed pods
        and leftovers of an interrupted run)."""
        for proc in self._procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        self._procs.clear()
        listed = _run(["ip", "netns", "list"], check=False).stdout.split("\n")
        for ns in [line.split()[0] for line in listed if line.startswith(f"{self.prefix}-")]:
            _run(["ip", "netns", "del", ns], check=False)

    # ---- using ---------------------------------------------------------------------------------

    def start_in_pod(
        self, pod_name: str, enforcer: ClusterEnforcer | None, *cmd: str, **kwargs: Any
    ) -> subprocess.Popen[Any]:
        """A process in a pod, inside its node's PID namespace (so that node's enforcer sees it); with
        no enforcer, in the machine's (a pod no enforcer watches)."""
        pod = self.pods[pod_name]
        pid_ns = ["nsenter", "--target", str(enforcer.init_pid()), "--pid", "--"] if enforcer else []
        proc = subprocess.Popen([*pid_ns, "ip", "netns", "exec", pod.netns, *cmd], **kwargs)
        self._procs.append(proc)
        return proc

    def exec_in_pod(self, pod_name: str, *cmd: str, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        return _run(["ip", "netns", "exec", self.pods[pod_name].netns, *cmd], check=False, timeout=timeout)

    def rename_pod(self, pod_name: str, new_netns: str) -> None:
        """Give a running pod's network namespace a new name (its `netns` label changes with it)."""
        pod = self.pods[pod_name]
        if not new_netns.startswith(f"{self.prefix}-"):
            raise LabError(f"{new_netns}: cluster namespaces start with {self.prefix}-")
        pids = _run(["ip", "netns", "pids", pod.netns]).stdout.split()
        if not pids:
            raise LabError(f"pod {pod_name}: no process holds its namespace")
        _run(["ip", "netns", "attach", new_netns, pids[0]])
        _run(["ip", "netns", "del", pod.netns])  # the name only: the namespace lives on under the new one
        self.pods[pod_name] = Pod(pod.name, new_netns, pod.node, pod.ipv4, pod.ipv6)

    def __enter__(self) -> Cluster:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()
