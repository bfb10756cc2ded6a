"""What the processes compile from a policy beyond its L3/L4 tables: the derived document.

The policy process publishes it with each generation of the shared tables (`policy.document`); the
node host, which knows the consumers, says what goes in and how each one compiles its part:

    version  the policy version                      (workers: stamps the compiled threat policy)
    threats  per-group threat settings               (readers' guard and workers)
    sensors  DLP/WAF sensors                         (workers)
    runtime  groups, process profiles, file rules    (runtime child: `runtime.profiles.policy_from_dict`)
"""

from __future__ import annotations

from typing import Any

from core.selectors import selector_to_dict
from policy.model import PolicySnapshot, mode_name


def derive_document(snapshot: PolicySnapshot) -> dict[str, Any]:
    from workers.detect.engine import threat_document_from_snapshot

    return {**threat_document_from_snapshot(snapshot), "runtime": runtime_policy_dict(snapshot)}


def document_problem(document: dict[str, Any]) -> str:
    """Why a derived document would not compile in one of its consumers ("" if it compiles in all)."""
    from runtime.profiles import policy_from_dict
    from workers.detect.engine import threat_document_problem

    problem = threat_document_problem(document)
    if problem:
        return problem
    try:
        policy_from_dict(document.get("runtime") or {})
    except ValueError as exc:
        return f"process profiles or file rules: {exc}"
    return ""


def runtime_policy_dict(snapshot: PolicySnapshot) -> dict[str, Any]:
    """The runtime monitor's view of a snapshot: the model keeps process profiles and file rules per group
    (`policy/model.py`); the monitor wants them keyed by group with the group's mode and the selectors that
    say which workload is in which group (`runtime/profiles.py`)."""
    groups: list[dict[str, Any]] = []
    for g in snapshot.groups:
        cidrs = [str(c) for c in g.cidrs]
        for selector in g.selectors:
            groups.append({"name": g.name, "labels": dict(selector), "cidrs": cidrs})
        for ws in g.workload_selectors:
            groups.append({"name": g.name, "selector": selector_to_dict(ws), "cidrs": cidrs})
        if not g.selectors and not g.workload_selectors and cidrs:
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
