"""The short chaos drill (`scripts/chaos.py --short`) under load: every child type killed once, the
queues held full, the controller restarted, the event spool and both directories' file systems filled.
Enforcement comes back, no packet is left without a verdict, no event is lost or stored twice, nothing
restarts that was not killed. About a minute.

The time-to-enforcing target is the script's `auto` one: 2 s, or a restarted child's own start-up on
this machine (measured in the enforcer's log) plus two probe rounds when that is longer, so a loaded CI
machine does not fail a recovery that was as fast as the process could start.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.netns

ROOT = Path(__file__).resolve().parents[2]
CHILDREN = {"policy 0", "reader q0", "reader q1", "worker 0", "worker 1", "runtime 0"}


def test_short_chaos_drill_meets_every_target() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "chaos.py"), "--short", "--json", "--target", "auto"],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
    table = proc.stdout[-6000:] + proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = {r["drill"]: r for r in report["rows"]}
    assert {f"kill {c} #1" for c in CHILDREN} <= set(rows), table
    for drill in ("queue full #1", "controller x2: events", "spool full", "state dir full", "run dir full"):
        assert drill in rows, table
    missed = {name: r["missed"] for name, r in rows.items() if r["missed"]}
    assert not missed, table
    for row in rows.values():
        assert row["unanswered"] == 0 and row["enforcing_s"] is not None, table
    for drill in ("controller x2: events", "spool full", "state dir full"):
        assert rows[drill]["lost"] == 0 and rows[drill]["duplicated"] == 0, table
    assert report["enforcer_alive"], table
    # Only the drills restarted children: one kill each, and the run-dir drill's policy process and reader.
    restarts = report["enforcer_restarts"]
    assert restarts == {"policy 0": 2, "reader q0": 2, "reader q1": 1, "worker 0": 1, "worker 1": 1,
                        "runtime 0": 1}, (restarts, table)  # fmt: skip
    assert proc.returncode == 0, table
