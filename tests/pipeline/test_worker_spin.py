"""`workers.spin_us` on the worker side: after answering, a worker polls its inbox for a bounded time
before it sleeps. Real ZeroMQ sockets in a private run directory."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from core import messages as M
from node.config import config_from_dict
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
