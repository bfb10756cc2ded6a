"""Import of NeuVector's exported security-rule CRDs (`NvSecurityRule`, `NvClusterSecurityRule`).

A CRD document describes one target group (`spec.target`: selector and policy mode), its ingress and
egress rules (each naming a peer group by selector), its process profile and file rules. The
conversion produces the native mapping (see `policy.loader`):

- selectors → groups: `address` criteria (`=` only) become CIDR members (or FQDN patterns); every other
  criterion, with any of NeuVector's operators, is kept as a criteria selector (`core.selectors`:
  `service`, `domain`, `node`, `image` or a pod label); a selector without criteria named
  `nv.<workload>.<namespace>` selects that service; the target's `policymode` is the mode;
  `NvGroupDefinition` documents define groups (criteria, no mode);
- ingress rules: peer → target; egress rules: target → peer; `ports` ("tcp/80,udp/53", "any"),
  `applications`, `action`, `priority` (lower first, then document order);
- rule ids: NeuVector rules are named, not numbered; the id is derived from the name (stable across
  imports, so the same rule keeps its id), and the name is kept as the rule's comment; a name we write
  on export (`enforcer-rule-<id>`) carries its id back;
- `process` → the target's process profile; `file` → file rules (`block_access` → block).

What the model cannot carry (DLP/WAF sensor bindings, which refer to separate sensor CRDs; the process
profile baseline; unknown fields) is reported as a warning naming the item, never dropped silently;
what would change the meaning (address criteria with another operator, mixed with label criteria) is
an error naming the item. `snapshot_to_crds` writes a policy back as NeuVector CRDs.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable
from typing import Any

from core.selectors import (
    DERIVED_IMAGE,
    DERIVED_NAMESPACE,
    DERIVED_NODE,
    DERIVED_SERVICE,
    NEUVECTOR_KEYS,
    SELECTOR_KEYS,
    Op,
    SelectorError,
    selector_from_dict,
)
from policy.model import (
    BUILTIN_GROUPS,
    EXTERNAL,
    LABEL_VALUE_RE,
    NODES,
    FileBehavior,
    Group,
    PolicySnapshot,
    Rule,
    mode_name,
)
from policy.tables import equality_selector

# NeuVector criterion keys that name no workload label here (the CRI contract: core.workload_labels).
NOT_LABELS = {"container": "container names are not workload labels"}

RULE_KINDS = frozenset({"NvSecurityRule", "NvClusterSecurityRule"})
GROUP_KIND = "NvGroupDefinition"
CRD_KINDS = RULE_KINDS | {GROUP_KIND}
EXPORT_RULE_NAME = re.compile(r"^enforcer-rule-([0-9]{1,10})$")  # names our export gives rules
_MODES = {"discover": "discover", "monitor": "monitor", "protect": "protect"}
# What an NvSecurityRule spec may hold (others are reported, not silently dropped).
SPEC_KEYS = frozenset({"target", "ingress", "egress", "process", "process_profile", "file", "dlp", "waf"})
MAX_CRD_ITEMS = 10_000  # CRD documents in one List


class CrdError(ValueError):
    """A CRD document that cannot be converted (the message names the item)."""


def is_crd_document(doc: object) -> bool:
    if not isinstance(doc, dict):
        return False
    kind = doc.get("kind")
    if kind in CRD_KINDS:
        return True
    return kind in ("List", "NvSecurityRuleList", "NvClusterSecurityRuleList", "NvGroupDefinitionList") and (
        isinstance(doc.get("items"), list | None)
    )


def rule_id_for(name: str) -> int:
    """A stable id in 1..2^31-1 from a NeuVector rule name (`enforcer-rule-<id>`: that id)."""
    exported = EXPORT_RULE_NAME.match(name)
    if exported and 1 <= int(exported.group(1)) <= 2**31 - 1:
        return int(exported.group(1))
    digest = hashlib.sha256(name.encode()).digest()
    return int.from_bytes(digest[:4], "big") % (2**31 - 2) + 1


class _Converter:
    def __init__(self) -> None:
        self.groups: dict[str, dict[str, Any]] = {}
        self.rules: list[dict[str, Any]] = []
        self.profiles: dict[str, dict[str, Any]] = {}
        self.file_rules: list[dict[str, Any]] = []
        self.warnings: list[str] = []
        self.ids: dict[int, str] = {}

    def group(self, selector: object, where: str, mode: str | None = None) -> str:
        if not isinstance(selector, dict) or not isinstance(selector.get("name"), str):
            raise CrdError(f"{where}: selector without a name")
        name = selector["name"]
        group = self.groups.get(name)
        if group is None:
            group = self.groups[name] = {"name": name}
        if mode is not None:
            if "mode" in group and group["mode"] != mode:
                raise CrdError(f"{where}: group {name!r} has two policy modes")
            group["mode"] = mode
        if name in (EXTERNAL, NODES):
            return name
        members, fqdns = self._members(selector.get("criteria") or [], f"{where} group {name!r}")
        if members or fqdns:
            old = (group.get("members"), group.get("fqdns"))
            if "members" in group or "fqdns" in group:
                if old != (members or None, fqdns or None):
                    raise CrdError(f"{where}: group {name!r} is selected by different criteria")
            else:
                if members:
                    group["members"] = members
                if fqdns:
                    group["fqdns"] = fqdns
        return name

    def _members(self, criteria: object, where: str) -> tuple[list[Any], list[str]]:
        """Native members and FQDN patterns of a selector's criteria."""
        if not isinstance(criteria, list):
            raise CrdError(f"{where}: criteria is not a list")
        cidrs: list[str] = []
        fqdns: list[str] = []
        others: list[dict[str, str]] = []
        for c in criteria:
            if not isinstance(c, dict):
                raise CrdError(f"{where}: criterion {c!r} is not a mapping")
            key, op, value = c.get("key"), c.get("op", "="), c.get("value")
            if not isinstance(key, str) or not isinstance(value, str) or not isinstance(op, str):
                raise CrdError(f"{where}: criterion {c!r} lacks a key, operator or value")
            if key == "address":
                if op != "=":
                    raise CrdError(f"{where}: criterion address {op} {value}: addresses take '=' only")
                try:
                    cidrs.append(str(ipaddress.ip_network(value, strict=False)))
                except ValueError:
                    if "-" in value:
                        cidrs.extend(_range_to_cidrs(value, where))
                    else:
                        fqdns.append(value.lower())
                continue
            if key in NOT_LABELS:
                self.warnings.append(
                    f"{where}: criterion {key} {op} {value}: {NOT_LABELS[key]}; matched as a pod label {key!r}"
                )
            others.append({"key": key, "op": op, "value": value})
        if others and (cidrs or fqdns):
            raise CrdError(
                f"{where}: address criteria mixed with workload criteria (NeuVector keeps them apart)"
            )
        if others:
            try:  # checked here, so the error names the CRD item rather than the converted group
                selector_from_dict({"criteria": others}, where)
            except SelectorError as exc:
                raise CrdError(str(exc)) from None
            if _plain_labels(others):
                # Pod labels by equality only: the plain form, which the runtime monitor's process
                # and file profiles select by as well.
                return [{c["key"]: c["value"] for c in others}], []
            return [{"criteria": others}], []
        return list(cidrs), fqdns

    def rule(self, rule: object, target: str, direction: str, index: int, where: str) -> None:
        if not isinstance(rule, dict):
            raise CrdError(f"{where}: {direction}[{index}] is not a mapping")
        name = rule.get("name") or f"{target}-{direction}-{index}"
        if not isinstance(name, str):
            raise CrdError(f"{where}: {direction}[{index}] name is not a string")
        where = f"{where} rule {name!r}"
        peer = self.group(rule.get("selector"), where)
        rid = rule_id_for(name)
        if rid in self.ids and self.ids[rid] != name:
            raise CrdError(f"{where}: id collision with rule {self.ids[rid]!r}; rename one")
        if rid in self.ids:
            raise CrdError(f"{where}: rule name used twice")
        self.ids[rid] = name
        ports = rule.get("ports", "any")
        if not isinstance(ports, str):
            raise CrdError(f"{where}: ports {ports!r} is not a string")
        apps = rule.get("applications") or ["any"]
        if isinstance(apps, str):
            apps = [apps]
        if not isinstance(apps, list):
            raise CrdError(f"{where}: applications is not a list")
        action = str(rule.get("action", "allow")).lower()
        priority = rule.get("priority", 0)
        if not isinstance(priority, int):
            raise CrdError(f"{where}: priority {priority!r} is not an integer")
        src, dst = (peer, target) if direction == "ingress" else (target, peer)
        self.rules.append(
            {
                "id": rid,
                "from": src,
                "to": dst,
                "ports": [p.strip() for p in ports.split(",") if p.strip()] or ["any"],
                "applications": "any" if any(str(a).lower() == "any" for a in apps) else apps,
                "action": action,
                "order": priority,
                "comment": name,
            }
        )

    def document(self, doc: dict[str, Any], where: str) -> None:
        spec = doc.get("spec")
        if not isinstance(spec, dict):
            raise CrdError(f"{where}: no spec")
        if doc.get("kind") == GROUP_KIND:
            self.group(spec.get("selector"), f"{where} selector")
            return
        for key in spec:
            if key not in SPEC_KEYS:
                self.warnings.append(f"{where}: spec.{key} is not carried over (unknown to this enforcer)")
        baseline = (
            (spec.get("process_profile") or {}).get("baseline")
            if isinstance(spec.get("process_profile"), dict)
            else None
        )
        if baseline:
            self.warnings.append(
                f"{where}: process_profile baseline {baseline!r} not carried over (the process list is "
                "enforced in the group's mode)"
            )
        target = spec.get("target")
        if not isinstance(target, dict):
            raise CrdError(f"{where}: spec.target is missing")
        mode_text = target.get("policymode")
        mode = _MODES.get(str(mode_text).lower()) if mode_text not in (None, "N/A", "") else None
        if mode_text not in (None, "N/A", "") and mode is None:
            raise CrdError(f"{where}: policymode {mode_text!r} is not Discover, Monitor or Protect")
        tname = self.group(target.get("selector"), f"{where} target", mode)
        for direction in ("ingress", "egress"):
            rules = spec.get(direction) or []
            if not isinstance(rules, list):
                raise CrdError(f"{where}: {direction} is not a list")
            for i, rule in enumerate(rules):
                self.rule(rule, tname, direction, i, where)
        processes = spec.get("process") or []
        if processes:
            if not isinstance(processes, list):
                raise CrdError(f"{where}: process is not a list")
            profile = self.profiles.setdefault(tname, {"group": tname, "processes": []})
            for p in processes:
                if not isinstance(p, dict) or not isinstance(p.get("name"), str):
                    raise CrdError(f"{where}: process entry {p!r} has no name")
                entry = {
                    "name": p["name"],
                    "path": p.get("path") or "*",
                    "action": str(p.get("action", "allow")).lower(),
                }
                if p.get("allow_update"):
                    self.warnings.append(f"{where}: process {p['name']!r}: allow_update not carried over")
                if entry not in profile["processes"]:
                    profile["processes"].append(entry)
        files = spec.get("file") or []
        if not isinstance(files, list):
            raise CrdError(f"{where}: file is not a list")
        for f in files:
            if not isinstance(f, dict) or not isinstance(f.get("filter"), str):
                raise CrdError(f"{where}: file rule {f!r} has no filter")
            behavior = str(f.get("behavior", "monitor_change")).lower()
            self.file_rules.append(
                {
                    "group": tname,
                    "filter": f["filter"],
                    "recursive": bool(f.get("recursive", False)),
                    "behavior": "block" if behavior == "block_access" else "monitor",
                    "applications": [str(a) for a in f.get("app") or []],
                }
            )
        for key in ("dlp", "waf"):
            sensors = spec.get(key) or {}
            settings = sensors.get("settings") if isinstance(sensors, dict) else None
            if settings:
                self.warnings.append(
                    f"{where}: {key} sensor bindings not imported (define sensors in the native policy)"
                )

    def native(self, version: int) -> dict[str, Any]:
        doc: dict[str, Any] = {"version": version, "groups": list(self.groups.values()), "rules": self.rules}
        if self.profiles:
            doc["process_profiles"] = list(self.profiles.values())
        if self.file_rules:
            doc["file_rules"] = self.file_rules
        return doc


