"""A worker process: receives packet batches from readers, inspects them, returns verdicts.

Flows reach a worker by the readers' seeded symmetric hash, so both directions of a flow meet the same
worker's state. Verdicts go back to the reader that owns the packet, one message per batch.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import signal
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import zmq

from core import messages as M
from core.capture import REPLY_HWM, REPLY_LINGER_MS
from core.flow import Direction, flow_key
from core.lookup import PolicyTables
from core.packet import decode
from core.policy_input import DnsAnswers, encode_policy_input, policy_input_endpoint
from core.sockets import (
    BATCH_HWM,
    EVENTS_HWM,
    HEARTBEAT_HWM,
    has_message,
    poll_ms,
    push_to,
    send_block_sources,
    send_now,
    spin_for_message,
)
from core.updates import Updates, UpdatesFactory
from core.verdict import WorkerVerdict
from workers.detect.shared_counts import SharedCounts, open_shared_counts
from workers.engine import Engine
from workers.settings import WorkerConfig

log = logging.getLogger(__name__)

# Longest wait for a batch before housekeeping runs; an idle worker waits until its next duty (heartbeat,
# event flush), since every idle wake-up costs the node's workloads (node/supervisor.py, POLL_MS).
POLL_MS = 500
MAX_PENDING_DNS_NAMES = 4096  # names held between two flushes to the policy process; more are dropped
EVENT_FLUSH_S = 0.5  # events are sent to the policy process at most this often
FIRST_POLICY_WAIT_S = 3.0  # longest a starting worker waits for its threat policy (readers wait 5 s for it)


_DIRECTION_COUNTER = {Direction.A_TO_B: "packets.a_to_b", Direction.B_TO_A: "packets.b_to_a"}


class Worker:
    def __init__(self, config: WorkerConfig, index: int, engine: Engine | None = None) -> None:
        self.config = config
        self.index = index
        self.engine: Engine = engine if engine is not None else _NoEngine()
        self.counters: Counter[str] = Counter()
        self.pending_events: list[dict[str, Any]] = []
        # DNS answers seen since the last flush (name → addresses, ttl), for the policy's FQDN groups.
        self.pending_dns: dict[str, tuple[set[bytes], int]] = {}
        self.threat_policy: ThreatPolicyUpdates | None = None
        self.tables: PolicyTables | None = None
        self.running = True
        self.spin_s = config.workers.spin_us / 1e6

    def emit(self, event: dict[str, Any]) -> None:
        if len(self.pending_events) < M.MAX_EVENTS_PER_BATCH:
            self.pending_events.append(event)
        else:
            self.counters["events.dropped"] += 1

    def on_fqdn(self, learnt: list[tuple[str, bytes, float]]) -> None:
        for name, address, ttl in learnt:
            if name not in self.pending_dns and len(self.pending_dns) >= MAX_PENDING_DNS_NAMES:
                self.counters["dns_answers.dropped"] += 1
                continue
            addresses, old_ttl = self.pending_dns.get(name, (set(), 0))
            addresses.add(address)
            self.pending_dns[name] = (addresses, max(old_ttl, int(ttl)))

    def open(self) -> None:
        run_dir = self.config.paths.run_dir
        self.ctx = zmq.Context(1)
        self.inbox = self.ctx.socket(zmq.PULL)
        self.inbox.setsockopt(zmq.RCVHWM, 1024)
        self.inbox.setsockopt(zmq.LINGER, 0)
        self.inbox.bind(M.worker_endpoint(run_dir, self.index))
        self.to_readers = []
        for r in range(self.config.queues.readers):
            self.to_readers.append(push_to(self.ctx, M.reader_endpoint(run_dir, r), BATCH_HWM))
        self.events = push_to(self.ctx, M.events_endpoint(run_dir), EVENTS_HWM)
        self.supervisor = push_to(self.ctx, M.supervisor_endpoint(run_dir), HEARTBEAT_HWM)
        self.policy_input = push_to(self.ctx, policy_input_endpoint(run_dir), EVENTS_HWM)

    def handle(self, frame: bytes, now: float) -> None:
        try:
            msg = M.decode(frame)
        except M.MessageError as exc:
            self.counters[exc.anomaly] += 1
            return
        if isinstance(msg, M.EvidenceRequest):
            self.answer_evidence(msg)
            return
        if not isinstance(msg, M.Inspect) or not 0 <= msg.reader < len(self.to_readers):
            self.counters["message.unexpected"] += 1
            return
        items = msg.items
        # The answers leave as soon as the last packet that waits is judged: packets already let through
        # after it (the next connection's handshake, a close) cannot change them, and are learned after.
        last_waiting = -1
        for i in range(len(items) - 1, -1, -1):
            if not items[i][2] & M.NO_VERDICT:
                last_waiting = i
                break
        answers: list[tuple[int, int, int]] = []
        on_packet = self.engine.on_packet
        for i, (ref, packet, flags) in enumerate(items):
            meta = decode(packet)
            if meta.anomaly:
                self.counters[meta.anomaly] += 1
                if not flags & M.NO_VERDICT:
                    answers.append((ref, WorkerVerdict.PASS, 0))
            else:
                key, direction = flow_key(meta)
                self.counters[_DIRECTION_COUNTER[direction]] += 1
                try:
                    verdict, rule = on_packet(packet, meta, key, direction, now)
                except Exception:  # an engine bug must not kill the worker or leave the packet unanswered
                    self.counters["worker.engine_error"] += 1
                    log.exception("inspection failed; packet passed")
                    verdict, rule = WorkerVerdict.PASS, 0
                # A packet already let through by the reader (NO_VERDICT) feeds stream state only.
                if not flags & M.NO_VERDICT:
                    answers.append((ref, int(verdict), rule))
            if i == last_waiting:
                self._answer(msg.reader, answers)
        self.counters["packets"] += len(items)
        self.counters["packets.no_verdict"] += len(items) - len(answers)
        threats = self._threats()
        if threats is not None and threats.new_blocks:
            send_block_sources(self.supervisor, f"worker {self.index}", threats.new_blocks, self.counters)
            threats.new_blocks = []

    def _threats(self) -> Any:
        """The threat engine behind the inspection chain (its blocks and evidence), None without one."""
        return getattr(_inner(self.engine), "threats", None)

    def _answer(self, reader: int, answers: list[tuple[int, int, int]]) -> None:
        try:
            send_now(self.to_readers[reader], M.encode(M.Verdicts(self.index, answers)))
        except zmq.Again:
            self.counters["verdicts.undeliverable"] += len(answers)

    def name_evidence(self) -> None:
        """Evidence ids that name this worker and this start (`enforcer capture --threat ID`)."""
        threats = self._threats()
        if threats is not None:
            threats.evidence.id_prefix = f"w{self.index}-{secrets.token_hex(3)}-"

    def answer_evidence(self, request: M.EvidenceRequest) -> None:
        """The packets of one of our evidence snapshots, to the requester's socket (none: not held)."""
        threats = self._threats()
        held = threats.evidence.records(request.evidence_id) if threats is not None else None
        reply = M.EvidenceReply(self.index, request.evidence_id, list(held or ())[: M.MAX_RECORDS])
        endpoint = M.capture_reply_endpoint(self.config.paths.run_dir, request.reply)
        sock = push_to(self.ctx, endpoint, REPLY_HWM, REPLY_LINGER_MS)
        try:
            sock.send(M.encode(reply), zmq.NOBLOCK)
            self.counters["evidence.sent" if held else "evidence.not_held"] += 1
        except zmq.Again:
            self.counters["evidence.unsent"] += 1
        finally:
            sock.close()

    def spin_for_batch(self) -> bool:
        """After answering, poll for the next batch up to `workers.spin_us` before sleeping (the flow's
        next packet often follows its verdict closely); True if one came."""
        return spin_for_message(self.inbox, self.spin_s, self.counters)

    def serve(self) -> int:
        poller = zmq.Poller()
        poller.register(self.inbox, zmq.POLLIN)
        hb_period = self.config.supervisor.heartbeat_interval_ms / 1000.0
        next_hb = next_events = 0.0
        ready: dict[Any, int] = {}
        while self.running:
            if not (self.spin_s and self.inbox in ready and self.spin_for_batch()):
                ready = dict(poller.poll(poll_ms(min(next_hb, next_events) - time.monotonic(), POLL_MS)))
            now = time.monotonic()
            if self.inbox in ready:
                for _ in range(256):  # bounded burst, then housekeeping gets a turn
                    try:
                        frame = self.inbox.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    # The engine gets wall-clock time, as in replay (capture timestamps): it stamps events.
                    self.handle(frame, time.time())
                    if not has_message(self.inbox):
                        break  # cheaper than the receive that would raise zmq.Again
            if now >= next_events:
                next_events = now + EVENT_FLUSH_S
                if self.threat_policy is not None and self.tables is not None:
                    self.threat_policy.poll(self.engine, self.tables)
                self.engine.expire(time.time())
                self.flush_events()
            if now >= next_hb:
                next_hb = now + hb_period
                self.heartbeat()
        return 0

    def flush_events(self) -> None:
        if self.pending_dns:
            answers = [(name, sorted(addrs), ttl) for name, (addrs, ttl) in self.pending_dns.items()]
            self.pending_dns = {}
            try:
                msg = DnsAnswers(f"worker {self.index}", answers)
                self.policy_input.send(encode_policy_input(msg), zmq.NOBLOCK)
            except zmq.Again:
                self.counters["dns_answers.dropped"] += len(answers)
        if not self.pending_events:
            return
        events, self.pending_events = self.pending_events, []
        try:
            self.events.send(M.encode(M.Events(f"worker {self.index}", events)), zmq.NOBLOCK)
        except zmq.Again:
            self.counters["events.dropped"] += len(events)

    def heartbeat(self) -> None:
        counters = dict(self.counters)
        counters.update(self.engine.stats())
        fill = getattr(self.engine, "table_fill", None)  # the bounded tables' entries (node/soak warm-up)
        if fill is not None:
            counters.update(fill())
        try:
            self.supervisor.send(
                M.encode(M.Heartbeat("worker", self.index, os.getpid(), counters)), zmq.NOBLOCK
            )
        except zmq.Again:
            pass

    def stop(self, *_: Any) -> None:
        self.running = False

    def close(self) -> None:
        if self.threat_policy is not None:
            self.threat_policy.close()
        self.flush_events()
        self.ctx.destroy(linger=0)


