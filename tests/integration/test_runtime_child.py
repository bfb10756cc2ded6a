"""The runtime monitor as a child of the real enforcer: its events reach the policy process's event log."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from lab.enforcer import LabEnforcer
from lab.topology import Lab

pytestmark = pytest.mark.netns


def test_suspicious_tool_in_a_pod_is_reported(lab: Lab, tmp_path: Path) -> None:
    tool = tmp_path / "nmap"  # a harmless program under a name on the suspicious-tools list
    shutil.copy(shutil.which("sleep") or "/bin/sleep", tool)
    with LabEnforcer(lab) as e:
        proc = lab.popen("c2", str(tool), "20")
        try:
            deadline = time.monotonic() + 20  # no process connector in a lab namespace: /proc every 2 s
            found: list[dict[str, object]] = []
            while time.monotonic() < deadline and not found:
                found = [ev for ev in e.events() if ev["type"] == "threat" and "nmap" in str(ev)]
                time.sleep(0.3)
        finally:
            proc.kill()
            proc.wait()
        assert found, [ev["type"] for ev in e.events()]
        runtime = [c for c in e.status()["children"] if c["name"] == "runtime 0"]
        assert runtime and runtime[0]["alive"]
