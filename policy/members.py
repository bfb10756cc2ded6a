"""The members the policy's groups resolve to beyond addresses: the node's workloads (label selectors,
reported by the runtime child), other nodes' workloads (distributed by the controller) and DNS answers
(FQDN groups, reported by the workers). Bounded.

Across nodes: the node's workloads go to the controller as a full report after every (re)connection,
then as deltas (`report`); the controller answers with the other nodes' workloads this node's groups
need (`take_membership`), full or as deltas of a generation. A node-local workload wins over a remote
one with the same address. When the controller link is lost the remote workloads stay for
`remote_grace_s` (the pods are still there; the controller will tell) and are dropped after it, counted.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable

from core import control as C
from core.policy_input import DnsAnswers, WorkloadUpdate
from policy.tables import Workload, fqdn_matches

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_WORKLOADS = 20_000  # workloads tracked for label selectors (a node runs a few hundred)
MAX_DNS_NAMES = 20_000  # resolved names kept for FQDN groups (only names some group's pattern matches)
MAX_DNS_ADDRESSES = 64  # addresses kept per name
MIN_DNS_TTL_S = 60.0  # DNS answers are kept at least this long, so short TTLs do not churn the tables
MAX_REMOTE_WORKLOADS = 50_000  # other nodes' workloads kept (a cluster of 100 nodes × 500 pods)
REMOTE_GRACE_S = 300.0  # remote workloads outlive a lost controller link this long (the pods still run)


class Members:
    """Workloads and resolved names; `dirty` says the tables should be recompiled with them."""

    def __init__(self, counters: Counter[str], remote_grace_s: float = REMOTE_GRACE_S) -> None:
        self.counters = counters
        self.workloads: dict[str, Workload] = {}
        self.dns: dict[str, dict[Address, float]] = {}  # name → address → expiry (monotonic)
        self.dirty = False
        self.remote: dict[str, Workload] = {}  # other nodes' workloads, by cluster-wide id
        self.remote_generation = 0  # of the membership held (0: none)
        self.remote_grace_s = remote_grace_s
        self._remote_expiry: float | None = None  # set while the controller link is down
        self._reported: dict[str, C.ReportedWorkload] = {}  # what the controller has of ours
        self._report_seq = 0
        self._report_full = True  # the next report must be the full inventory
        self._report_due = True  # the inventory changed (or a resync) since the last report

    def current(self) -> tuple[list[Workload], dict[str, list[Address]]]:
        workloads = list(self.workloads.values())
        if self.remote:
            local = {a for w in workloads for a in w.addresses}
            conflicts = 0
            for w in self.remote.values():
                if local.isdisjoint(w.addresses):
                    workloads.append(w)
                else:  # an address of ours: the node-local workload wins
                    conflicts += 1
            self.counters["policy.remote_conflicts"] = conflicts  # a level: remote workloads shadowed now
        return workloads, {name: list(addrs) for name, addrs in self.dns.items()}

    # ---- across nodes ---------------------------------------------------------------------------

    def link_ready(self) -> None:
        """A new controller session: it gets our full inventory; the remote workloads stay until its
        membership replaces them."""
        self._report_full = self._report_due = True
        self._remote_expiry = None

    def link_lost(self, now: float) -> None:
        if self._remote_expiry is None:
            self._remote_expiry = now + self.remote_grace_s

    def expire_remote(self, now: float) -> None:
        if self._remote_expiry is not None and now >= self._remote_expiry and self.remote:
            self.counters["policy.remote_expired"] += len(self.remote)
            self.remote.clear()
            self.remote_generation = 0
            self.dirty = True

    def resync_report(self) -> None:
        self._report_full = self._report_due = True

    def reports(self) -> list[C.WorkloadReport]:
        """What the controller lacks of our workloads: the full inventory once per session, then
        deltas; each message at most `MAX_WORKLOADS_PER_MESSAGE` workloads."""
        if not self._report_due:
            return []
        self._report_due = False
        now = {wid: _reported(wid, w) for wid, w in self.workloads.items()}
        if self._report_full:
            changed, removed, full = list(now.values()), [], True
        else:
            changed = [w for wid, w in now.items() if self._reported.get(wid) != w]
            removed = [wid for wid in self._reported if wid not in now]
            full = False
            if not changed and not removed:
                return []
        out: list[C.WorkloadReport] = []
        size = C.MAX_WORKLOADS_PER_MESSAGE
        first = True
        while first or changed or removed:
            self._report_seq += 1
            out.append(C.WorkloadReport(self._report_seq, full and first, changed[:size], removed[:size]))
            changed, removed, first = changed[size:], removed[size:], False
        self._reported = now
        self._report_full = False
        return out

    def take_membership(self, msg: C.Membership) -> bool:
        """Other nodes' workloads from the controller; False asks for a full membership (a gap)."""
        if not msg.full and msg.base != self.remote_generation:
            self.counters["policy.membership_gaps"] += 1
            return False
        if msg.full:
            self.remote.clear()
        for wid in msg.removed:
            self.remote.pop(wid, None)
        for wid, _node, addrs, labels in msg.workloads:
            if wid not in self.remote and len(self.remote) >= MAX_REMOTE_WORKLOADS:
                self.counters["policy.remote_full"] += 1
                continue
            self.remote[wid] = Workload(tuple(ipaddress.ip_address(a) for a in addrs), dict(labels))
        self.remote_generation = msg.generation
        self.counters["policy.memberships"] += 1
        self.dirty = True
        return True

    def take_workloads(self, msg: WorkloadUpdate) -> None:
        if msg.full:
            self.workloads.clear()
        for wid in msg.removed:
            self.workloads.pop(wid, None)
        for wid, addrs, labels in msg.workloads:
            if wid not in self.workloads and len(self.workloads) >= MAX_WORKLOADS:
                self.counters["policy.workloads_full"] += 1
                continue
            self.workloads[wid] = Workload(tuple(ipaddress.ip_address(a) for a in addrs), dict(labels))
        self.dirty = self._report_due = True

    def take_dns(self, msg: DnsAnswers, now: float, patterns: Iterable[str]) -> None:
        """Answers for names one of `patterns` (the FQDN groups of the policy in force) matches."""
        patterns = list(patterns)
        for name, addrs, ttl in msg.answers:
            name = name.rstrip(".").lower()
            if not any(fqdn_matches(p, name) for p in patterns):
                continue  # no FQDN group wants this name
            known = self.dns.get(name)
            if known is None:
                if len(self.dns) >= MAX_DNS_NAMES:
                    self.counters["policy.dns_names_full"] += 1
                    continue
                known = self.dns[name] = {}
            expiry = now + max(float(ttl), MIN_DNS_TTL_S)
            for raw in addrs:
                addr = ipaddress.ip_address(raw)
                if addr not in known and len(known) >= MAX_DNS_ADDRESSES:
                    continue
                if addr not in known:
                    self.dirty = True
                known[addr] = expiry

    def expire_dns(self, now: float) -> None:
        for name in list(self.dns):
            addrs = self.dns[name]
            for addr in [a for a, exp in addrs.items() if exp <= now]:
                del addrs[addr]
                self.dirty = True
            if not addrs:
                del self.dns[name]


def _reported(wid: str, w: Workload) -> C.ReportedWorkload:
    return wid, sorted(a.packed for a in w.addresses), dict(w.labels)
