"""The zero-trust policy model the controller sends (DESIGN.md §2), as frozen values.

A `PolicySnapshot` is immutable and carries a version; the loader (`policy.loader`) builds one from the
native YAML format and `validate_snapshot` rejects it whole, with a message naming the offending item,
before anything compiles it. Process profiles, file rules, DLP/WAF sensors and threat settings are
stored and distributed here as plain validated data; the runtime and threat components interpret them.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

from core.apps import canonical_app
from core.lookup import Mode
from core.selectors import SelectorError, WorkloadSelector, check_workload_selector

# Built-in groups: every snapshot has them; `external` cannot have members (it is "everything else").
EXTERNAL: Final = "external"
NODES: Final = "nodes"
BUILTIN_GROUPS: Final = (EXTERNAL, NODES)

# Named bounds on a snapshot, so a hostile or broken policy cannot exhaust memory while validated.
MAX_GROUPS = 20_000  # groups per snapshot (target: 5,000 compiled in < 1 s)
MAX_RULES = 50_000  # network rules per snapshot (target: 10,000)
MAX_MEMBERS_PER_GROUP = 4_096  # CIDRs, selectors or FQDN patterns per group
MAX_PORTS_PER_RULE = 64  # port specs in one rule
MAX_HOSTS_PER_RULE = 256  # virtual-host patterns in one rule
MAX_NAME_LEN = 253  # group, sensor, threat names; also the longest DNS name
MAX_PATTERNS_PER_SENSOR = 256  # regular expressions in one sensor
MAX_REGEX_LEN = 1_024  # characters in one sensor regular expression
MAX_PATH_LEN = 4_096  # process and file paths (PATH_MAX)
MAX_RULE_ID = 2**31 - 1  # rule ids are positive 31-bit numbers (0 means "implicit")
MAX_VERSION = 2**63 - 1

PROTO_ANY: Final = 0
PROTO_ICMP: Final = 1  # matches ICMP and ICMPv6 alike
PROTO_TCP: Final = 6
PROTO_UDP: Final = 17
IPPROTO_ICMPV6: Final = 58

_PROTO_NAMES: Final = {"tcp": PROTO_TCP, "udp": PROTO_UDP}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/-]*$")
_THREAT_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_LABEL_KEY_RE = re.compile(r"^([A-Za-z0-9.-]{1,253}/)?[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$")
LABEL_VALUE_RE = _LABEL_VALUE_RE = re.compile(r"^([A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?)?$")
_DNS_LABEL_RE = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$")


class PolicyError(ValueError):
    """A snapshot (or a piece of one) that fails validation; the message names the offending item."""


class RuleAction(enum.StrEnum):
    ALLOW = "allow"
    DENY = "deny"


class ProcessAction(enum.StrEnum):
    ALLOW = "allow"
    DENY = "deny"


class FileBehavior(enum.StrEnum):
    MONITOR = "monitor"  # report changes/access
    BLOCK = "block"  # deny access (protect mode)


class SensorKind(enum.StrEnum):
    DLP = "dlp"
    WAF = "waf"


class SensorContext(enum.StrEnum):
    URL = "url"
    HEADER = "header"
    BODY = "body"
    PACKET = "packet"
    SQL = "sql"


class SensorAction(enum.StrEnum):
    ALERT = "alert"
    BLOCK = "block"


class ThreatAction(enum.StrEnum):
    ALERT = "alert"
    DROP = "drop"
    RESET = "reset"
    BLOCK_SOURCE = "block-source"  # block the attacking source for the threat's block time


def parse_mode(text: str) -> Mode:
    try:
        return Mode[text.strip().upper()]
    except (KeyError, AttributeError):
        raise PolicyError(f"unknown mode {text!r} (expected discover, monitor or protect)") from None


def mode_name(mode: Mode) -> str:
    return mode.name.lower()


@dataclass(frozen=True, slots=True)
class PortSpec:
    """One entry of a rule's `ports`: a protocol and an inclusive port range.

    `proto` is PROTO_ANY (any protocol, any port), PROTO_TCP, PROTO_UDP or PROTO_ICMP (ICMP and ICMPv6,
    ports ignored).
    """

    proto: int
    low: int = 0
    high: int = 65535

    @classmethod
    def parse(cls, text: str) -> PortSpec:
        """Parse `any`, `icmp`, `tcp`, `tcp/any`, `tcp/80`, `udp/53`, `tcp/8000-8100`."""
        if not isinstance(text, str):
            raise PolicyError(f"port {text!r} is not a string")
        spec = text.strip().lower()
        if spec == "any":
            return cls(PROTO_ANY)
        if spec in ("icmp", "icmpv6"):
            return cls(PROTO_ICMP)
        proto_name, _, port_text = spec.partition("/")
        proto = _PROTO_NAMES.get(proto_name)
        if proto is None:
            raise PolicyError(f"port {text!r}: unknown protocol {proto_name!r} (tcp, udp, icmp or any)")
        if port_text in ("", "any"):
            return cls(proto)
        low_text, dash, high_text = port_text.partition("-")
        if not dash:
            high_text = low_text
        if not (low_text.isdigit() and high_text.isdigit()) or len(low_text) > 5 or len(high_text) > 5:
            raise PolicyError(f"port {text!r}: not a port number or range")
        low, high = int(low_text), int(high_text)
        if high > 65535:
            raise PolicyError(f"port {text!r}: beyond 65535")
        if low > high:
            raise PolicyError(f"port {text!r}: range is reversed")
        return cls(proto, low, high)

    def __str__(self) -> str:
        if self.proto == PROTO_ANY:
            return "any"
        if self.proto == PROTO_ICMP:
            return "icmp"
        name = "tcp" if self.proto == PROTO_TCP else "udp"
        if self.low == 0 and self.high == 65535:
            return f"{name}/any"
        if self.low == self.high:
            return f"{name}/{self.low}"
        return f"{name}/{self.low}-{self.high}"

    def matches(self, proto: int, port: int) -> bool:
        if self.proto == PROTO_ANY:
            return True
        if self.proto == PROTO_ICMP:
            return proto == PROTO_ICMP or proto == IPPROTO_ICMPV6
        return proto == self.proto and self.low <= port <= self.high


Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# A workload selector: every (key, value) label must match; sorted for a canonical form.
Selector = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Group:
    """A set of endpoints sharing a mode: CIDRs, workload selectors and/or FQDN patterns.

    `selectors` are the plain equality form (every label equal); `workload_selectors` the forms users
    write (Kubernetes label selectors, namespaces, NeuVector criteria: `core.selectors`). A workload
    is in the group when any selector of either kind selects it."""

    name: str
    mode: Mode
    cidrs: tuple[Network, ...] = ()
    selectors: tuple[Selector, ...] = ()
    fqdns: tuple[str, ...] = ()  # "www.example.com" or "*.example.com", lower case
    workload_selectors: tuple[WorkloadSelector, ...] = ()

    @property
    def builtin(self) -> bool:
        return self.name in BUILTIN_GROUPS


@dataclass(frozen=True, slots=True)
class Rule:
    """A network rule: first match wins, in ascending (`order`, position in the snapshot)."""

    id: int
    from_group: str
    to_group: str
    ports: tuple[PortSpec, ...] = (PortSpec(PROTO_ANY),)
    applications: tuple[str, ...] = ()  # canonical names; empty means any application
    action: RuleAction = RuleAction.ALLOW
    order: int = 0
    # virtual hosts ("shop.example.com", "*.example.com") the HTTP Host or TLS SNI must name; empty: any.
    # A host narrows a rule that the addresses already match; it never widens one (the client writes it).
    hosts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ProcessEntry:
    name: str  # process name (comm) or "*"
    path: str  # executable path, "*" for any, or a glob ending in "/*"
    action: ProcessAction = ProcessAction.ALLOW


@dataclass(frozen=True, slots=True)
class ProcessProfile:
    """Allowed (or explicitly denied) processes of one group; the group's mode decides learn/alert/kill."""

    group: str
    processes: tuple[ProcessEntry, ...] = ()


