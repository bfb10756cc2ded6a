"""Learned rules (Discover mode) written back as NeuVector CRDs, so they can be reviewed and applied
where NeuVector runs, or imported here again (`enforcer policy import`)."""

from __future__ import annotations

from typing import Any

from policy.crd import snapshot_to_crds
from policy.loader import parse_policy
from policy.model import BUILTIN_GROUPS


def learned_as_crds(
    learned: dict[str, Any], policy: dict[str, Any] | None
) -> tuple[dict[str, Any], list[str]]:
    """The learned rules with the groups they name: from the served policy when it defines them, else by
    name alone (a learned `nv.<workload>.<namespace>` group selects its service; others are reported)."""
    rules = list(learned.get("rules") or [])
    groups: list[dict[str, Any]] = []
    known: set[str] = set(BUILTIN_GROUPS)
    for g in (policy or {}).get("groups") or []:
        used = any(g.get("name") in (r.get("from"), r.get("to")) for r in rules)
        if used and g.get("name") not in known:
            groups.append(g)
            known.add(g["name"])
    warnings: list[str] = []
    for r in rules:
        for end in ("from", "to"):
            name = r.get(end)
            if isinstance(name, str) and name not in known:
                groups.append({"name": name, "mode": "discover"})
                known.add(name)
                if not name.startswith("nv."):
                    warnings.append(f"group {name!r}: not in the served policy; exported without criteria")
    doc: dict[str, Any] = {"version": 1, "groups": groups, "rules": rules}
    if policy and "default_mode" in policy:
        doc["default_mode"] = policy["default_mode"]
    crds, more = snapshot_to_crds(parse_policy(doc))
    return crds, warnings + more
