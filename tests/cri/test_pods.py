"""Pod identities from CRI messages (the runtime.v1 messages themselves, built as a runtime sends them)."""

from __future__ import annotations

import dataclasses

from core import workload_labels as WL
from runtime.cri import cri_api_pb2 as api
from runtime.cri.pods import (
    MAX_LABEL_VALUE,
    MAX_LABELS,
    ContainerInfo,
    PodIdentity,
    build_pods,
    container_info,
    sandbox_info,
    workload_name,
)

UID = "0b7b4f3c-6d3e-4a55-9d1c-2f0e5a1b2c3d"


def _status(
    sid: str = "s1",
    ip: str = "198.18.40.2",
    extra: tuple[str, ...] = (),
    network: int = 0,
    created: int = 1,
    **labels: str,
) -> api.PodSandboxStatus:
    return api.PodSandboxStatus(
        id=sid,
        metadata=api.PodSandboxMetadata(name="web-5d8f7c9b4f-x2k9q", uid=UID, namespace="shop", attempt=0),
        state=api.SANDBOX_READY,
        created_at=created,
        network=api.PodSandboxNetworkStatus(ip=ip, additional_ips=[api.PodIP(ip=a) for a in extra]),
        linux=api.LinuxPodSandboxStatus(
            namespaces=api.Namespace(options=api.NamespaceOption(network=network))
        ),
        labels=labels,
        annotations={"owner": "team-a"},
    )


def test_workload_name_strips_what_each_controller_adds() -> None:
    assert workload_name("web-5d8f7c9b4f-x2k9q", {"pod-template-hash": "5d8f7c9b4f"}) == "web"
    assert workload_name("my-db-2", {"statefulset.kubernetes.io/pod-name": "my-db-2"}) == "my-db"
    ds = {"controller-revision-hash": "6c5b8d", "pod-template-generation": "1"}
    assert workload_name("node-agent-7xk2p", ds) == "node-agent"
    assert workload_name("backup-28400000-abcde", {"job-name": "backup-28400000"}) == "backup-28400000"
    assert workload_name("debug-shell", {}) == "debug-shell"  # a bare pod keeps its name
    # a template hash that is not in the name changes nothing
    assert workload_name("web-x2k9q", {"pod-template-hash": "5d8f7c9b4f"}) == "web-x2k9q"


def test_sandbox_status_gives_addresses_labels_and_annotations() -> None:
    info = sandbox_info(_status(extra=("fd00:198:18:40::2", "not-an-ip", "198.18.40.2"), app="web"))
    assert info.addresses == ("198.18.40.2", "fd00:198:18:40::2")  # deduplicated, bad one dropped
    assert info.uid == UID and info.namespace == "shop" and info.labels == {"app": "web"}
    assert info.annotations == {"owner": "team-a"} and not info.host_network


def test_host_network_pod_carries_no_addresses() -> None:
    info = sandbox_info(_status(network=api.NODE, app="agent"))
    assert info.host_network and info.addresses == ()  # the node's address is no pod's identity


def test_policy_labels_are_the_pod_labels_plus_the_identity_keys() -> None:
    sb = sandbox_info(_status(app="web", tier="front", **{"pod-template-hash": "5d8f7c9b4f"}))
    status = api.ContainerStatus(
        id="c1", metadata=api.ContainerMetadata(name="nginx"), image=api.ImageSpec(image="nginx:1.25")
    )
    side = api.ContainerStatus(
        id="c2", metadata=api.ContainerMetadata(name="proxy"), image=api.ImageSpec(image="envoy:1.30")
    )
    infos = {c.id: container_info(c, "s1") for c in (status, side)}
    pods, left_out = build_pods(["s1"], {"s1": sb}, [("c1", 1), ("c2", 0)], infos, 10)
    assert left_out == 0
    labels = pods[UID].policy_labels("node-a")
    assert labels["app"] == "web" and labels["tier"] == "front"
    assert labels[WL.POD_NAME] == "web-5d8f7c9b4f-x2k9q"
    assert labels[WL.POD_NAMESPACE] == "shop"
    assert labels[WL.POD_UID] == UID
    assert labels[WL.WORKLOAD_NAME] == "web"
    assert labels[WL.NODE] == "node-a"
    assert labels[WL.IMAGES] == "envoy:1.30,nginx:1.25"
    view = pods[UID].to_dict("node-a")
    assert [(c["name"], c["state"]) for c in view["containers"]] == [
        ("nginx", "running"),
        ("proxy", "created"),
    ]


def test_a_pod_cannot_override_identity_keys_or_exceed_the_bounds() -> None:
    many = {f"k{i:03d}": "v" * (MAX_LABEL_VALUE + 50) for i in range(MAX_LABELS + 20)}
    many[WL.POD_NAMESPACE] = "kube-system"  # a label pretending to be the namespace
    pod = PodIdentity(UID, "p", "shop", "s1", many, {}, ("198.18.40.9",), False)
    labels = pod.policy_labels("n")
    assert labels[WL.POD_NAMESPACE] == "shop"
    assert len(labels) <= MAX_LABELS
    assert max(len(v) for v in labels.values()) <= MAX_LABEL_VALUE


def test_a_sandbox_without_a_usable_uid_is_left_out() -> None:
    bad = sandbox_info(_status("bad", app="web"))
    empty = sandbox_info(_status("empty", app="web"))
    bad = dataclasses.replace(bad, uid="u" * 200)
    empty = dataclasses.replace(empty, uid="")
    pods, _ = build_pods(["bad", "empty"], {"bad": bad, "empty": empty}, [], {}, 10)
    assert pods == {}
    long_key = PodIdentity(UID, "p", "shop", "s", {"k" * 400: "v", "app": "web"}, {}, (), False)
    assert "k" * 400 not in long_key.policy_labels("n") and long_key.policy_labels("n")["app"] == "web"


def test_the_newest_ready_sandbox_of_a_pod_counts() -> None:
    old = sandbox_info(_status("old", ip="198.18.40.2", created=100, app="web"))
    new = sandbox_info(_status("new", ip="198.18.40.3", created=200, app="web"))
    infos = {
        "c-old": ContainerInfo("c-old", "old", "app", "img"),
        "c-new": ContainerInfo("c-new", "new", "app", "img"),
    }
    pods, _ = build_pods(["old", "new"], {"old": old, "new": new}, [("c-old", 2), ("c-new", 1)], infos, 10)
    assert list(pods) == [UID]
    assert pods[UID].addresses == ("198.18.40.3",) and pods[UID].sandbox_id == "new"
    assert [c.id for c in pods[UID].containers] == ["c-new"]


def test_pods_over_the_bound_are_counted() -> None:
    sandboxes = {}
    for i in range(3):
        st = _status(f"s{i}", ip=f"198.18.40.{10 + i}", created=i)
        st.metadata.uid = f"{UID[:-1]}{i}"
        sandboxes[f"s{i}"] = sandbox_info(st)
    pods, left_out = build_pods(list(sandboxes), sandboxes, [], {}, 2)
    assert len(pods) == 2 and left_out == 1
