"""The reader's flush policy towards its workers, with its real ZeroMQ sockets.

Packets let through at once (no payload: the worker only learns from them) do not make a batch leave:
they ride with the flow's next packet that waits for a verdict, in order, or leave on a short timer. The
queue's netlink socket is the one part replaced: NFQUEUE messages are written into a datagram socket
pair the reader reads (no netfilter table is touched); the integration tests run the real queue.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from core import messages as M
from lab.enforcer import LAB_POLICY
from node.config import config_from_dict
from pipeline import nfqueue as Q
from pipeline.reader import LEARN_DELAY_S, Reader
from policy.tables import load_policy_tables
from tests.pipeline.packets import tcp4

SYN, SYN_ACK, ACK, PSH_ACK, RST = 0x02, 0x12, 0x10, 0x18, 0x04


def _attr(kind: int, data: bytes) -> bytes:
    return struct.pack("=HH", 4 + len(data), kind) + data + b"\0" * (-len(data) % 4)


def queue_message(packet_id: int, packet: bytes) -> bytes:
    """An NFQNL_MSG_PACKET as the kernel sends it for a forwarded IPv4 packet."""
    attrs = _attr(Q.NFQA_PACKET_HDR, struct.pack("!IHB", packet_id, 0x0800, 2) + b"\0") + _attr(
        Q.NFQA_PAYLOAD, packet
    )
    body = struct.pack("!BBH", socket.AF_INET, 0, 0) + attrs
    kind = (Q.NFNL_SUBSYS_QUEUE << 8) | Q.NFQNL_MSG_PACKET
    return struct.pack("=IHHII", 16 + len(body), kind, 0, 0, 0) + body


class Harness:
    def __init__(self, run_dir: Path, spin_us: int = 0) -> None:
        config = config_from_dict(
            {"paths": {"run_dir": str(run_dir)}, "queues": {"readers": 1},
             "workers": {"count": 1, "inspect": "new", "spin_us": spin_us}},
            {},
        )  # fmt: skip
        self.ctx = zmq.Context(1)
        self.worker = self.ctx.socket(zmq.PULL)  # the worker's inbox
        self.worker.setsockopt(zmq.LINGER, 0)
        self.worker.bind(M.worker_endpoint(str(run_dir), 0))
        self.reader = Reader(config.reader(), 0, load_policy_tables(LAB_POLICY), seed=1, node="n")
        self.reader.open_sockets()
        self.kernel, reader_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        reader_end.setblocking(False)
        self.reader.nfq = Q.NfQueue(0)
        self.reader.nfq._sock.close()
        self.reader.nfq._sock = reader_end  # type: ignore[assignment]
        self.loop = asyncio.new_event_loop()
        self.reader.loop = self.loop
        self.next_id = 1

    def queue(self, *packets: bytes) -> None:
        """The packets reach the queue; the reader wakes up once for them."""
        for p in packets:
            self.kernel.send(queue_message(self.next_id, p))
            self.next_id += 1
        self.reader.on_queue_readable()

    def sent(self, wait_ms: int = 2000) -> list[list[tuple[int, int]]]:
        """The batches the worker received within `wait_ms`: (packet id, flags) of each item."""
        batches = []
        while self.worker.poll(wait_ms):
            msg = M.decode(self.worker.recv())
            assert isinstance(msg, M.Inspect)
            batches.append([(ref, flags) for ref, _packet, flags in msg.items])
            wait_ms = 50
        return batches

    def close(self) -> None:
        self.loop.close()
        self.kernel.close()
        self.reader.nfq._sock.close()
        self.reader.ctx.destroy(linger=0)
        self.ctx.destroy(linger=0)


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    h = Harness(run_dir)
    try:
        yield h
    finally:
        h.close()


def conn(flags: int, data: bytes = b"", to_server: bool = True) -> bytes:
    if to_server:
        return tcp4(sport=40000, dport=80, flags=flags, data=data)
    return tcp4(src="198.18.2.11", dst="198.18.1.11", sport=80, dport=40000, flags=flags, data=data)


def test_a_handshake_rides_with_the_first_packet_that_waits_in_order(harness: Harness) -> None:
    harness.queue(conn(SYN))
    harness.queue(conn(SYN_ACK, to_server=False))
    harness.queue(conn(ACK))
    assert harness.sent(wait_ms=100) == []  # let through, not sent on their own
    assert harness.reader.counters["verdict.pass_learn"] == 2
    assert harness.reader.counters["verdict.learn_quiet"] == 1  # the handshake's ACK
    harness.queue(conn(PSH_ACK, b"GET / HTTP/1.1\r\n\r\n"))
    assert harness.sent() == [[(1, M.NO_VERDICT), (2, M.NO_VERDICT), (3, M.NO_VERDICT), (4, 0)]]
    assert list(harness.reader.inflight) == [4]  # only the request waits for its worker


def test_packets_let_through_leave_on_the_timer_when_nothing_waits(harness: Harness) -> None:
    harness.queue(conn(SYN))
    assert harness.reader.learn_flush is not None
    assert harness.sent(wait_ms=50) == []
    harness.loop.run_until_complete(asyncio.sleep(LEARN_DELAY_S * 5))
    assert harness.sent() == [[(1, M.NO_VERDICT)]]
    assert harness.reader.learn_flush is None and not any(harness.reader.batches)