@dataclass(frozen=True, slots=True)
class FileRule:
    """A path pattern monitored (or blocked) for one group's workloads."""

    group: str
    filter: str  # absolute path, may end in a glob ("/etc/nginx/*")
    recursive: bool = False
    behavior: FileBehavior = FileBehavior.MONITOR
    applications: tuple[str, ...] = ()  # programs allowed to touch the path when blocking


@dataclass(frozen=True, slots=True)
class Sensor:
    """A DLP or WAF sensor: named regular expressions applied in one context to some groups."""

    name: str
    kind: SensorKind
    context: SensorContext
    patterns: tuple[str, ...]
    action: SensorAction = SensorAction.ALERT
    groups: tuple[str, ...] = ()  # empty: every group


@dataclass(frozen=True, slots=True)
class ThreatSetting:
    enabled: bool = True
    action: ThreatAction | None = None  # None: the threat catalogue's default action
    thresholds: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True, slots=True)
class PolicySnapshot:
    """One complete policy at one version. Built by the loader; compiled by `policy.tables`."""

    version: int
    groups: tuple[Group, ...]
    rules: tuple[Rule, ...] = ()
    default_mode: Mode = Mode.MONITOR
    process_profiles: tuple[ProcessProfile, ...] = ()
    file_rules: tuple[FileRule, ...] = ()
    sensors: tuple[Sensor, ...] = ()
    threats: Mapping[str, ThreatSetting] = field(default_factory=lambda: MappingProxyType({}))
    # Per-group overrides of `threats` (group → threat → setting); a flow uses its server's group.
    group_threats: Mapping[str, Mapping[str, ThreatSetting]] = field(
        default_factory=lambda: MappingProxyType({})
    )

    def group(self, name: str) -> Group:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(name)

    def ordered_rules(self) -> tuple[Rule, ...]:
        """Rules in evaluation order: ascending `order`, ties kept in snapshot position."""
        return tuple(sorted(self.rules, key=lambda r: r.order))


