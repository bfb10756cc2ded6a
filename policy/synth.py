"""Synthetic policies and traffic for benchmarks and tests (deterministic from a seed).

Group i owns the i-th /28 of 198.18.0.0/15 and the i-th /64 of fd00:198::/32, with nested /30s and hosts of
the same mode so longest-prefix match is exercised; rules draw random group pairs, port specs and
applications. Nothing here is used on the packet path.
"""

from __future__ import annotations

import ipaddress
import random
from typing import NamedTuple

from core.apps import APPLICATIONS, HTTP_SERVER_APPS
from core.lookup import Mode
from policy.model import (
    EXTERNAL,
    NODES,
    PROTO_ANY,
    PROTO_ICMP,
    PROTO_TCP,
    PROTO_UDP,
    Group,
    PolicySnapshot,
    PortSpec,
    Rule,
    RuleAction,
    validate_snapshot,
)

_V4_BASE = int(ipaddress.IPv4Address("198.18.0.0"))
_V6_BASE = int(ipaddress.IPv6Address("fd00:198::"))
HOST_PATTERNS = ("shop.example.com", "*.example.com", "api.example.org", "*.internal.example.net")
HOSTS = (
    "",
    "shop.example.com",
    "www.example.com",
    "example.com",
    "api.example.org",
    "a.internal.example.net",
)
MAX_SYNTH_GROUPS = 8000  # /28s of 198.18.0.0/15, leaving the last ones for `external` addresses


class Query(NamedTuple):
    family: int
    src: bytes
    dst: bytes
    proto: int
    dport: int
    app: str | None
    host: str = ""  # the HTTP Host / TLS SNI, normalized
    server_app: str | None = ""  # None: the server has not answered yet


def _v4(index: int, host: int = 0) -> int:
    return _V4_BASE + (index << 4) + host


