"""Groups across nodes over the real controller link (ZeroMQ, CURVE, loopback): a workload reported
by one node's policy process lands in another node's shared tables by its labels; a controller restart
keeps it (grace) and re-establishes reports and membership."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from core.lookup import Action
from core.policy_input import WorkloadUpdate, encode_policy_input, policy_input_endpoint
from policy.table_reader import open_shared_tables
from tests.policy.conftest import ip
from tests.policy.test_policy_link import Lab, wait_for

POLICY = """
version: 1
default_mode: protect
groups:
  - {name: clients, members: [198.18.1.0/24]}
  - name: web
    mode: protect
    members: [{criteria: [{key: app, op: "=", value: web}, {key: app, op: "=", value: www}]}]
rules:
  - {id: 10, from: clients, to: web, ports: [tcp/80], action: allow}
"""


@pytest.fixture
def lab(private_dir: Path) -> Iterator[Lab]:
    lab = Lab(private_dir)
    (lab.policy_dir / "lab.yaml").write_text(POLICY)
    try:
        yield lab
    finally:
        lab.close()


def report(run_dir: str, workloads: list[tuple[str, str, dict[str, str]]]) -> None:
    """What node-1's runtime child sends its policy process: the node's inventory."""
    update = WorkloadUpdate("runtime", True, [(w, [ip(a)], labels) for w, a, labels in workloads], [])
    ctx = zmq.Context()
    try:
        push = ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 2000)
        push.connect(policy_input_endpoint(run_dir))
        push.send(encode_policy_input(update))
        push.close()
    finally:
        ctx.term()


def test_a_workload_of_one_node_is_grouped_by_its_labels_on_the_other(lab: Lab) -> None:
    lab.start_controller()
    one, three = (
        lab.settings("node-1"),
        lab.settings(
            "node-3",
        ),
    )
    service_one = lab.start_service(one)
    service_three = lab.start_service(three)
    tables = open_shared_tables(three.run_dir, slot=0)
    client, pod = ip("198.18.1.5"), ip("198.18.12.7")
    try:
        wait_for(lambda: service_three.applier.version == 1 and service_one.link.ready, what="both linked")
        assert tables.decide(4, client, pod, 6, 80).action == Action.DENY  # unknown: external, protect
        report(
            one.run_dir, [("pod-a", "198.18.12.7", {"app": "www"}), ("pod-b", "198.18.12.8", {"app": "x"})]
        )
        wait_for(lambda: tables.decide(4, client, pod, 6, 80).action == Action.ALLOW, what="remote web pod")
        assert tables.decide(4, client, pod, 6, 80).dst_group == "web"
        assert tables.decide(4, client, ip("198.18.12.8"), 6, 80).dst_group == "external"  # no group wants it
        assert set(service_three.members.remote) == {"node-1/pod-a"}  # only what matters is distributed
        # relabelled on node-1: node-3 follows (a delta)
        report(one.run_dir, [("pod-a", "198.18.12.7", {"app": "other"})])
        wait_for(lambda: tables.decide(4, client, pod, 6, 80).action == Action.DENY, what="relabel seen")
        report(one.run_dir, [("pod-a", "198.18.12.7", {"app": "web"})])
        wait_for(lambda: tables.decide(4, client, pod, 6, 80).action == Action.ALLOW, what="label back")
        # the controller restarts: node-3 keeps the remote pod meanwhile, then both sessions start over
        lab.stop_controller()
        assert tables.decide(4, client, pod, 6, 80).action == Action.ALLOW
        lab.start_controller()
        wait_for(lambda: service_one.link.ready and service_three.link.ready, what="relinked")
        report(
            one.run_dir, [("pod-a", "198.18.12.7", {"app": "www"}), ("pod-c", "198.18.12.9", {"app": "web"})]
        )
        wait_for(
            lambda: tables.decide(4, client, ip("198.18.12.9"), 6, 80).action == Action.ALLOW, what="new pod"
        )
        assert tables.decide(4, client, pod, 6, 80).action == Action.ALLOW
        assert service_three.counters["policy.memberships"] >= 2
    finally:
        tables.close()
