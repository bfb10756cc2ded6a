"""One generation for everything derived from a policy: the tables and the derived document (threat
settings, sensors, process profiles, file rules) are published together, and a consumer that sees
generation G compiles exactly G's document — never an earlier or later one, never a torn one — whatever
happens to the last-known-good file meanwhile."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from core.policy_input import WorkloadUpdate
from node.policy_document import derive_document, document_problem
from node.policy_updates import DocumentFollower, PublishedCompiler
from node.runtime_child import PublishedProfiles
from policy import document as D
from policy.applier import PolicyApplier
from policy.document import DocumentError, decode_document, encode_document
from policy.last_known_good import LastKnownGood
from policy.layout import tables_path
from policy.loader import parse_policy_text
from policy.members import Members
from policy.service import PolicyService, run_policy_service
from policy.settings import ServiceSettings
from policy.table_reader import SharedTables, open_shared_tables
from policy.table_writer import TablesWriter
from policy.tables import compile_policy
from threats.catalogue import BY_NAME
from workers.detect.engine import threat_policy_from_document, threat_settings_from_document

ctx = mp.get_context("fork")
SYN = BY_NAME["syn_flood"]

POLICY = """
version: %(version)d
groups:
  - {name: clients, members: [198.18.1.0/24]}
  - {name: servers, mode: protect, members: [{app: web}]}
rules:
  - {id: 10, from: clients, to: servers, ports: [tcp/80], action: allow}
threats:
  tcp.syn_flood: {thresholds: {syns_per_window: %(syns)d}}
process_profiles:
  - group: servers
    processes:
      - {name: %(process)s, path: /usr/bin/%(process)s}
sensors:
  - {name: cards, kind: dlp, context: body, patterns: ["%(pattern)s"], action: alert}
