"""The policy process: no gap at start-up, last-known-good, standalone file watch, events to JSON lines.

`run_policy_process` runs in a real child process with a real `pipeline.config.Config`; the test plays
a reader mapping the shared tables and a worker sending events over the real IPC socket.
"""

from __future__ import annotations

import ipaddress
import json
import multiprocessing as mp
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import zmq

from pipeline import messages as M
from pipeline.config import Config, PolicyConfig, RuntimeDirsConfig
from policy.events import EventType, make_event
from policy.lookup import Action, Mode
from policy.model import startup_snapshot
from policy.service import (
    LastKnownGood,
    ServiceSettings,
    initial_policy,
    open_shared_tables,
    run_policy_process,
    table_slot,
)

ctx = mp.get_context("fork")

POLICY = """
version: %d
groups:
  - {name: clients, members: [198.18.1.0/24, "fd00:198:18:1::/64"]}
  - {name: servers, mode: %s, members: [198.18.2.0/24, "fd00:198:18:2::/64"]}
rules:
  - {id: 10, from: clients, to: servers, ports: [tcp/80], action: allow}
"""


def ip(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def wait_for(cond: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def config(root: Path, policy_file: str = "", startup: str = "monitor") -> Config:
    return Config(
        paths=RuntimeDirsConfig(run_dir=str(root / "run"), state_dir=str(root / "state")),
        policy=PolicyConfig(file=policy_file, startup=startup),
    )


def _child(cfg: Config) -> None:
    os._exit(run_policy_process(cfg, node="node-a"))


def start(cfg: Config) -> mp.Process:  # type: ignore[name-defined]
    p = ctx.Process(target=_child, args=(cfg,))
    p.start()
    return p


def stop(p: mp.Process) -> None:  # type: ignore[name-defined]
    if p.is_alive():
        assert p.pid is not None
        os.kill(p.pid, signal.SIGTERM)
        p.join(10)
    if p.is_alive():
        p.kill()
        p.join(5)


def test_settings_from_the_enforcer_config(tmp_path: Path) -> None:
    s = ServiceSettings.from_config(config(tmp_path, "x.yaml", "protect"), node="n")
    assert (s.node, s.policy_file, s.startup_mode, s.join_addr) == ("n", "x.yaml", Mode.PROTECT, "")
    assert s.run_dir.endswith("run") and s.heartbeat_s == 0.2
    assert table_slot("reader", 1, readers=2, workers=2) == 1
    assert table_slot("worker", 1, readers=2, workers=2) == 3
    assert table_slot("runtime", 0, readers=2, workers=2) == 4


def test_startup_policy_without_last_known_good(tmp_path: Path) -> None:
    counters: Counter[str] = Counter()
    lkg = LastKnownGood(tmp_path / "lkg")
    for mode in (Mode.MONITOR, Mode.PROTECT):
        settings = ServiceSettings(node="n", run_dir="", state_dir="", startup_mode=mode)
        snap, source = initial_policy(settings, lkg, counters)
        assert snap == startup_snapshot(mode) and source.startswith("start-up")
    lkg.path.write_text("version: 1\ngroups: [{name: a}, {name: a}]\n")  # corrupt last-known-good
    snap, source = initial_policy(ServiceSettings("n", "", ""), lkg, counters)
    assert source.startswith("start-up") and counters["policy.lkg_unreadable"] == 1


def test_standalone_process_start_watch_events_and_restart(private_dir: Path) -> None:
    policy_file = private_dir / "policy.yaml"
    policy_file.write_text(POLICY % (1, "protect"))
    cfg = config(private_dir, str(policy_file), startup="protect")
    proc = start(cfg)
    tables = None
    try:
        tables = open_shared_tables(cfg.paths.run_dir, slot=0, timeout=10)
        assert tables.generation() >= 1  # published before anything else: the start-up policy at least
        wait_for(lambda: tables.version() == 1, what="file policy applied")  # type: ignore[union-attr]
        d = tables.decide(4, ip("198.18.1.5"), ip("198.18.2.5"), 6, 22)
        assert (d.action, d.mode, d.rule_id) == (Action.DENY, Mode.PROTECT, 0)
        assert tables.decide(6, ip("fd00:198:18:1::5"), ip("fd00:198:18:2::5"), 6, 80).action == Action.ALLOW

        # the file changes: mode flips within the watch interval; a broken edit is rejected whole
        policy_file.write_text(POLICY % (2, "monitor"))
        wait_for(lambda: tables.decide(4, ip("198.18.1.5"), ip("198.18.2.5"), 6, 22).action == Action.ALLOW)  # type: ignore[union-attr]
        policy_file.write_text(POLICY % (3, "strict"))
        time.sleep(1.5)
        assert tables.version() == 2

        # events from a "worker" land in the JSON-lines log, identical ones folded
        flow = {"family": 4, "proto": 6, "src": "198.18.1.5", "sport": 1, "dst": "198.18.2.5", "dport": 22}
        events = [make_event(EventType.VIOLATION, "node-a", rule_id=0, flow=flow, action="allow")] * 3
        zctx = zmq.Context()
        push = zctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 2000)
        push.connect(M.events_endpoint(cfg.paths.run_dir))
        push.send(M.encode(M.Events("worker 0", events)))
        push.close()
        zctx.term()
        log = Path(cfg.paths.state_dir) / "events.jsonl"

        def lines() -> list[dict]:
            return [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []

        wait_for(lambda: any(e["type"] == "violation" for e in lines()), what="event logged")
        violation = [e for e in lines() if e["type"] == "violation"]
        assert len(violation) == 1 and violation[0]["count"] == 3
        audits = [e for e in lines() if e["type"] == "audit"]
        assert [a["what"] for a in audits].count("policy applied") >= 2
        assert any(a["what"] == "policy rejected" and "strict" in a["reason"] for a in audits)
    finally:
        stop(proc)
    assert proc.exitcode == 0

    # restart without the file: the last-known-good (version 2, monitor) is in force at once
    policy_file.unlink()
    assert tables is not None
    before = tables.generation()
    proc = start(cfg)
    try:
        wait_for(lambda: tables.generation() > before, what="restarted process publishes")  # type: ignore[union-attr]
        assert tables.version() == 2
        assert tables.decide(4, ip("198.18.1.5"), ip("198.18.2.5"), 6, 22).action == Action.ALLOW
    finally:
        stop(proc)
        tables.close()
    assert proc.exitcode == 0


def test_second_policy_process_is_refused(private_dir: Path) -> None:
    cfg = config(private_dir)
    stop_event = threading.Event()
    t = threading.Thread(target=run_policy_process, args=(cfg, "n", stop_event), daemon=True)
    t.start()
    try:
        wait_for(lambda: (Path(cfg.paths.run_dir) / "policy.tables").exists())
        proc = start(cfg)
        proc.join(10)
        assert proc.exitcode not in (0, None)  # the tables lock is held by the first
    finally:
        stop_event.set()
        t.join(10)
