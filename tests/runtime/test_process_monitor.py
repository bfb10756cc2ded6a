"""The process monitor on real processes in lab pods (network namespaces, cgroups) on this kernel."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable

from core import anomalies
from core.lookup import Mode
from runtime.identity import GroupSelector, Workload
from runtime.process_monitor import ProcessMonitor
from runtime.profiles import ProcessEntry, ProcessProfile, RuntimePolicy
from runtime.settings import RuntimeSettings
from tests.runtime.conftest import Harness, kill_tree, pids_in_netns, spawn_in, wait_for

# What a lab pod needs to start anything: `ip netns exec` runs inside the pod for a moment.
BASE = (
    ProcessEntry("ip"),
    ProcessEntry("sh"),
    ProcessEntry("bash"),
    ProcessEntry("sleep"),
    ProcessEntry("true"),
    ProcessEntry("touch"),
)


def settings(**kw: object) -> RuntimeSettings:
    base: dict[str, object] = dict(
        node="t",
        file_monitor=False,
        use_exec_permission=False,
        profile_refresh_s=0.1,
        proc_scan_interval_s=0.5,
    )
    base.update(kw)
    return RuntimeSettings(**base)  # type: ignore[arg-type]


def policy(netns: str, mode: Mode, entries: tuple[ProcessEntry, ...] = BASE) -> RuntimePolicy:
    return RuntimePolicy(
        groups=(GroupSelector("pod", labels={"netns": netns}),),
        profiles={"pod": ProcessProfile("pod", mode, entries)},
    )


def copy_bin(src: str, dst_dir: str, name: str) -> str:
    dst = os.path.join(dst_dir, name)
    shutil.copy(shutil.which(src) or src, dst)
    os.chmod(dst, 0o755)
    return dst


def retry_loop(command: str, attempts: int = 100) -> str:
    """Shell text that runs `command` `attempts` times and prints how many succeeded (`ok=N`)."""
    return (
        f"i=0; ok=0; while [ $i -lt {attempts} ]; do {command} && ok=$((ok+1)); i=$((i+1)); done; echo ok=$ok"
    )


def in_pod(netns: str, script: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", netns, "sh", "-c", script], capture_output=True, text=True, timeout=timeout
    )


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
    assert wait_for(lambda: len(h.find(type="process", action="killed", name="forbidden")) >= 100, 10)
    killed = h.find(type="process", action="killed", name="forbidden")
    assert killed[0]["path"] == script
    # Kills from a kernel exec event carry the latency; one found first by the periodic scan does not.
    lat = sorted(float(e["latency_ms"]) for e in killed if "latency_ms" in e)  # type: ignore[arg-type]
    assert len(lat) >= 95
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    print(f"exec→kill latency ms: p50 {statistics.median(lat):.2f} p99 {p99:.2f} max {lat[-1]:.2f}")
    assert not h.find(type="process", action="killed", name="sleep")


def test_protect_denies_exec_before_it_runs(
    netns: str, harness: Callable[..., Harness], exec_mount: str
) -> None:
    allowed = copy_bin("true", exec_mount, "allowed")
    forbidden = copy_bin("true", exec_mount, "forbidden")
    entries = (*BASE, ProcessEntry("allowed", f"{exec_mount}/*"))
    h = harness(
        settings(use_exec_permission=True, exec_permission_mounts=(exec_mount,)),
        policy(netns, Mode.PROTECT, entries),
    )
    started = next(e for e in h.snapshot() if e.get("what") == "runtime.started")
    assert started["exec_permission"] is True
    assert in_pod(netns, allowed).returncode == 0
    loop = retry_loop(f"{forbidden} 2>/dev/null")
    t0 = time.monotonic()
    r = in_pod(netns, loop, timeout=60)
    elapsed = time.monotonic() - t0
    assert "ok=0" in r.stdout, r
    r1 = in_pod(netns, forbidden)
    assert r1.returncode == 126 and "not permitted" in r1.stderr, r1
    assert wait_for(lambda: len(h.find(type="process", action="denied", name="forbidden")) >= 101)
    assert wait_for(lambda: h.counters.get(anomalies.RUNTIME_EXEC_PERM_DENIED, 0) >= 101)
    assert not h.find(type="process", name="allowed")
    print(f"100 denied execs in {elapsed:.2f}s")
    # Node processes (outside any workload) run the same binary unhindered.
    assert subprocess.run([forbidden], timeout=10).returncode == 0


def test_discover_then_protect_blocks_only_what_is_new(
    netns: str, harness: Callable[..., Harness], exec_mount: str
) -> None:
    a = copy_bin("sleep", exec_mount, "learned-a")
    b = copy_bin("sleep", exec_mount, "learned-b")
    new = copy_bin("true", exec_mount, "new-c")
    h = harness(
        settings(use_exec_permission=True, exec_permission_mounts=(exec_mount,)),
        policy(netns, Mode.DISCOVER, ()),
    )
    assert in_pod(netns, f"{a} 0.1; {b} 0.1").returncode == 0
    assert h.wait(type="process", action="learned", name="learned-a"), (h.snapshot(), h.counters)
    assert h.wait(type="process", action="learned", name="learned-b")
    learned = {(e["name"], e["path"]) for e in h.find(type="process", action="learned")}
    assert ("learned-a", a) in learned and ("learned-b", b) in learned
    assert in_pod(netns, f"{a} 0.1").returncode == 0
    time.sleep(0.3)
    assert len(h.find(type="process", action="learned", name="learned-a")) == 1  # learned and reported once
    # The controller turns the learned processes into the profile and switches the group to Protect.
    # (`ip` is the lab's launcher: whether its exec is seen inside the pod depends on timing.)
    entries = (ProcessEntry("ip"), *(ProcessEntry(str(n), str(p)) for n, p in learned))
    h.policy = policy(netns, Mode.PROTECT, entries)
    time.sleep(0.4)
    r = in_pod(netns, f"{a} 0.1 && {b} 0.1 && echo learned-ok; {new} || echo new-denied")
    assert "learned-ok" in r.stdout and "new-denied" in r.stdout, r
    assert h.wait(type="process", action="denied", name="new-c")


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
    from runtime.process_monitor import read_ppid

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


def _ldd(binary: str) -> list[str]:
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    libs = []
    for line in out.splitlines():
        parts = line.split()
        for p in parts:
            if p.startswith("/"):
                libs.append(p)
    return libs


def _make_root(root: str, binaries: dict[str, str]) -> None:
    """A minimal root filesystem: the given binaries (dest name → source) and their libraries."""
    for name, src in binaries.items():
        real = shutil.which(src) or src
        os.makedirs(os.path.join(root, "bin"), exist_ok=True)
        shutil.copy(real, os.path.join(root, "bin", name))
        for lib in _ldd(real):
            dst = os.path.join(root, lib.lstrip("/"))
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            if not os.path.exists(dst):
                shutil.copy(lib, dst)


def test_a_workload_with_its_own_root_gets_exec_permission_marks(
    netns: str, harness: Callable[..., Harness], exec_mount: str
) -> None:
    """No mounts configured: the monitor marks the filesystem of each workload root that differs from
    the node's (here a chroot on a tmpfs, as a container's rootfs would be) and denies there."""
    root = os.path.join(exec_mount, "root")
    _make_root(root, {"sh": "dash", "sleep": "sleep", "allowed": "true", "forbidden": "true"})
    with open(os.path.join(root, "bin", "run.sh"), "w") as f:
        f.write("#!/bin/sh\n/bin/allowed && echo script-ran\n")
    os.chmod(os.path.join(root, "bin", "run.sh"), 0o755)
    entries = (
        ProcessEntry("ip"),
        ProcessEntry("chroot"),
        ProcessEntry("sh", os.path.realpath(shutil.which("sh") or "/bin/sh")),  # the node's, for in_pod
        ProcessEntry("sleep"),
        ProcessEntry("allowed", "/bin/allowed"),
        ProcessEntry("run.sh", "/bin/run.sh"),
    )
    h = harness(settings(use_exec_permission=True), policy(netns, Mode.PROTECT, entries))
    init = spawn_in(netns, "chroot", root, "/bin/sleep", "30")
    try:
        # Until the workload's root is known, the kill path is what enforces; once it is, the kernel denies.
        def denied() -> bool:
            r = in_pod(netns, f"chroot {root} /bin/forbidden")
            return r.returncode == 126

        assert wait_for(denied, 5)
        # A dynamic executable: its loader (on the same filesystem) is part of the same execve.
        ok = in_pod(netns, f"chroot {root} /bin/allowed")
        assert ok.returncode == 0, ok
        # A script: its interpreter is allowed as part of it; the same shell run directly is not.
        script = in_pod(netns, f"chroot {root} /bin/run.sh")
        assert script.returncode == 0 and "script-ran" in script.stdout, script
        assert in_pod(netns, f"chroot {root} /bin/sh -c true").returncode == 126
        ev = h.wait(type="process", action="denied", name="forbidden")
        assert ev and ev[0]["path"] == "/bin/forbidden"  # as the workload sees it
    finally:
        kill_tree([init.pid])
        init.wait(5)


def test_kill_tree_takes_descendants_and_forks_racing_the_kill(netns: str) -> None:
    """A denied process with children and grandchildren: all die; a fork that races the kill dies too."""
    from runtime.proc_connector import Kind, ProcEvent
    from runtime.process_monitor import children_of

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
    assert children_of(os.getpid()) is not None


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
    from runtime.process_monitor import read_ppid

    pids = set(_pod_pids(netns))
    for pid in pids:
        if _comm_of(pid) == "sh" and read_ppid(pid) not in pids:
            return pid
    return None


def _find_pod_proc(netns: str, name: str) -> int | None:
    return next((p for p in _pod_pids(netns) if _comm_of(p) == name), None)


def _all_descendants(pid: int) -> list[int]:
    from runtime.process_monitor import children_of

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
