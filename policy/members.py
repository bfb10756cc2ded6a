"""The members the policy's groups resolve to beyond addresses: the node's workloads (label selectors,
reported by the runtime child) and DNS answers (FQDN groups, reported by the workers). Bounded."""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable

from core.policy_input import DnsAnswers, WorkloadUpdate
from policy.tables import Workload, fqdn_matches

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_WORKLOADS = 20_000  # workloads tracked for label selectors (a node runs a few hundred)
MAX_DNS_NAMES = 20_000  # resolved names kept for FQDN groups (only names some group's pattern matches)
MAX_DNS_ADDRESSES = 64  # addresses kept per name
MIN_DNS_TTL_S = 60.0  # DNS answers are kept at least this long, so short TTLs do not churn the tables


class Members:
    """Workloads and resolved names; `dirty` says the tables should be recompiled with them."""

    def __init__(self, counters: Counter[str]) -> None:
        self.counters = counters
        self.workloads: dict[str, Workload] = {}
        self.dns: dict[str, dict[Address, float]] = {}  # name → address → expiry (monotonic)
        self.dirty = False

    def current(self) -> tuple[list[Workload], dict[str, list[Address]]]:
        return list(self.workloads.values()), {name: list(addrs) for name, addrs in self.dns.items()}

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
        self.dirty = True

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