def startup_snapshot(mode: Mode, version: int = 0) -> PolicySnapshot:
    """The policy in force before any real one: no groups but the built-ins, everything in `mode`.

    Monitor (the default) lets traffic through and reports it; Protect denies everything.
    """
    return PolicySnapshot(
        version=version,
        groups=(Group(EXTERNAL, mode), Group(NODES, mode)),
        default_mode=mode,
    )


def _check_name(kind: str, name: str) -> None:
    if not isinstance(name, str) or not name or len(name) > MAX_NAME_LEN or not _NAME_RE.match(name):
        raise PolicyError(f"{kind} name {name!r} is not valid (letters, digits, . _ - : @ /)")


def check_fqdn(pattern: str, where: str) -> None:
    name = pattern[2:] if pattern.startswith("*.") else pattern
    labels = name.split(".")
    if (
        len(pattern) > MAX_NAME_LEN
        or len(labels) < 2
        or not all(_DNS_LABEL_RE.match(lab) for lab in labels)
        or pattern != pattern.lower()
    ):
        raise PolicyError(f"{where}: FQDN {pattern!r} is not a lower-case DNS name or '*.' wildcard")


def check_selector(selector: Selector, where: str) -> None:
    if not selector:
        raise PolicyError(f"{where}: empty label selector")
    for key, value in selector:
        if not isinstance(key, str) or not _LABEL_KEY_RE.match(key):
            raise PolicyError(f"{where}: label key {key!r} is not valid")
        if not isinstance(value, str) or not _LABEL_VALUE_RE.match(value):
            raise PolicyError(f"{where}: label value {value!r} (key {key!r}) is not valid")


def _check_path(path: str, where: str, allow_star: bool) -> None:
    if not isinstance(path, str) or not path or len(path) > MAX_PATH_LEN or "\0" in path:
        raise PolicyError(f"{where}: path {path!r} is not valid")
    if allow_star and path == "*":
        return
    if not path.startswith("/"):
        raise PolicyError(f"{where}: path {path!r} is not absolute")


