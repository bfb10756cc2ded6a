"""Compile a `PolicySnapshot` into lookup tables, and the in-process implementation of `PolicyTables`.

The compiled form (`CompiledPolicy`) is plain data: groups by index (0 is `external`, 1 is `nodes`),
per address family a map prefix length → {prefix value → group index} for longest-prefix match, and
(source group, destination group) → the ordered rule entries of that pair (one entry per port spec,
in evaluation order). `DictTables` answers from Python dicts (replay, tests, the policy process itself);
`policy.layout` lays the same compiled form out in shared memory for the readers, with the same semantics.

Mode semantics (DESIGN.md §2): for east-west traffic the destination group's mode decides; for egress
to `external` (from a group of ours) the source group's. A matching allow rule allows. A matching deny
rule blocks in protect and is allowed but reported as a violation in discover and monitor. Unmatched
traffic: discover → allow + LEARNED, monitor → allow + VIOLATION, protect → deny + VIOLATION. When the
first rule matching the ports names applications or virtual hosts, the answer is provisional
(`final=False`, allow, so the flow reaches DPI) until `decide_app` is asked with the identified
application and host. A rule naming hosts matches only when the HTTP Host or TLS SNI is one of them;
a rule naming a server application (`core.apps.HTTP_SERVER_APPS`) stays provisional until the
server's response names its software.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from core.apps import SERVER_APP_MASK, app_bit
from core.lookup import Action, Decision, Mode, PolicyTables, Report
from core.selectors import LabelIndex, Op, Requirement, WorkloadSelector
from policy.loader import load_policy
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
ANSWER_CACHE_ENTRIES = 65536  # DictTables: answers kept per generation (cleared when full)
EXTERNAL_INDEX = 0
NODES_INDEX = 1


@dataclass(frozen=True, slots=True)
class RuleEntry:
    """One port spec of one rule, as evaluated: first entry that matches wins."""

    rule_id: int
    proto: int  # PROTO_ANY, PROTO_ICMP (ICMP and ICMPv6), 6 or 17
    low: int
    high: int
    app_mask: int  # 0: any application; else a bit per application (core.apps.APP_INDEX)
    allow: bool
    hosts: tuple[str, ...] = ()  # virtual-host patterns; empty: any host

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
    return host_matches((pattern,), name.rstrip(".").lower())


def host_matches(patterns: Iterable[str], host: str) -> bool:
    """Does a normalized host (`core.lookup.normalize_host`; "" = none) match one of the patterns?"""
    return bool(host) and any(host == p or (p.startswith("*.") and host.endswith(p[1:])) for p in patterns)


def equality_selector(selector: Selector) -> WorkloadSelector:
    """The plain `{label: value}` form as a workload selector (every label equal)."""
    return WorkloadSelector(labels=tuple(Requirement(k, Op.IN, (v,)) for k, v in selector))


def selected_workloads(groups: Iterable[Group], index: LabelIndex) -> list[frozenset[int]]:
    """Per group, the positions (in `index`) of the workloads its selectors select."""
    out: list[frozenset[int]] = []
    for g in groups:
        chosen: frozenset[int] = frozenset()
        for sel in (*(equality_selector(s) for s in g.selectors), *g.workload_selectors):
            chosen = chosen | index.select(sel)
        out.append(chosen)
    return out


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
    members = selected_workloads(groups, LabelIndex(w.labels for w in workload_list))
    for i, g in enumerate(groups):
        for position in sorted(members[i]):
            for addr in workload_list[position].addresses:
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
                RuleEntry(
                    rule.id,
                    port.proto,
                    port.low,
                    port.high,
                    mask,
                    rule.action == RuleAction.ALLOW,
                    rule.hosts,
                )
            )
    compiled.pairs = {k: tuple(v) for k, v in pairs.items()}
    return compiled


# What `decide_app` knows of a flow: (application bits incl. the server's, host, server still to answer).
AppKey = tuple[int, str, bool]


def app_key(app: str, host: str, server_app: str | None) -> AppKey:
    return (app_bit(app) | app_bit(server_app or ""), host, server_app is None)


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

    def __init__(self, compiled: CompiledPolicy, generation: int = 1, cache: bool = True) -> None:
        self._compiled = compiled
        self._generation = generation
        self.cache = cache  # keep answers per (addresses, protocol, port, app) for this generation
        self._answers: dict[tuple[bytes, bytes, int, int, AppKey | None], Decision] = {}

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
        self._answers = {}
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
        self, family: int, src: bytes, dst: bytes, proto: int, dport: int, app: AppKey | None
    ) -> Decision:
        c = self._compiled
        sg = self.group_of(family, src)
        dg = self.group_of(family, dst)
        mode = c.modes[deciding_group(sg, dg)]
        for e in c.pairs.get((sg, dg), ()):
            if not e.matches(proto, dport):
                continue
            if e.app_mask or e.hosts:
                if app is None or (
                    app[2] and e.app_mask & SERVER_APP_MASK and not e.app_mask & app[0]
                ):  # the application is not known yet, or the server's software is still to come
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
                if e.app_mask and not e.app_mask & app[0]:
                    continue
                if e.hosts and not host_matches(e.hosts, app[1]):
                    continue
            action, report = outcome(mode, e.rule_id, e.allow)
            return Decision(action, True, e.rule_id, mode, report, c.names[sg], c.names[dg], self._generation)
        action, report = outcome(mode, 0, None)
        return Decision(action, True, 0, mode, report, c.names[sg], c.names[dg], self._generation)

    def _cached(
        self, family: int, src: bytes, dst: bytes, proto: int, dport: int, app: AppKey | None
    ) -> Decision:
        key = (src, dst, proto, dport, app)
        d = self._answers.get(key)
        if d is None:
            d = self._decide(family, src, dst, proto, dport, app)
            if self.cache:
                if len(self._answers) >= ANSWER_CACHE_ENTRIES:
                    self._answers.clear()
                self._answers[key] = d
        return d

    def decide(self, family: int, src: bytes, dst: bytes, proto: int, dport: int) -> Decision:
        return self._cached(family, src, dst, proto, dport, None)

    def decide_app(
        self,
        family: int,
        src: bytes,
        dst: bytes,
        proto: int,
        dport: int,
        app: str,
        host: str = "",
        server_app: str | None = "",
    ) -> Decision:
        return self._cached(family, src, dst, proto, dport, app_key(app, host, server_app))


def load_policy_tables(path: str | os.PathLike[str]) -> PolicyTables:
    """Load, validate and compile a native policy file into in-process tables (replay and tests)."""
    return DictTables(compile_policy(load_policy(path)))


__all__ = [
    "CompiledPolicy",
    "DictTables",
    "PolicyError",
    "RuleEntry",
    "AppKey",
    "Workload",
    "app_key",
    "compile_policy",
    "deciding_group",
    "equality_selector",
    "selected_workloads",
    "fqdn_matches",
    "host_matches",
    "load_policy_tables",
    "outcome",
]
