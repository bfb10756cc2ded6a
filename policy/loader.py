"""The native policy format (YAML) ↔ `PolicySnapshot`.

The file format is the plain-data form of the model: the same mapping travels over the controller link
(msgpack) and is persisted as the last-known-good policy, so `parse_policy(policy_to_dict(s)) == s`.
Parsing is strict: unknown keys, wrong types and every semantic error of `validate_snapshot` reject the
whole document with a message naming the offending item.

    version: 7
    default_mode: monitor            # mode of the built-in groups unless they are listed
    groups:
      - name: web
        mode: protect
        members: [198.18.2.0/24, "fd00:198:18:2::/64", {app: web, namespace: shop}]
      - name: example
        fqdns: ["*.example.com"]
      - name: api                    # workload selectors as users write them (core/selectors.py)
        members:
          - {matchLabels: {app: api}, matchExpressions: [{key: tier, operator: In, values: [back]}],
             namespaces: [shop]}
          - {criteria: [{key: service, op: "=", value: "api.shop"}, {key: app, op: regex, value: "^api"}]}
      - name: nv.db.shop             # no members: NeuVector's name selects the service db.shop
    rules:
      - {id: 1, from: clients, to: web, ports: [tcp/80, icmp], applications: [HTTP], action: allow}
      - {id: 2, from: clients, to: web, ports: [tcp/443], hosts: ["shop.example.com"], action: allow}
    process_profiles: [{group: web, processes: [{name: nginx, path: /usr/sbin/nginx}]}]
    file_rules: [{group: web, filter: /etc/nginx/*, recursive: true, behavior: block}]
    sensors: [{name: cc, kind: dlp, context: body, patterns: ['\\b4\\d{15}\\b'], action: alert}]
    threats: {syn_flood: {enabled: true, action: drop, thresholds: {syns_per_window: 1000}}}
    group_threats: {web: {sql_injection: {action: reset}}}   # per group; an omitted action = the catalogue's
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from core.apps import canonical_app
from core.selectors import (
    SELECTOR_KEYS,
    SelectorError,
    WorkloadSelector,
    selector_from_dict,
    selector_to_dict,
    service_criteria,
)
from policy.model import (
    BUILTIN_GROUPS,
    FileBehavior,
    FileRule,
    Group,
    Network,
    PolicyError,
    PolicySnapshot,
    PortSpec,
    ProcessAction,
    ProcessEntry,
    ProcessProfile,
    Rule,
    RuleAction,
    Selector,
    Sensor,
    SensorAction,
    SensorContext,
    SensorKind,
    ThreatAction,
    ThreatSetting,
    mode_name,
    parse_mode,
    validate_snapshot,
)

# A policy file larger than this is refused before it is parsed (10,000 rules take about 1 MiB).
MAX_POLICY_FILE_BYTES = 32 * 1024 * 1024

# libyaml's safe loader and dumper when PyYAML was built with it (4-5x faster), else the pure-Python ones.
_BaseSafeLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
SafeDumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class SafeLoader(_BaseSafeLoader):
    """The safe loader (plain data only), reading a plain `=` as the string it is.

    YAML 1.1 resolves an unquoted `=` to the "value" tag, which the safe loader has no constructor for;
    NeuVector's CRD exports write criteria operators unquoted (`op: =`)."""


SafeLoader.add_constructor("tag:yaml.org,2002:value", lambda loader, node: loader.construct_scalar(node))


def _negated_operator(loader: Any, node: Any) -> str:
    """A hand-written `op: !=` or `op: !regex` reads as a YAML tag with an empty value: the operator."""
    if loader.construct_scalar(node):
        raise yaml.constructor.ConstructorError(None, None, f"unexpected tag {node.tag!r}", node.start_mark)
    return str(node.tag)


for _tag in ("!=", "!regex"):
    SafeLoader.add_constructor(_tag, _negated_operator)


def yaml_load(text: str | bytes) -> Any:
    return yaml.load(text, Loader=SafeLoader)  # SafeLoader: plain data only


def yaml_load_all(text: str | bytes) -> list[Any]:
    return list(yaml.load_all(text, Loader=SafeLoader))  # SafeLoader: plain data only


_TOP_KEYS = frozenset(
    {"version", "default_mode", "description", "groups", "rules", "process_profiles", "file_rules"}
    | {"sensors", "threats", "group_threats"}
)


def _mapping(value: object, where: str, allowed: frozenset[str], required: tuple[str, ...] = ()) -> Mapping:
    if not isinstance(value, Mapping):
        raise PolicyError(f"{where}: expected a mapping, got {type(value).__name__}")
    for key in value:
        if key not in allowed:
            raise PolicyError(f"{where}: unknown key {key!r}")
    for key in required:
        if key not in value:
            raise PolicyError(f"{where}: missing key {key!r}")
    return value