def _check_groups(snapshot: PolicySnapshot) -> dict[str, Group]:
    if len(snapshot.groups) > MAX_GROUPS:
        raise PolicyError(f"{len(snapshot.groups)} groups: more than the limit of {MAX_GROUPS}")
    groups: dict[str, Group] = {}
    for g in snapshot.groups:
        _check_name("group", g.name)
        if g.name in groups:
            raise PolicyError(f"group {g.name!r} is defined twice")
        if not isinstance(g.mode, Mode):
            raise PolicyError(f"group {g.name!r}: mode {g.mode!r} is not a mode")
        members = len(g.cidrs) + len(g.selectors) + len(g.fqdns) + len(g.workload_selectors)
        if members > MAX_MEMBERS_PER_GROUP:
            raise PolicyError(f"group {g.name!r}: {members} members, limit {MAX_MEMBERS_PER_GROUP}")
        if g.name == EXTERNAL and members:
            raise PolicyError("group 'external' is built in (everything not in a group): it takes no members")
        for sel in g.selectors:
            check_selector(sel, f"group {g.name!r}")
        for ws in g.workload_selectors:
            try:
                check_workload_selector(ws, f"group {g.name!r}")
            except SelectorError as exc:
                raise PolicyError(str(exc)) from None
        for fq in g.fqdns:
            check_fqdn(fq, f"group {g.name!r}")
        groups[g.name] = g
    for name in BUILTIN_GROUPS:
        if name not in groups:
            raise PolicyError(f"built-in group {name!r} is missing from the snapshot")
    _check_overlaps(snapshot.groups)
    return groups


def _check_overlaps(groups: tuple[Group, ...]) -> None:
    """Reject the same prefix in two groups, and overlapping prefixes of groups with different modes.

    Sorted by (version, network address, prefix length), a prefix can only overlap the prefixes before it
    that still contain its start; a stack of the enclosing prefixes finds every overlap in O(n log n).
    """
    entries: list[tuple[int, int, int, int, Group]] = []
    for g in groups:
        for net in g.cidrs:
            entries.append(
                (net.version, int(net.network_address), net.prefixlen, int(net.broadcast_address), g)
            )
    entries.sort(key=lambda e: (e[0], e[1], e[2]))
    stack: list[tuple[int, int, int, int, Group]] = []
    for entry in entries:
        version, start, plen, _end, group = entry
        while stack and (stack[-1][0] != version or stack[-1][3] < start):
            stack.pop()
        for outer in stack:
            o_group = outer[4]
            net, o_net = _net(version, start, plen), _net(version, outer[1], outer[2])
            if outer[2] == plen and outer[1] == start:
                if o_group.name == group.name:
                    raise PolicyError(f"group {group.name!r}: CIDR {net} is listed twice")
                raise PolicyError(f"CIDR {net} is in both group {o_group.name!r} and group {group.name!r}")
            if o_group.mode != group.mode:
                raise PolicyError(
                    f"CIDR {net} of group {group.name!r} ({mode_name(group.mode)}) overlaps {o_net} of "
                    f"group {o_group.name!r} ({mode_name(o_group.mode)}) with a different mode"
                )
        stack.append(entry)


def _net(version: int, start: int, plen: int) -> Network:
    if version == 4:
        return ipaddress.IPv4Network((start, plen))
    return ipaddress.IPv6Network((start, plen))


def _check_rules(snapshot: PolicySnapshot, groups: Mapping[str, Group]) -> None:
    if len(snapshot.rules) > MAX_RULES:
        raise PolicyError(f"{len(snapshot.rules)} rules: more than the limit of {MAX_RULES}")
    seen: set[int] = set()
    for r in snapshot.rules:
        where = f"rule {r.id!r}"
        if isinstance(r.id, bool) or not isinstance(r.id, int) or not 1 <= r.id <= MAX_RULE_ID:
            raise PolicyError(f"{where}: id must be an integer from 1 to {MAX_RULE_ID}")
        if r.id in seen:
            raise PolicyError(f"rule id {r.id} is used twice")
        seen.add(r.id)
        for end, name in (("from", r.from_group), ("to", r.to_group)):
            if name not in groups:
                raise PolicyError(f"{where}: {end} group {name!r} is not defined")
        if not r.ports:
            raise PolicyError(f"{where}: no ports (use 'any')")
        if len(r.ports) > MAX_PORTS_PER_RULE:
            raise PolicyError(f"{where}: {len(r.ports)} port specs, limit {MAX_PORTS_PER_RULE}")
        for app in r.applications:
            if canonical_app(app) != app:
                raise PolicyError(f"{where}: unknown application {app!r}")
        if len(r.hosts) > MAX_HOSTS_PER_RULE:
            raise PolicyError(f"{where}: {len(r.hosts)} hosts, limit {MAX_HOSTS_PER_RULE}")
        for host in r.hosts:
            check_fqdn(host, where)
        if not isinstance(r.action, RuleAction):
            raise PolicyError(f"{where}: action {r.action!r} is not allow or deny")
        if isinstance(r.order, bool) or not isinstance(r.order, int):
            raise PolicyError(f"{where}: order {r.order!r} is not an integer")


