"""The record the process monitor keeps for a workload process, and the `process` and `threat` events
built from it (docs/runtime.md, Events). Shared by the monitor's main loop and the exec guard's thread."""

from __future__ import annotations

import dataclasses
from typing import Any

from core.events import EventType, make_event
from runtime.identity import Workload
from runtime.proc_connector import ProcessInfo
from runtime.profiles import ProcessEntry, ProcessProfile


@dataclasses.dataclass(slots=True)
class Tracked:
    """A workload process as the monitor knows it: examined, its workload, its group (None: no group)."""

    info: ProcessInfo
    workload: Workload
    group: str | None


def process_event(
    node: str,
    tracked: Tracked,
    action: str,
    profile: ProcessProfile,
    entry: ProcessEntry | None,
    name: str,
    path: str,
    **extra: Any,
) -> dict[str, Any]:
    """A `process` event: `name` and `path` are what the profile matched (as the workload sees them)."""
    fields = _process_fields(tracked.info)
    fields.update(name=name, path=path)
    return make_event(
        EventType.PROCESS,
        node,
        workload=tracked.workload.key,
        action=action,
        group=profile.group,
        mode=profile.mode.name.lower(),
        rule=_entry_text(entry),
        **fields,
        **extra,
    )


def threat_event(
    node: str, tracked: Tracked, name: str, severity: str, action: str, detail: str
) -> dict[str, Any]:
    """A `threat` event of a built-in detection; the process's name is `process_name` (`name` is the
    threat's)."""
    fields = _process_fields(tracked.info)
    fields["process_name"] = fields.pop("name")
    return make_event(
        EventType.THREAT,
        node,
        name=name,
        severity=severity,
        action=action,
        flow=None,
        workload=tracked.workload.key,
        group=tracked.group,
        detail=detail,
        **fields,
    )


def _entry_text(entry: ProcessEntry | None) -> str | None:
    if entry is None:
        return None
    return f"{entry.action.value} name={entry.name} path={entry.path}"


def _process_fields(info: ProcessInfo) -> dict[str, Any]:
    return {
        "pid": info.pid,
        "ppid": info.ppid,
        "name": info.name,
        "path": info.path,
        "cmdline": list(info.cmdline),
        "user": info.user,
        "uid": info.ruid,
        "euid": info.euid,
        "chain": info.chain(),
    }
