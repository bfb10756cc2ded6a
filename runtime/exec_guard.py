"""The exec guard: answers fanotify FAN_OPEN_EXEC_PERM requests on its own thread, so a binary a
Protect profile forbids never runs where the kernel supports it (the process monitor's kill stays the
fallback). It decides with the monitor's policy, group cache and exclusions, and reports through the
monitor's outbox."""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Iterable

from core import anomalies
from core.lookup import Mode
from runtime import elf
from runtime.fanotify import FAN_CLASS_CONTENT, FAN_OPEN_EXEC_PERM, Fanotify, fd_path
from runtime.identity import WorkloadResolver
from runtime.proc_connector import ProcessInfo
from runtime.process_events import Tracked, process_event
from runtime.process_monitor import ProcessMonitor
from runtime.procfs import read_ppid, readlink, root_relative
from runtime.profiles import Outcome, decide

# How long after a program is allowed its interpreter's exec check is recognised as the same execve.
EXEC_FOLLOW_S = 1.0
# Bound on execs in progress remembered for that.
EXEC_PENDING_MAX = 4096


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
        exe = readlink(f"/proc/{pid}/exe")
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
        tracked = Tracked(info, wl, group)
        mon.push(process_event(mon.settings.node, tracked, "denied", profile, entry, name, path))
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
            root = readlink(f"/proc/{pid}/root") or "/"
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
