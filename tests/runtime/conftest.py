"""Lab fixtures of the runtime tests: network namespaces and cgroups named `rt-…`, always removed."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

T = TypeVar("T")

PIDS_CGROUP_ROOT = "/sys/fs/cgroup/pids"
UNIFIED_CGROUP_ROOT = "/sys/fs/cgroup/unified"


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True, timeout=10)


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh network namespace `rt-<hex>` with lo up, deleted afterwards."""
    name = f"rt-{secrets.token_hex(4)}"
    _run("ip", "netns", "add", name)
    try:
        _run("ip", "-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        # Processes the test left in its namespace (detached ones included), by PID.
        kill_tree(pids_in_netns(name))
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=10)


def pids_in_netns(name: str) -> list[int]:
    try:
        ino = os.stat(f"/run/netns/{name}").st_ino
    except OSError:
        return []
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if os.stat(f"/proc/{p}/ns/net").st_ino == ino:
                    out.append(int(p))
            except OSError:
                continue
    return out


def kill_tree(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _cgroup_dir(root: str) -> Iterator[str]:
    path = os.path.join(root, f"rt-{secrets.token_hex(4)}")
    os.mkdir(path)
    try:
        yield path
    finally:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                with open(os.path.join(path, "cgroup.procs")) as f:
                    left = [int(x) for x in f.read().split()]
            except OSError:
                break
            if not left:
                break
            kill_tree(left)
            time.sleep(0.05)
        with contextlib.suppress(OSError):
            os.rmdir(path)


@pytest.fixture
def pids_cgroup() -> Iterator[str]:
    """A cgroup `rt-<hex>` in the v1 pids hierarchy; its processes are killed and it is removed after."""
    yield from _cgroup_dir(PIDS_CGROUP_ROOT)


@pytest.fixture
def unified_cgroup() -> Iterator[str]:
    """A cgroup `rt-<hex>` in the v2 (unified) hierarchy."""
    yield from _cgroup_dir(UNIFIED_CGROUP_ROOT)


def spawn_in(netns_name: str, *argv: str, cgroup: str | None = None, **kw: object) -> subprocess.Popen[bytes]:
    """Start argv inside a network namespace (and a cgroup, joined before exec)."""
    cmd = ["ip", "netns", "exec", netns_name, *argv]
    preexec = None
    if cgroup is not None:

        def preexec() -> None:
            with open(os.path.join(cgroup, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))

    return subprocess.Popen(cmd, preexec_fn=preexec, **kw)  # type: ignore[call-overload]


def wait_for(predicate: Callable[[], T], timeout: float = 20.0, interval: float = 0.02) -> T:
    """Poll `predicate` until it returns a truthy value or `timeout` passes; return the last value. Every
    wait is for something that must happen: a generous timeout costs nothing when it does, and a loaded
    machine can take seconds to deliver a burst of events."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    return value


class Harness:
    """run_runtime_monitor in a child process of its own, as the supervisor runs it.

    The child is not an ancestor of the lab pods' processes (they are started by the test), so the
    exclusion of the enforcer's own process tree does not hide them. Policy goes down and events and
    counters come up as JSON lines over pipes.
    """

    def __init__(self, settings: object, policy: object) -> None:
        import threading

        self.settings = settings
        self._policy = policy
        self.events: list[dict[str, object]] = []
        self.counters: dict[str, int] = {}
        self._lock = threading.Lock()
        self.pid = 0
        self.rc: int | None = None
        self._ctl_w = -1
        self._sent = 1  # policies sent: the first with start()
        self._reader: threading.Thread | None = None

    @property
    def policy(self) -> object:
        return self._policy

    @policy.setter
    def policy(self, value: object) -> None:
        """Send a new policy and return once the monitor has it in force: it asked for the policy twice
        since it arrived (its loop applies what one call returns before the next), however long this
        machine takes, instead of a fixed sleep."""
        self._policy = value
        self._sent += 1
        self._send_policy()
        sent = self._sent
        assert wait_for(
            lambda: (
                self.counters.get("harness.policy", 0) == sent
                and self.counters.get("harness.fetches", 0) >= 2
            ),
            30,
        ), ("the monitor never took the new policy", self.counters)

    def _send_policy(self) -> None:
        import json

        from runtime.profiles import policy_to_dict

        os.write(self._ctl_w, (json.dumps(policy_to_dict(self._policy)) + "\n").encode())  # type: ignore[arg-type]

    def start(self) -> Harness:
        import threading

        ctl_r, ctl_w = os.pipe()
        ev_r, ev_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            code = 1
            try:
                os.close(ctl_w)
                os.close(ev_r)
                code = _child(self.settings, ctl_r, ev_w)
            except BaseException:
                import traceback

                traceback.print_exc()
            finally:
                os._exit(code)
        os.close(ctl_r)
        os.close(ev_w)
        self.pid = pid
        self._ctl_w = ctl_w
        self._send_policy()
        self._reader = threading.Thread(target=self._read, args=(ev_r,), daemon=True)
        self._reader.start()
        assert wait_for(lambda: any(e.get("what") == "runtime.started" for e in self.snapshot()))
        return self

    def _read(self, fd: int) -> None:
        import json

        with os.fdopen(fd, "r") as f:
            for line in f:
                msg = json.loads(line)
                with self._lock:
                    if "counters" in msg:
                        self.counters = msg["counters"]
                    else:
                        self.events.append(msg["event"])

    def snapshot(self) -> list[dict[str, object]]:
        with self._lock:
            return list(self.events)

    def find(self, **want: object) -> list[dict[str, object]]:
        return [e for e in self.snapshot() if all(e.get(k) == v for k, v in want.items())]

    def wait(self, timeout: float = 20.0, **want: object) -> list[dict[str, object]]:
        return wait_for(lambda: self.find(**want), timeout)

    @property
    def alive(self) -> bool:
        return self.rc is None and self.pid > 0

    def close(self) -> None:
        if not self.alive:
            return
        os.close(self._ctl_w)  # EOF on the control pipe stops the child
        _, status = os.waitpid(self.pid, 0)
        self.rc = os.waitstatus_to_exitcode(status)
        if self._reader is not None:
            self._reader.join(5)
        assert self.rc == 0, self.rc


def _child(settings: object, ctl_r: int, ev_w: int) -> int:
    import json
    import threading

    from runtime.monitor import run_runtime_monitor
    from runtime.profiles import RuntimePolicy, policy_from_dict

    out = os.fdopen(ev_w, "w", buffering=1)
    lock = threading.Lock()
    stop = threading.Event()
    current: list[RuntimePolicy] = [RuntimePolicy()]
    counters: dict[str, int] = {}
    first = threading.Event()

    def control() -> None:
        with os.fdopen(ctl_r, "r") as f:
            for line in f:
                with lock:
                    current[0] = policy_from_dict(json.loads(line))
                    # which policy the monitor is asked for now, and how often it has asked for it since
                    counters["harness.policy"] = counters.get("harness.policy", 0) + 1
                    counters["harness.fetches"] = 0
                first.set()
        stop.set()

    def profiles() -> RuntimePolicy:
        with lock:
            counters["harness.fetches"] = counters.get("harness.fetches", 0) + 1
            return current[0]

    def send(msg: dict[str, object]) -> None:
        with lock:
            out.write(json.dumps(msg, default=str) + "\n")

    def report() -> None:
        while not stop.wait(0.05):
            with lock:
                snapshot = dict(counters)
            send({"counters": snapshot})

    threading.Thread(target=control, daemon=True).start()
    first.wait(10)
    threading.Thread(target=report, daemon=True).start()
    rc = run_runtime_monitor(
        settings,  # type: ignore[arg-type]
        profiles,
        lambda ev: send({"event": ev}),
        stop,
        counters=counters,
    )
    send({"counters": dict(counters)})
    out.close()
    return rc


@pytest.fixture
def harness() -> Iterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(settings: object, policy: object) -> Harness:
        h = Harness(settings, policy)
        made.append(h)
        return h.start()

    yield make
    for h in made:
        if h.alive:
            h.close()


@pytest.fixture
def exec_mount(tmp_path: object) -> Iterator[str]:
    """A tmpfs of our own to hold test binaries, so exec permission marks touch nothing else."""
    path = os.path.join(str(tmp_path), "rt-exec")
    os.mkdir(path)
    _run("mount", "-t", "tmpfs", "-o", "size=32m,mode=755", "rt-exec", path)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], capture_output=True, timeout=10)
