"""Process profiles enforced on workload processes: learn, report or kill; deny before exec where possible.

`ProcessMonitor` consumes `ProcEvent`s (from the connector or the /proc scan) on the monitor's main
thread: a workload process's exec is examined, its group found, the built-in detections run and the
group's profile decides (Discover learns, Monitor reports, Protect kills the process and what it spawned
meanwhile). `ExecGuard` answers fanotify FAN_OPEN_EXEC_PERM requests on its own thread so a denied
binary never runs where the kernel supports it; killing stays as the fallback.

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
from core.events import EventType, make_event
from core.lookup import Mode
from runtime import detections, elf
from runtime.fanotify import FAN_CLASS_CONTENT, FAN_OPEN_EXEC_PERM, Fanotify, fd_path
from runtime.identity import Workload, WorkloadResolver, group_of
from runtime.proc_connector import Kind, ProcessInfo, ProcEvent, examine, read_stat_link, with_parents
from runtime.profiles import Learner, Outcome, ProcessEntry, ProcessProfile, RuntimePolicy, decide
from runtime.settings import RuntimeSettings

# Activity counters (not anomalies), reported with the anomaly counters.
STAT_EXEC = "runtime.exec.events"  # exec (and scan) events handled, node processes included
STAT_EXEC_WORKLOAD = "runtime.exec.workload"  # of which in a workload
STAT_EXAMINED = "runtime.exec.examined"  # of which examined (enriched) in time

# How long a killed PID's new children are killed on sight (forks racing the kill).
DOOMED_TTL_S = 5.0
# Bound on PIDs remembered as killed.
DOOMED_MAX = 16384
# Depth of the /proc parent walk that decides whether a process descends from the enforcer.
ANCESTRY_DEPTH_MAX = 64
# How long after a program is allowed its interpreter's exec check is recognised as the same execve.
EXEC_FOLLOW_S = 1.0
# Bound on execs in progress remembered for that.
EXEC_PENDING_MAX = 4096
# How long an exited workload process stays known, so late file events can still be attributed.
RECENT_EXIT_TTL_S = 10.0
# Bound on the cache of (parent, name) of processes met in parent chains (node processes mostly).
LINK_CACHE_MAX = 8192
# Bound on cached workload → group answers (cleared at each policy change).
GROUP_CACHE_MAX = 4096


@dataclasses.dataclass(slots=True)
class Tracked:
    info: ProcessInfo
    workload: Workload
    group: str | None


def read_ppid(pid: int, proc: str = "/proc") -> int | None:
    """The parent PID from /proc/PID/stat (field 4, after the parenthesised command name)."""
    try:
        with open(f"{proc}/{pid}/stat", "rb") as f:
            data = f.read(4096)
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2 :].split()
    try:
        return int(fields[1])
    except (IndexError, ValueError):
        return None


def descends_from(pid: int, ancestors: frozenset[int], proc: str = "/proc") -> bool:
    cur: int | None = pid
    for _ in range(ANCESTRY_DEPTH_MAX):
        if cur is None or cur <= 1:
            return False
        if cur in ancestors:
            return True
        cur = read_ppid(cur, proc)
    return False


def children_of(pid: int, proc: str = "/proc") -> list[int]:
    out: list[int] = []
    try:
        tasks = os.listdir(f"{proc}/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"{proc}/{pid}/task/{tid}/children") as f:
                out.extend(int(x) for x in f.read().split())
        except (OSError, ValueError):
            continue
    return out


def root_relative(pid: int, path: str, proc: str = "/proc") -> str:
    """`path` as the process sees it: without the prefix of its root directory (a chroot seen from us)."""
    try:
        root = os.readlink(f"{proc}/{pid}/root")
    except OSError:
        return path
    if root not in ("/", "") and path.startswith(root.rstrip("/") + "/"):
        return path[len(root.rstrip("/")) :]
    return path


def exec_identity(info: ProcessInfo, proc: str = "/proc") -> tuple[str, str]:
    """(name, path) a profile matches, as the workload sees it; for a script the script's path, not its
    interpreter's."""
    path = info.path
    if os.path.basename(path) != info.name:
        for arg in info.cmdline[:2]:
            if arg != path and os.path.basename(arg) == info.name and "/" in arg:
                if not arg.startswith("/"):
                    try:
                        arg = os.path.normpath(os.path.join(os.readlink(f"{proc}/{info.pid}/cwd"), arg))
                    except OSError:
                        break
                return info.name, root_relative(info.pid, arg, proc)
    return info.name, root_relative(info.pid, path, proc)


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
        self._root_dev = _root_id(os.getpid())
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
            self.push(self.process_event(tracked, action, profile, entry, name, path, **extra))  # type: ignore[arg-type]
            return
        self._remember(pid, tracked)
        self._note_root(pid)
        killed = self._detect(tracked, previous_euid, profile.mode if profile is not None else None, now)
        if action is not None and not killed:
            self.push(self.process_event(tracked, action, profile, entry, name, path, **extra))  # type: ignore[arg-type]

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
        return parent.info.euid if parent is not None else _euid_of(ppid)

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
        info = tracked.info
        self.push(
            make_event(
                EventType.THREAT,
                self.settings.node,
                name=name,
                severity=detections.SEVERITY[name],
                action=action,
                flow=None,
                workload=tracked.workload.key,
                group=tracked.group,
                detail=detail,
                **_threat_process_fields(info),
            )
        )
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

    # ---- exec permission (called from ExecGuard's thread) -------------------------------------------
    def _note_root(self, pid: int) -> None:
        root = _root_id(pid)
        if root is None or root == self._root_dev or root in self._guarded_roots:
            return
        self._guarded_roots.add(root)
        self.roots_to_guard.append(f"/proc/{pid}/root")

    def process_event(
        self,
        tracked: Tracked,
        action: str,
        profile: ProcessProfile,
        entry: ProcessEntry | None,
        name: str,
        path: str,
        **extra: Any,
    ) -> dict[str, Any]:
        fields = _process_fields(tracked.info)
        fields.update(name=name, path=path)
        return make_event(
            EventType.PROCESS,
            self.settings.node,
            workload=tracked.workload.key,
            action=action,
            group=profile.group,
            mode=profile.mode.name.lower(),
            rule=_entry_text(entry),
            **fields,
            **extra,
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


def _threat_process_fields(info: ProcessInfo) -> dict[str, Any]:
    """A threat event's process fields: `name` is the threat's, so the process name is `process_name`."""
    fields = _process_fields(info)
    fields["process_name"] = fields.pop("name")
    return fields


def _euid_of(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return int(line.split()[2])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def _root_id(pid: int) -> tuple[int, int] | None:
    try:
        st = os.stat(f"/proc/{pid}/root")
    except OSError:
        return None
    return st.st_dev, st.st_ino


class ExecGuard:
    """Answers FAN_OPEN_EXEC_PERM on the filesystems of the given mounts: a binary a Protect profile
    forbids never runs. Filesystem marks, not mount marks: a container (or `ip netns exec`) sees its own
    copies of the mounts in its mount namespace, which a mount mark would miss.

    Runs on its own thread with its own resolver (nothing it touches is shared mutable state except the
    monitor's policy reference and group cache, replaced atomically). An error while deciding allows the
    execution (counted): a bug here must not freeze every exec on the node.
    """

    def __init__(self, monitor: ProcessMonitor, read_bytes: int) -> None:
        self.monitor = monitor
        self.counters = monitor.counters
        self._read_bytes = read_bytes
        self._resolver = WorkloadResolver()
        self._fan: Fanotify | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # PID → (time, process image, interpreter paths still expected) for the execve in progress.
        self._pending: collections.OrderedDict[int, tuple[float, str, set[str]]] = collections.OrderedDict()
        self.mounts: list[str] = []
        self.denied = 0

    def start(self, mounts: Iterable[str]) -> bool:
        try:
            self._fan = Fanotify(FAN_CLASS_CONTENT)
        except OSError:
            self.monitor.count(anomalies.RUNTIME_EXEC_PERM_UNAVAILABLE)
            return False
        for m in mounts:
            self.add_mount(m)
        self._thread = threading.Thread(target=self._run, name="rt-exec-guard", daemon=True)
        self._thread.start()
        return True

    def add_mount(self, path: str) -> bool:
        if self._fan is None:
            return False
        try:
            self._fan.mark(path, FAN_OPEN_EXEC_PERM, filesystem=True)
        except OSError:
            self.monitor.count(anomalies.RUNTIME_EXEC_PERM_UNAVAILABLE)
            return False
        self.mounts.append(path)
        return True

    def _run(self) -> None:
        fan = self._fan
        assert fan is not None
        fan.answer_permissions(
            self._stop,
            self._read_bytes,
            lambda ev: self._decide(ev.pid, ev.fd) if ev.mask & FAN_OPEN_EXEC_PERM else True,
            lambda: self.monitor.count(anomalies.RUNTIME_EXEC_PERM_ERROR),
        )

    def _decide(self, pid: int, fd: int) -> bool:
        mon = self.monitor
        if pid in mon.own_pids:
            return True
        wl = self._resolver.identify(pid)
        if wl is None:
            return True
        now = time.monotonic()
        path = root_relative(pid, fd_path(fd))
        exe = _readlink(f"/proc/{pid}/exe")
        follow = self._pending.get(pid)
        if follow is not None:
            started, old_exe, expected = follow
            if now - started < EXEC_FOLLOW_S and old_exe == exe and path in expected:
                # The loader or the script interpreter of the program just allowed, in the same execve
                # (the process image is still the old one), not a new program.
                expected.discard(path)
                return True
        group = mon.group_for(wl, pid)
        profile = mon.profile_for(group)
        if profile is None or profile.mode != Mode.PROTECT:
            return True
        name = os.path.basename(path)
        outcome, entry = decide(profile, name, path, mon.learner.learned(profile.group))
        if outcome != Outcome.KILL:
            self._pending[pid] = (now, exe, self._follow_ups(pid, fd))
            self._pending.move_to_end(pid)
            if len(self._pending) > EXEC_PENDING_MAX:
                self._pending.popitem(last=False)
            return True
        if mon.exclusion_reason(pid, wl) is not None:
            mon.count(anomalies.RUNTIME_KILL_EXCLUDED)
            return True
        self.denied += 1
        mon.count(anomalies.RUNTIME_EXEC_PERM_DENIED)
        info = ProcessInfo(pid, read_ppid(pid) or 0, name, path, (path,), -1, -1, "", 0.0)
        mon.push(mon.process_event(Tracked(info, wl, group), "denied", profile, entry, name, path))
        return False

    def _follow_ups(self, pid: int, fd: int) -> set[str]:
        """The files one execve of this program also opens for execution: its interpreter (a script's
        shell, an ELF's loader) and that interpreter's loader, as the process sees their paths."""
        out: set[str] = set()
        try:
            head = os.pread(fd, elf.HEAD_BYTES, 0)
        except OSError:
            return out
        for _ in range(2):
            interp = elf.interpreter(head)
            if interp is None:
                break
            root = _readlink(f"/proc/{pid}/root") or "/"
            host = os.path.realpath(os.path.join(root, interp.lstrip("/")))
            out.add(root_relative(pid, host))
            try:
                with open(host, "rb") as f:
                    head = f.read(elf.HEAD_BYTES)
            except OSError:
                break
        return out

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        if self._fan is not None:
            self._fan.close()
            self._fan = None