def _list(value: object, where: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise PolicyError(f"{where}: expected a list, got {type(value).__name__}")
    return value


def _str(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise PolicyError(f"{where}: expected a string, got {value!r}")
    return value


def _int(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise PolicyError(f"{where}: expected an integer, got {value!r}")
    return value


def _bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise PolicyError(f"{where}: expected true or false, got {value!r}")
    return value


def _enum(cls: Any, value: object, where: str) -> Any:
    try:
        return cls(_str(value, where).strip().lower())
    except ValueError:
        choices = ", ".join(m.value for m in cls)
        raise PolicyError(f"{where}: {value!r} is not one of {choices}") from None


def parse_network(text: object, where: str) -> Network:
    """An address or CIDR (host bits must be clear: 198.18.1.7/24 is an error, not 198.18.1.0/24)."""
    try:
        return ipaddress.ip_network(_str(text, where).strip(), strict=True)
    except ValueError as exc:
        raise PolicyError(f"{where}: {text!r} is not an address or CIDR ({exc})") from None


def _selector(value: Mapping, where: str) -> Selector:
    pairs = []
    for key, val in value.items():
        if isinstance(val, bool | int | float):
            val = str(val).lower() if isinstance(val, bool) else str(val)
        pairs.append((_str(key, where), _str(val, f"{where} label {key!r}")))
    return tuple(sorted(pairs))


def _group(doc: object, where: str, default_mode: Any) -> Group:
    doc = _mapping(doc, where, frozenset({"name", "mode", "members", "fqdns", "description"}), ("name",))
    name = _str(doc["name"], f"{where}.name")
    where = f"group {name!r}"
    mode = parse_mode(_str(doc["mode"], f"{where}.mode")) if "mode" in doc else default_mode
    cidrs: list[Network] = []
    selectors: list[Selector] = []
    workload_selectors: list[WorkloadSelector] = []
    for i, member in enumerate(_list(doc.get("members"), f"{where}.members")):
        if isinstance(member, Mapping) and _is_workload_selector(member):
            try:
                workload_selectors.append(selector_from_dict(member, f"{where} member {i}"))
            except SelectorError as exc:
                raise PolicyError(str(exc)) from None
        elif isinstance(member, Mapping):
            selectors.append(_selector(member, f"{where} member {i}"))
        else:
            cidrs.append(parse_network(member, f"{where} member {i}"))
    fqdns = [_str(f, f"{where} fqdn").strip().lower() for f in _list(doc.get("fqdns"), f"{where}.fqdns")]
    if not (cidrs or selectors or workload_selectors or fqdns):
        implicit = service_criteria(name)  # NeuVector's `nv.<workload>.<namespace>` names its members
        if implicit is not None:
            workload_selectors.append(implicit)
    return Group(name, mode, tuple(cidrs), tuple(selectors), tuple(fqdns), tuple(workload_selectors))


def _is_workload_selector(member: Mapping) -> bool:
    """`{matchLabels: …}`, `{criteria: […]}` …, as opposed to the plain `{label: value}` form."""
    return any(k in SELECTOR_KEYS and isinstance(v, Mapping | list) for k, v in member.items())


def _applications(value: object, where: str) -> tuple[str, ...]:
    if value is None or value == "any":
        return ()
    names = [value] if isinstance(value, str) else _list(value, where)
    apps: list[str] = []
    for name in names:
        text = _str(name, where)
        if text.lower() == "any":
            return ()
        canon = canonical_app(text)
        if canon is None:
            raise PolicyError(f"{where}: unknown application {text!r}")
        if canon not in apps:
            apps.append(canon)
    return tuple(apps)


def _hosts(value: object, where: str) -> tuple[str, ...]:
    names = [value] if isinstance(value, str) else _list(value, where)
    return tuple(dict.fromkeys(_str(name, where).strip().lower().rstrip(".") for name in names))


def _rule(doc: object, index: int) -> Rule:
    where = f"rules[{index}]"
    doc = _mapping(
        doc,
        where,
        frozenset({"id", "from", "to", "ports", "applications", "hosts", "action", "order", "comment"}),
        ("id", "from", "to", "action"),
    )
    rule_id = _int(doc["id"], f"{where}.id")
    where = f"rule {rule_id}"
    ports_doc = doc.get("ports", "any")
    port_texts = [ports_doc] if isinstance(ports_doc, str) else _list(ports_doc, f"{where}.ports")
    ports = []
    for text in port_texts:
        try:
            ports.append(PortSpec.parse(text))
        except PolicyError as exc:
            raise PolicyError(f"{where}: {exc}") from None
    return Rule(
        id=rule_id,
        from_group=_str(doc["from"], f"{where}.from"),
        to_group=_str(doc["to"], f"{where}.to"),
        ports=tuple(dict.fromkeys(ports)),
        applications=_applications(doc.get("applications"), f"{where}.applications"),
        action=_enum(RuleAction, doc["action"], f"{where}.action"),
        order=_int(doc.get("order", index), f"{where}.order"),
        hosts=_hosts(doc.get("hosts"), f"{where}.hosts"),
    )


def _process_profile(doc: object, index: int) -> ProcessProfile:
    where = f"process_profiles[{index}]"
    doc = _mapping(doc, where, frozenset({"group", "processes"}), ("group",))
    group = _str(doc["group"], f"{where}.group")
    where = f"process profile of group {group!r}"
    entries = []
    for i, p in enumerate(_list(doc.get("processes"), f"{where}.processes")):
        pw = f"{where} process {i}"
        p = _mapping(p, pw, frozenset({"name", "path", "action"}), ("name",))
        entries.append(
            ProcessEntry(
                name=_str(p["name"], f"{pw}.name"),
                path=_str(p.get("path", "*"), f"{pw}.path"),
                action=_enum(ProcessAction, p.get("action", "allow"), f"{pw}.action"),
            )
        )
    return ProcessProfile(group, tuple(entries))


def _file_rule(doc: object, index: int) -> FileRule:
    where = f"file_rules[{index}]"
    doc = _mapping(
        doc,
        where,
        frozenset({"group", "filter", "recursive", "behavior", "applications"}),
        ("group", "filter"),
    )
    return FileRule(
        group=_str(doc["group"], f"{where}.group"),
        filter=_str(doc["filter"], f"{where}.filter"),
        recursive=_bool(doc.get("recursive", False), f"{where}.recursive"),
        behavior=_enum(FileBehavior, doc.get("behavior", "monitor"), f"{where}.behavior"),
        applications=tuple(_str(a, f"{where}.applications") for a in _list(doc.get("applications"), where)),
    )


def _sensor(doc: object, index: int) -> Sensor:
    where = f"sensors[{index}]"
    doc = _mapping(
        doc,
        where,
        frozenset({"name", "kind", "context", "patterns", "action", "groups", "description"}),
        ("name", "kind", "context", "patterns"),
    )
    name = _str(doc["name"], f"{where}.name")
    where = f"sensor {name!r}"
    return Sensor(
        name=name,
        kind=_enum(SensorKind, doc["kind"], f"{where}.kind"),
        context=_enum(SensorContext, doc["context"], f"{where}.context"),
        patterns=tuple(_str(p, f"{where}.patterns") for p in _list(doc["patterns"], f"{where}.patterns")),
        action=_enum(SensorAction, doc.get("action", "alert"), f"{where}.action"),
        groups=tuple(_str(g, f"{where}.groups") for g in _list(doc.get("groups"), f"{where}.groups")),
    )


def _group_threats(doc: object) -> Mapping[str, Mapping[str, ThreatSetting]]:
    if doc is None:
        return MappingProxyType({})
    doc = _mapping(doc, "group_threats", frozenset(doc) if isinstance(doc, Mapping) else frozenset())
    return MappingProxyType(
        {
            _str(group, "group_threats"): _threats(settings, f"group_threats.{group}")
            for group, settings in doc.items()
        }
    )


def _threats(doc: object, section: str = "threats") -> Mapping[str, ThreatSetting]:
    if doc is None:
        return MappingProxyType({})
    doc = _mapping(doc, section, frozenset(doc) if isinstance(doc, Mapping) else frozenset())
    out: dict[str, ThreatSetting] = {}
    for name, setting in doc.items():
        where = f"threat {name!r}" if section == "threats" else f"{section}: threat {name!r}"
        _str(name, section)
        setting = _mapping(setting or {}, where, frozenset({"enabled", "action", "thresholds"}))
        thresholds = setting.get("thresholds") or {}
        if not isinstance(thresholds, Mapping):
            raise PolicyError(f"{where}.thresholds: expected a mapping")
        out[name] = ThreatSetting(
            enabled=_bool(setting.get("enabled", True), f"{where}.enabled"),
            action=_enum(ThreatAction, setting["action"], f"{where}.action") if "action" in setting else None,
            thresholds=MappingProxyType(dict(thresholds)),
        )
    return MappingProxyType(out)


def parse_policy(doc: object) -> PolicySnapshot:
    """Build and validate a snapshot from the native mapping; PolicyError names what is wrong."""
    doc = _mapping(doc, "policy", _TOP_KEYS, ("version",))
    version = _int(doc["version"], "version")
    default_mode = parse_mode(_str(doc.get("default_mode", "monitor"), "default_mode"))
    groups = [
        _group(g, f"groups[{i}]", default_mode) for i, g in enumerate(_list(doc.get("groups"), "groups"))
    ]
    names = {g.name for g in groups}
    for builtin in BUILTIN_GROUPS:
        if builtin not in names:
            groups.append(Group(builtin, default_mode))
    snapshot = PolicySnapshot(
        version=version,
        groups=tuple(groups),
        rules=tuple(_rule(r, i) for i, r in enumerate(_list(doc.get("rules"), "rules"))),
        default_mode=default_mode,
        process_profiles=tuple(
            _process_profile(p, i)
            for i, p in enumerate(_list(doc.get("process_profiles"), "process_profiles"))
        ),
        file_rules=tuple(_file_rule(f, i) for i, f in enumerate(_list(doc.get("file_rules"), "file_rules"))),
        sensors=tuple(_sensor(s, i) for i, s in enumerate(_list(doc.get("sensors"), "sensors"))),
        threats=_threats(doc.get("threats")),
        group_threats=_group_threats(doc.get("group_threats")),
    )
    validate_snapshot(snapshot)
    return snapshot


def parse_policy_text(text: str | bytes) -> PolicySnapshot:
    try:
        doc = yaml_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"not valid YAML: {exc}") from None
    return parse_policy(doc)


def load_policy(path: str | os.PathLike[str]) -> PolicySnapshot:
    """Read, parse and validate a native YAML policy file."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            data = f.read(MAX_POLICY_FILE_BYTES + 1)
    except OSError as exc:
        raise PolicyError(f"{p}: cannot read: {exc.strerror}") from None
    if len(data) > MAX_POLICY_FILE_BYTES:
        raise PolicyError(f"{p}: larger than {MAX_POLICY_FILE_BYTES} bytes")
    try:
        return parse_policy_text(data)
    except PolicyError as exc:
        raise PolicyError(f"{p}: {exc}") from None


def policy_to_dict(snapshot: PolicySnapshot) -> dict[str, Any]:
    """The native plain-data form (YAML, JSON and msgpack safe) of a snapshot."""

    def group(g: Group) -> dict[str, Any]:
        out: dict[str, Any] = {"name": g.name, "mode": mode_name(g.mode)}
        members: list[Any] = [str(c) for c in g.cidrs] + [dict(sel) for sel in g.selectors]
        members += [selector_to_dict(ws) for ws in g.workload_selectors]
        if members:
            out["members"] = members
        if g.fqdns:
            out["fqdns"] = list(g.fqdns)
        return out

    def rule(r: Rule) -> dict[str, Any]:
        out: dict[str, Any] = {"id": r.id, "from": r.from_group, "to": r.to_group}
        out["ports"] = [str(p) for p in r.ports]
        out["applications"] = list(r.applications) if r.applications else "any"
        if r.hosts:
            out["hosts"] = list(r.hosts)
        out["action"] = r.action.value
        out["order"] = r.order
        return out

    doc: dict[str, Any] = {
        "version": snapshot.version,
        "default_mode": mode_name(snapshot.default_mode),
        "groups": [group(g) for g in snapshot.groups],
        "rules": [rule(r) for r in snapshot.rules],
    }
    if snapshot.process_profiles:
        doc["process_profiles"] = [
            {
                "group": p.group,
                "processes": [
                    {"name": e.name, "path": e.path, "action": e.action.value} for e in p.processes
                ],
            }
            for p in snapshot.process_profiles
        ]
    if snapshot.file_rules:
        doc["file_rules"] = [
            {
                "group": f.group,
                "filter": f.filter,
                "recursive": f.recursive,
                "behavior": f.behavior.value,
                "applications": list(f.applications),
            }
            for f in snapshot.file_rules
        ]
    if snapshot.sensors:
        doc["sensors"] = [
            {
                "name": s.name,
                "kind": s.kind.value,
                "context": s.context.value,
                "patterns": list(s.patterns),
                "action": s.action.value,
                "groups": list(s.groups),
            }
            for s in snapshot.sensors
        ]
    if snapshot.threats:
        doc["threats"] = _threats_to_dict(snapshot.threats)
    if snapshot.group_threats:
        doc["group_threats"] = {g: _threats_to_dict(t) for g, t in snapshot.group_threats.items()}
    return doc


def _threats_to_dict(threats: Mapping[str, ThreatSetting]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, t in threats.items():
        entry: dict[str, Any] = {"enabled": t.enabled, "thresholds": dict(t.thresholds)}
        if t.action is not None:
            entry["action"] = t.action.value
        out[name] = entry
    return out


def dump_policy(snapshot: PolicySnapshot) -> str:
    """The snapshot as native YAML text."""
    return yaml.dump(
        policy_to_dict(snapshot), Dumper=SafeDumper, sort_keys=False, default_flow_style=None, width=110
    )
