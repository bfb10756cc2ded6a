"""Groups across nodes with pod identity from the container runtime: node B's pods are created through
the CRI of a real containerd on node B, labelled as Kubernetes labels them; node A's enforcer learns
their labels only from the controller (B's enforcer reports what its CRI watcher saw), and a client pod
on node A reaches B's pod only if B's pod carries the label the rule selects."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from lab.cluster import UNDERLAY, Cluster, ClusterController, ClusterEnforcer
from lab.containerd import LabContainerd, LabPod

pytestmark = [pytest.mark.cri, pytest.mark.netns]

PREFIX = f"cc{os.getpid() % 10000}"
POD_SUBNET_B = "198.18.13.0/24"  # node B's CRI pods (the CNI bridge's range), routed from node A
PORT = 8080
POLICY = f"""
version: 1
default_mode: protect  # a pod no group selects is denied
groups:
  - name: clients
    mode: protect
    members: [{{matchLabels: {{netns: {PREFIX}-cli1}}}}]
  - name: db
    mode: protect
    members: [{{matchLabels: {{app: db}}, namespaces: [shop]}}]
rules:
  - {{id: 1, from: clients, to: db, ports: [tcp/{PORT}], action: allow}}
"""


@dataclass
class TwoNodes:
    cluster: Cluster
    controller: ClusterController
    containerd: LabContainerd  # node B's

    def server_pod(self, name: str, labels: dict[str, str]) -> LabPod:
        pod = self.containerd.run_pod(name, "shop", labels)
        self.containerd.start_container(
            pod, "httpd", ["/bin/busybox", "httpd", "-f", "-p", str(PORT), "-h", "/"]
        )
        return pod

    def fetch(self, address: str) -> bool:
        """A real HTTP request from node A's client pod; True if answered."""
        out = self.cluster.exec_in_pod("cli1", "curl", "-s", "--max-time", "2", f"http://{address}:{PORT}/etc/passwd",
                                       timeout=15)  # fmt: skip
        return out.returncode == 0 and "root:" in out.stdout


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TwoNodes]:
    from tests.integration.test_cross_node import serve

    policy = tmp_path_factory.mktemp("cross-node-cri") / "policy.yaml"
    policy.write_text(POLICY)
    with Cluster(PREFIX, {"a": ["cli1"], "b": []}) as cluster:
        cluster.view("a").node_exec("ip", "route", "add", POD_SUBNET_B, "via", UNDERLAY["b"][0])
        controller = ClusterController(cluster, policy, node_grace_s=60)
        enforcers: list[ClusterEnforcer] = []
        with LabContainerd(cluster.view("b"), subnet=POD_SUBNET_B) as containerd:  # type: ignore[arg-type]
            try:
                controller.start()
                for node, cri_socket in (("a", ""), ("b", containerd.socket)):
                    overrides = {**controller.overrides_for(node), "cri": {"socket": cri_socket}}
                    e = ClusterEnforcer(cluster.view(node), overrides=overrides, policy=None)  # type: ignore[arg-type]
                    enforcers.append(e)
                    e.start()
                serve(cluster, "cli1", enforcers[0])  # a process in the pod: node A's runtime child sees it
                yield TwoNodes(cluster, controller, containerd)
            finally:
                for e in enforcers:
                    e.cleanup()
                controller.stop()
                controller.__exit__()


def test_a_pod_on_another_node_is_reached_by_its_kubernetes_labels(nodes: TwoNodes) -> None:
    db = nodes.server_pod("db-0", {"app": "db", "pod-template-hash": "6c9f8d7b5"})
    cache = nodes.server_pod("cache-0", {"app": "cache"})
    started = time.monotonic()
    # node A knows db-0's labels only through the controller: retry the request while they propagate
    # (B's CRI watcher, B's report, the controller's membership, A's recompile), not the assertion
    deadline = started + 30
    while not nodes.fetch(db.ip) and time.monotonic() < deadline:
        time.sleep(0.5)
    reached = time.monotonic() - started
    assert nodes.fetch(db.ip), nodes.controller.log()
    print(f"cross-node: {db.ip} (app=db on node B) reachable from node A {reached:.1f}s after its start",
          file=sys.stderr)  # fmt: skip
    # the other pod runs the same server on the same node, without the label: refused on both nodes
    assert not nodes.fetch(cache.ip)
