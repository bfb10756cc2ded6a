"""Groups across nodes, the controller's half: every node's workloads, and what each enforcer needs of them.

Each enforcer reports its node's workloads (a full report per session, then deltas with consecutive
sequence numbers; a gap is refused and answered with a full report). The controller keeps them per node
and computes the *relevant* ones: those some workload selector of the served policy selects (a workload
no group selects changes no table, so it is not distributed). Each enforcer receives the relevant
workloads of the other nodes as a `Membership`: a full one after it says HELLO (or refuses a delta), then
deltas of a generation number. A node that disconnects keeps its workloads for `grace_s` (its pods
still run; an enforcer restart must not flap every other node's tables), then they are dropped and
counted. Everything is bounded.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from core import control as C
from core import workload_labels as WL
from core.selectors import LabelIndex
from policy.loader import parse_policy
from policy.model import Group, PolicyError
from policy.tables import selected_workloads

log = logging.getLogger(__name__)

MAX_CLUSTER_WORKLOADS = 100_000  # workloads kept over all nodes (beyond: refused, counted)
NODE_GRACE_S = 120.0  # a disconnected node's workloads are kept this long


@dataclass
class NodeInventory:
    workloads: dict[str, C.ReportedWorkload] = field(default_factory=dict)
    seq: int = 0  # of the last report taken
    lost_at: float | None = None  # when its enforcer went silent (None: connected)


@dataclass
class PeerMembership:
    """What one enforcer holds of the other nodes' workloads."""

    generation: int = 0
    sent: dict[str, C.RemoteWorkload] = field(default_factory=dict)
    full: bool = True  # the next membership must be a full one
    seen: int = -1  # the `ClusterMembership.version` it was last brought up to


class ClusterMembership:
    def __init__(self, counters: Counter[str], grace_s: float = NODE_GRACE_S) -> None:
        self.counters = counters
        self.grace_s = grace_s
        self.nodes: dict[str, NodeInventory] = {}
        self.groups: tuple[Group, ...] = ()  # the served policy's groups that select workloads
        self.changed = True
        self.version = 0  # of the relevant set (bumped when it is recomputed)
        self._relevant: dict[str, C.RemoteWorkload] = {}
        self._changes: tuple[list[str], list[str]] = ([], [])  # ids changed and removed by the last version

    # ---- inputs ----------------------------------------------------------------------------------

    def set_policy(self, doc: dict[str, Any] | None) -> None:
        groups: tuple[Group, ...] = ()
        if doc is not None:
            try:
                snapshot = parse_policy(doc)
                groups = tuple(g for g in snapshot.groups if g.selectors or g.workload_selectors)
            except PolicyError as exc:  # a policy served unvalidated (tests): nothing is relevant
                log.warning("membership: the served policy does not parse: %s", exc)
        self.groups = groups
        self.changed = True

    def take_report(self, node: str, report: C.WorkloadReport) -> bool:
        """Apply a node's report; False when a delta does not follow the last one (a full one is due)."""
        inv = self.nodes.get(node)
        if report.full:
            inv = self.nodes[node] = NodeInventory()
        elif inv is None or report.seq != inv.seq + 1:
            self.counters["membership.report_gaps"] += 1
            return False
        for wid in report.removed:
            inv.workloads.pop(wid, None)
        total = sum(len(n.workloads) for n in self.nodes.values())
        for item in report.workloads:
            wid = item[0]
            if wid not in inv.workloads:
                if total >= MAX_CLUSTER_WORKLOADS:
                    self.counters["membership.workloads_full"] += 1
                    continue
                total += 1
            inv.workloads[wid] = item
        inv.seq = report.seq
        inv.lost_at = None
        self.counters["membership.reports"] += 1
        self.changed = True
        return True

    def node_lost(self, node: str, now: float) -> None:
        inv = self.nodes.get(node)
        if inv is not None and inv.lost_at is None:
            inv.lost_at = now

    def node_back(self, node: str) -> None:
        inv = self.nodes.get(node)
        if inv is not None:
            inv.lost_at = None

    def expire(self, now: float) -> list[str]:
        """Drop the workloads of nodes silent beyond the grace; returns those nodes."""
        gone = [
            n for n, inv in self.nodes.items() if inv.lost_at is not None and now - inv.lost_at > self.grace_s
        ]
        for node in gone:
            count = len(self.nodes.pop(node).workloads)
            self.counters["membership.nodes_expired"] += 1
            self.counters["membership.workloads_expired"] += count
            log.warning("node %s silent for %.0f s: its %d workloads are dropped", node, self.grace_s, count)
            self.changed = True
        return gone

    # ---- outputs ---------------------------------------------------------------------------------

    def relevant(self) -> dict[str, C.RemoteWorkload]:
        """Cluster id → workload, for every workload a group of the served policy selects."""
        if not self.changed:
            return self._relevant
        self.changed = False
        self.version += 1
        everything: list[C.RemoteWorkload] = []
        for node, inv in self.nodes.items():
            for wid, addrs, labels in inv.workloads.values():
                if WL.NODE not in labels:
                    labels = {**labels, WL.NODE: node}  # the node criterion works without the CRI too
                everything.append((f"{node}/{wid}", node, addrs, labels))
        chosen: set[int] = set()
        if self.groups and everything:
            index = LabelIndex(w[3] for w in everything)
            for positions in selected_workloads(self.groups, index):
                chosen |= positions
        old = self._relevant
        self._relevant = {everything[i][0]: everything[i] for i in sorted(chosen)}
        self._changes = (
            [wid for wid, w in self._relevant.items() if old.get(wid) != w],
            [wid for wid in old if wid not in self._relevant],
        )
        self.counters["membership.relevant"] = len(self._relevant)
        return self._relevant

    def updates_for(self, node: str, peer: PeerMembership) -> list[C.Membership]:
        """The messages that bring `peer` (the enforcer of `node`) up to date; updates `peer`."""
        relevant = self.relevant()
        if not peer.full and peer.seen == self.version:
            return []
        if not peer.full and peer.seen == self.version - 1:
            # One version behind: only what that version changed (no pass over every workload).
            peer.seen = self.version
            changed = [relevant[wid] for wid in self._changes[0] if relevant[wid][1] != node]
            removed = [wid for wid in self._changes[1] if wid in peer.sent]
            for wid in removed:
                del peer.sent[wid]
            for w in changed:
                peer.sent[w[0]] = w
            return self._messages(peer, changed, removed) if changed or removed else []
        peer.seen = self.version
        wanted = {wid: w for wid, w in relevant.items() if w[1] != node}
        if peer.full:
            changed, removed = list(wanted.values()), []
        else:
            changed = [w for wid, w in wanted.items() if peer.sent.get(wid) != w]
            removed = [wid for wid in peer.sent if wid not in wanted]
            if not changed and not removed:
                peer.sent = wanted
                return []
        full = peer.full
        peer.sent = wanted
        peer.full = False
        return self._messages(peer, changed, removed, full)

    @staticmethod
    def _messages(
        peer: PeerMembership, changed: list[C.RemoteWorkload], removed: list[str], full: bool = False
    ) -> list[C.Membership]:
        """`changed` and `removed` in messages of at most MAX_WORKLOADS_PER_MESSAGE, each a generation."""
        out: list[C.Membership] = []
        size = C.MAX_WORKLOADS_PER_MESSAGE
        first = True
        while first or changed or removed:
            base = 0 if (full and first) else peer.generation
            peer.generation += 1
            out.append(C.Membership(peer.generation, base, full and first, changed[:size], removed[:size]))
            changed, removed, first = changed[size:], removed[size:], False
        return out
