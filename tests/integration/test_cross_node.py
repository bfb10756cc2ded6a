"""Groups across nodes: two lab nodes, an enforcer on each, one controller; a pod on node A may reach a
pod on node B only by the labels of B's pod, which node A learns from the controller alone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.cluster import Cluster, ClusterController, ClusterEnforcer

pytestmark = pytest.mark.netns

PREFIX = f"cn{os.getpid() % 10000}"
GRACE_S = 8.0  # the controller keeps a silent node's workloads this long
POLICY = f"""
version: 1
default_mode: protect  # anything no group selects is denied: an unknown pod cannot pass
groups:
  - name: clients
    mode: protect
    members: [{{matchLabels: {{netns: {PREFIX}-cli1}}}}]
  - name: web
    mode: protect
    members: [{{criteria: [{{key: netns, op: prefix, value: {PREFIX}-web}}]}}]
rules:
  - {{id: 1, from: clients, to: web, ports: [tcp/80], action: allow}}
"""


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Cluster, ClusterController, list[ClusterEnforcer]]]:
    policy = tmp_path_factory.mktemp("cross-node") / "policy.yaml"
    policy.write_text(POLICY)
    with Cluster(PREFIX, {"a": ["cli1"], "b": ["web1", "b2"]}) as c:
        controller = ClusterController(c, policy, node_grace_s=GRACE_S)
        enforcers: list[ClusterEnforcer] = []
        try:
            controller.start()
            for node in ("a", "b"):
                e = ClusterEnforcer(c.view(node), overrides=controller.overrides_for(node), policy=None)  # type: ignore[arg-type]
                enforcers.append(e)
                e.start()
            for pod in ("cli1", "web1", "b2"):  # every pod runs a server: its node's runtime child sees it
                serve(c, pod, enforcers[0 if c.pods[pod].node == "a" else 1])
            yield c, controller, enforcers
        finally:
            for e in enforcers:
                e.cleanup()
            controller.stop()
            controller.__exit__()


def connect(c: Cluster, pod: str, addr: str, port: int = 80) -> str:
    out = c.exec_in_pod(pod, sys.executable, "-m", "lab.traffic", "tcp", addr, str(port), "--bytes", "2000",
                        "--timeout", "2", timeout=15)  # fmt: skip
    result = json.loads(out.stdout)
    return "ok" if result["ok"] else str(result["error"])


def wait_for(c: Cluster, pod: str, addr: str, want: str, seconds: float) -> str:
    """Retry the connection (not the assertion) while membership propagates: runtime inventory every
    5 s, then the controller and the other node's recompile."""
    deadline = time.monotonic() + seconds
    outcome = connect(c, pod, addr)
    while outcome != want and time.monotonic() < deadline:
        time.sleep(0.5)
        outcome = connect(c, pod, addr)
    return outcome


Cluster3 = tuple[Cluster, ClusterController, list[ClusterEnforcer]]


def test_a_remote_pod_is_reached_only_by_its_labels(cluster: Cluster3) -> None:
    c, controller, _ = cluster
    web1, b2 = c.pods["web1"], c.pods["b2"]
    # web1 (node B) carries the web label: node A's enforcer knows it only through the controller
    assert wait_for(c, "cli1", web1.ipv4, "ok", 30) == "ok", controller.log()
    assert wait_for(c, "cli1", web1.ipv6, "ok", 10) == "ok"
    # b2 (node B) has no web label: the clients' protect mode refuses it on both nodes
    outcome = connect(c, "cli1", b2.ipv4)
    assert outcome in ("refused", "reset", "timeout"), outcome
    # give b2 the label (its network namespace gets a web name): now it passes
    c.rename_pod("b2", f"{PREFIX}-web2")
    assert wait_for(c, "cli1", b2.ipv4, "ok", 30) == "ok", controller.log()


def test_every_node_and_its_workloads_are_known_to_the_controller(cluster: Cluster3) -> None:
    c, controller, _ = cluster
    want = {c.node_name("a"), c.node_name("b")}
    nodes: dict[str, dict] = {}
    deadline = time.monotonic() + 10  # the store is written by the running controller: read again if busy
    while True:
        out = subprocess.run(
            [sys.executable, "-m", "node.cli", "controller", "nodes", "--db", str(controller.db)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        nodes = (
            {n["node"]: n for n in map(json.loads, out.stdout.splitlines())} if out.returncode == 0 else {}
        )
        if set(nodes) == want or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert set(nodes) == want, out.stderr
    counters_a = nodes[c.node_name("a")]["counters"]
    assert counters_a.get("policy.memberships", 0) >= 1, counters_a
    # node A holds node B's pods only as remote workloads: none of them is also one of its own (its
    # runtime child sees only its PID namespace), so none is shadowed by a local one
    assert counters_a.get("policy.remote_conflicts") == 0, counters_a
    assert Path(controller.db).exists()


def serve(c: Cluster, pod: str, enforcer: ClusterEnforcer | None) -> None:
    proc = c.start_in_pod(pod, enforcer, sys.executable, "-m", "lab.traffic", "serve", "--seconds", "300",
                          "--tcp", "80", stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"


def test_a_silent_nodes_workloads_are_dropped_after_the_grace(cluster: Cluster3) -> None:
    """Node B's enforcer stops (and its pods' processes with its PID namespace): the controller keeps
    B's workloads for the grace, so node A still lets cli1 reach web1 (served again, now unwatched);
    after the silence limit and the grace, node A learns they are gone and refuses. Runs last."""
    c, controller, enforcers = cluster
    web1 = c.pods["web1"]
    assert wait_for(c, "cli1", web1.ipv4, "ok", 30) == "ok"
    enforcers[1].stop()
    stopped = time.monotonic()
    serve(c, "web1", None)
    assert connect(c, "cli1", web1.ipv4) == "ok"  # within the grace: node A still knows web1
    outcome = "ok"
    deadline = stopped + 5 + GRACE_S + 20  # silence limit (3 heartbeats, >= 5 s), grace, margin
    while outcome == "ok" and time.monotonic() < deadline:
        time.sleep(0.5)
        outcome = connect(c, "cli1", web1.ipv4)
    dropped_after = time.monotonic() - stopped
    assert outcome in ("refused", "reset", "timeout"), controller.log()
    assert dropped_after >= GRACE_S, f"dropped after {dropped_after:.1f} s, before the {GRACE_S} s grace"