"""


def policy_text(version: int, syns: int, process: str = "nginx", pattern: str = "4[0-9]{15}") -> str:
    return POLICY % {"version": version, "syns": syns, "process": process, "pattern": pattern}


def wait_for(cond: Callable[[], object], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def poll_until(updates: PublishedCompiler[Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = updates.poll()
        if result is not None:
            return result
        time.sleep(0.01)
    raise AssertionError("no update compiled")


class Node:
    """A policy applier over real tables, and the derive/validate the node host gives it."""

    def __init__(self, root: Path) -> None:
        self.counters: Counter[str] = Counter()
        self.events: list[dict[str, Any]] = []
        self.writer = TablesWriter(root / "policy.tables", table_bytes=1 << 20)
        self.members = Members(self.counters)
        self.applier = PolicyApplier(
            self.writer, LastKnownGood(root / "state"), "n", self.events.append, self.counters,
            self.members, document_problem, derive_document,
        )  # fmt: skip

    def apply(self, text: str) -> int:
        result = self.applier.apply(parse_policy_text(text), "test")
        assert result.ok, result.reasons
        return result.generation


def test_consumers_compile_exactly_the_document_of_the_generation_they_see(private_dir: Path) -> None:
    node = Node(private_dir)
    tables = SharedTables(node.writer.path, slot=0)
    guard = PublishedCompiler(tables, threat_settings_from_document, Counter(), "guard")
    threats = PublishedCompiler(tables, lambda d: threat_policy_from_document(d, False), Counter(), "threats")
    try:
        g1 = node.apply(policy_text(1, syns=111))
        assert poll_until(guard).default.threshold(SYN, "syns_per_window") == 111
        assert guard.generation == g1 == tables.generation()
        policy = poll_until(threats)
        assert (policy.generation, threats.generation) == (1, g1)

        # a policy swap: the next generation's document, and only it
        g2 = node.apply(policy_text(2, syns=222))
        assert g2 == g1 + 1
        assert poll_until(guard).default.threshold(SYN, "syns_per_window") == 222
        assert (guard.generation, poll_until(threats).generation) == (g2, 2)

        # a members change republishes the tables (new generation) with the same document: nothing to redo
        node.members.take_workloads(WorkloadUpdate("runtime", True, [("w", [bytes(4)], {"app": "web"})], []))
        assert node.applier.republish() and tables.generation() == g2 + 1
        for _ in range(20):
            assert guard.poll() is None and threats.poll() is None
            time.sleep(0.005)
        assert guard.generation == g2

        # two swaps before the consumer looks again: it compiles the newest, never the one in between
        node.apply(policy_text(3, syns=333))
        g4 = node.apply(policy_text(4, syns=444))
        assert poll_until(guard).default.threshold(SYN, "syns_per_window") == 444
        assert guard.generation == g4
        published = tables.document()
        assert published is not None and published.generation == g4
        assert decode_document(published.data)["version"] == 4
    finally:
        guard.close()
        threats.close()
        tables.close()
        node.writer.close(unlink=True)


def test_a_document_that_would_not_compile_is_rejected_whole(private_dir: Path) -> None:
    node = Node(private_dir)
    try:
        g1 = node.apply(policy_text(1, syns=111))
        before = node.applier.document
        unknown = policy_text(2, syns=222).replace("syns_per_window", "rate")  # the model takes any name
        result = node.applier.apply(parse_policy_text(unknown), "test")
        assert not result.ok and "syn_flood.rate: unknown setting" in result.reasons[0]
        assert node.writer.generation() == g1 and node.applier.document == before
        assert node.counters["policy.rejected"] == 1
    finally:
        node.writer.close(unlink=True)


def test_the_document_size_is_bounded(monkeypatch: pytest.MonkeyPatch, private_dir: Path) -> None:
    doc = derive_document(parse_policy_text(policy_text(1, syns=111)))
    size = len(encode_document(doc))
    monkeypatch.setattr(D, "MAX_DOCUMENT_BYTES", size - 1)
    with pytest.raises(DocumentError, match="at most"):
        encode_document(doc)
    node = Node(private_dir)
    try:
        result = node.applier.apply(parse_policy_text(policy_text(1, syns=111)), "test")
        assert not result.ok and "bytes" in result.reasons[0] and node.writer.generation() == 0
    finally:
        node.writer.close(unlink=True)
    with pytest.raises(DocumentError):
        decode_document(b"\xc1")  # never a valid msgpack byte


def _read_documents(path: str, seconds: float, bad: Any, reads: Any) -> None:
    """Child process: read the document over and over; each must be whole and its generation's own."""
    tables = SharedTables(path, slot=None)  # no slot: the writer reuses halves without waiting for us
    n = errors = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        published = tables.document()
        if published is None:
            continue
        try:
            doc = decode_document(published.data)
            fill = bytes([published.generation % 251]) * len(doc["fill"])
            ok = doc["generation"] == published.generation and doc["fill"] == fill
        except (DocumentError, KeyError):
            ok = False
        errors += not ok
        n += 1
    bad.value = errors
    reads.value = n
    os._exit(0)


def test_a_document_is_never_read_half_written(private_dir: Path) -> None:
    writer = TablesWriter(private_dir / "policy.tables", table_bytes=1 << 21)
    compiled = compile_policy(parse_policy_text(policy_text(1, syns=1)))
    bad, reads = ctx.Value("i", -1), ctx.Value("i", 0)
    try:
        writer.publish(compiled, encode_document({"generation": 1, "fill": b"\x01" * 300_000}))
        reader = ctx.Process(target=_read_documents, args=(str(writer.path), 1.5, bad, reads))
        reader.start()
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            g = writer.generation() + 1
            fill = bytes([g % 251]) * (300_000 + (g % 7) * 1000)  # lengths move too
            assert writer.publish(compiled, encode_document({"generation": g, "fill": fill})) == g
        reader.join(10)
        assert reader.exitcode == 0
        assert reads.value > 10 and bad.value == 0, (reads.value, bad.value)
    finally:
        writer.close(unlink=True)


