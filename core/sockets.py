"""ZeroMQ sockets as every process opens them: bounded queues, no lingering, one line each."""

from __future__ import annotations

import time
from collections import Counter

import zmq

from core import messages as M

# pyzmq's Socket subclasses its Cython backend socket and wraps `send` and `get` (enum conversion of
# EVENTS, copy thresholds, tracking): ~1.4 µs per send and ~2 µs per EVENTS read here, on every packet
# batch and verdict batch. The packet path calls the backend's methods on the same socket instead.
_backend_send = zmq.backend.Socket.send
_backend_get = zmq.backend.Socket.get
_POLLIN = int(zmq.POLLIN)  # a plain int: `int & IntFlag` builds a flag object on every call

# Queue bounds (messages) of the sockets that carry batches, events and heartbeats.
BATCH_HWM = 1024  # packet batches and verdict batches
EVENTS_HWM = 64  # event batches to the policy process
HEARTBEAT_HWM = 8  # heartbeats: a late one is worthless, the next one comes soon


def has_message(sock: zmq.Socket[bytes]) -> bool:
    """Is a message waiting on `sock`? (Also what re-arms its edge-triggered descriptor: read it after the
    last receive before waiting on that descriptor again.) Cheaper than a receive that raises zmq.Again."""
    events: int = _backend_get(sock, zmq.EVENTS)  # type: ignore[assignment]  # an int for EVENTS
    return bool(events & _POLLIN)


def poll_ms(due_in: float, longest_ms: int) -> int:
    """A poll timeout that ends when a duty `due_in` seconds away is due (rounded up, never negative),
    and no later than `longest_ms`: idle loops wait as long as their duties allow."""
    return min(longest_ms, max(0, int(due_in * 1000) + 1))


def spin_for_message(sock: zmq.Socket[bytes], seconds: float, counters: Counter[str]) -> bool:
    """Poll `sock` up to `seconds` before going to sleep on it (`workers.spin_us`): True if a message came
    meanwhile, which then needs no wake-up. Bounded; counted (`spin.caught`/`spin.missed`) so the setting
    can be judged from the counters."""
    deadline = time.perf_counter() + seconds
    while not has_message(sock):
        if time.perf_counter() >= deadline:
            counters["spin.missed"] += 1
            return False
    counters["spin.caught"] += 1
    return True


def send_now(sock: zmq.Socket[bytes], frame: bytes) -> None:
    """Send one frame without blocking (raises zmq.Again when the peer is absent or its queue full)."""
    _backend_send(sock, frame, zmq.NOBLOCK)


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
