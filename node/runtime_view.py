"""The runtime monitor's view of a policy snapshot: groups, process profiles and file rules.

The policy model stores process profiles and file rules per group (`policy/model.py`); the runtime
monitor wants them keyed by group with the group's mode and the selectors that say which workload is in
which group (`runtime/profiles.py`). This is the one place that maps the first onto the second.
"""

from __future__ import annotations

from typing import Any

from policy.model import PolicySnapshot, mode_name
from runtime.profiles import RuntimePolicy, policy_from_dict


def runtime_policy_dict(snapshot: PolicySnapshot) -> dict[str, Any]:
    groups: list[dict[str, Any]] = []
    for g in snapshot.groups:
        cidrs = [str(c) for c in g.cidrs]
        for selector in g.selectors:
            groups.append({"name": g.name, "labels": dict(selector), "cidrs": cidrs})
        if not g.selectors and cidrs:
            groups.append({"name": g.name, "labels": {}, "cidrs": cidrs})
    modes = {g.name: mode_name(g.mode) for g in snapshot.groups}
    profiles = {
        p.group: {
            "mode": modes.get(p.group, mode_name(snapshot.default_mode)),
            "entries": [{"name": e.name, "path": e.path, "action": e.action.value} for e in p.processes],
        }
        for p in snapshot.process_profiles
    }
    file_rules: dict[str, list[dict[str, Any]]] = {}
    for r in snapshot.file_rules:
        path = r.filter.rstrip("/") + "/*" if r.recursive and not r.filter.endswith("*") else r.filter
        file_rules.setdefault(r.group, []).append(
            {"path": path, "action": r.behavior.value, "apps": [a.rsplit("/", 1)[-1] for a in r.applications]}
        )
    return {"groups": groups, "profiles": profiles, "file_rules": file_rules}


def runtime_policy(snapshot: PolicySnapshot) -> RuntimePolicy:
    return policy_from_dict(runtime_policy_dict(snapshot))
