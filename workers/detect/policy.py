"""The detection part of a policy generation: threat settings per group and DLP/WAF sensors, compiled
off the packet path (`ThreatPolicy`), and the adapters from a `policy.model.PolicySnapshot`.

The readers' guard takes only the settings (`threat_settings_from_snapshot`); workers take both
(`threat_policy_from_snapshot`); the policy process checks a snapshot with `threat_policy_problem` so a
policy whose threat part would not compile is rejected whole.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from threats import catalogue as C
from threats.settings import GroupThreatSettings, compile_group_settings
from workers.detect.sensors import SensorSet, compile_sensors


@dataclasses.dataclass(frozen=True, slots=True)
class ThreatPolicy:
    """The detection part of one policy generation (immutable; compiled off the packet path)."""

    generation: int
    settings: GroupThreatSettings
    sensors: SensorSet


def compile_threat_policy(
    generation: int, threat_settings: Any = None, sensors: Any = None, use_hyperscan: bool = True
) -> ThreatPolicy:
    """Validate and compile the `threat_settings` and `sensors` documents of a policy snapshot.
    Raises ThreatSettingsError / SensorError (both ValueError) naming the bad key or pattern."""
    return ThreatPolicy(
        generation,
        compile_group_settings(threat_settings),
        compile_sensors(sensors, use_hyperscan=use_hyperscan),
    )


EMPTY_POLICY = ThreatPolicy(0, compile_group_settings(None), compile_sensors(None))


def threat_documents_from_snapshot(snapshot: Any) -> dict[str, Any]:
    """The threat settings of a `policy.model.PolicySnapshot` as the document `compile_group_settings`
    takes: `{"default": {...}, "groups": {...}}`. The snapshot names threats either as the catalogue does
    (`syn_flood`) or with a category prefix (`tcp.syn_flood`); its thresholds mapping is flattened into
    the threat's settings; `threats` is the default of every group, `group_threats` overlays it."""

    def documents(settings: Any) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        for name, setting in settings.items():
            short = name.rsplit(".", 1)[-1] if name not in C.BY_NAME else name
            entry: dict[str, Any] = {"enabled": setting.enabled}
            if setting.action is not None:  # None: the catalogue's default action
                entry["action"] = str(setting.action)
            entry.update(dict(setting.thresholds))
            doc[short] = entry
        return doc

    per_group = {group: documents(s) for group, s in getattr(snapshot, "group_threats", {}).items()}
    return {"default": documents(snapshot.threats), "groups": per_group}


def threat_settings_from_snapshot(snapshot: Any) -> GroupThreatSettings:
    """The compiled per-group threat settings of a snapshot (no sensors: what the readers' guard needs)."""
    return compile_group_settings(threat_documents_from_snapshot(snapshot))


def threat_document_from_snapshot(snapshot: Any) -> dict[str, Any]:
    """The threat part of a snapshot's derived document: `version`, `threats` and `sensors`."""
    return {
        "version": snapshot.version,
        "threats": threat_documents_from_snapshot(snapshot),
        "sensors": sensor_documents_from_snapshot(snapshot),
    }


def threat_policy_from_snapshot(snapshot: Any, use_hyperscan: bool = True) -> ThreatPolicy:
    """Compile the threat part of a `policy.model.PolicySnapshot` (its threat settings and sensors), as
    the workers compile it from the published document. Raises ThreatSettingsError/SensorError
    (ValueError) naming the bad threat, key or pattern."""
    return threat_policy_from_document(threat_document_from_snapshot(snapshot), use_hyperscan)


def sensor_documents_from_snapshot(snapshot: Any) -> list[dict[str, Any]]:
    """The sensors of a snapshot as the documents `compile_sensors` takes: each snapshot sensor (one
    context, a list of patterns, groups or none for all) becomes one sensor whose rules are its patterns."""
    return [
        {
            "name": s.name,
            "action": str(s.action),
            "groups": list(s.groups),
            "rules": [
                {"name": f"{s.name}#{i}", "pattern": pattern, "context": str(s.context)}
                for i, pattern in enumerate(s.patterns)
            ],
        }
        for s in snapshot.sensors
    ]


def threat_policy_problem(snapshot: Any) -> str:
    """Why the snapshot's threat settings or sensors would not compile in the workers ("" if they do)."""
    return threat_document_problem(threat_document_from_snapshot(snapshot))


# The published form: the policy process publishes, with each generation of the tables, a document whose
# threat part is `threat_document_from_snapshot`'s (the node host derives it), and readers and workers
# compile from that plain document.


def threat_settings_from_document(document: Mapping[str, Any]) -> GroupThreatSettings:
    """The readers' guard settings from a policy's derived document (`threats`; none: the defaults)."""
    return compile_group_settings(document.get("threats"))


def threat_policy_from_document(document: Mapping[str, Any], use_hyperscan: bool = True) -> ThreatPolicy:
    """The workers' threat settings and sensors from a policy's derived document (`version`, `threats`,
    `sensors`). Raises ThreatSettingsError/SensorError (ValueError) naming the bad threat, key or pattern."""
    return compile_threat_policy(
        int(document.get("version", 0)), document.get("threats"), document.get("sensors"), use_hyperscan
    )


def threat_document_problem(document: Mapping[str, Any]) -> str:
    """Why a derived document's threat settings or sensors would not compile in the workers ("" if they
    do): checked so such a policy is rejected whole, not half applied. Python `re` stands in for
    Hyperscan, which the workers compile with, to keep the check quick."""
    try:
        threat_policy_from_document(document, use_hyperscan=False)
    except Exception as exc:  # ValueError naming the key or pattern; re.error for a pattern it missed
        return f"threat settings or sensors: {exc}"
    return ""
