"""The runtime child's inventory: pods from the CRI replace what /proc saw of them; the rest stays."""

from __future__ import annotations

import json
from pathlib import Path

from core import workload_labels as WL
from node.runtime_child import WORKLOADS_VIEW, WorkloadInventory
from runtime.cri.pods import Container, PodIdentity
from runtime.identity import Workload

UID = "7c3e1a2b-4d5f-4a6b-8c9d-0e1f2a3b4c5d"
CID = "c" * 64


class StubWatcher:
    """What the inventory reads of a CriWatcher (its own interface, no runtime behind it)."""

    socket_path, connected, runtime, events_source = (
        "/run/containerd/containerd.sock",
        True,
        "containerd 1.6",
        "",
    )

    def __init__(self) -> None:
        self.pods: dict[str, PodIdentity] = {}
        self.delta: tuple[list[PodIdentity], list[str]] = ([], [])

    def take_all(self) -> dict[str, PodIdentity]:
        return dict(self.pods)

    def take_delta(self) -> tuple[list[PodIdentity], list[str]]:
        delta, self.delta = self.delta, ([], [])
        return delta


def _pod() -> PodIdentity:
    return PodIdentity(UID, "web-0", "shop", "s" * 64, {"app": "web"}, {}, ("198.18.40.5",), False,
                       (Container(CID, "httpd", "busybox:1", "running"),))  # fmt: skip


def test_a_reported_pod_replaces_its_proc_stand_ins_and_others_stay(tmp_path: Path) -> None:
    watcher = StubWatcher()
    inventory = WorkloadInventory("node-a", watcher, str(tmp_path))  # type: ignore[arg-type]
    # what /proc saw before the runtime reported the pod: its container, and an unrelated lab pod
    inventory.procs = {
        f"container:{CID}": (Workload(f"container:{CID}", "container", CID, None, 1, None, "/x"), frozenset({"198.18.40.5"})),
        "netns:lab-c1": (Workload("netns:lab-c1", "netns", None, None, 2, "lab-c1", ""), frozenset({"198.18.1.11"})),
    }  # fmt: skip
    assert inventory.delta() is None  # nothing reported yet
    watcher.delta = ([_pod()], [])
    update = inventory.delta()
    assert update is not None and not update.full
    ((key, addresses, labels),) = update.workloads
    assert key == UID and addresses == [bytes([198, 18, 40, 5])] and labels["app"] == "web"
    assert update.removed == [f"container:{CID}"]  # the stand-in goes in the same message
    view = json.loads((tmp_path / WORKLOADS_VIEW).read_text())
    assert {w["key"] for w in view["workloads"]} == {UID, "netns:lab-c1"}
    assert (tmp_path / WORKLOADS_VIEW).stat().st_mode & 0o777 == 0o600
    watcher.delta = ([], [UID])
    gone = inventory.delta()
    assert gone is not None and gone.removed == [UID] and gone.workloads == []


def test_the_monitor_gets_each_pods_labels_under_every_key_its_processes_carry(tmp_path: Path) -> None:
    """Process profiles select on the runtime's pod labels too: the inventory hands them to the monitor's
    profile source by pod UID, sandbox and container id (the key a cgroup path gives depends on the
    cgroup driver), and the merged policy changes only when the labels do."""
    from node.runtime_child import PublishedProfiles
    from runtime.identity import group_of
    from runtime.profiles import RuntimePolicy, policy_from_dict

    profiles = PublishedProfiles(str(tmp_path))  # nothing published in tmp_path: the empty policy
    watcher = StubWatcher()
    inventory = WorkloadInventory("node-a", watcher, str(tmp_path), profiles.set_pod_labels)  # type: ignore[arg-type]
    assert profiles() == RuntimePolicy()
    watcher.delta = ([_pod()], [])
    assert inventory.delta() is not None
    merged = profiles()
    assert set(merged.workload_labels) == {UID, "s" * 64, CID}
    assert (
        merged.workload_labels[CID]["app"] == "web"
        and merged.workload_labels[UID][WL.POD_NAMESPACE] == "shop"
    )
    assert profiles() is merged  # unchanged labels: the same policy object, no regrouping
    # A container known only by its id (cgroupfs driver) lands in the group its pod's labels select.
    groups = policy_from_dict(
        {"groups": [{"name": "web", "selector": {"matchLabels": {"app": "web"}}}]}
    ).groups
    container = Workload(f"container:{CID}", "container", CID, None, 1, None, "/k8s.io/" + CID)
    assert group_of(container, groups, merged.workload_labels) == "web"
    watcher.delta = ([], [UID])
    inventory.delta()
    assert profiles().workload_labels == {}
