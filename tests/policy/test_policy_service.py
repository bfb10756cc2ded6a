"""The policy process: no gap at start-up, last-known-good, standalone file watch, events to JSON lines.

`run_policy_process` runs in a real child process with a real `node.config.Config`; the test plays
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

from core import messages as M
from core.events import EventType, make_event
from core.lookup import Action, Mode
from core.policy_input import (
    DnsAnswers,
    WorkloadUpdate,
    decode_policy_input,
    encode_policy_input,
    policy_input_endpoint,
)
from node.config import Config, PolicyConfig, RuntimeDirsConfig
from policy.last_known_good import LastKnownGood, initial_policy
from policy.model import startup_snapshot
from policy.service import run_policy_process
from policy.settings import ServiceSettings
from policy.table_reader import open_shared_tables, table_slot

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
    assert s.run_dir.endswith("run") and s.heartbeat_s == 0.5
    assert table_slot("reader", 1, readers=2, workers=2) == 1
    assert table_slot("worker", 1, readers=2, workers=2) == 3
    assert table_slot("runtime", 0, readers=2, workers=2) == 4


def test_startup_policy_without_last_known_good(tmp_path: Path) -> None:
    counters: Counter[str] = Counter()
    lkg = LastKnownGood(tmp_path / "lkg")
    for mode in (Mode.MONITOR, Mode.PROTECT):
        snap, source = initial_policy(mode, lkg, counters)
        assert snap == startup_snapshot(mode) and source.startswith("start-up")
    lkg.path.write_text("version: 1\ngroups: [{name: a}, {name: a}]\n")  # corrupt last-known-good
    snap, source = initial_policy(Mode.MONITOR, lkg, counters)
    assert source.startswith("start-up") and counters["policy.lkg_unreadable"] == 1


def test_last_known_good_on_a_full_disk_keeps_the_previous_file(tmp_path: Path) -> None:
    lkg = LastKnownGood(tmp_path / "lkg")
    assert lkg.save(startup_snapshot(Mode.MONITOR))
    lkg.path.with_name(lkg.path.name + ".tmp").symlink_to("/dev/full")  # every write: ENOSPC
    assert not lkg.save(startup_snapshot(Mode.PROTECT))
    assert lkg.load() == startup_snapshot(Mode.MONITOR)  # the older file, whole
    assert lkg.save(startup_snapshot(Mode.PROTECT))  # the refused temporary file was removed
    assert lkg.load() == startup_snapshot(Mode.PROTECT)


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
    proc = None
    try:
        # the events socket is bound once the tables lock is held (the tables file exists a moment
        # before: a second process started then could take the lock first)
        wait_for(lambda: (Path(cfg.paths.run_dir) / "events.sock").exists())
        proc = start(cfg)
        proc.join(10)
        assert proc.exitcode not in (0, None)  # the tables lock is held by the first
        # ... and the refused one touched none of the first one's sockets: events still arrive
        flow = {"family": 4, "proto": 6, "src": "198.18.1.5", "sport": 1, "dst": "198.18.2.5", "dport": 22}
        zctx = zmq.Context()
        push = zctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 2000)
        push.connect(M.events_endpoint(cfg.paths.run_dir))
        push.send(
            M.encode(M.Events("w", [make_event(EventType.VIOLATION, "n", rule_id=5, flow=flow, action="x")]))
        )
        push.close()
        zctx.term()
        log = Path(cfg.paths.state_dir) / "events.jsonl"
        wait_for(lambda: log.exists() and '"rule_id": 5' in log.read_text(), what="event after refused start")
    finally:
        if proc is not None and proc.is_alive():  # (the test's own child, should it not have been refused)
            proc.terminate()
            proc.join(10)
        stop_event.set()
        t.join(10)


MEMBERS = """
version: 1
groups:
  - {name: web, mode: protect, members: [{app: web, namespace: shop}]}
  - {name: sites, mode: monitor, fqdns: ["*.example.com"]}
rules:
  - {id: 1, from: web, to: sites, ports: [tcp/443], action: allow}
  - {id: 2, from: web, to: external, ports: any, action: deny}
