"""Groups across nodes, unit level: the wire messages, the node's reports, the controller's membership."""

from __future__ import annotations

import ipaddress
from collections import Counter

import pytest

from controller.membership import ClusterMembership, PeerMembership
from core import control as C
from core import workload_labels as WL
from core.messages import MessageError
from core.policy_input import WorkloadUpdate
from policy.members import Members

POLICY = {
    "version": 1,
    "groups": [
        {
            "name": "web",
            "mode": "protect",
            "members": [{"criteria": [{"key": "app", "op": "=", "value": "web"}]}],
        },
        {"name": "db", "members": [{"matchLabels": {"app": "db"}}]},
        {"name": "net", "members": ["198.18.0.0/24"]},
    ],
}


def addr(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def test_report_and_membership_round_trip_on_the_wire() -> None:
    report = C.WorkloadReport(3, True, [("w1", [addr("198.18.11.5")], {"app": "web"})], ["gone"])
    assert C.decode_control(C.encode_control(report)) == report
    member = C.Membership(7, 6, False, [("a/w1", "a", [addr("fd00::5")], {"app": "web"})], ["a/w0"])
    assert C.decode_control(C.encode_control(member)) == member
    for ack in (C.WorkloadReportAck(3, False), C.MembershipAck(7, True)):
        assert C.decode_control(C.encode_control(ack)) == ack


@pytest.mark.parametrize(
    "items",
    [
        [["w1", [b"\x01\x02\x03"], {}]],  # a 3-byte address
        [["w1", [], {"app": 5}]],  # a label that is not a string
        [["", [], {}]],  # no id
        [["w1", [], {}]] * (C.MAX_WORKLOADS_PER_MESSAGE + 1),  # beyond the bound
    ],
)
def test_bad_reports_are_refused_by_the_decoder(items: list) -> None:
    import msgpack

    frame = msgpack.packb(
        [C.CONTROL_PROTOCOL, C.ControlType.WORKLOADS, 1, True, items, []], use_bin_type=True
    )
    with pytest.raises(MessageError):
        C.decode_control([frame])


def update(*workloads: tuple[str, str, dict[str, str]]) -> WorkloadUpdate:
    return WorkloadUpdate("runtime", True, [(w, [addr(a)], labels) for w, a, labels in workloads], [])


def test_node_reports_full_once_then_deltas_and_full_again_after_a_resync() -> None:
    members = Members(Counter())
    members.take_workloads(update(("w1", "198.18.11.5", {"app": "web"}), ("w2", "198.18.11.6", {"app": "x"})))
    (first,) = members.reports()
    assert first.full and {w[0] for w in first.workloads} == {"w1", "w2"}
    assert members.reports() == []  # nothing changed
    members.take_workloads(update(("w1", "198.18.11.5", {"app": "db"})))
    (delta,) = members.reports()
    assert not delta.full and delta.seq == first.seq + 1
    assert [w[0] for w in delta.workloads] == ["w1"] and delta.removed == ["w2"]
    members.resync_report()
    (again,) = members.reports()
    assert again.full and [w[0] for w in again.workloads] == ["w1"]


def test_large_inventories_are_split_into_bounded_messages() -> None:
    members = Members(Counter())
    n = C.MAX_WORKLOADS_PER_MESSAGE + 10
    members.take_workloads(
        WorkloadUpdate("runtime", True, [(f"w{i}", [(i + 1).to_bytes(4, "big")], {}) for i in range(n)], [])
    )
    reports = members.reports()
    assert [r.full for r in reports] == [True, False]
    assert sum(len(r.workloads) for r in reports) == n
    cluster = ClusterMembership(Counter())
    assert all(cluster.take_report("a", r) for r in reports)
    assert len(cluster.nodes["a"].workloads) == n


def test_controller_distributes_only_relevant_workloads_of_other_nodes() -> None:
    cluster = ClusterMembership(Counter())
    cluster.set_policy(POLICY)
    cluster.take_report("a", C.WorkloadReport(1, True, [("w1", [addr("198.18.11.5")], {"app": "web"})], []))
    cluster.take_report("b", C.WorkloadReport(1, True, [
        ("w2", [addr("198.18.12.5")], {"app": "db"}), ("w3", [addr("198.18.12.6")], {"app": "other"})], []))  # fmt: skip
    peer_a, peer_b = PeerMembership(), PeerMembership()
    (to_a,) = cluster.updates_for("a", peer_a)
    assert to_a.full and [w[0] for w in to_a.workloads] == ["b/w2"]  # w3: no group wants it
    assert to_a.workloads[0][3][WL.NODE] == "b"  # the node label is filled in without the CRI
    (to_b,) = cluster.updates_for("b", peer_b)
    assert [w[0] for w in to_b.workloads] == ["a/w1"]
    assert cluster.updates_for("a", peer_a) == []  # up to date
    # b relabels w3 into the web group and w2 out of every group: a delta of the next generation
    assert cluster.take_report("b", C.WorkloadReport(2, False, [
        ("w3", [addr("198.18.12.6")], {"app": "web"}), ("w2", [addr("198.18.12.5")], {"app": "none"})], []))  # fmt: skip
    (delta,) = cluster.updates_for("a", peer_a)
    assert not delta.full and delta.base == to_a.generation
    assert [w[0] for w in delta.workloads] == ["b/w3"] and delta.removed == ["b/w2"]


def test_a_report_gap_is_refused_and_a_silent_node_expires_after_the_grace() -> None:
    counters: Counter[str] = Counter()
    cluster = ClusterMembership(counters, grace_s=10.0)
    cluster.set_policy(POLICY)
    assert cluster.take_report(
        "b", C.WorkloadReport(1, True, [("w2", [addr("198.18.12.5")], {"app": "db"})], [])
    )
    assert not cluster.take_report("b", C.WorkloadReport(3, False, [], ["w2"]))  # seq 2 was missed
    peer = PeerMembership()
    cluster.updates_for("a", peer)
    cluster.node_lost("b", now=100.0)
    assert cluster.expire(now=105.0) == []  # within the grace: kept
    assert cluster.updates_for("a", peer) == []
    assert cluster.expire(now=111.0) == ["b"]
    (gone,) = cluster.updates_for("a", peer)
    assert gone.removed == ["b/w2"]
    assert counters["membership.workloads_expired"] == 1


def test_enforcer_merges_remote_workloads_local_wins_and_drops_them_after_the_grace() -> None:
    counters: Counter[str] = Counter()
    members = Members(counters, remote_grace_s=30.0)
    members.take_workloads(update(("w1", "198.18.11.5", {"app": "web"})))
    full = C.Membership(5, 0, True, [
        ("b/w2", "b", [addr("198.18.12.5")], {"app": "db"}),
        ("b/dup", "b", [addr("198.18.11.5")], {"app": "db"})], [])  # fmt: skip
    assert members.take_membership(full)
    workloads, _ = members.current()
    assert sorted(w.labels["app"] for w in workloads) == ["db", "web"]  # the duplicate address: ours wins
    assert counters["policy.remote_conflicts"] == 1
    assert not members.take_membership(C.Membership(7, 6, False, [], ["b/w2"]))  # a gap: resync asked
    assert members.take_membership(C.Membership(6, 5, False, [], ["b/w2"]))
    assert list(members.remote) == ["b/dup"]
    members.link_lost(now=50.0)
    members.expire_remote(now=70.0)
    assert members.remote
    members.expire_remote(now=81.0)
    assert not members.remote and counters["policy.remote_expired"] == 1


def test_incremental_deltas_leave_every_peer_where_a_full_membership_would() -> None:
    """Whatever the sequence of reports, applying the deltas a peer receives gives exactly what a
    peer starting afresh receives in full (peers one version behind take the short path)."""
    import random

    rng = random.Random(7)
    cluster = ClusterMembership(Counter())
    cluster.set_policy(POLICY)
    seqs = {"a": 1, "b": 1, "c": 1}
    for node in seqs:
        cluster.take_report(node, C.WorkloadReport(1, True, [], []))
    peers = {node: PeerMembership() for node in seqs}
    held: dict[str, dict[str, C.RemoteWorkload]] = {node: {} for node in seqs}
    for step in range(60):
        node = rng.choice(list(seqs))
        seqs[node] += 1
        wid = f"w{rng.randrange(6)}"
        if rng.random() < 0.25:
            report = C.WorkloadReport(seqs[node], False, [], [wid])
        else:
            app = rng.choice(["web", "db", "other"])
            report = C.WorkloadReport(
                seqs[node], False, [(wid, [bytes([10, 0, ord(node[0]), step])], {"app": app})], []
            )
        assert cluster.take_report(node, report)
        for peer_node in rng.sample(list(seqs), 2):  # some peers fall more than one version behind
            for msg in cluster.updates_for(peer_node, peers[peer_node]):
                if msg.full:
                    held[peer_node].clear()
                for rid in msg.removed:
                    held[peer_node].pop(rid, None)
                held[peer_node].update({w[0]: w for w in msg.workloads})
    for node in seqs:
        for msg in cluster.updates_for(node, peers[node]):
            if msg.full:
                held[node].clear()
            for rid in msg.removed:
                held[node].pop(rid, None)
            held[node].update({w[0]: w for w in msg.workloads})
        (fresh,) = cluster.updates_for(node, PeerMembership())
        assert held[node] == {w[0]: w for w in fresh.workloads}, node
