"""How a worker answers a batch: the verdicts leave as soon as the last packet that waits is judged
(packets let through after it are learned afterwards); with `workers.spin_us`, after answering, it polls
its inbox for a bounded time before it sleeps. Real ZeroMQ sockets in a private run directory."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from core import messages as M
from core.flow import Direction, FlowKey
from core.packet import PacketMeta
from core.verdict import WorkerVerdict
from node.config import config_from_dict
from tests.pipeline.packets import tcp4
from workers.worker import Worker

SPIN_US = 1000


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[Worker]:
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    config = config_from_dict(
        {"paths": {"run_dir": str(run_dir)}, "queues": {"readers": 1},
         "workers": {"count": 1, "spin_us": SPIN_US}},
        {},
    )  # fmt: skip
    w = Worker(config.worker(), 0)
    w.open()
    try:
        yield w
    finally:
        w.ctx.destroy(linger=0)


def test_a_batch_waiting_in_the_inbox_is_taken_without_sleeping(worker: Worker) -> None:
    push = worker.ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(M.worker_endpoint(worker.config.paths.run_dir, 0))
    push.send(M.encode(M.Inspect(0, [])))
    assert worker.inbox.poll(2000), "the batch never reached the worker's inbox"
    assert worker.spin_for_batch() is True
    assert worker.counters["spin.caught"] == 1
    push.close()


def test_a_missed_spin_is_bounded_by_the_setting(worker: Worker) -> None:
    start = time.perf_counter()
    assert worker.spin_for_batch() is False
    assert time.perf_counter() - start >= SPIN_US / 1e6
    assert worker.counters["spin.missed"] == 1


class _Recording:
    """An engine that passes everything and records the order of what happens (packets judged, answers
    sent), the worker's `_NoEngine` with a log."""

    def __init__(self, log: list[tuple[str, object]]) -> None:
        self.log = log

    def on_packet(
        self, packet: bytes, meta: PacketMeta, key: FlowKey, direction: Direction, now: float
    ) -> tuple[WorkerVerdict, int]:
        self.log.append(("packet", meta.sport))
        return WorkerVerdict.PASS, 0

    def expire(self, now: float) -> None:
        pass

    def stats(self) -> dict[str, int]:
        return {}


def test_answers_leave_before_the_packets_let_through_after_the_last_one_that_waits(worker: Worker) -> None:
    log: list[tuple[str, object]] = []
    worker.engine = _Recording(log)
    sent = worker._answer
    worker._answer = lambda reader, answers: (log.append(("answer", list(answers))), sent(reader, answers))  # type: ignore[method-assign]
    request = tcp4(sport=40001, dport=80, flags=0x18, data=b"GET / HTTP/1.1\r\n\r\n")
    syn_before, syn_after = tcp4(sport=40000, dport=80, flags=0x02), tcp4(sport=40002, dport=80, flags=0x02)
    batch = M.Inspect(0, [(1, syn_before, M.NO_VERDICT), (2, request, 0), (3, syn_after, M.NO_VERDICT)])
    worker.handle(M.encode(batch), time.time())
    assert log == [
        ("packet", 40000),  # in order: what came before the request is learned before it
        ("packet", 40001),
        ("answer", [(2, int(WorkerVerdict.PASS), 0)]),
        ("packet", 40002),  # learned after the answer left
    ]
    assert worker.counters["packets"] == 3 and worker.counters["packets.no_verdict"] == 2


def test_a_batch_of_packets_let_through_only_is_learned_and_never_answered(worker: Worker) -> None:
    log: list[tuple[str, object]] = []
    worker.engine = _Recording(log)
    batch = M.Inspect(0, [(1, tcp4(sport=40000, dport=80, flags=0x02), M.NO_VERDICT)])
    worker.handle(M.encode(batch), time.time())
    assert log == [("packet", 40000)]
    assert worker.counters["packets.no_verdict"] == 1
