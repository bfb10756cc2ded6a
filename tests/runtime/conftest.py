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
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, timeout=10)


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


def wait_for(predicate: Callable[[], T], timeout: float = 5.0, interval: float = 0.02) -> T:
    """Poll `predicate` until it returns a truthy value or `timeout` passes; return the last value."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    return value
