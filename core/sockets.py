"""ZeroMQ sockets as every process opens them: bounded queues, no lingering, one line each."""

from __future__ import annotations

from collections import Counter

import zmq

from core import messages as M

# Queue bounds (messages) of the sockets that carry batches, events and heartbeats.
BATCH_HWM = 1024  # packet batches and verdict batches
EVENTS_HWM = 64  # event batches to the policy process
HEARTBEAT_HWM = 8  # heartbeats: a late one is worthless, the next one comes soon


def push_to(
    ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, hwm: int, linger_ms: int = 0
) -> zmq.Socket[bytes]:
    """A PUSH socket connected to `endpoint`; sends beyond `hwm` queued messages raise zmq.Again."""
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.LINGER, linger_ms)
    sock.connect(endpoint)
    return sock


def send_block_sources(
    sock: zmq.Socket[bytes], source: str, blocks: list[tuple[bytes, float]], counters: Counter[str]
) -> None:
    """Hand sources a block-source action cut off to the supervisor, which drops them in the kernel;
    a full socket costs the kernel rule only (the sender still drops them itself), counted."""
    try:
        sock.send(M.encode(M.BlockSources(source, blocks)), zmq.NOBLOCK)
    except zmq.Again:
        counters["source_blocks.unsent"] += len(blocks)
