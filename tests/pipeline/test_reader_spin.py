"""`workers.spin_us`: after sending packets that wait, the reader polls for their verdicts for a bounded
time before it sleeps. Real ZeroMQ sockets; the queue is the socket pair of `test_reader_batches`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from core import messages as M
from core.verdict import WorkerVerdict
from node.config import ConfigError, config_from_dict
from tests.pipeline.test_reader_batches import PSH_ACK, Harness, conn

SPIN_US = 1000


@pytest.fixture
def spinning(tmp_path: Path) -> Iterator[Harness]:
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    h = Harness(run_dir, spin_us=SPIN_US)
    try:
        yield h
    finally:
        h.close()


def _answer_into_inbox(h: Harness, refs: list[int]) -> None:
    """A worker's verdicts, already waiting in the reader's inbox (delivered by ZeroMQ's I/O thread)."""
    push = h.ctx.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(M.reader_endpoint(h.reader.config.paths.run_dir, 0))
    push.send(M.encode(M.Verdicts(0, [(ref, int(WorkerVerdict.PASS), 0) for ref in refs])))
    assert h.reader.from_workers.poll(2000), "the verdicts never reached the reader's inbox"
    push.close()


def test_a_verdict_that_comes_while_spinning_is_issued_without_sleeping(spinning: Harness) -> None:
    reader = spinning.reader
    spinning.queue(conn(PSH_ACK, b"GET / HTTP/1.1\r\n\r\n"))  # waits for its worker (none here)
    assert list(reader.inflight) == [1], dict(reader.counters)
    assert reader.counters["spin.missed"] == 1  # nobody answered within the spin: back to the loop
    _answer_into_inbox(spinning, [1])
    reader._spin_for_verdicts()
    assert reader.counters["spin.caught"] == 1
    assert not reader.inflight  # issued by the spin itself, not by a later wake-up
    assert reader.counters["verdict.pass"] == 1


def test_a_missed_spin_is_bounded_by_the_setting(spinning: Harness) -> None:
    reader = spinning.reader
    spinning.queue(conn(PSH_ACK, b"GET / HTTP/1.1\r\n\r\n"))
    start = time.perf_counter()
    reader._spin_for_verdicts()
    spun = time.perf_counter() - start
    assert reader.counters["spin.missed"] == 2
    assert spun >= SPIN_US / 1e6  # it did wait the whole bound (an upper bound would be a timing test)
    assert list(reader.inflight) == [1], dict(reader.counters)


def test_without_spin_the_reader_goes_back_to_its_loop_at_once(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    h = Harness(run_dir)
    try:
        h.queue(conn(PSH_ACK, b"GET / HTTP/1.1\r\n\r\n"))
        assert list(h.reader.inflight) == [1], dict(h.reader.counters)
        assert h.reader.counters["spin.missed"] == h.reader.counters["spin.caught"] == 0
    finally:
        h.close()


def test_the_spin_is_bounded_in_the_configuration() -> None:
    with pytest.raises(ConfigError, match="workers.spin_us"):
        config_from_dict({"workers": {"spin_us": 5000}}, {})
