"""File activity on each workload's sensitive paths and on the paths of its group's file rules.

fanotify (notification class) reports changes with the PID that made them, so each event is tied to a
workload and its group; a second, content-class group answers FAN_OPEN_PERM on the paths of `block`
rules, so in Protect a process the rule does not list cannot open them. Where fanotify cannot be used,
inotify reports changes (no PID, so no process and no blocking; counted). A hot file does not flood:
the `Aggregator` reports a key's first event at once and folds the rest of its window into one event
with a count.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import os
import select
import threading
import time
from collections.abc import Iterable, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

from core import anomalies
from core.events import EventType, make_event
from core.lookup import Mode
from runtime.fanotify import (
    FAN_CLASS_CONTENT,
    FAN_CLASS_NOTIF,
    FAN_CLOSE_WRITE,
    FAN_EVENT_ON_CHILD,
    FAN_MODIFY,
    FAN_OPEN,
    FAN_OPEN_PERM,
    FAN_Q_OVERFLOW,
    IN_ATTRIB,
    IN_CLOSE_WRITE,
    IN_CREATE,
    IN_DELETE,
    IN_MODIFY,
    IN_MOVED_TO,
    IN_Q_OVERFLOW,
    STOP_CHECK_MS,
    Fanotify,
    Inotify,
    fd_path,
    parse_fanotify_events,
    parse_inotify_events,
)
from runtime.identity import Workload, WorkloadResolver
from runtime.profiles import FileAction, FileRule
from runtime.settings import RuntimeSettings

if TYPE_CHECKING:
    from runtime.process_monitor import ProcessMonitor

# Home directories expanded for `~` per root (bound on the glob).
HOMES_MAX = 256
# Matches of one wildcard path pattern that are watched.
GLOB_MAX = 1024
_CHANGE_MASK = FAN_MODIFY | FAN_CLOSE_WRITE
_INOTIFY_MASK = IN_MODIFY | IN_CLOSE_WRITE | IN_ATTRIB | IN_CREATE | IN_DELETE | IN_MOVED_TO


def expand_paths(
    root: str, paths: Iterable[str], homes_max: int = HOMES_MAX, glob_max: int = GLOB_MAX
) -> list[str]:
    """The existing paths under `root` for a list of workload paths: `~` is /root and each /home/*,
    wildcards (`*`, `?`, `[`) are expanded (at most `glob_max` matches per pattern)."""
    out: list[str] = []
    base = root.rstrip("/")
    for p in paths:
        if p.startswith("~"):
            homes = [base + "/root"] + sorted(glob.glob(glob.escape(base) + "/home/*"))[:homes_max]
            candidates = [h + p[1:] for h in homes]
        else:
            candidates = [base + p]
        for c in candidates:
            if any(ch in c[len(base) :] for ch in "*?["):
                out.extend(sorted(glob.glob(glob.escape(base) + c[len(base) :]))[:glob_max])
            elif os.path.lexists(c):
                out.append(c)
    return out


@dataclasses.dataclass(slots=True)
class _Slot:
    start: float
    extra: int
    sample: dict[str, Any]


class Aggregator:
    """Folds identical file events: the first of a key is reported now, the rest of its window as one
    event with `count` when the window ends. Keys beyond `max_keys` are dropped and counted."""

    def __init__(self, window_s: float, max_keys: int, counters: MutableMapping[str, int]) -> None:
        self._window = window_s
        self._max = max_keys
        self._counters = counters
        self._slots: dict[tuple[Any, ...], _Slot] = {}

    def add(self, key: tuple[Any, ...], fields: dict[str, Any], now: float) -> dict[str, Any] | None:
        """Fields to report now (the key's first in its window), or None if folded (or dropped)."""
        slot = self._slots.get(key)
        if slot is not None and now - slot.start < self._window:
            slot.extra += 1
            return None
        if slot is None and len(self._slots) >= self._max:
            self._counters[anomalies.RUNTIME_FILE_AGGREGATE_FULL] = (
                self._counters.get(anomalies.RUNTIME_FILE_AGGREGATE_FULL, 0) + 1
            )
            return None
        self._slots[key] = _Slot(now, 0, fields)
        return dict(fields, count=1)

    def flush(self, now: float) -> list[dict[str, Any]]:
        """Aggregated fields of the windows that have ended (only those that folded something)."""
        out = []
        for key in [k for k, s in self._slots.items() if now - s.start >= self._window]:
            slot = self._slots.pop(key)
            if slot.extra:
                out.append(dict(slot.sample, count=slot.extra, aggregated=True))
        return out


class FileMonitor:
    def __init__(
        self, settings: RuntimeSettings, counters: MutableMapping[str, int], monitor: ProcessMonitor
    ) -> None:
        self.settings = settings
        self.counters = counters
        self.monitor = monitor
        self.backend: str | None = None
        self._notify: Fanotify | None = None
        self._perm: Fanotify | None = None
        self._inotify: Inotify | None = None
        self._wd: dict[int, str] = {}
        self._roots: list[str] = ["/"]
        self._marked: set[tuple[str, int]] = set()  # (path, mask) already marked
        self._perm_marked: set[str] = set()
        self._rules: Mapping[str, tuple[FileRule, ...]] = {}
        self._agg = Aggregator(settings.file_aggregate_window_s, settings.file_aggregate_keys_max, counters)
        self._resolver = WorkloadResolver()  # ours: the permission thread uses its own
        self._perm_resolver = WorkloadResolver()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._notify_thread: threading.Thread | None = None
        self._notify_resolver = WorkloadResolver()
        # Changes identified by the notification thread, waiting for the main loop (bounded).
        self._changes: collections.deque[tuple[float, int, Workload | None, str | None, str, str, int]] = (
            collections.deque()
        )

    def _count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    # ---- setup --------------------------------------------------------------------------------------
    def start(self) -> None:
        if self.settings.file_backend != "inotify":
            try:
                self._notify = Fanotify(FAN_CLASS_NOTIF)
                self.backend = "fanotify"
            except OSError:
                self._notify = None
        if self._notify is None:
            if self.settings.file_backend == "fanotify":
                raise OSError("fanotify unavailable and runtime.file_backend is fanotify")
            self._count(anomalies.RUNTIME_FILE_FANOTIFY_UNAVAILABLE)
            self._inotify = Inotify()
            self.backend = "inotify"
        else:
            self._notify_thread = threading.Thread(
                target=self._notify_loop, name="rt-file-notify", daemon=True
            )
            self._notify_thread.start()
            try:
                self._perm = Fanotify(FAN_CLASS_CONTENT)
            except OSError:
                self._perm = None
            if self._perm is not None:
                self._thread = threading.Thread(target=self._perm_loop, name="rt-file-perm", daemon=True)
                self._thread.start()
        self._mark_all()

    def set_policy(self, policy: Any) -> None:
        rules = dict(policy.file_rules)
        if rules != self._rules:
            self._rules = rules
            self._mark_all()

    def add_root(self, root: str) -> None:
        """A workload root of its own (a container's /proc/PID/root): watch its paths too."""
        if root not in self._roots:
            self._roots.append(root)
            self._mark_all()

    def _mark_all(self) -> None:
        rule_paths = [r.path for rules in self._rules.values() for r in rules]
        block_paths = [
            r.path for rules in self._rules.values() for r in rules if r.action == FileAction.BLOCK
        ]
        for root in self._roots:
            blocked = set(expand_paths(root, block_paths))
            for path in expand_paths(root, (*self.settings.sensitive_paths, *rule_paths)):
                self._mark(path, _CHANGE_MASK | (FAN_OPEN if path in blocked else 0))
            if self._perm is not None:
                for path in blocked:
                    self._mark_perm(path)

    def _budget(self) -> bool:
        if len(self._marked) + len(self._perm_marked) + len(self._wd) >= self.settings.file_marks_max:
            self._count(anomalies.RUNTIME_FILE_MARKS_FULL)
            return False
        return True

    def _mark(self, path: str, mask: int) -> None:
        if (path, mask) in self._marked or not self._budget():
            return
        is_dir = os.path.isdir(path)
        try:
            if self._notify is not None:
                self._notify.mark(path, mask | (FAN_EVENT_ON_CHILD if is_dir else 0))
            elif self._inotify is not None:
                if path in self._wd.values():
                    return
                self._wd[self._inotify.add_watch(path, _INOTIFY_MASK)] = path
        except OSError:
            self._count(anomalies.RUNTIME_FILE_MARK_FAILED)
            return
        self._marked.add((path, mask))

    def _mark_perm(self, path: str) -> None:
        if path in self._perm_marked or self._perm is None or not self._budget():
            return
        try:
            self._perm.mark(path, FAN_OPEN_PERM | (FAN_EVENT_ON_CHILD if os.path.isdir(path) else 0))
        except OSError:
            self._count(anomalies.RUNTIME_FILE_MARK_FAILED)
            return
        self._perm_marked.add(path)

    # ---- decisions ----------------------------------------------------------------------------------
    def _rule_for(self, group: str | None, path: str) -> FileRule | None:
        if group is None:
            return None
        for rule in self._rules.get(group, ()):
            if rule.covers(path):
                return rule
        return None

    def _strip_root(self, path: str) -> str:
        for root in self._roots:
            if root != "/" and path.startswith(root.rstrip("/") + "/"):
                return path[len(root.rstrip("/")) :]
        return path

    def _report(self, now: float, **fields: Any) -> None:
        key = (fields["workload"], fields["path"], fields.get("process"), fields["action"])
        first = self._agg.add(key, fields, now)
        if first is not None:
            self.monitor.push(make_event(EventType.FILE, self.settings.node, **first))

    # ---- notification path (main thread) ------------------------------------------------------------
    def poll(self, now: float) -> None:
        """Main-loop work: report the changes the notification thread identified, flush windows."""
        if self._inotify is not None:
            self._poll_inotify(now)
        changes = self._changes
        while changes:
            _t, pid, wl, group_hint, name, path, mask = changes.popleft()
            self._on_change(pid, wl, group_hint, name, path, mask, now)
        for fields in self._agg.flush(now):
            self.monitor.push(make_event(EventType.FILE, self.settings.node, **fields))

    def _notify_loop(self) -> None:
        """Read change notifications as they come and identify the writer at once, while it still
        exists (a short `echo >> file` is gone within a millisecond)."""
        fan = self._notify
        assert fan is not None
        poller = select.poll()
        poller.register(fan.fd, select.POLLIN)
        while not self._stop.is_set():
            if not poller.poll(STOP_CHECK_MS):
                continue
            events, _bad = parse_fanotify_events(fan.read(self.settings.file_read_bytes))
            for ev in events:
                try:
                    if ev.mask & FAN_Q_OVERFLOW:
                        self._count(anomalies.RUNTIME_FILE_QUEUE_OVERFLOW)
                        continue
                    self._identify_change(ev.pid, fd_path(ev.fd), ev.mask)
                finally:
                    if ev.fd >= 0:
                        os.close(ev.fd)

    def _identify_change(self, pid: int, raw_path: str, mask: int) -> None:
        wl = self._notify_resolver.identify(pid)
        group_hint: str | None = None
        if wl is not None:
            name = _comm(pid)
        elif os.path.exists(f"/proc/{pid}"):
            return  # the node's own activity
        else:
            # Gone already: the process monitor may have tracked it.
            tracked = self.monitor.known(pid)
            if tracked is None:
                self._count(anomalies.RUNTIME_FILE_UNATTRIBUTED)
                return
            wl, group_hint, name = tracked.workload, tracked.group, tracked.info.name
        if len(self._changes) >= self.settings.event_queue_max:
            self._count(anomalies.RUNTIME_FILE_CHANGES_FULL)
            return
        self._changes.append((time.monotonic(), pid, wl, group_hint, name, self._strip_root(raw_path), mask))

    def _on_change(
        self,
        pid: int,
        wl: Workload | None,
        group_hint: str | None,
        name: str,
        path: str,
        mask: int,
        now: float,
    ) -> None:
        if wl is None:
            return
        group = group_hint if group_hint is not None else self.monitor.group_for(wl, pid)
        rule = self._rule_for(group, path)
        if mask & (FAN_MODIFY | FAN_CLOSE_WRITE):
            action = "modified"
        elif rule is not None and rule.action == FileAction.BLOCK and name not in rule.apps:
            action = "violation"  # opened by a process the rule does not list (Monitor/Discover)
        else:
            return
        self._report(
            now,
            workload=wl.key,
            group=group,
            path=path,
            action=action,
            process=name,
            pid=pid,
            rule=rule.path if rule else None,
        )

    def _poll_inotify(self, now: float) -> None:
        assert self._inotify is not None
        for _ in range(64):
            data = self._inotify.read(self.settings.file_read_bytes)
            if not data:
                return
            events, _bad = parse_inotify_events(data)
            for ev in events:
                if ev.mask & IN_Q_OVERFLOW:
                    self._count(anomalies.RUNTIME_FILE_QUEUE_OVERFLOW)
                    continue
                base = self._wd.get(ev.wd)
                if base is None:
                    continue
                path = self._strip_root(os.path.join(base, ev.name) if ev.name else base)
                # No PID: the change is attributed to the groups whose rules cover the path.
                groups: list[str | None] = [g for g in self._rules if self._rule_for(g, path)] or [None]
                for g in groups:
                    rule = self._rule_for(g, path)
                    self._report(
                        now,
                        workload=None,
                        group=g,
                        path=path,
                        action="modified",
                        process=None,
                        pid=None,
                        rule=rule.path if rule else None,
                    )

    # ---- permission path (own thread) ---------------------------------------------------------------
    def _perm_loop(self) -> None:
        fan = self._perm
        assert fan is not None
        fan.answer_permissions(
            self._stop,
            self.settings.file_read_bytes,
            lambda ev: self._allow_open(ev.pid, ev.fd),
            lambda: self._count(anomalies.RUNTIME_FILE_PERM_ERROR),
        )

    def _allow_open(self, pid: int, fd: int) -> bool:
        mon = self.monitor
        if pid in mon.own_pids:
            return True
        wl = self._perm_resolver.identify(pid)
        if wl is None:
            return True
        group = mon.group_for(wl, pid)
        profile = mon.profile_for(group)
        if profile is None or profile.mode != Mode.PROTECT:
            return True
        path = self._strip_root(fd_path(fd))
        rule = self._rule_for(group, path)
        if rule is None or rule.action != FileAction.BLOCK:
            return True
        name = _comm(pid)
        if name in rule.apps or mon.exclusion_reason(pid, wl) is not None:
            return True
        self._count(anomalies.RUNTIME_FILE_DENIED)
        mon.push(
            make_event(
                EventType.FILE,
                self.settings.node,
                workload=wl.key,
                group=group,
                path=path,
                action="denied",
                process=name,
                pid=pid,
                rule=rule.path,
                count=1,
            )
        )
        return False

    def stop(self) -> None:
        self._stop.set()
        for t in (self._thread, self._notify_thread):
            if t is not None:
                t.join(2)
        for fan in (self._notify, self._perm):
            if fan is not None:
                fan.close()
        if self._inotify is not None:
            self._inotify.close()


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""
