"""Compile a `PolicySnapshot` into lookup tables, and the in-process implementation of `PolicyTables`.

The compiled form (`CompiledPolicy`) is plain data: groups by index (0 is `external`, 1 is `nodes`),
per address family a map prefix length → {prefix value → group index} for longest-prefix match, and
(source group, destination group) → the ordered rule entries of that pair (one entry per port spec,
in evaluation order). `DictTables` answers from Python dicts (replay, tests, the policy process itself);
`policy.shm` lays the same compiled form out in shared memory for the readers, with the same semantics.

Mode semantics (DESIGN.md §2): for east-west traffic the destination group's mode decides; for egress
to `external` (from a group of ours) the source group's. A matching allow rule allows. A matching deny
rule blocks in protect and is allowed but reported as a violation in discover and monitor. Unmatched
traffic: discover → allow + LEARNED, monitor → allow + VIOLATION, protect → deny + VIOLATION. When the
first rule matching the ports names applications, the answer is provisional (`final=False`, allow, so
the flow reaches DPI) until `decide_app` is asked with the identified application.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from policy.apps import app_bit
from policy.loader import load_policy
from policy.lookup import Action, Decision, Mode, PolicyTables, Report
from policy.model import (
    EXTERNAL,
    NODES,
    PROTO_ANY,
    PROTO_ICMP,
    Group,
    PolicyError,
    PolicySnapshot,
    RuleAction,
    Selector,
)

IPPROTO_ICMPV6 = 58
EXTERNAL_INDEX = 0
NODES_INDEX = 1


@dataclass(frozen=True, slots=True)
class RuleEntry:
    """One port spec of one rule, as evaluated: first entry that matches wins."""

    rule_id: int
    proto: int  # PROTO_ANY, PROTO_ICMP (ICMP and ICMPv6), 6 or 17
    low: int
    high: int
    app_mask: int  # 0: any application; else a bit per application (policy.apps.APP_INDEX)
    allow: bool

    def matches(self, proto: int, port: int) -> bool:
        p = self.proto
        if p == PROTO_ANY:
            return True
        if p == PROTO_ICMP:
            return proto == PROTO_ICMP or proto == IPPROTO_ICMPV6
        return proto == p and self.low <= port <= self.high


@dataclass(frozen=True, slots=True)
class Workload:
    """A workload known on this node: its addresses and labels (selected into groups by label)."""

    addresses: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]
    labels: Mapping[str, str]


@dataclass(slots=True)
class CompiledPolicy:
    version: int
    names: tuple[str, ...]
    modes: tuple[Mode, ...]
    # prefix length → {address >> (bits - length) → group index}; lengths kept longest first
    v4: dict[int, dict[int, int]] = field(default_factory=dict)
    v6: dict[int, dict[int, int]] = field(default_factory=dict)
    pairs: dict[tuple[int, int], tuple[RuleEntry, ...]] = field(default_factory=dict)

    def prefix_count(self) -> int:
        return sum(len(t) for t in self.v4.values()) + sum(len(t) for t in self.v6.values())


def fqdn_matches(pattern: str, name: str) -> bool:
    """`*.example.com` matches any name below example.com (not example.com itself); else exact match."""
    name = name.rstrip(".").lower()
    if pattern.startswith("*."):
        return name.endswith(pattern[1:])
    return name == pattern


def _selector_matches(selector: Selector, labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector)


def _insert(
    table: dict[int, dict[int, int]], bits: int, net: ipaddress.IPv4Network | ipaddress.IPv6Network, gidx: int
) -> None:
    plen = net.prefixlen
    table.setdefault(plen, {})[int(net.network_address) >> (bits - plen)] = gidx


def _insert_host(
    compiled: CompiledPolicy, addr: ipaddress.IPv4Address | ipaddress.IPv6Address, gidx: int
) -> None:
    """A host entry from a label or FQDN match; the first group to claim an address keeps it."""
    if addr.version == 4:
        compiled.v4.setdefault(32, {}).setdefault(int(addr), gidx)
    else:
        compiled.v6.setdefault(128, {}).setdefault(int(addr), gidx)


def compile_policy(
    snapshot: PolicySnapshot,
    workloads: Iterable[Workload] = (),
    fqdn_addresses: Mapping[str, Iterable[ipaddress.IPv4Address | ipaddress.IPv6Address]] | None = None,
) -> CompiledPolicy:
    """Compile a validated snapshot; `workloads` and `fqdn_addresses` resolve label and FQDN members.

    Address → group precedence: longest prefix; a host entry from a CIDR beats one from labels or
    FQDNs; among label/FQDN matches the group listed first in the snapshot wins.
    """
    groups: list[Group] = [snapshot.group(EXTERNAL), snapshot.group(NODES)]
    groups += [g for g in snapshot.groups if not g.builtin]
    index = {g.name: i for i, g in enumerate(groups)}
    compiled = CompiledPolicy(
        version=snapshot.version,
        names=tuple(g.name for g in groups),
        modes=tuple(g.mode for g in groups),
    )
    for i, g in enumerate(groups):
        for net in g.cidrs:
            _insert(compiled.v4 if net.version == 4 else compiled.v6, net.max_prefixlen, net, i)
    workload_list = list(workloads)
    for i, g in enumerate(groups):
        if g.selectors:
            for w in workload_list:
                if any(_selector_matches(sel, w.labels) for sel in g.selectors):
                    for addr in w.addresses:
                        _insert_host(compiled, addr, i)
        if g.fqdns and fqdn_addresses:
            for name, addrs in fqdn_addresses.items():
                if any(fqdn_matches(p, name) for p in g.fqdns):
                    for addr in addrs:
                        _insert_host(compiled, addr, i)
    compiled.v4 = dict(sorted(compiled.v4.items(), reverse=True))
    compiled.v6 = dict(sorted(compiled.v6.items(), reverse=True))

    pairs: dict[tuple[int, int], list[RuleEntry]] = {}
    for rule in snapshot.ordered_rules():
        mask = 0
        for app in rule.applications:
            mask |= app_bit(app)
        entries = pairs.setdefault((index[rule.from_group], index[rule.to_group]), [])
        for port in rule.ports:
            entries.append(
                RuleEntry(rule.id, port.proto, port.low, port.high, mask, rule.action == RuleAction.ALLOW)
            )
    compiled.pairs = {k: tuple(v) for k, v in pairs.items()}
    return compiled


def deciding_group(src: int, dst: int) -> int:
    """Whose mode decides: the source's for egress to `external`, else the destination's."""
    return src if dst == EXTERNAL_INDEX and src != EXTERNAL_INDEX else dst


def outcome(mode: Mode, rule_id: int, allow: bool | None) -> tuple[Action, Report]:
    """The action and report for a matched rule (`allow` True/False) or no match (`allow` None)."""
    if allow:
        return Action.ALLOW, Report.NONE
    if allow is None:
        if mode == Mode.DISCOVER:
            return Action.ALLOW, Report.LEARNED
        if mode == Mode.MONITOR:
            return Action.ALLOW, Report.VIOLATION
        return Action.DENY, Report.VIOLATION
    return (Action.DENY if mode == Mode.PROTECT else Action.ALLOW), Report.VIOLATION


class DictTables:
    """`PolicyTables` over a `CompiledPolicy` in this process's memory."""

    def __init__(self, compiled: CompiledPolicy, generation: int = 1) -> None:
        self._compiled = compiled
        self._generation = generation

    @property
    def compiled(self) -> CompiledPolicy:
        return self._compiled

    def generation(self) -> int:
        return self._generation

    def version(self) -> int:
        return self._compiled.version

    def publish(self, compiled: CompiledPolicy) -> int:
        """Replace the policy (in-process: one reference assignment); returns the new generation."""
        self._compiled = compiled
        self._generation += 1
        return self._generation

    def group_of(self, family: int, addr: bytes) -> int:
        c = self._compiled
        value = int.from_bytes(addr, "big")
        if len(addr) == 4:
            table, bits = c.v4, 32
        elif len(addr) == 16:
            table, bits = c.v6, 128
        else:
            return EXTERNAL_INDEX
        for plen, members in table.items():
            gidx = members.get(value >> (bits - plen))
            if gidx is not None:
                return gidx
        return EXTERNAL_INDEX

    def _decide(
        self, family: int, src: bytes, dst: bytes, proto: int, dport: int, app: int | None
    ) -> Decision:
        c = self._compiled
        sg = self.group_of(family, src)
        dg = self.group_of(family, dst)
        mode = c.modes[deciding_group(sg, dg)]
        for e in c.pairs.get((sg, dg), ()):
            if not e.matches(proto, dport):
                continue
            if e.app_mask:
                if app is None:
                    return Decision(
                        Action.ALLOW,
                        False,
                        e.rule_id,
                        mode,
                        Report.NONE,
                        c.names[sg],
                        c.names[dg],
                        self._generation,
                    )
                if not e.app_mask & app:
                    continue
            action, report = outcome(mode, e.rule_id, e.allow)
            return Decision(action, True, e.rule_id, mode, report, c.names[sg], c.names[dg], self._generation)
        action, report = outcome(mode, 0, None)
        return Decision(action, True, 0, mode, report, c.names[sg], c.names[dg], self._generation)

    def decide(self, family: int, src: bytes, dst: bytes, proto: int, dport: int) -> Decision:
        return self._decide(family, src, dst, proto, dport, None)

    def decide_app(self, family: int, src: bytes, dst: bytes, proto: int, dport: int, app: str) -> Decision:
        return self._decide(family, src, dst, proto, dport, app_bit(app))


def load_policy_tables(path: str | os.PathLike[str]) -> PolicyTables:
    """Load, validate and compile a native policy file into in-process tables (replay and tests)."""
    return DictTables(compile_policy(load_policy(path)))


__all__ = [
    "CompiledPolicy",
    "DictTables",
    "PolicyError",
    "RuleEntry",
    "Workload",
    "compile_policy",
    "deciding_group",
    "fqdn_matches",
    "load_policy_tables",
    "outcome",
]