def _check_runtime(snapshot: PolicySnapshot, groups: Mapping[str, Group]) -> None:
    profiled: set[str] = set()
    for prof in snapshot.process_profiles:
        where = f"process profile of group {prof.group!r}"
        if prof.group not in groups:
            raise PolicyError(f"{where}: group is not defined")
        if prof.group in profiled:
            raise PolicyError(f"{where}: defined twice")
        profiled.add(prof.group)
        for p in prof.processes:
            if not isinstance(p.name, str) or not p.name or len(p.name) > MAX_NAME_LEN or "/" in p.name:
                raise PolicyError(f"{where}: process name {p.name!r} is not valid")
            _check_path(p.path, f"{where}, process {p.name!r}", allow_star=True)
    for fr in snapshot.file_rules:
        where = f"file rule {fr.filter!r} of group {fr.group!r}"
        if fr.group not in groups:
            raise PolicyError(f"{where}: group is not defined")
        _check_path(fr.filter, where, allow_star=False)
        for app in fr.applications:
            if not isinstance(app, str) or not app or len(app) > MAX_PATH_LEN:
                raise PolicyError(f"{where}: application {app!r} is not valid")


def _check_sensors(snapshot: PolicySnapshot, groups: Mapping[str, Group]) -> None:
    names: set[str] = set()
    for s in snapshot.sensors:
        _check_name("sensor", s.name)
        where = f"sensor {s.name!r}"
        if s.name in names:
            raise PolicyError(f"{where} is defined twice")
        names.add(s.name)
        if not s.patterns:
            raise PolicyError(f"{where}: no patterns")
        if len(s.patterns) > MAX_PATTERNS_PER_SENSOR:
            raise PolicyError(f"{where}: {len(s.patterns)} patterns, limit {MAX_PATTERNS_PER_SENSOR}")
        for pat in s.patterns:
            if not isinstance(pat, str) or not pat or len(pat) > MAX_REGEX_LEN:
                raise PolicyError(f"{where}: pattern {pat!r} is empty or longer than {MAX_REGEX_LEN}")
            try:
                re.compile(pat)
            except re.error as exc:
                raise PolicyError(f"{where}: bad regular expression {pat!r}: {exc}") from None
        for g in s.groups:
            if g not in groups:
                raise PolicyError(f"{where}: group {g!r} is not defined")


def _check_threats(snapshot: PolicySnapshot, groups: Mapping[str, Group]) -> None:
    _check_threat_settings(snapshot.threats)
    for group, settings in snapshot.group_threats.items():
        if group not in groups:
            raise PolicyError(f"group_threats: group {group!r} is not defined")
        _check_threat_settings(settings)


def _check_threat_settings(settings: Mapping[str, ThreatSetting]) -> None:
    for name, setting in settings.items():
        if not isinstance(name, str) or len(name) > MAX_NAME_LEN or not _THREAT_RE.match(name):
            raise PolicyError(f"threat name {name!r} is not valid (lower-case letters, digits, . _ -)")
        if not isinstance(setting.enabled, bool):
            raise PolicyError(f"threat {name!r}: enabled must be true or false")
        for key, value in setting.thresholds.items():
            if not isinstance(key, str) or not _THREAT_RE.match(key):
                raise PolicyError(f"threat {name!r}: threshold name {key!r} is not valid")
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 2**63:
                raise PolicyError(f"threat {name!r}: threshold {key!r} = {value!r} is not a number >= 0")


def validate_snapshot(snapshot: PolicySnapshot) -> None:
    """Check a whole snapshot; raise PolicyError naming the first offending item."""
    v = snapshot.version
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_VERSION:
        raise PolicyError(f"version {v!r} is not an integer from 0 to {MAX_VERSION}")
    groups = _check_groups(snapshot)
    _check_rules(snapshot, groups)
    _check_runtime(snapshot, groups)
    _check_sensors(snapshot, groups)
    _check_threats(snapshot, groups)