class _NoEngine:
    """Until an engine is given: pass everything (a worker never leaves a packet unanswered)."""

    def on_packet(self, *_: Any) -> tuple[WorkerVerdict, int]:
        return WorkerVerdict.PASS, 0

    def expire(self, now: float) -> None:
        pass

    def stats(self) -> dict[str, int]:
        return {}


def build_engine(
    config: WorkerConfig,
    tables: PolicyTables,
    node: str,
    emit: Callable[[dict[str, Any]], None],
    on_fqdn: Callable[[list[tuple[str, bytes, float]]], None] | None = None,
    counts: SharedCounts | None = None,
) -> Engine:
    """The worker's inspection chain: packet-level threats in front of the DPI engine (parsers,
    app-aware rules) whose detector hooks are the application threats and the DLP/WAF sensors; behind
    the lab's payload-pattern rule when one is configured. Threat settings arrive with the policy
    (`ThreatPolicyUpdates`). `counts`: the node's workers' table of refused logins."""
    from workers.detect.engine import build_engine as build_detecting_engine
    from workers.pattern import PatternRule

    dpi = config.dpi
    if config.workers.inspect == "all":  # nothing is offloaded: an allowed flow's packets keep coming
        dpi = dataclasses.replace(dpi, tcp_offloaded_timeout=dpi.tcp_idle_timeout)
    # The readers' guard counts connection attempts (every first packet reaches a reader): not again here.
    detecting = build_detecting_engine(
        dpi, tables, emit, node, limits=config.detect, on_fqdn=on_fqdn, count_attempts=False
    )
    if counts is not None:
        detecting.threats.app.share_counts(counts)
    engine: Engine = detecting
    if config.workers.payload_pattern:
        engine = PatternRule(engine, bytes.fromhex(config.workers.payload_pattern))
    return engine


