"""The process monitor on real processes in lab pods (network namespaces, cgroups) on this kernel: report,
kill (and what the kill spares), restart. Denial before exec is in test_exec_guard.py."""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Callable

from core import anomalies
from core.lookup import Mode
from runtime.identity import Workload
from runtime.process_monitor import ProcessMonitor
from runtime.profiles import ProcessEntry
from tests.runtime.conftest import Harness, kill_tree, pids_in_netns, spawn_in, wait_for
from tests.runtime.support import copy_bin, in_pod, policy, retry_loop, settings


def test_monitor_reports_the_forbidden_program_only(
    netns: str, harness: Callable[..., Harness], tmp_path
) -> None:
    forbidden = copy_bin("sleep", str(tmp_path), "forbidden")
    h = harness(settings(), policy(netns, Mode.MONITOR))
    r = in_pod(netns, f"sleep 0.2; {forbidden} 0.3; echo done")
    assert r.returncode == 0 and "done" in r.stdout  # Monitor does not stop anything
    ev = h.wait(type="process", action="violation", name="forbidden")
    assert ev, h.snapshot()
    e = ev[0]
    assert e["workload"] == f"netns:{netns}" and e["group"] == "pod" and e["path"] == forbidden
    assert e["mode"] == "monitor" and e["chain"] and e["chain"][0]["name"] == "sh"  # type: ignore[index]
    assert not h.find(type="process", action="violation", name="sleep")


def test_protect_kills_forbidden_and_a_retry_loop_never_succeeds(
    netns: str, harness: Callable[..., Harness], tmp_path
) -> None:
    """Kill fallback (no exec permission): the forbidden script dies before it can do its work."""
    script = os.path.join(str(tmp_path), "forbidden")
    with open(script, "w") as f:
        f.write('#!/bin/sh\nsleep 0.3\ntouch "$1"\n')
    os.chmod(script, 0o755)
    marker = os.path.join(str(tmp_path), "marker")
    h = harness(settings(), policy(netns, Mode.PROTECT))
    loop = retry_loop(f"{script} {marker}$i")
    r = in_pod(netns, loop, timeout=60)
    assert "ok=0" in r.stdout, r
    assert not [p for p in os.listdir(tmp_path) if p.startswith("marker")]
    killed = h.wait(10, type="process", action="killed", name="forbidden")
    assert wait_for(lambda: len(h.find(type="process", action="killed", name="forbidden")) >= 100)
    killed = h.find(type="process", action="killed", name="forbidden")
    assert killed[0]["path"] == script
    # Kills from a kernel exec event carry the latency; one found first by the periodic scan does not.
    lat = sorted(float(e["latency_ms"]) for e in killed if "latency_ms" in e)  # type: ignore[arg-type]
    assert len(lat) >= 95
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    print(f"exec→kill latency ms: p50 {statistics.median(lat):.2f} p99 {p99:.2f} max {lat[-1]:.2f}")
    assert not h.find(type="process", action="killed", name="sleep")


def test_never_kills_the_enforcer_the_node_or_system_processes(
    netns: str, harness: Callable[..., Harness], tmp_path
) -> None:
    mon = ProcessMonitor(settings(), {})
    wl = Workload("netns:x", "netns", None, None, 1, "x", "")
    kthread = next(int(p) for p in os.listdir("/proc") if p.isdigit() and _ppid(int(p)) == 2)
    assert mon.exclusion_reason(1, wl) == "system process"
    assert mon.exclusion_reason(2, wl) == "system process"
    assert mon.exclusion_reason(os.getpid(), wl) == "enforcer process"
    node = subprocess.Popen(["sleep", "30"])
    try:
        assert mon.exclusion_reason(node.pid, wl) == "enforcer process"  # our child
        assert mon.exclusion_reason(node.pid, None) == "enforcer process"
    finally:
        kill_tree([node.pid])
        node.wait()
    from runtime.proc_connector import examine

    info = examine(kthread)
    assert info is not None and mon.exclusion_reason(kthread, wl, info) == "kernel thread"

    # Real: a Protect profile that allows nothing but `ip`. The "enforcer" pod process and its
    # descendants survive; an unrelated process in the same pod is killed.
    helper = spawn_in(netns, "sh", "-c", "sleep 0.5; sleep 30")
    victim_bin = copy_bin("sleep", str(tmp_path), "victim")
    h = harness(settings(protected_pids=(helper.pid,)), policy(netns, Mode.PROTECT, (ProcessEntry("ip"),)))
    victim = spawn_in(netns, victim_bin, "30")
    try:
        assert victim.wait(5) == -9
        assert h.wait(type="process", action="kill_refused", excluded="enforcer process", name="sleep")
        assert helper.poll() is None
        assert wait_for(lambda: h.counters.get(anomalies.RUNTIME_KILL_EXCLUDED, 0) >= 1)
        # Processes outside any workload never even reach the profile.
        outside = subprocess.Popen([victim_bin, "30"])
        time.sleep(0.5)
        assert outside.poll() is None
        kill_tree([outside.pid])
        outside.wait()
    finally:
        kill_tree([helper.pid, victim.pid])
        helper.wait(5)


