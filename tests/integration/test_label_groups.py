"""Groups by workload identity: the runtime side finds the pods, the policy process maps their addresses."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from lab.enforcer import LabEnforcer
from lab.topology import Lab
from tests.integration.conftest import tcp

pytestmark = pytest.mark.netns

POLICY = """
version: 1
default_mode: monitor
groups:
  - {name: clients, mode: monitor, members: [198.18.1.0/24]}
  - {name: web, mode: protect, members: [{netns: %s}]}
rules:
  - {id: 1, from: clients, to: web, ports: [tcp/80], action: allow}
"""


def test_group_by_workload_label_is_enforced(lab: Lab, tmp_path: Path) -> None:
    policy = tmp_path / "labels.yaml"
    policy.write_text(POLICY % lab.host("s1").netns)  # web = the pod whose network namespace is s1's
    with LabEnforcer(lab, policy=policy) as e:
        deadline = time.monotonic() + 15  # the runtime side reports the node's workloads every few seconds
        outcome = ""
        while time.monotonic() < deadline:
            outcome = str(tcp(lab, "c1", lab.host("s1").ipv4, 22, timeout=1)["error"])
            if outcome in ("refused", "reset"):
                break
            time.sleep(0.5)
        assert outcome in ("refused", "reset"), e.log()
        assert tcp(lab, "c1", lab.host("s1").ipv4, 80)["ok"]  # the allowed port still works
        assert tcp(lab, "c1", lab.host("s2").ipv4, 22)["ok"]  # s2 is in no group: monitor