def _plain_labels(criteria: list[dict[str, str]]) -> bool:
    """Every criterion `label = value` on a distinct pod label, without wildcards."""
    keys = [c["key"] for c in criteria]
    return len(set(keys)) == len(keys) and all(
        c["op"] == "="
        and c["key"] not in NEUVECTOR_KEYS
        and c["key"] not in SELECTOR_KEYS
        and "*" not in c["value"]
        and "?" not in c["value"]
        and LABEL_VALUE_RE.match(c["value"])
        for c in criteria
    )


def _range_to_cidrs(text: str, where: str) -> list[str]:
    low_text, _, high_text = text.partition("-")
    try:
        low, high = ipaddress.ip_address(low_text.strip()), ipaddress.ip_address(high_text.strip())
        return [str(n) for n in ipaddress.summarize_address_range(low, high)]
    except (ValueError, TypeError):
        raise CrdError(f"{where}: address {text!r} is not an address, CIDR, range or FQDN") from None


def _items(docs: Iterable[object]) -> Iterable[tuple[dict[str, Any], str]]:
    n = 0
    for i, doc in enumerate(docs):
        if doc is None:
            continue
        if not is_crd_document(doc):
            raise CrdError(
                f"document {i}: not an NvSecurityRule or NvClusterSecurityRule (or a List of them)"
            )
        assert isinstance(doc, dict)
        items = (doc["items"] or []) if doc.get("kind") not in CRD_KINDS else [doc]
        for j, item in enumerate(items):
            n += 1
            if n > MAX_CRD_ITEMS:
                raise CrdError(f"more than {MAX_CRD_ITEMS} CRD documents")
            if not isinstance(item, dict) or item.get("kind") not in CRD_KINDS:
                raise CrdError(
                    f"document {i} item {j}: not an NvSecurityRule, NvClusterSecurityRule or NvGroupDefinition"
                )
            meta = item["metadata"] if isinstance(item.get("metadata"), dict) else {}
            yield item, f"{item['kind']} {meta.get('name', f'#{i}.{j}')!r}"


