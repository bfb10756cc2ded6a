"""Process profiles enforced on workload processes: learn, report or kill.

`ProcessMonitor` consumes `ProcEvent`s (from the connector or the /proc scan) on the monitor's main
thread: a workload process's exec is examined, its group found, the built-in detections run and the
group's profile decides (Discover learns, Monitor reports, Protect kills the process and what it spawned
meanwhile). Denial before the binary runs is the exec guard's (`runtime/exec_guard.py`), which decides
with this monitor's policy and exclusions; killing stays as the fallback.

Never killed, whatever the profile (`exclusion_reason`): PID 1 and 2, kernel threads, processes outside
any workload (the node's daemons), the enforcer's own processes (ours, our parent, the configured
protected PIDs) and their descendants. A refused kill is reported and counted.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, MutableMapping
from typing import Any

from core import anomalies
from core.lookup import Mode
from runtime import detections
from runtime.identity import Workload, WorkloadResolver, group_of
from runtime.proc_connector import Kind, ProcessInfo, ProcEvent, examine, read_stat_link, with_parents
from runtime.process_events import Tracked, process_event, threat_event
from runtime.procfs import children_of, descends_from, euid_of, exec_identity, read_ppid, root_id
from runtime.profiles import Learner, Outcome, ProcessProfile, RuntimePolicy, decide
from runtime.settings import RuntimeSettings

# Activity counters (not anomalies), reported with the anomaly counters.
STAT_EXEC = "runtime.exec.events"  # exec (and scan) events handled, node processes included
STAT_EXEC_WORKLOAD = "runtime.exec.workload"  # of which in a workload
STAT_EXAMINED = "runtime.exec.examined"  # of which examined (enriched) in time

# How long a killed PID's new children are killed on sight (forks racing the kill).
DOOMED_TTL_S = 5.0
# Bound on PIDs remembered as killed.
DOOMED_MAX = 16384
# How long an exited workload process stays known, so late file events can still be attributed.
RECENT_EXIT_TTL_S = 10.0
# Bound on the cache of (parent, name) of processes met in parent chains (node processes mostly).
LINK_CACHE_MAX = 8192
# Bound on cached workload → group answers (cleared at each policy change).
GROUP_CACHE_MAX = 4096


class ProcessMonitor:
    def __init__(
        self,
        settings: RuntimeSettings,
        counters: MutableMapping[str, int],
        resolver: WorkloadResolver | None = None,
        examine_fn: Callable[[int], ProcessInfo | None] = examine,
    ) -> None:
        self.settings = settings
        self.counters = counters
        self.resolver = resolver or WorkloadResolver()
        self._examine = examine_fn
        self.policy = RuntimePolicy()
        self.table: collections.OrderedDict[int, Tracked] = collections.OrderedDict()
        self.learner = Learner(settings.learned_per_group_max, counters)
        self.tools = detections.compile_tools(settings.suspicious_tools)
        self._managers = frozenset(settings.package_managers)
        self._shells = frozenset(settings.shells)
        self._sanctioned = frozenset(settings.sanctioned_escalation)
        # Never killed: ours, our parent (the supervisor) and the configured PIDs; with their descendants:
        # ours and the configured ones (the supervisor lists its own PID there to cover its tree).
        self.own_pids = frozenset({os.getpid(), os.getppid(), *settings.protected_pids})
        self.own_roots = frozenset({os.getpid(), *settings.protected_pids})
        self._doomed: collections.OrderedDict[int, float] = collections.OrderedDict()
        self._shell_checks: collections.deque[tuple[float, int]] = collections.deque()
        self._groups: dict[str, str | None] = {}
        self._creds: collections.OrderedDict[int, int] = collections.OrderedDict()  # pid → euid (UID events)
        self._escalated: set[int] = set()  # PIDs already reported for privilege escalation
        # Workload processes that exited lately (late file events are still attributed to them).
        self._recent: collections.OrderedDict[int, tuple[float, Tracked]] = collections.OrderedDict()
        self._links: collections.OrderedDict[int, tuple[int, str]] = collections.OrderedDict()
        self._outbox: collections.deque[dict[str, Any]] = collections.deque()
        self._outbox_lock = threading.Lock()
        self._root_dev = root_id(os.getpid())
        self.roots_to_guard: collections.deque[str] = collections.deque()
        self._guarded_roots: set[tuple[int, int]] = set()

    # ---- bookkeeping --------------------------------------------------------------------------------
    def count(self, name: str, n: int = 1) -> None:
        self.counters[name] = self.counters.get(name, 0) + n

    def set_policy(self, policy: RuntimePolicy) -> None:
        if policy is not self.policy and policy != self.policy:
            self.policy = policy
            self._groups = {}
            for t in self.table.values():
                t.group = self.group_for(t.workload, t.info.pid)

    def push(self, event: dict[str, Any]) -> None:
        with self._outbox_lock:
            if len(self._outbox) >= self.settings.event_queue_max:
                self.count(anomalies.RUNTIME_OUTBOX_FULL)
                return
            self._outbox.append(event)

    def take_events(self, max_events: int) -> list[dict[str, Any]]:
        with self._outbox_lock:
            out: list[dict[str, Any]] = []
            while self._outbox and len(out) < max_events:
                out.append(self._outbox.popleft())
            return out

    def group_for(self, wl: Workload, pid: int) -> str | None:
        if wl.key in self._groups:
            return self._groups[wl.key]
        selectors = self.policy.groups
        addresses: Iterable[str] = ()
        if any(s.cidrs for s in selectors):
            addresses = self.resolver.addresses(pid)
        group = group_of(wl, selectors, self.policy.workload_labels, addresses)
        if len(self._groups) >= GROUP_CACHE_MAX:
            self._groups.clear()
        self._groups[wl.key] = group
        return group

    def profile_for(self, group: str | None) -> ProcessProfile | None:
        return self.policy.profiles.get(group) if group else None

    # ---- exclusions ---------------------------------------------------------------------------------
    def exclusion_reason(
        self, pid: int, workload: Workload | None, info: ProcessInfo | None = None
    ) -> str | None:
        """Why `pid` must never be killed, or None if it may be."""
        if pid <= 2:
            return "system process"
        if info is not None and info.ppid == 2:
            return "kernel thread"
        if pid in self.own_pids or descends_from(pid, self.own_roots):
            return "enforcer process"
        if workload is None:
            return "node process"
        return None

    # ---- event handling -----------------------------------------------------------------------------
    def handle(self, ev: ProcEvent, now: float) -> None:
        kind = ev.kind
        if kind == Kind.FORK:
            self._on_fork(ev, now)
        elif kind == Kind.EXEC or kind == Kind.SCAN:
            self._on_exec(ev.pid, now, scanned=kind == Kind.SCAN, ts_ns=ev.ts_ns)
        elif kind == Kind.UID:
            self._on_uid(ev, now)
        elif kind == Kind.EXIT:
            self._links.pop(ev.pid, None)
            gone = self.table.pop(ev.pid, None)
            if gone is not None:
                self._recent[ev.pid] = (now, gone)
                self._recent.move_to_end(ev.pid)
                if len(self._recent) > self.settings.process_table_max:
                    self._recent.popitem(last=False)
            self._creds.pop(ev.pid, None)
            self._escalated.discard(ev.pid)

    def _on_fork(self, ev: ProcEvent, now: float) -> None:
        if ev.ppid in self._doomed:
            if self._doomed[ev.ppid] >= now - DOOMED_TTL_S:
                wl = self.resolver.identify(ev.pid)
                if self.exclusion_reason(ev.pid, wl) is None:
                    self._kill_one(ev.pid, now)
        parent = self.table.get(ev.ppid)
        if parent is not None:
            self._remember(
                ev.pid,
                Tracked(
                    dataclasses.replace(parent.info, pid=ev.pid, ppid=ev.ppid), parent.workload, parent.group
                ),
            )

    def _remember(self, pid: int, tracked: Tracked) -> None:
        self.table[pid] = tracked
        self.table.move_to_end(pid)
        if len(self.table) > self.settings.process_table_max:
            self.table.popitem(last=False)
            self.count(anomalies.RUNTIME_PROCESS_TABLE_FULL)

    def known(self, pid: int) -> Tracked | None:
        """A workload process tracked now or exited in the last RECENT_EXIT_TTL_S seconds."""
        t = self.table.get(pid)
        if t is None:
            recent = self._recent.get(pid)
            t = recent[1] if recent is not None else None
        return t

    def _link(self, pid: int) -> tuple[int, str] | None:
        """(parent, name) of a process in a parent chain: tracked, cached, or read from /proc/PID/stat."""
        t = self.table.get(pid)
        if t is not None:
            return t.info.ppid, t.info.name
        link = self._links.get(pid)
        if link is None:
            link = read_stat_link(pid)
            if link is not None:
                self._links[pid] = link
                if len(self._links) > LINK_CACHE_MAX:
                    self._links.popitem(last=False)
        return link

    def _on_exec(self, pid: int, now: float, scanned: bool, ts_ns: int = 0) -> None:
        self.count(STAT_EXEC)
        wl = self.resolver.identify(pid)
        if wl is None:
            self.table.pop(pid, None)
            if not os.path.exists(f"/proc/{pid}"):
                self.count(anomalies.RUNTIME_PROCESS_UNEXAMINED)  # gone before even its workload was known
            return
        self.count(STAT_EXEC_WORKLOAD)
        info = self._examine(pid)
        if info is None:
            self.count(anomalies.RUNTIME_PROCESS_UNEXAMINED)
            return
        self.count(STAT_EXAMINED)
        if scanned:
            self.count(anomalies.RUNTIME_SCAN_FOUND)
        group = self.group_for(wl, pid)
        profile = self.profile_for(group)
        # The profile's verdict first, so a kill is not delayed by the enrichment the events need.
        outcome, entry, name, path = Outcome.ALLOWED, None, info.name, info.path
        action: str | None = None
        extra: dict[str, Any] = {}
        if profile is not None:
            name, path = exec_identity(info)
            outcome, entry = decide(profile, name, path, self.learner.learned(profile.group))
            if outcome == Outcome.KILL:
                reason = self.exclusion_reason(pid, wl, info)
                if reason is not None:
                    self.count(anomalies.RUNTIME_KILL_EXCLUDED)
                    action, extra["excluded"] = "kill_refused", reason
                else:
                    action = "killed" if self.kill_tree(pid, now) else "kill_failed"
                    if ts_ns:
                        # From the kernel's exec event to the kill (both CLOCK_MONOTONIC).
                        extra["latency_ms"] = round((time.monotonic_ns() - ts_ns) / 1e6, 3)
            elif outcome == Outcome.VIOLATION:
                action = "violation"
            elif outcome == Outcome.LEARN and self.learner.learn(profile.group, name, path):
                action = "learned"
        previous_euid = self._previous_euid(pid)
        self._creds.pop(pid, None)
        info = with_parents(info, self._link, self.settings.parent_chain_max)
        tracked = Tracked(info, wl, group)
        if action in ("killed", "kill_failed"):
            self.push(process_event(self.settings.node, tracked, action, profile, entry, name, path, **extra))  # type: ignore[arg-type]
            return
        self._remember(pid, tracked)
        self._note_root(pid)
        killed = self._detect(tracked, previous_euid, profile.mode if profile is not None else None, now)
        if action is not None and not killed:
            self.push(process_event(self.settings.node, tracked, action, profile, entry, name, path, **extra))  # type: ignore[arg-type]

    def _on_uid(self, ev: ProcEvent, now: float) -> None:
        previous = self._previous_euid(ev.pid)
        self._creds[ev.pid] = ev.euid
        self._creds.move_to_end(ev.pid)
        if len(self._creds) > self.settings.process_table_max:
            self._creds.popitem(last=False)
        tracked = self.table.get(ev.pid)
        if tracked is None:
            return
        before = tracked.info
        # Credentials change on exec of a setuid binary too: the table may still hold the old image.
        now_info = self._examine(ev.pid)
        if now_info is not None:
            tracked.info = dataclasses.replace(now_info, parents=before.parents)
        else:
            tracked.info = dataclasses.replace(before, ruid=ev.ruid, euid=ev.euid)
        names = [n for _, n in before.parents]
        if detections.privilege_escalation(tracked.info.name, ev.euid, previous, names, self._sanctioned):
            profile = self.profile_for(tracked.group)
            mode = profile.mode if profile else None
            self._threat(
                tracked, detections.PRIVILEGE_ESCALATION, mode, now, detail=f"setuid from {previous}"
            )

    def _previous_euid(self, pid: int) -> int | None:
        """The effective uid `pid` had before now: from its last UID event, its tracked state (a fork
        copies the parent's) or, for a process first seen, its parent's."""
        if pid in self._creds:
            return self._creds[pid]
        tracked = self.table.get(pid)
        if tracked is not None:
            return tracked.info.euid
        ppid = read_ppid(pid)
        if ppid is None:
            return None
        parent = self.table.get(ppid)
        return parent.info.euid if parent is not None else euid_of(ppid)

    # ---- detections ---------------------------------------------------------------------------------
    def _detect(self, tracked: Tracked, previous_euid: int | None, mode: Mode | None, now: float) -> bool:
        """Run the built-in detections; True if the process was killed for one of them."""
        info = tracked.info
        tool = detections.suspicious_tool(info.name, info.cmdline, self.tools)
        if tool is not None:
            if self._threat(tracked, detections.SUSPICIOUS_PROCESS, mode, now, detail=tool):
                return True
        if detections.package_manager(info.name, self._managers):
            if self._threat(tracked, detections.PACKAGE_MANAGER, mode, now, detail=info.name):
                return True
        names = [n for _, n in info.parents]
        if detections.privilege_escalation(info.name, info.euid, previous_euid, names, self._sanctioned):
            detail = f"exec as euid 0 from euid {previous_euid}"
            if self._threat(tracked, detections.PRIVILEGE_ESCALATION, mode, now, detail=detail):
                return True
        if info.name in self._shells:
            if self._check_shell(tracked, mode, now):
                return True
            if len(self._shell_checks) >= self.settings.reverse_shell_pending_max:
                self.count(anomalies.RUNTIME_REVERSE_SHELL_PENDING_FULL)
            else:
                self._shell_checks.append((now + self.settings.reverse_shell_recheck_s, info.pid))
        return False

    def _check_shell(self, tracked: Tracked, mode: Mode | None, now: float) -> bool:
        pid = tracked.info.pid
        links: dict[int, str] = {}
        for fd in (0, 1):
            with contextlib.suppress(OSError):
                links[fd] = os.readlink(f"/proc/{pid}/fd/{fd}")
        if not any(detections.socket_inode(v) is not None for v in links.values()):
            return False
        tcp: dict[int, tuple[int, str]] = {}
        for table in ("tcp", "tcp6"):
            try:
                with open(f"/proc/{pid}/net/{table}") as f:
                    text = f.read()
            except OSError:
                continue
            part, truncated = detections.parse_net_tcp(text, self.settings.net_table_lines_max)
            if truncated:
                self.count(anomalies.RUNTIME_NET_TABLE_TRUNCATED)
            tcp.update(part)
        remote = detections.reverse_shell(tracked.info.name, links, tcp, self._shells)
        if remote is None:
            return False
        return self._threat(
            tracked, detections.REVERSE_SHELL, mode, now, detail=detections.remote_text(remote)
        )

    def tick(self, now: float) -> None:
        """Periodic work: re-check new shells whose delay has passed, forget old kills."""
        checks = self._shell_checks
        while checks and checks[0][0] <= now:
            _, pid = checks.popleft()
            tracked = self.table.get(pid)
            if tracked is not None:
                profile = self.profile_for(tracked.group)
                self._check_shell(tracked, profile.mode if profile else None, now)
        recent = self._recent
        while recent:
            pid, (t_exit, _) = next(iter(recent.items()))
            if t_exit >= now - RECENT_EXIT_TTL_S:
                break
            recent.popitem(last=False)
        doomed = self._doomed
        while doomed:
            pid, t = next(iter(doomed.items()))
            if t >= now - DOOMED_TTL_S and len(doomed) <= DOOMED_MAX:
                break
            doomed.popitem(last=False)

    def _threat(self, tracked: Tracked, name: str, mode: Mode | None, now: float, detail: str) -> bool:
        """Report a built-in detection; in a Protect group also kill. True if killed."""
        if name == detections.PRIVILEGE_ESCALATION:
            # Seen both through the UID event and the exec of a setuid binary: report it once.
            if tracked.info.pid in self._escalated:
                return False
            if len(self._escalated) >= self.settings.process_table_max:
                self._escalated.clear()
            self._escalated.add(tracked.info.pid)
        action = "alert"
        killed = False
        if mode == Mode.PROTECT:
            reason = self.exclusion_reason(tracked.info.pid, tracked.workload, tracked.info)
            if reason is None:
                killed = self.kill_tree(tracked.info.pid, now)
                action = "killed" if killed else "kill_failed"
            else:
                self.count(anomalies.RUNTIME_KILL_EXCLUDED)
                action = "kill_refused"
        node = self.settings.node
        self.push(threat_event(node, tracked, name, detections.SEVERITY[name], action, detail))
        return killed

    # ---- enforcement --------------------------------------------------------------------------------
    def kill_tree(self, pid: int, now: float) -> bool:
        """Stop `pid` and its descendants (so none forks further), then kill them all.

        Children forked after the walk are killed when their FORK event arrives (the PID is doomed).
        """
        victims: list[int] = []
        frontier = [pid]
        while frontier and len(victims) < self.settings.kill_descendants_max:
            p = frontier.pop()
            if p in self.own_pids or p <= 2:
                continue
            with contextlib.suppress(OSError):
                os.kill(p, signal.SIGSTOP)
            victims.append(p)
            frontier.extend(children_of(p))
        ok = False
        for p in victims:
            if self._kill_one(p, now):
                ok = ok or p == pid
        return ok

    def _kill_one(self, pid: int, now: float) -> bool:
        self._doomed[pid] = now
        self._doomed.move_to_end(pid)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return True  # already gone: nothing of it runs
        except OSError:
            self.count(anomalies.RUNTIME_KILL_FAILED)
            return False
        return True

    # ---- filesystems for the exec guard ------------------------------------------------------------
    def _note_root(self, pid: int) -> None:
        root = root_id(pid)
        if root is None or root == self._root_dev or root in self._guarded_roots:
            return
        self._guarded_roots.add(root)
        self.roots_to_guard.append(f"/proc/{pid}/root")
