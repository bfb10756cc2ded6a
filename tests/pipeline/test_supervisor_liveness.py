"""The supervisor's liveness check on real processes: a child whose heartbeat is late but that keeps
using CPU (busy, or starved on a loaded node) gets a bounded grace; a stopped one is restarted at the
timeout; a busy one that stays silent past the grace is restarted too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from node.config import config_from_dict
from node.supervisor import BUSY_GRACE_TIMEOUTS, Child, Supervisor

TIMEOUT_S = 0.3


class Recording(Supervisor):
    """Records what it would restart instead of starting real enforcer children."""

    restarted: list[tuple[str, str]]

    def _restart(self, child: Child, why: str) -> None:
        self.restarted.append((child.name, why))


def _supervisor(tmp_path: Path) -> Recording:
    config = config_from_dict(
        {
            "paths": {"run_dir": str(tmp_path / "run"), "state_dir": str(tmp_path / "state")},
            "supervisor": {"heartbeat_timeout_ms": int(TIMEOUT_S * 1000), "heartbeat_interval_ms": 100},
            "metrics": {"listen": ""},
        },
        environ={},
    )
    sup = Recording(config)
    sup.restarted = []
    return sup


def _child(index: int, code: str) -> Child:
    child = Child("worker", index, 0)
    child.proc = subprocess.Popen([sys.executable, "-c", code])
    child.heartbeats = 1
    return child


def test_late_heartbeats_of_a_running_child_get_a_bounded_grace(tmp_path: Path) -> None:
    sup = _supervisor(tmp_path)
    busy = _child(0, "import time\nend = time.time() + 30\nwhile time.time() < end: pass")
    stopped = _child(1, "import time; time.sleep(30)")
    sup.children = [busy, stopped]
    try:
        assert stopped.proc is not None
        os.kill(stopped.proc.pid, signal.SIGSTOP)
        for child in sup.children:  # their last heartbeat: now
            child.last_heartbeat = time.monotonic()
            child.cpu_at_heartbeat = sup._cpu_seconds(child)
        # Past the timeout: the busy one has used CPU since (retry until the kernel has counted a tick).
        deadline = time.monotonic() + 10
        while not sup._ran_since_heartbeat(busy):
            assert time.monotonic() < deadline, "the busy child never used CPU"
            time.sleep(0.05)
        late = max(busy.last_heartbeat, stopped.last_heartbeat) + TIMEOUT_S * 1.5
        time.sleep(max(0.0, late - time.monotonic()))
        sup._check_children(late)
        assert [name for name, _ in sup.restarted] == ["worker 1"], sup.restarted
        assert "sent no heartbeat" in sup.restarted[0][1]
        # Past the grace the busy one is restarted as well: busy forever is hung too.
        sup.restarted.clear()
        sup._check_children(busy.last_heartbeat + TIMEOUT_S * BUSY_GRACE_TIMEOUTS + 0.1)
        assert [name for name, _ in sup.restarted] == ["worker 0", "worker 1"], sup.restarted
    finally:
        for child in sup.children:
            assert child.proc is not None
            child.proc.kill()
            child.proc.wait(5)


def test_a_child_stopped_after_running_past_its_heartbeat_gets_no_grace(tmp_path: Path) -> None:
    # It used CPU since its last heartbeat (then it was stopped): stopped is not busy.
    sup = _supervisor(tmp_path)
    child = _child(0, "import time\nend = time.time() + 30\nwhile time.time() < end: pass")
    sup.children = [child]
    try:
        assert child.proc is not None
        child.last_heartbeat = time.monotonic()
        child.cpu_at_heartbeat = sup._cpu_seconds(child)
        deadline = time.monotonic() + 10
        while sup._cpu_seconds(child) <= child.cpu_at_heartbeat:  # until the kernel has counted a tick
            assert time.monotonic() < deadline, "the child never used CPU"
            time.sleep(0.05)
        os.kill(child.proc.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 10
        while sup._ran_since_heartbeat(child):  # until the stop has taken effect
            assert time.monotonic() < deadline, "the stopped child still counts as running"
            time.sleep(0.01)
        sup._check_children(child.last_heartbeat + TIMEOUT_S * 1.5)
        assert [name for name, _ in sup.restarted] == ["worker 0"], sup.restarted
    finally:
        assert child.proc is not None
        child.proc.kill()
        child.proc.wait(5)