def convert_crds(docs: Iterable[object], version: int = 1) -> tuple[dict[str, Any], list[str]]:
    """Convert CRD documents (as loaded from YAML) into one native mapping; returns it and warnings."""
    conv = _Converter()
    for item, where in _items(docs):
        conv.document(item, where)
    return conv.native(version), conv.warnings


def crd_to_native(doc: object, version: int = 0) -> dict[str, Any]:
    """One CRD document (or List) → native mapping (warnings are logged by the caller's validation)."""
    native, _ = convert_crds([doc], version)
    return native


# ---- export ---------------------------------------------------------------------------------------

API_VERSION = "neuvector.com/v1"
_K8S_NAME = re.compile(r"[^a-z0-9.-]+")
_NV_MODES = {"discover": "Discover", "monitor": "Monitor", "protect": "Protect"}


def _criteria_of(group: Group, where: str, warnings: list[str]) -> list[dict[str, str]]:
    """NeuVector criteria selecting what `group` selects (one AND-of-ORs set; a group NeuVector cannot
    express that way is reported and exported with its first selector)."""
    out: list[dict[str, str]] = [{"key": "address", "op": "=", "value": str(c)} for c in group.cidrs]
    out += [{"key": "address", "op": "=", "value": f} for f in group.fqdns]
    selectors = [equality_selector(s) for s in group.selectors] + list(group.workload_selectors)
    if len(selectors) > 1:
        warnings.append(
            f"{where}: {len(selectors)} selectors ORed: NeuVector criteria hold one; the first is exported"
        )
    if selectors and out:
        warnings.append(
            f"{where}: addresses and workload selectors in one group: only the addresses are exported"
        )
        return out
    if not selectors:
        return out
    sel = selectors[0]
    names = {
        DERIVED_SERVICE: "service",
        DERIVED_NAMESPACE: "domain",
        DERIVED_NODE: "node",
        DERIVED_IMAGE: "image",
    }
    for r in sel.labels:
        key = names.get(r.key, r.key)  # a namespaceSelector is on the derived namespace
        if r.op == Op.IN:
            out += [{"key": key, "op": "=", "value": v} for v in r.values]  # same key: ORed
        elif r.op == Op.NOT_IN:
            out += [{"key": key, "op": "!=", "value": v} for v in r.values]  # negatives: ANDed
        elif r.op == Op.EXISTS:
            out.append({"key": key, "op": "=", "value": "*"})
        else:
            out.append({"key": key, "op": "!=", "value": "*"})
    out += [{"key": "domain", "op": "=", "value": ns} for ns in sel.namespaces]
    out += [{"key": names.get(r.key, r.key), "op": r.op.value, "value": r.values[0]} for r in sel.criteria]
    return out


