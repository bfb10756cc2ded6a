"""Import of NeuVector's exported security-rule CRDs (`NvSecurityRule`, `NvClusterSecurityRule`).

A CRD document describes one target group (`spec.target`: selector and policy mode), its ingress and
egress rules (each naming a peer group by selector), its process profile and file rules. The
conversion produces the native mapping (see `policy.loader`):

- selectors → groups: `address` criteria become CIDR members (or FQDN patterns), `domain` the
  `namespace` label, any other `key = value` criterion a label; the target's `policymode` is the mode;
- ingress rules: peer → target; egress rules: target → peer; `ports` ("tcp/80,udp/53", "any"),
  `applications`, `action`, `priority` (lower first, then document order);
- rule ids: NeuVector rules are named, not numbered; the id is derived from the name (stable across
  imports, so the same rule keeps its id), and the name is kept as the rule's comment;
- `process` → the target's process profile; `file` → file rules (`block_access` → block).

What the model cannot express (criteria operators other than `=`, DLP/WAF sensor bindings, which
refer to separate sensor CRDs) is reported as an error or a warning naming the item, never dropped
silently.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable
from typing import Any

from policy.model import EXTERNAL, NODES

CRD_KINDS = frozenset({"NvSecurityRule", "NvClusterSecurityRule"})
_MODES = {"discover": "discover", "monitor": "monitor", "protect": "protect"}
MAX_CRD_ITEMS = 10_000  # CRD documents in one List


class CrdError(ValueError):
    """A CRD document that cannot be converted (the message names the item)."""


def is_crd_document(doc: object) -> bool:
    if not isinstance(doc, dict):
        return False
    kind = doc.get("kind")
    if kind in CRD_KINDS:
        return True
    return kind in ("List", "NvSecurityRuleList", "NvClusterSecurityRuleList") and isinstance(
        doc.get("items"), list
    )


def rule_id_for(name: str) -> int:
    """A stable id in 1..2^31-1 from a NeuVector rule name."""
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
        members = self._members(selector.get("criteria") or [], f"{where} group {name!r}")
        if members is not None:
            cidrs, labels, fqdns = members
            old = (group.get("members"), group.get("fqdns"))
            new_members = cidrs + ([labels] if labels else [])
            if "members" in group or "fqdns" in group:
                if old != (new_members or None, fqdns or None):
                    if new_members or fqdns:
                        raise CrdError(f"{where}: group {name!r} is selected by different criteria")
            else:
                if new_members:
                    group["members"] = new_members
                if fqdns:
                    group["fqdns"] = fqdns
        return name

    def _members(self, criteria: object, where: str) -> tuple[list[str], dict[str, str], list[str]] | None:
        if not isinstance(criteria, list):
            raise CrdError(f"{where}: criteria is not a list")
        if not criteria:
            return None
        cidrs: list[str] = []
        fqdns: list[str] = []
        labels: dict[str, str] = {}
        for c in criteria:
            if not isinstance(c, dict):
                raise CrdError(f"{where}: criterion {c!r} is not a mapping")
            key, op, value = c.get("key"), c.get("op", "="), c.get("value")
            if not isinstance(key, str) or not isinstance(value, str):
                raise CrdError(f"{where}: criterion {c!r} lacks a key or value")
            if op != "=":
                raise CrdError(f"{where}: criterion {key} {op} {value}: only '=' can be imported")
            if key == "address":
                try:
                    cidrs.append(str(ipaddress.ip_network(value, strict=False)))
                except ValueError:
                    if "-" in value:
                        cidrs.extend(_range_to_cidrs(value, where))
                    else:
                        fqdns.append(value.lower())
            elif key == "domain":
                labels["namespace"] = value
            else:
                labels[key] = value
        return cidrs, labels, fqdns

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
        items = doc["items"] if doc.get("kind") not in CRD_KINDS else [doc]
        for j, item in enumerate(items):
            n += 1
            if n > MAX_CRD_ITEMS:
                raise CrdError(f"more than {MAX_CRD_ITEMS} CRD documents")
            if not isinstance(item, dict) or item.get("kind") not in CRD_KINDS:
                raise CrdError(f"document {i} item {j}: not an NvSecurityRule or NvClusterSecurityRule")
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
