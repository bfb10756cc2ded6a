"""Process profiles and file rules per group, and what a process means under a group's mode.

A profile is the group's list of process entries (allow or deny, by name and by path, with shell-style
wildcards) plus the group's mode. `decide()` is pure: the monitor asks it, then acts (learn, report,
kill). What Discover learns is kept here too (bounded per group) so a learned process is allowed at
once, before the controller has stored it and sent the profile back.
"""

from __future__ import annotations

import dataclasses
import enum
import fnmatch
from collections.abc import Mapping, MutableMapping
from typing import Any

from pipeline import anomalies
from policy.lookup import Mode
from runtime.identity import GroupSelector


class EntryAction(enum.StrEnum):
    ALLOW = "allow"
    DENY = "deny"


@dataclasses.dataclass(frozen=True, slots=True)
class ProcessEntry:
    """`name` matches the process name, `path` its executable; `*` and `?` are wildcards."""

    name: str = "*"
    path: str = "*"
    action: EntryAction = EntryAction.ALLOW

    def matches(self, name: str, path: str) -> bool:
        return fnmatch.fnmatchcase(name, self.name) and fnmatch.fnmatchcase(path, self.path)


@dataclasses.dataclass(frozen=True, slots=True)
class ProcessProfile:
    group: str
    mode: Mode
    entries: tuple[ProcessEntry, ...] = ()


class FileAction(enum.StrEnum):
    MONITOR = "monitor"  # report changes
    BLOCK = "block"  # Protect: deny opening to processes not in `apps`


@dataclasses.dataclass(frozen=True, slots=True)
class FileRule:
    """A path pattern watched in a group's workloads; `apps` are process names allowed to open it."""

    path: str
    action: FileAction = FileAction.MONITOR
    apps: tuple[str, ...] = ()

    def covers(self, path: str) -> bool:
        return fnmatch.fnmatchcase(path, self.path) or path.startswith(self.path.rstrip("/") + "/")


@dataclasses.dataclass(frozen=True, slots=True)
class RuntimePolicy:
    """What `get_profiles()` returns: groups (first match wins), their profiles and file rules.

    `workload_labels` maps a workload key, pod UID or netns name to labels the controller knows.
    """

    groups: tuple[GroupSelector, ...] = ()
    profiles: Mapping[str, ProcessProfile] = dataclasses.field(default_factory=dict)
    file_rules: Mapping[str, tuple[FileRule, ...]] = dataclasses.field(default_factory=dict)
    workload_labels: Mapping[str, Mapping[str, str]] = dataclasses.field(default_factory=dict)


class Outcome(enum.Enum):
    ALLOWED = "allowed"  # in the profile
    LEARN = "learned"  # Discover, not in the profile
    VIOLATION = "violation"  # Monitor (or Discover with a deny entry): report only
    KILL = "killed"  # Protect: deny or kill, and report


def decide(
    profile: ProcessProfile, name: str, path: str, learned: frozenset[tuple[str, str]] = frozenset()
) -> tuple[Outcome, ProcessEntry | None]:
    """The outcome for a process under `profile`: the first matching entry wins; a deny entry is a
    violation in every mode (killed in Protect); no entry: learn, report or kill per the mode."""
    for entry in profile.entries:
        if entry.matches(name, path):
            if entry.action == EntryAction.ALLOW:
                return Outcome.ALLOWED, entry
            return (Outcome.KILL if profile.mode == Mode.PROTECT else Outcome.VIOLATION), entry
    if (name, path) in learned:
        return Outcome.ALLOWED, None
    if profile.mode == Mode.DISCOVER:
        return Outcome.LEARN, None
    if profile.mode == Mode.MONITOR:
        return Outcome.VIOLATION, None
    return Outcome.KILL, None


class Learner:
    """Processes learned per group in Discover, bounded per group (beyond: counted, not learned)."""

    def __init__(self, per_group_max: int, counters: MutableMapping[str, int]) -> None:
        self._max = per_group_max
        self._counters = counters
        self._learned: dict[str, set[tuple[str, str]]] = {}
        self._frozen: dict[str, frozenset[tuple[str, str]]] = {}

    def learn(self, group: str, name: str, path: str) -> bool:
        """Record (name, path) for `group`; True if it is new (and so must be reported)."""
        known = self._learned.setdefault(group, set())
        if (name, path) in known:
            return False
        if len(known) >= self._max:
            self._counters[anomalies.RUNTIME_LEARN_GROUP_FULL] = (
                self._counters.get(anomalies.RUNTIME_LEARN_GROUP_FULL, 0) + 1
            )
            return False
        known.add((name, path))
        self._frozen.pop(group, None)
        return True

    def learned(self, group: str) -> frozenset[tuple[str, str]]:
        f = self._frozen.get(group)
        if f is None:
            f = self._frozen[group] = frozenset(self._learned.get(group, ()))
        return f


def policy_from_dict(data: Mapping[str, Any]) -> RuntimePolicy:
    """A RuntimePolicy from plain data (JSON/msgpack), as the policy process may hand it over.

    `{"groups": [{"name", "labels", "cidrs"}], "profiles": {group: {"mode", "entries": [{"name", "path",
    "action"}]}}, "file_rules": {group: [{"path", "action", "apps"}]}, "workload_labels": {key: {..}}}`.
    Raises ValueError (naming the field) on bad input.
    """
    try:
        groups = tuple(
            GroupSelector(str(g["name"]), dict(g.get("labels", {})), tuple(g.get("cidrs", ())))
            for g in data.get("groups", ())
        )
        profiles = {
            str(group): ProcessProfile(
                str(group),
                Mode[str(p["mode"]).upper()],
                tuple(
                    ProcessEntry(
                        str(e.get("name", "*")),
                        str(e.get("path", "*")),
                        EntryAction(e.get("action", "allow")),
                    )
                    for e in p.get("entries", ())
                ),
            )
            for group, p in dict(data.get("profiles", {})).items()
        }
        file_rules = {
            str(group): tuple(
                FileRule(str(r["path"]), FileAction(r.get("action", "monitor")), tuple(r.get("apps", ())))
                for r in rules
            )
            for group, rules in dict(data.get("file_rules", {})).items()
        }
        labels = {str(k): dict(v) for k, v in dict(data.get("workload_labels", {})).items()}
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"runtime policy: {e!r}") from None
    return RuntimePolicy(groups, profiles, file_rules, labels)


def policy_to_dict(policy: RuntimePolicy) -> dict[str, Any]:
    return {
        "groups": [{"name": g.name, "labels": dict(g.labels), "cidrs": list(g.cidrs)} for g in policy.groups],
        "profiles": {
            name: {
                "mode": p.mode.name.lower(),
                "entries": [{"name": e.name, "path": e.path, "action": e.action.value} for e in p.entries],
            }
            for name, p in policy.profiles.items()
        },
        "file_rules": {
            group: [{"path": r.path, "action": r.action.value, "apps": list(r.apps)} for r in rules]
            for group, rules in policy.file_rules.items()
        },
        "workload_labels": {k: dict(v) for k, v in policy.workload_labels.items()},
    }
