"""The exec guard on real processes in lab pods: a binary a Protect profile forbids never runs (fanotify
FAN_OPEN_EXEC_PERM), learned programs keep running after Discover → Protect, and a workload with its own
root filesystem is guarded there, its loader and script interpreter allowed as part of one execve."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable

from core import anomalies
from core.lookup import Mode
from runtime.profiles import ProcessEntry
from tests.runtime.conftest import Harness, kill_tree, spawn_in, wait_for
from tests.runtime.support import BASE, copy_bin, in_pod, policy, retry_loop, settings


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
    h.policy = policy(netns, Mode.PROTECT, entries)  # returns once the monitor has it in force
    r = in_pod(netns, f"{a} 0.1 && {b} 0.1 && echo learned-ok; {new} || echo new-denied")
    assert "learned-ok" in r.stdout and "new-denied" in r.stdout, r
    assert h.wait(type="process", action="denied", name="new-c")


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

        assert wait_for(denied)
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