def test_last_known_good_damage_does_not_reach_running_consumers(private_dir: Path) -> None:
    policy_file = private_dir / "policy.yaml"
    policy_file.write_text(policy_text(1, syns=111))
    settings = ServiceSettings(
        node="n", run_dir=str(private_dir / "run"), state_dir=str(private_dir / "state"),
        policy_file=str(policy_file), watch_interval_s=0.05, table_bytes=1 << 20,
        derive=derive_document, validate=document_problem,
    )  # fmt: skip
    stop = threading.Event()
    box: list[PolicyService] = []
    t = threading.Thread(target=run_policy_service, args=(settings, stop, box.append), daemon=True)
    t.start()
    tables = guard = profiles = None
    try:
        wait_for(lambda: box, what="policy service")
        tables = open_shared_tables(settings.run_dir, slot=0)
        wait_for(lambda: tables.version() == 1, what="file policy applied")
        guard = PublishedCompiler(tables, threat_settings_from_document, Counter(), "guard")
        profiles = PublishedProfiles(settings.run_dir)
        assert poll_until(guard).default.threshold(SYN, "syns_per_window") == 111
        assert profiles().profiles["servers"].entries[0].name == "nginx"

        lkg = box[0].lkg.path
        wait_for(lkg.exists, what="last-known-good persisted")
        lkg.write_text("version: [not a policy\n")  # corrupt
        policy_file.write_text(policy_text(2, syns=222, process="caddy"))
        assert poll_until(guard).default.threshold(SYN, "syns_per_window") == 222
        assert guard.generation == tables.generation()
        wait_for(lambda: profiles().profiles["servers"].entries[0].name == "caddy", what="profiles switched")

        lkg.unlink()  # deleted
        policy_file.write_text(policy_text(3, syns=333, process="httpd"))
        assert poll_until(guard).default.threshold(SYN, "syns_per_window") == 333
        wait_for(lambda: profiles().profiles["servers"].entries[0].name == "httpd", what="profiles switched")
        assert guard.counters["guard.policy_error"] == guard.counters["guard.policy_unreadable"] == 0
    finally:
        stop.set()
        t.join(10)
        for closable in (guard, profiles, tables):
            if closable is not None:
                closable.close()


def test_the_runtime_child_waits_for_the_first_publication(private_dir: Path) -> None:
    profiles = PublishedProfiles(str(private_dir))
    assert profiles().profiles == {}  # no tables file yet: an empty policy, no error
    writer = TablesWriter(tables_path(str(private_dir)), table_bytes=1 << 20)
    try:
        assert profiles().profiles == {}  # the file exists, nothing published yet
        snapshot = parse_policy_text(policy_text(1, syns=1))
        writer.publish(compile_policy(snapshot), encode_document(derive_document(snapshot)))
        assert profiles().profiles["servers"].mode.name == "PROTECT"
        follower = profiles.follower
        assert isinstance(follower, DocumentFollower) and follower.changed() is None  # nothing new
    finally:
        profiles.close()
        writer.close(unlink=True)


def test_policy_process_publishes_with_the_node_hosts_document(private_dir: Path) -> None:
    """The child entry point wires derive and validate: a real policy process, a real document."""
    from node.child import main as child_main
    from node.config import Config, PolicyConfig, RuntimeDirsConfig, config_to_json

    policy_file = private_dir / "policy.yaml"
    policy_file.write_text(policy_text(5, syns=555))
    cfg = Config(
        paths=RuntimeDirsConfig(run_dir=str(private_dir / "run"), state_dir=str(private_dir / "state")),
        policy=PolicyConfig(file=str(policy_file), table_bytes=1 << 20),
    )
    cfg_file = private_dir / "config.json"
    cfg_file.write_text(config_to_json(cfg))
    proc = ctx.Process(
        target=lambda: os._exit(child_main(["policy", "0", "--config-json", str(cfg_file), "--seed", "1"]))
    )
    proc.start()
    try:
        tables = open_shared_tables(cfg.paths.run_dir, slot=0)
        wait_for(lambda: tables.version() == 5, what="policy applied")
        published = tables.document()
        assert published is not None
        doc = decode_document(published.data)
        assert doc["version"] == 5 and doc["runtime"]["profiles"]["servers"]["mode"] == "protect"
        assert threat_settings_from_document(doc).default.threshold(SYN, "syns_per_window") == 555
        tables.close()
    finally:
        assert proc.pid is not None
        os.kill(proc.pid, signal.SIGTERM)
        proc.join(10)
    assert proc.exitcode == 0