"""


def test_workloads_and_dns_answers_resolve_label_and_fqdn_groups(private_dir: Path) -> None:
    from policy.service import run_policy_service

    policy_file = private_dir / "policy.yaml"
    policy_file.write_text(MEMBERS)
    settings = ServiceSettings(
        node="n", run_dir=str(private_dir / "run"), state_dir=str(private_dir / "state"),
        policy_file=str(policy_file), watch_interval_s=0.1, table_bytes=1 << 20,
    )  # fmt: skip
    stop_event = threading.Event()
    box: list = []
    t = threading.Thread(target=run_policy_service, args=(settings, stop_event, box.append), daemon=True)
    t.start()
    zctx = zmq.Context()
    push = zctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 1000)
    try:
        wait_for(lambda: box)
        tables = open_shared_tables(settings.run_dir, slot=0)
        wait_for(lambda: tables.version() == 1)
        pod, site = ip("198.18.1.7"), ip("198.18.9.20")
        assert tables.decide(4, pod, site, 6, 443).src_group == "external"  # no workloads known yet
        push.connect(policy_input_endpoint(settings.run_dir))
        push.send(b"\x93garbage")
        wl = WorkloadUpdate(
            "runtime", True, [("pod-1", [pod, ip("fd00::7")], {"app": "web", "namespace": "shop"})], []
        )
        push.send(encode_policy_input(wl))
        wait_for(lambda: tables.decide(4, pod, site, 6, 443).src_group == "web", what="workload in its group")
        d = tables.decide(4, pod, site, 6, 443)
        assert (d.dst_group, d.rule_id, d.action) == ("external", 2, Action.DENY)
        answers = [("www.example.com.", [site], 5), ("example.org", [ip("198.18.9.21")], 300)]
        push.send(encode_policy_input(DnsAnswers("worker 0", answers)))
        wait_for(lambda: tables.decide(4, pod, site, 6, 443).dst_group == "sites", what="DNS answer applied")
        assert tables.decide(4, pod, site, 6, 443).action == Action.ALLOW
        assert tables.decide(4, pod, ip("198.18.9.21"), 6, 443).dst_group == "external"  # no pattern wants it
        push.send(encode_policy_input(WorkloadUpdate("runtime", False, [], ["pod-1"])))
        wait_for(lambda: tables.decide(4, pod, site, 6, 443).src_group == "external", what="workload removed")
        service = box[0]
        assert service.counters["message.malformed"] == 1
        assert service.applier.version == 1  # members change the tables, not the policy version
        tables.close()
    finally:
        push.close()
        zctx.term()
        stop_event.set()
        t.join(10)


def test_policy_input_codec_rejects_bad_frames() -> None:
    import pytest

    good = WorkloadUpdate("r", False, [("w", [bytes(4)], {"a": "b"})], ["x"])
    assert decode_policy_input(encode_policy_input(good)) == good
    import msgpack

    for bad in (
        msgpack.packb([1, 1, "r", [["w", [b"\x01\x02\x03"], {}]], False, []]),  # 3-byte address
        msgpack.packb([1, 1, "r", [["w", [], {"a": 1}]], False, []]),  # label value not a string
        msgpack.packb([1, 2, "r", [["n", [bytes(16)], "ttl"]]]),
        msgpack.packb([1, 9, "r", []]),
        msgpack.packb([2, 1, "r", [], False, []]),
        b"\xc1",
    ):
        with pytest.raises(M.MessageError):
            decode_policy_input(bad)


def test_last_known_good_that_no_longer_fits_falls_back_to_startup(private_dir: Path) -> None:
    from policy.service import PolicyService
    from policy.synth import synthetic_policy

    state = private_dir / "state"
    LastKnownGood(state / "policy").save(synthetic_policy(3000, 6000))
    settings = ServiceSettings(
        node="n", run_dir=str(private_dir / "run"), state_dir=str(state), startup_mode=Mode.PROTECT,
        table_bytes=1 << 19,
    )  # fmt: skip
    service = PolicyService(settings)
    try:
        assert service.counters["policy.tables_full"] == 1
        assert service.applier.current == startup_snapshot(Mode.PROTECT)
        tables = open_shared_tables(settings.run_dir, slot=0)
        d = tables.decide(4, ip("198.18.1.1"), ip("198.18.2.1"), 6, 80)
        assert (d.action, d.final) == (Action.DENY, True)
        tables.close()
    finally:
        service.close()


def test_the_loop_waits_no_longer_than_a_pending_recompilation_allows(private_dir: Path) -> None:
    from policy.service import REPUBLISH_INTERVAL_S, PolicyService

    settings = ServiceSettings(
        node="n", run_dir=str(private_dir / "run"), state_dir=str(private_dir / "state")
    )
    service = PolicyService(settings)
    try:
        assert service.republish_wait_ms(100.0, 250) == 250  # nothing pending: the longest wait
        service.members.dirty = True
        service.maybe_republish(100.0)  # recompiles now; the next is due REPUBLISH_INTERVAL_S later
        service.members.dirty = True
        wait = service.republish_wait_ms(100.0, 250)
        assert wait <= REPUBLISH_INTERVAL_S * 1000 + 1 and wait < 250
        assert service.republish_wait_ms(100.0 + REPUBLISH_INTERVAL_S, 250) <= 1  # due: do not wait
    finally:
        service.close()
