"""Pod identity from a real containerd over the CRI, enforced on real traffic between real pods."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from lab.containerd import LabPod
from lab.oci_image import LAB_IMAGE
from node.runtime_child import INVENTORY_PERIOD_S
from tests.cri.conftest import CriNode, group_of, http_get, wait_group

pytestmark = [pytest.mark.cri, pytest.mark.netns]

MEMBERSHIP_BUDGET_S = 1.0  # the bound: a pod is in its groups within a second of starting
MEASUREMENTS = 3
WEB_LABELS = {
    "app": "web",
    "pod-template-hash": "5d8f7c9b4f",
}  # a loaded machine may be slow once: the measurement is repeated, never the assertion


@contextmanager
def pods(node: CriNode) -> Iterator[list[LabPod]]:
    made: list[LabPod] = []
    try:
        yield made
    finally:
        for pod in made:
            if pod.sandbox_id:
                node.containerd.remove_pod(pod)


def test_pod_identity_reaches_the_enforced_tables_within_a_second(cri_node: CriNode) -> None:
    tables = cri_node.tables()
    best = float("inf")
    with pods(cri_node) as made:
        for i in range(MEASUREMENTS):
            pod = cri_node.containerd.run_pod(f"web-5d8f7c9b4f-m{i}abc", "shop", WEB_LABELS)
            made.append(pod)
            started, returned = pod.started_at, pod.returned_at
            elapsed = wait_group(tables, pod.ip, "web") - returned
            print(
                f"\nRunPodSandbox {1000 * (returned - started):.0f} ms; its return → pod {pod.ip} in group web in the enforced tables: {1000 * elapsed:.0f} ms"
            )
            best = min(best, elapsed)
            if best < MEMBERSHIP_BUDGET_S:
                break
        assert best < MEMBERSHIP_BUDGET_S
        # the workloads command shows the pod with its identity, labels, containers and group
        cri_node.containerd.start_container(pod, "httpd", ["/bin/busybox", "httpd", "-f", "-p", "8080"])
        deadline = time.monotonic() + 10
        while True:
            view = cri_node.workloads()
            mine = [w for w in view["workloads"] if w.get("uid") == pod.uid]
            settled = mine and mine[0]["containers"] and view["cri"]["events"]
            if settled or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert mine, view
        w = mine[0]
        assert (w["pod"], w["namespace"], w["workload"], w["source"]) == (pod.name, "shop", "web", "cri")
        assert w["labels"] == WEB_LABELS and w["annotations"] == {"enforcer.lab/test": "cri"}
        assert len(pod.ips) == 2 and w["addresses"] == pod.ips  # dual-stack: ip and additional_ips
        assert w["groups"] == ["web"] and set(w["address_groups"].values()) == {"web"}
        assert [(c["name"], c["image"], c["state"]) for c in w["containers"]] == [
            ("httpd", LAB_IMAGE, "running")
        ]
        assert view["cri"]["connected"] and view["cri"]["runtime"].startswith("containerd")
        assert (
            view["cri"]["events"] == "containerd"
        )  # 1.6 has no CRI events: its own task events hurry the polls
        # the pod's processes are that pod, not also /proc workloads of their own
        assert not [
            x
            for x in view["workloads"]
            if x.get("source") == "proc" and x["labels"].get("pod_uid") == pod.uid
        ]


def test_label_selected_rule_allows_and_a_missing_label_denies(cri_node: CriNode) -> None:
    tables = cri_node.tables()
    ctd = cri_node.containerd
    with pods(cri_node) as made:
        web = cri_node.web_pod("web-5d8f7c9b4f-t1abc")
        made.append(web)
        front = ctd.run_pod("shop-ui-6c7d8e9f0a-t1abc", "shop", {"role": "frontend"})
        made.append(front)
        other = ctd.run_pod("batch-7e8f9a0b1c-t1abc", "shop", {"team": "data"})  # no role label
        made.append(other)
        for address in web.ips:
            wait_group(tables, address, "web")
        for address in front.ips:
            wait_group(tables, address, "frontend")
        deadline = time.monotonic() + 10  # `other` known to the enforcer (and in no group), not just unseen
        while other.uid not in {w.get("uid") for w in cri_node.workloads()["workloads"]}:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert {group_of(tables, a) for a in other.ips} == {"external"}
        for address in web.ips:  # IPv4 and IPv6
            assert http_get(front, web, address), cri_node.enforcer.log()
            assert not http_get(other, web, address)
        deadline = time.monotonic() + 10  # events are aggregated for a window, then written
        while True:
            denied = [
                e for e in cri_node.enforcer.events()
                if e["type"] == "violation" and e["flow"]["src"] == other.ip and e["flow"]["dst"] == web.ip
            ]  # fmt: skip
            if denied or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert denied and denied[0]["action"] == "deny" and denied[0]["server_group"] == "web"


def test_pod_restart_with_a_new_address_keeps_its_groups(cri_node: CriNode) -> None:
    tables = cri_node.tables()
    ctd = cri_node.containerd
    with pods(cri_node) as made:
        web = cri_node.web_pod("web-5d8f7c9b4f-r1abc")
        made.append(web)
        front = ctd.run_pod("shop-ui-6c7d8e9f0a-r1abc", "shop", {"role": "frontend"})
        made.append(front)
        wait_group(tables, web.ip, "web")
        ctd.remove_pod(web)  # the kubelet recreates a pod's sandbox: same UID, next attempt, new address
        again = cri_node.web_pod(web.name, uid=web.uid)
        made.append(again)
        assert again.ip != web.ip and again.ips[1] != web.ips[1]
        for address in again.ips:
            wait_group(tables, address, "web")
        wait_group(tables, front.ip, "frontend")
        deadline = time.monotonic() + 10
        while group_of(tables, web.ip) == "web":  # the old address leaves the group
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert http_get(front, again), cri_node.enforcer.log()
        view = cri_node.workloads()
        assert [w["addresses"] for w in view["workloads"] if w.get("uid") == web.uid] == [again.ips]


def test_containerd_restart_loses_no_identity(cri_node: CriNode) -> None:
    tables = cri_node.tables()
    ctd = cri_node.containerd
    with pods(cri_node) as made:
        web = cri_node.web_pod("web-5d8f7c9b4f-c1abc")
        made.append(web)
        front = ctd.run_pod("shop-ui-6c7d8e9f0a-c1abc", "shop", {"role": "frontend"})
        made.append(front)
        wait_group(tables, web.ip, "web")
        wait_group(tables, front.ip, "frontend")
        ctd.stop()  # containerd gone (by its PID); its pods keep running, as on a real node
        try:
            # Past a full inventory while the runtime is away: the last-known pods are still sent.
            time.sleep(INVENTORY_PERIOD_S + 1)
            view = cri_node.workloads()
            assert not view["cri"]["connected"]
            assert {web.uid, front.uid} <= {w.get("uid") for w in view["workloads"]}
            assert group_of(tables, web.ip) == "web" and group_of(tables, front.ip) == "frontend"
            assert http_get(front, web)
        finally:
            ctd.start()
        deadline = time.monotonic() + 30  # reconnect back-off (at most cri.reconnect_max_s) + an inventory
        while not cri_node.workloads()["cri"]["connected"]:
            assert time.monotonic() < deadline, cri_node.enforcer.log()
            time.sleep(0.2)
        assert group_of(tables, web.ip) == "web" and group_of(tables, front.ip) == "frontend"
        newcomer = ctd.run_pod("web-5d8f7c9b4f-c2abc", "shop", {"app": "web"})  # followed again after restart
        made.append(newcomer)
        wait_group(tables, newcomer.ip, "web", timeout=5)
        counters = next(
            c["counters"] for c in cri_node.enforcer.status()["children"] if c["name"].startswith("runtime")
        )
        assert counters.get("cri.disconnects", 0) >= 1 and counters.get("cri.connects", 0) >= 2
        assert http_get(front, web)
        labels = next(w["labels"] for w in cri_node.workloads()["workloads"] if w.get("uid") == newcomer.uid)
        assert labels == {"app": "web"}