def _ports_text(rule: Rule) -> str:
    specs = []
    for p in rule.ports:
        text = str(p)
        specs.append(text[: -len("/any")] if text.endswith("/any") else text)
    return "any" if "any" in specs else ",".join(specs)


def _k8s_name(name: str) -> str:
    return (_K8S_NAME.sub("-", name.lower()).strip("-.") or "group")[:253]


def snapshot_to_crds(snapshot: PolicySnapshot) -> tuple[dict[str, Any], list[str]]:
    """A policy as NeuVector CRDs (a `List`): one NvGroupDefinition per group (so an import rebuilds them
    in order), then one NvSecurityRule per group of ours (its mode, the rules into it as ingress, the rules
    from it to the built-in groups as egress, its process profile and file rules); NvClusterSecurityRule
    where the group has no single namespace. Rules are named `enforcer-rule-<id>` so their ids survive
    an import. Returns the document and what could not be carried (sensors, threats, virtual hosts)."""
    warnings: list[str] = []
    criteria = {g.name: _criteria_of(g, f"group {g.name!r}", warnings) for g in snapshot.groups}

    def selector(name: str) -> dict[str, Any]:
        return {"name": name, "criteria": criteria.get(name, [])}

    items: list[dict[str, Any]] = [
        {"apiVersion": API_VERSION, "kind": GROUP_KIND, "metadata": {"name": _k8s_name(g.name)},
         "spec": {"selector": selector(g.name)}}
        for g in snapshot.groups if not g.builtin
    ]  # fmt: skip
    ingress: dict[str, list[dict[str, Any]]] = {}
    egress: dict[str, list[dict[str, Any]]] = {}
    for r in snapshot.rules:
        if r.hosts:
            warnings.append(
                f"rule {r.id}: virtual hosts {list(r.hosts)} not exported (NeuVector rules have none)"
            )
        entry = {
            "action": r.action.value,
            "applications": list(r.applications) or ["any"],
            "name": f"enforcer-rule-{r.id}",
            "ports": _ports_text(r),
            "priority": r.order,
        }
        if r.to_group in BUILTIN_GROUPS and r.from_group not in BUILTIN_GROUPS:
            egress.setdefault(r.from_group, []).append({**entry, "selector": selector(r.to_group)})
        elif r.to_group in BUILTIN_GROUPS:
            warnings.append(
                f"rule {r.id}: between built-in groups: NeuVector has no target for it; not exported"
            )
        else:
            ingress.setdefault(r.to_group, []).append({**entry, "selector": selector(r.from_group)})
    profiles = {p.group: p for p in snapshot.process_profiles}
    for g in snapshot.groups:
        if g.builtin:
            continue
        namespaces = {c["value"] for c in criteria[g.name] if c["key"] == "domain" and c["op"] == "="}
        meta: dict[str, Any] = {"name": _k8s_name(g.name)}
        if len(namespaces) == 1 and "*" not in next(iter(namespaces)):
            meta["namespace"] = next(iter(namespaces))
        spec: dict[str, Any] = {
            "target": {"policymode": _NV_MODES[mode_name(g.mode)], "selector": selector(g.name)},
            "ingress": ingress.get(g.name, []),
            "egress": egress.get(g.name, []),
        }
        if g.name in profiles:
            spec["process"] = [
                {"action": e.action.value, "name": e.name, "path": e.path} for e in profiles[g.name].processes
            ]
        files = [f for f in snapshot.file_rules if f.group == g.name]
        if files:
            spec["file"] = [
                {"behavior": "block_access" if f.behavior == FileBehavior.BLOCK else "monitor_change",
                 "filter": f.filter, "recursive": f.recursive, "app": list(f.applications)}
                for f in files
            ]  # fmt: skip
        kind = "NvSecurityRule" if "namespace" in meta else "NvClusterSecurityRule"
        items.append({"apiVersion": API_VERSION, "kind": kind, "metadata": meta, "spec": spec})
    if snapshot.sensors:
        warnings.append(
            f"{len(snapshot.sensors)} DLP/WAF sensors not exported (NeuVector keeps them in sensor CRDs)"
        )
    if snapshot.threats or snapshot.group_threats:
        warnings.append("threat settings not exported (NeuVector has no CRD for them)")
    return {"apiVersion": "v1", "kind": "List", "items": items}, warnings
