"""A worker process: receives packet batches from readers, inspects them, returns verdicts.

Flows reach a worker by the readers' seeded symmetric hash, so both directions of a flow meet the same
worker's state. Verdicts go back to the reader that owns the packet, one message per batch.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

import zmq

from pipeline import messages as M
from pipeline.config import Config
from pipeline.flow import Direction, FlowKey, flow_key
from pipeline.packet import PacketMeta, decode
from policy.lookup import PolicyTables
from workers.verdict import WorkerVerdict

log = logging.getLogger(__name__)

POLL_MS = 50  # longest wait for a batch before housekeeping runs
EVENT_FLUSH_S = 0.5  # events are sent to the policy process at most this often


_DIRECTION_COUNTER = {Direction.A_TO_B: "packets.a_to_b", Direction.B_TO_A: "packets.b_to_a"}


class Engine(Protocol):
    def on_packet(
        self, packet: bytes, meta: PacketMeta, key: FlowKey, direction: Direction, now: float
    ) -> tuple[WorkerVerdict, int]: ...

    def expire(self, now: float) -> None: ...

    def stats(self) -> dict[str, int]: ...


class Worker:
    def __init__(self, config: Config, index: int, engine: Engine | None = None) -> None:
        self.config = config
        self.index = index
        self.engine: Engine = engine if engine is not None else _NoEngine()
        self.counters: Counter[str] = Counter()
        self.pending_events: list[dict[str, Any]] = []
        self.running = True

    def emit(self, event: dict[str, Any]) -> None:
        if len(self.pending_events) < M.MAX_EVENTS_PER_BATCH:
            self.pending_events.append(event)
        else:
            self.counters["events.dropped"] += 1

    def open(self) -> None:
        run_dir = self.config.paths.run_dir
        self.ctx = zmq.Context(1)
        self.inbox = self.ctx.socket(zmq.PULL)
        self.inbox.setsockopt(zmq.RCVHWM, 1024)
        self.inbox.setsockopt(zmq.LINGER, 0)
        self.inbox.bind(M.worker_endpoint(run_dir, self.index))
        self.to_readers = []
        for r in range(self.config.queues.readers):
            sock = self.ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.SNDHWM, 1024)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(M.reader_endpoint(run_dir, r))
            self.to_readers.append(sock)
        self.events = self.ctx.socket(zmq.PUSH)
        self.events.setsockopt(zmq.SNDHWM, 64)
        self.events.setsockopt(zmq.LINGER, 0)
        self.events.connect(M.events_endpoint(run_dir))
        self.supervisor = self.ctx.socket(zmq.PUSH)
        self.supervisor.setsockopt(zmq.SNDHWM, 8)
        self.supervisor.setsockopt(zmq.LINGER, 0)
        self.supervisor.connect(M.supervisor_endpoint(run_dir))

    def handle(self, frame: bytes, now: float) -> None:
        try:
            msg = M.decode(frame)
        except M.MessageError as exc:
            self.counters[exc.anomaly] += 1
            return
        if not isinstance(msg, M.Inspect) or not 0 <= msg.reader < len(self.to_readers):
            self.counters["message.unexpected"] += 1
            return
        answers: list[tuple[int, int, int]] = []
        on_packet = self.engine.on_packet
        for ref, packet in msg.items:
            meta = decode(packet)
            if meta.anomaly:
                self.counters[meta.anomaly] += 1
                answers.append((ref, WorkerVerdict.PASS, 0))
                continue
            key, direction = flow_key(meta)
            self.counters[_DIRECTION_COUNTER[direction]] += 1
            try:
                verdict, rule = on_packet(packet, meta, key, direction, now)
            except Exception:  # an engine bug must not kill the worker or leave the packet unanswered
                self.counters["worker.engine_error"] += 1
                log.exception("inspection failed; packet passed")
                verdict, rule = WorkerVerdict.PASS, 0
            answers.append((ref, int(verdict), rule))
        self.counters["packets"] += len(answers)
        try:
            self.to_readers[msg.reader].send(M.encode(M.Verdicts(self.index, answers)), zmq.NOBLOCK)
        except zmq.Again:
            self.counters["verdicts.undeliverable"] += len(answers)

    def serve(self) -> int:
        poller = zmq.Poller()
        poller.register(self.inbox, zmq.POLLIN)
        hb_period = self.config.supervisor.heartbeat_interval_ms / 1000.0
        next_hb = next_events = 0.0
        while self.running:
            ready = dict(poller.poll(POLL_MS))
            now = time.monotonic()
            if self.inbox in ready:
                for _ in range(256):  # bounded burst, then housekeeping gets a turn
                    try:
                        frame = self.inbox.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self.handle(frame, now)
            if now >= next_events:
                next_events = now + EVENT_FLUSH_S
                self.engine.expire(now)
                self.flush_events()
            if now >= next_hb:
                next_hb = now + hb_period
                self.heartbeat()
        return 0

    def flush_events(self) -> None:
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
        try:
            self.supervisor.send(
                M.encode(M.Heartbeat("worker", self.index, os.getpid(), counters)), zmq.NOBLOCK
            )
        except zmq.Again:
            pass

    def stop(self, *_: Any) -> None:
        self.running = False

    def close(self) -> None:
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
    config: Config, tables: PolicyTables, node: str, emit: Callable[[dict[str, Any]], None]
) -> Engine:
    """The worker's inspection chain: the DPI engine (parsers, app-aware rules, detectors), behind the
    lab's payload-pattern rule when one is configured."""
    from workers.dpi.engine import DpiEngine
    from workers.pattern import PatternRule

    engine: Engine = DpiEngine(config.dpi, tables, emit, node)
    if config.workers.payload_pattern:
        engine = PatternRule(engine, bytes.fromhex(config.workers.payload_pattern))
    return engine


def run_worker(config: Config, index: int, tables: PolicyTables, node: str) -> int:
    worker = Worker(config, index)
    worker.engine = build_engine(config, tables, node, worker.emit)
    signal.signal(signal.SIGTERM, worker.stop)
    signal.signal(signal.SIGINT, worker.stop)
    worker.open()
    log.info("worker %d ready", index)
    try:
        return worker.serve()
    finally:
        worker.close()
