"""A node for the `cri` tests: a lab node namespace with a real containerd (+ runc, CNI bridge) and the
real enforcer inline in it, configured to take pod identity from that containerd. Module-scoped (starting
containerd and the enforcer costs seconds); every test removes the pods it made."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lab.containerd import LabContainerd, LabPod
from lab.enforcer import LabEnforcer
from lab.topology import Lab
from policy.layout import tables_path
from policy.table_reader import SharedTables

HTTP_PORT = 8080
# Pods are selected by their Kubernetes labels and by the identity keys (core.workload_labels).
POLICY = f"""
version: 1
default_mode: monitor
groups:
  - {{name: web, mode: protect, members: [{{app: web, io.kubernetes.pod.namespace: shop}}]}}
  - {{name: frontend, mode: monitor, members: [{{role: frontend}}]}}
rules:
  - {{id: 1, from: frontend, to: web, ports: [tcp/{HTTP_PORT}], action: allow}}
"""


@dataclass
class CriNode:
    lab: Lab
    containerd: LabContainerd
    enforcer: LabEnforcer

    @property
    def run_dir(self) -> Path:
        return self.enforcer.tmp / "run"

    def tables(self) -> SharedTables:
        return SharedTables(tables_path(str(self.run_dir)), slot=None, cache=False)

    def workloads(self) -> dict[str, Any]:
        out = subprocess.run(
            [sys.executable, "-m", "node.cli", "workloads", "--json", "--run-dir", str(self.run_dir)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        return dict(json.loads(out.stdout))

    def web_pod(self, name: str, uid: str | None = None) -> LabPod:
        pod = self.containerd.run_pod(
            name, "shop", {"app": "web", "pod-template-hash": "5d8f7c9b4f"}, uid=uid
        )
        self.containerd.start_container(
            pod, "httpd", ["/bin/busybox", "httpd", "-f", "-p", str(HTTP_PORT), "-h", "/"]
        )
        return pod


def group_of(tables: SharedTables, address: str) -> str:
    packed = ipaddress.ip_address(address).packed
    return tables.decide(0, packed, packed, 6, 0).dst_group


def wait_group(tables: SharedTables, address: str, group: str, timeout: float = 15.0) -> float:
    """Poll the enforcer's shared tables until `address` is in `group`; the monotonic time it was seen."""
    deadline = time.monotonic() + timeout
    while True:
        now = time.monotonic()
        if group_of(tables, address) == group:
            return now
        if now > deadline:
            raise AssertionError(
                f"{address} not in group {group} after {timeout}s (now {group_of(tables, address)})"
            )
        time.sleep(0.005)


def http_get(client: LabPod, server: LabPod, address: str | None = None, timeout: int = 3) -> bool:
    """A real HTTP request from the client pod's network namespace to the server pod (its first address
    unless another of its addresses is given); True if answered."""
    host = address or server.ip
    host = f"[{host}]" if ":" in host else host
    out = subprocess.run(
        ["nsenter", f"--net={client.netns_path}", "curl", "-s", "-g", "--max-time", str(timeout),
         f"http://{host}:{HTTP_PORT}/etc/passwd"],
        capture_output=True, text=True, timeout=timeout + 10,
    )  # fmt: skip
    return out.returncode == 0 and "root:" in out.stdout


@pytest.fixture(scope="module")
def cri_node() -> Iterator[CriNode]:
    with Lab(f"cr{os.getpid() % 10000}", clients=0, servers=0, external=0) as lab:
        # pod-to-pod traffic is routed by the node namespace (lab.containerd), through the enforcer
        with LabContainerd(lab) as containerd:
            policy = containerd.tmp / "policy.yaml"
            policy.write_text(POLICY)
            overrides = {"cri": {"socket": containerd.socket}, "node": {"name": "lab-node"}}
            with LabEnforcer(lab, overrides=overrides, policy=policy) as enforcer:
                yield CriNode(lab, containerd, enforcer)