class ThreatPolicyUpdates:
    """Threat settings and sensors of the policy in force, compiled in a thread (a large sensor set takes
    seconds to compile; Hyperscan releases the GIL) and handed to the engine between two batches."""

    def __init__(self, updates: Updates[Any]) -> None:
        self.compiler = updates

    def poll(self, engine: Engine, tables: PolicyTables) -> bool:
        """Hand a newly compiled policy to the engine; True if there was one."""
        policy = self.compiler.poll()
        if policy is not None:
            set_policy = getattr(_inner(engine), "set_policy", None)
            if set_policy is not None:
                set_policy(policy, tables)
        return policy is not None

    def first(self, engine: Engine, tables: PolicyTables, counters: Counter[str]) -> None:
        """The policy in force before the worker opens its sockets (readers, and so our rules, wait for
        them), so that no flow is inspected with the catalogue's defaults. Bounded: a late compile is
        counted, and the policy then follows between batches."""
        deadline = time.monotonic() + FIRST_POLICY_WAIT_S
        while time.monotonic() < deadline:
            if self.poll(engine, tables):
                return
            time.sleep(0.005)
        counters["threats.policy_late"] += 1

    def close(self) -> None:
        self.compiler.close()


def _inner(engine: Engine) -> Any:
    return getattr(engine, "engine", engine)  # through the lab's PatternRule wrapper


def run_worker(
    config: WorkerConfig,
    index: int,
    tables: PolicyTables,
    node: str,
    threat_updates: UpdatesFactory[Any] | None = None,
) -> int:
    worker = Worker(config, index)
    try:
        counts: SharedCounts | None = open_shared_counts(config.paths.run_dir, config.workers.count, index)
    except (OSError, ValueError) as exc:  # each worker then counts its own share, as said here
        log.warning("worker %d counts refused logins alone: the node's table: %s", index, exc)
        worker.counters["detect.shared_counts_unavailable"] += 1
        counts = None
    worker.engine = build_engine(config, tables, node, worker.emit, worker.on_fqdn, counts)
    worker.name_evidence()
    if threat_updates is not None:
        worker.threat_policy = ThreatPolicyUpdates(threat_updates(worker.counters))
    worker.tables = tables
    if worker.threat_policy is not None:
        worker.threat_policy.first(worker.engine, tables, worker.counters)
    signal.signal(signal.SIGTERM, worker.stop)
    signal.signal(signal.SIGINT, worker.stop)
    worker.open()
    log.info("worker %d ready", index)
    try:
        return worker.serve()
    finally:
        worker.close()
