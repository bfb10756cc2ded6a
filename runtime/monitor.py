"""The runtime monitor's process main, started by the supervisor.

`run_runtime_monitor` owns everything it starts (connector socket, fanotify groups, threads) and
releases it when `stop_event` is set. Order at start, so nothing falls between: profiles first, then
the connector subscription, then the exec guard, then the /proc scan of what already runs (evaluated
like new execs, so a monitor restart leaves no process unexamined).
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from core import anomalies
from core.events import EventType, make_event
from runtime.exec_guard import ExecGuard
from runtime.fanotify import exec_permission_supported
from runtime.proc_connector import Kind, ProcessEventSource
from runtime.process_monitor import ProcessMonitor
from runtime.profiles import RuntimePolicy
from runtime.settings import RuntimeSettings

if TYPE_CHECKING:
    from runtime.file_monitor import FileMonitor

log = logging.getLogger("enforcer.runtime")

GetProfiles = Callable[[], RuntimePolicy]
Emit = Callable[[dict[str, Any]], None]


def run_runtime_monitor(
    settings: RuntimeSettings,
    get_profiles: GetProfiles,
    emit: Emit,
    stop_event: threading.Event,
    counters: MutableMapping[str, int] | None = None,
) -> int:
    """Run until `stop_event` is set; returns 0 on a clean stop, 2 on invalid settings.

    `get_profiles()` returns the current `RuntimePolicy` (groups, process profiles, file rules); it is
    called at start and every `profile_refresh_s`; an exception keeps the previous policy (counted).
    `emit(event)` receives `process`, `file`, `threat` and `audit` events built by `make_event`.
    `counters`, if given, receives the anomaly counters (names from core.anomalies).
    """
    try:
        settings.validate()
    except ValueError as e:
        log.error("invalid runtime settings: %s", e)
        return 2
    counters = counters if counters is not None else {}
    sys.setswitchinterval(settings.thread_switch_interval_s)
    monitor = ProcessMonitor(settings, counters)
    policy = _refresh(get_profiles, monitor, counters)
    source = ProcessEventSource(
        counters, settings.event_queue_max, settings.connector_rcvbuf_bytes, settings.use_connector
    )
    source.start()
    guard: ExecGuard | None = None
    if settings.use_exec_permission:
        if exec_permission_supported():
            guard = ExecGuard(monitor, settings.file_read_bytes)
            if not guard.start(settings.exec_permission_mounts):
                guard = None
        else:
            counters[anomalies.RUNTIME_EXEC_PERM_UNAVAILABLE] = (
                counters.get(anomalies.RUNTIME_EXEC_PERM_UNAVAILABLE, 0) + 1
            )
    files: FileMonitor | None = None
    if settings.file_monitor:
        from runtime.file_monitor import FileMonitor

        files = FileMonitor(settings, counters, monitor)
        files.start()
        if policy is not None:
            files.set_policy(policy)
    try:
        now = time.monotonic()
        for ev in source.scan():
            monitor.handle(ev, now)
        # Ready: what ran before us has been examined (events since then are queued).
        emit(
            make_event(
                EventType.AUDIT,
                settings.node,
                what="runtime.started",
                connector=source.connected,
                exec_permission=guard is not None,
                file_monitor=None if files is None else files.backend,
            )
        )
        next_refresh = now + settings.profile_refresh_s
        next_scan = now + settings.proc_scan_interval_s
        while not stop_event.is_set():
            source.wait(settings.loop_tick_s)
            now = time.monotonic()
            for ev in source.drain(settings.emit_batch_max):
                source.note(ev)
                monitor.handle(ev, now)
            if now >= next_scan:
                next_scan = now + settings.proc_scan_interval_s
                for ev in source.scan():
                    if ev.kind in (Kind.SCAN, Kind.EXIT):
                        monitor.handle(ev, now)
            if now >= next_refresh:
                next_refresh = now + settings.profile_refresh_s
                new = _refresh(get_profiles, monitor, counters)
                if new is not None and files is not None:
                    files.set_policy(new)
            monitor.tick(now)
            while monitor.roots_to_guard:
                root = monitor.roots_to_guard.popleft()
                if guard is not None and not settings.exec_permission_mounts:
                    guard.add_mount(root)
                if files is not None:
                    files.add_root(root)
            if files is not None:
                files.poll(now)
            for event in monitor.take_events(settings.emit_batch_max):
                emit(event)
    finally:
        if files is not None:
            files.stop()
        if guard is not None:
            guard.stop()
        source.stop()
        for event in monitor.take_events(settings.event_queue_max):
            emit(event)
    return 0


def _refresh(
    get_profiles: GetProfiles, monitor: ProcessMonitor, counters: MutableMapping[str, int]
) -> RuntimePolicy | None:
    try:
        policy = get_profiles()
    except Exception:  # the policy source is another package's code: keep the previous policy
        log.exception("get_profiles failed; previous runtime policy kept")
        counters[anomalies.RUNTIME_PROFILE_ERROR] = counters.get(anomalies.RUNTIME_PROFILE_ERROR, 0) + 1
        return None
    monitor.set_policy(policy)
    return policy