def synthetic_policy(
    groups: int, rules: int, seed: int = 1, version: int = 1, name_suffix: str = "", app_share: float = 0.2
) -> PolicySnapshot:
    """A valid snapshot with `groups` groups (plus the built-ins) and `rules` rules."""
    if groups > MAX_SYNTH_GROUPS:
        raise ValueError(f"at most {MAX_SYNTH_GROUPS} synthetic groups")
    rnd = random.Random(seed)
    rnd_hosts = random.Random(seed + 7)  # own stream: hosts do not change the rest of the policy
    modes = list(Mode)
    out: list[Group] = []
    for i in range(groups):
        mode = modes[rnd.randrange(3)]
        cidrs: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = [
            ipaddress.IPv4Network((_v4(i), 28)),
            ipaddress.IPv6Network((_V6_BASE + (i << 64), 64)),
        ]
        out.append(Group(f"g{i}{name_suffix}", mode, tuple(cidrs)))
    # Some groups also own a nested /25 or host inside another group of the same mode.
    nested: list[Group] = []
    for i in range(min(groups // 10, 1000)):
        outer = out[rnd.randrange(len(out))]
        oi = int(outer.name[1:].removesuffix(name_suffix))
        host = rnd.randrange(8, 16)
        nested.append(
            Group(
                f"n{i}{name_suffix}",
                outer.mode,
                (
                    ipaddress.IPv4Network((_v4(oi, 8), 30))
                    if i % 2
                    else ipaddress.IPv4Network((_v4(oi, host), 32)),
                    ipaddress.IPv6Network((_V6_BASE + (oi << 64) + (host << 8), 120)),
                ),
            )
        )
    seen_nested: set[object] = set()
    unique_nested = []
    for g in nested:
        if not seen_nested.intersection(g.cidrs):
            seen_nested.update(g.cidrs)
            unique_nested.append(g)
    all_groups = out + unique_nested + [Group(EXTERNAL, Mode.MONITOR), Group(NODES, Mode.MONITOR)]
    names = [g.name for g in all_groups]
    rule_list: list[Rule] = []
    for r in range(rules):
        kind = rnd.random()
        if kind < 0.5:
            port = PortSpec(PROTO_TCP, p := rnd.choice((22, 80, 443, 3306, 5201, 8080)), p)
        elif kind < 0.7:
            low = rnd.randrange(1000, 9000)
            port = PortSpec(rnd.choice((PROTO_TCP, PROTO_UDP)), low, low + rnd.randrange(0, 200))
        elif kind < 0.85:
            port = PortSpec(PROTO_UDP, 53, 53)
        elif kind < 0.95:
            port = PortSpec(PROTO_ICMP)
        else:
            port = PortSpec(PROTO_ANY)
        apps: tuple[str, ...] = ()
        hosts: tuple[str, ...] = ()
        if port.proto == PROTO_TCP and rnd.random() < app_share:
            apps = tuple(rnd.sample(APPLICATIONS, rnd.randrange(1, 3)))
            if rnd_hosts.random() < 0.3:
                apps = (rnd_hosts.choice(HTTP_SERVER_APPS),) + apps[1:]
            if rnd_hosts.random() < 0.3:
                hosts = tuple(rnd_hosts.sample(HOST_PATTERNS, rnd_hosts.randrange(1, 3)))
        rule_list.append(
            Rule(
                id=r + 1,
                from_group=rnd.choice(names),
                to_group=rnd.choice(names),
                ports=(port,),
                applications=apps,
                action=RuleAction.ALLOW if rnd.random() < 0.7 else RuleAction.DENY,
                order=r,
                hosts=hosts,
            )
        )
    snap = PolicySnapshot(version=version, groups=tuple(all_groups), rules=tuple(rule_list))
    validate_snapshot(snap)
    return snap


def sample_queries(snapshot: PolicySnapshot, count: int, seed: int = 2) -> list[Query]:
    """Traffic between the snapshot's groups (and outside them), biased towards ruled pairs."""
    rnd = random.Random(seed)
    rnd_hosts = random.Random(seed + 7)
    rules = snapshot.rules
    out: list[Query] = []

    def address(group_name: str, family: int) -> bytes:
        if group_name in (EXTERNAL, NODES):
            if family == 4:
                return ipaddress.IPv4Address("198.19.255.0").packed[:3] + bytes([rnd.randrange(240, 256)])
            return ipaddress.IPv6Address("fd00:dead::1").packed[:15] + bytes([rnd.randrange(256)])
        group = snapshot.group(group_name)
        nets = [n for n in group.cidrs if n.version == family]
        net = rnd.choice(nets)
        offset = rnd.randrange(net.num_addresses) if net.num_addresses < 2**16 else rnd.randrange(2**16)
        return (net.network_address + offset).packed

    for _ in range(count):
        family = 4 if rnd.random() < 0.7 else 6
        if rules and rnd.random() < 0.8:
            rule = rnd.choice(rules)
            src_name, dst_name = rule.from_group, rule.to_group
            spec = rule.ports[0]
            proto = {PROTO_ANY: rnd.choice((6, 17)), PROTO_ICMP: 1 if family == 4 else 58}.get(
                spec.proto, spec.proto
            )
            port = rnd.randint(spec.low, spec.high) if spec.proto in (PROTO_TCP, PROTO_UDP) else 0
        else:
            src_name = rnd.choice(snapshot.groups).name
            dst_name = rnd.choice(snapshot.groups).name
            proto, port = rnd.choice(((6, 80), (17, 53), (6, 9999), (1 if family == 4 else 58, 0)))
        app = rnd.choice((None, None, "HTTP", "MySQL", "SSH", "DNS"))
        host = rnd_hosts.choice(HOSTS)
        server_app = rnd_hosts.choice(("", None, "etcd", "nginx", "CouchDB"))
        out.append(
            Query(
                family,
                address(src_name, family),
                address(dst_name, family),
                proto,
                port,
                app,
                host,
                server_app,
            )
        )
    return out