def _ppid(pid: int) -> int | None:
    from runtime.procfs import read_ppid

    return read_ppid(pid)


def test_restart_under_activity_catches_what_started_meanwhile(
    netns: str, harness: Callable[..., Harness], tmp_path
) -> None:
    forbidden = copy_bin("sleep", str(tmp_path), "forbidden")
    h1 = harness(settings(), policy(netns, Mode.PROTECT))
    first = spawn_in(netns, forbidden, "30")
    assert first.wait(5) == -9
    h1.close()
    # The monitor is down: a forbidden process starts.
    gap = spawn_in(netns, forbidden, "30")
    time.sleep(0.2)
    assert gap.poll() is None
    t0 = time.monotonic()
    h2 = harness(settings(), policy(netns, Mode.PROTECT))
    try:
        assert gap.wait(5) == -9
        assert time.monotonic() - t0 < 1.0 + 0.5  # started, scanned and killed within about a second
        assert h2.wait(type="process", action="killed", name="forbidden")
    finally:
        kill_tree([gap.pid, first.pid])


def test_kill_tree_takes_descendants_and_forks_racing_the_kill(netns: str) -> None:
    """A denied process with children and grandchildren: all die; a fork that races the kill dies too."""
    from runtime.proc_connector import Kind, ProcEvent

    mon = ProcessMonitor(settings(), {})
    # Detached from the test process (setsid -f), as a workload's processes are from the enforcer.
    tree = spawn_in(
        netns, "setsid", "-f", "sh", "-c", "sleep 30 & sh -c 'sleep 30 & wait' & wait", stdout=subprocess.PIPE
    )
    tree.wait(5)
    root = wait_for(lambda: _find_pod_root(netns))
    assert root, "the tree did not start"
    descendants = wait_for(lambda: _all_descendants(root) if len(_all_descendants(root)) >= 3 else [])
    assert len(descendants) >= 3  # a sleep, the inner sh and its sleep
    assert mon.kill_tree(root, time.monotonic())
    assert wait_for(lambda: not any(_alive(p) for p in [root, *descendants])), [root, *descendants]
    # A child forked by a doomed PID (its FORK event arriving after the kill) is killed on sight.
    late = spawn_in(netns, "setsid", "-f", "sleep", "30")
    late.wait(5)
    victim = wait_for(lambda: _find_pod_proc(netns, "sleep"))
    assert victim
    mon._doomed[4242424] = time.monotonic()
    mon.handle(ProcEvent(Kind.FORK, victim, victim, 4242424, 0, 0, 0), time.monotonic())
    assert wait_for(lambda: not _alive(victim))


def _pod_pids(netns: str) -> list[int]:
    return pids_in_netns(netns)


def _comm_of(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def _find_pod_root(netns: str) -> int | None:
    """The detached `sh` whose parent is not in the pod (the root of the tree)."""
    from runtime.procfs import read_ppid

    pids = set(_pod_pids(netns))
    for pid in pids:
        if _comm_of(pid) == "sh" and read_ppid(pid) not in pids:
            return pid
    return None


def _find_pod_proc(netns: str, name: str) -> int | None:
    return next((p for p in _pod_pids(netns) if _comm_of(p) == name), None)


def _all_descendants(pid: int) -> list[int]:
    from runtime.procfs import children_of

    out, frontier = [], [pid]
    while frontier:
        for c in children_of(frontier.pop()):
            out.append(c)
            frontier.append(c)
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
