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
import ipaddress
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

from core import anomalies
from core.lookup import Mode
from core.selectors import selector_from_dict, selector_to_dict
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


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _sequence(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list | tuple):
        raise ValueError(f"{where}: expected a list, got {type(value).__name__}")
    return list(value)


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where}: expected a non-empty string, got {value!r}")
    return value


def _choice(value: Any, choices: Iterable[str], where: str) -> str:
    options = list(choices)
    if value not in options:
        raise ValueError(f"{where}: expected one of {', '.join(options)}, got {value!r}")
    return str(value)


def policy_from_dict(data: Mapping[str, Any]) -> RuntimePolicy:
    """A RuntimePolicy from plain data (YAML/JSON/msgpack), as the policy process may hand it over.

    `{"groups": [{"name", "labels" | "selector", "cidrs"}], "profiles": {group: {"mode", "entries": [{"name", "path",
    "action"}]}}, "file_rules": {group: [{"path", "action", "apps"}]}, "workload_labels": {key: {..}}}`.
    Raises ValueError naming the field (`profiles.web.mode: expected one of …`).
    """
    data = _mapping(data, "policy")
    unknown = set(data) - {"groups", "profiles", "file_rules", "workload_labels"}
    if unknown:
        raise ValueError(f"policy: unknown keys {', '.join(sorted(unknown))}")
    groups = []
    for n, g in enumerate(_sequence(data.get("groups", []), "groups")):
        where = f"groups[{n}]"
        g = _mapping(g, where)
        labels = {
            str(k): _text(v, f"{where}.labels.{k}") for k, v in _mapping(g.get("labels", {}), where).items()
        }
        selector = None
        if g.get("selector") is not None:
            selector = selector_from_dict(_mapping(g["selector"], f"{where}.selector"), f"{where}.selector")
        cidrs = tuple(_text(c, f"{where}.cidrs") for c in _sequence(g.get("cidrs", []), f"{where}.cidrs"))
        for c in cidrs:
            try:
                ipaddress.ip_network(c, strict=False)
            except ValueError:
                raise ValueError(f"{where}.cidrs: not an address or network: {c!r}") from None
        groups.append(GroupSelector(_text(g.get("name"), f"{where}.name"), labels, cidrs, selector))
    profiles = {}
    for group, p in _mapping(data.get("profiles", {}), "profiles").items():
        where = f"profiles.{group}"
        p = _mapping(p, where)
        mode = _choice(p.get("mode"), (m.name.lower() for m in Mode), f"{where}.mode")
        entries = []
        for n, e in enumerate(_sequence(p.get("entries", []), f"{where}.entries")):
            ew = f"{where}.entries[{n}]"
            e = _mapping(e, ew)
            action = _choice(e.get("action", "allow"), (a.value for a in EntryAction), f"{ew}.action")
            entries.append(
                ProcessEntry(
                    _text(e.get("name", "*"), f"{ew}.name"),
                    _text(e.get("path", "*"), f"{ew}.path"),
                    EntryAction(action),
                )
            )
        profiles[str(group)] = ProcessProfile(str(group), Mode[mode.upper()], tuple(entries))
    file_rules = {}
    for group, rules in _mapping(data.get("file_rules", {}), "file_rules").items():
        out = []
        for n, r in enumerate(_sequence(rules, f"file_rules.{group}")):
            rw = f"file_rules.{group}[{n}]"
            r = _mapping(r, rw)
            action = _choice(r.get("action", "monitor"), (a.value for a in FileAction), f"{rw}.action")
            apps = tuple(_text(a, f"{rw}.apps") for a in _sequence(r.get("apps", []), f"{rw}.apps"))
            out.append(FileRule(_text(r.get("path"), f"{rw}.path"), FileAction(action), apps))
        file_rules[str(group)] = tuple(out)
    labels_by_key = {
        str(k): {
            str(lk): _text(lv, f"workload_labels.{k}.{lk}")
            for lk, lv in _mapping(v, f"workload_labels.{k}").items()
        }
        for k, v in _mapping(data.get("workload_labels", {}), "workload_labels").items()
    }
    return RuntimePolicy(tuple(groups), profiles, file_rules, labels_by_key)


def policy_to_dict(policy: RuntimePolicy) -> dict[str, Any]:
    return {
        "groups": [
            {
                "name": g.name,
                "labels": dict(g.labels),
                "cidrs": list(g.cidrs),
                **({"selector": selector_to_dict(g.selector)} if g.selector is not None else {}),
            }
            for g in policy.groups
        ],
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
