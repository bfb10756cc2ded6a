"""What a reader does with its packets, without the I/O: shared by the reader process and `enforcer replay`.

The reader shell (`pipeline/reader.py`) owns the queue, the ZeroMQ sockets and the clock; `enforcer
replay` owns a capture and its timestamps. Both hand packets to this core and carry out its answers:

- `admit(payload, now, flooded)`: the judge's act for a packet (a judging bug costs the packet its inspection:
  the malformed-packet action applies); PASS_LEARN (a payload-less TCP packet of an inspected flow) is
  let through at once and still handed to the flow's worker, which learns from it and does not answer;
  LEARN_QUIET (a bare ACK) is that, and its bit tells the kernel to pass the connection's later bare ACKs;
- `cut_short()`: an INSPECT packet the queue copied only in part (its real length from NFQA_CAP_LEN)
  takes the `truncated` failure action, counted;
- `hold(ref, packet, meta, flow, now)`: an INSPECT packet waits for its worker (the worker's index), or
  the memory-cap action applies when the in-flight table is full;
- `answer(ref, verdict)`: a worker's verdict back through the judge (a final one settles the flow);
  `unsent(ref)` (worker down) and `timed_out(now)` (verdict timeout) give the failure actions;
- `verdict_bits(act)`: the mark bit a packet is re-injected with (None: dropped here): the accept and drop
  bits are saved to the connection mark, so the kernel handles the rest of the connection (offload).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Generic, TypeVar

from core import anomalies as A
from core.config import DROP
from core.packet import PacketMeta, decode
from pipeline.flowtable import Flow
from pipeline.judge import Act, Judge
from pipeline.settings import ReaderConfig

log = logging.getLogger(__name__)

P = TypeVar("P")  # what the shell keeps of a packet out at a worker (the queued packet, a capture record)

# Acts whose bit the kernel saves to the connection mark: the rest of the connection never reaches us.
OFFLOADING = frozenset((Act.ALLOW, Act.BLOCK, Act.RESET))
# Acts that let a packet through and hand it to the flow's worker, which does not answer.
LEARNING = frozenset((Act.PASS_LEARN, Act.LEARN_QUIET))
ACT_COUNTER = {act: f"verdict.{act.name.lower()}" for act in Act}


class Pending(Generic[P]):
    """A packet out at its worker, in send order (the in-flight table is a dict: oldest first)."""

    __slots__ = ("flow", "meta", "packet", "sent")

    def __init__(self, packet: P, meta: PacketMeta, flow: Flow | None, sent: float) -> None:
        self.packet = packet
        self.meta = meta
        self.flow = flow
        self.sent = sent


class ReaderCore(Generic[P]):
    def __init__(self, config: ReaderConfig, judge: Judge) -> None:
        self.judge = judge
        f = config.failure
        self.timeout_act = Act.DROP if f.verdict_timeout == DROP else Act.PASS
        self.worker_down_act = Act.DROP if f.worker_down == DROP else Act.PASS
        self.memory_cap_act = Act.DROP if f.memory_cap == DROP else Act.PASS
        self.truncated_act = Act.DROP if f.truncated == DROP else Act.PASS
        self.timeout_s = config.workers.verdict_timeout_ms / 1000.0
        self.inflight_max = config.workers.inflight_max
        self.inflight: dict[int, Pending[P]] = {}
        self.counters: Counter[str] = Counter()
        n = config.netfilter
        self.bits = {
            Act.PASS: n.pass_mark,
            Act.PASS_LEARN: n.pass_mark,
            Act.LEARN_QUIET: n.pass_mark | (n.quiet_ack_mark if n.quiet_acks else 0),
            Act.ALLOW: n.accept_mark,
            Act.BLOCK: n.drop_mark,
            Act.RESET: n.drop_mark,
        }

    def admit(self, payload: bytes, now: float, flooded: bool = False) -> tuple[Act, PacketMeta, Flow | None]:
        """The judge's act for one packet; INSPECT means "hold it for the flow's worker". `flooded`: our
        chain queued it with the flood bit (`Judge.judge_flooded`)."""
        try:
            judge = self.judge.judge_flooded if flooded else self.judge.judge
            act, meta, _key, flow = judge(payload, now)
        except Exception:  # a bug must cost one packet its inspection, never the reader
            self.counters[A.READER_JUDGE_ERROR] += 1
            if self.counters[A.READER_JUDGE_ERROR] == 1:
                log.exception("judging a packet failed; the malformed-packet action applies")
            return self.judge.malformed_act, decode(payload), None
        return act, meta, flow

    def cut_short(self) -> Act:
        """A packet its worker would inspect reached us shorter than it is (the queue's copy range): the
        DPI must never skip its missing bytes silently. Counted; `truncated_act` applies (drop: the sender
        retransmits it, in segments that fit; pass: the flow's reassembly sees a gap and stops)."""
        self.counters[A.READER_TRUNCATED] += 1
        return self.truncated_act

    def hold(self, ref: int, packet: P, meta: PacketMeta, flow: Flow | None, now: float) -> int | None:
        """Keep a packet until its worker answers: the worker's index, or None when the in-flight table is
        full (then `memory_cap_act` is the packet's act)."""
        if len(self.inflight) >= self.inflight_max:
            self.counters[A.READER_INFLIGHT_FULL] += 1
            return None
        self.inflight[ref] = Pending(packet, meta, flow, now)
        return flow.worker if flow is not None else 0

    def answer(self, ref: int, verdict: int) -> tuple[Act, Pending[P]] | None:
        """A worker's verdict for a held packet: the act and the packet (None: answered too late)."""
        entry = self.inflight.pop(ref, None)
        if entry is None:
            self.counters[A.WORKER_UNKNOWN_REF] += 1  # answered after its timeout, or a stale worker
            return None
        return self.judge.on_worker_verdict(entry.flow, verdict), entry

    def unsent(self, ref: int) -> Pending[P] | None:
        """A held packet its worker could not take (down or full): `worker_down_act` applies."""
        return self.inflight.pop(ref, None)

    def timed_out(self, now: float) -> list[Pending[Any]]:
        """Held packets older than the verdict timeout, oldest first: `timeout_act` applies."""
        inflight = self.inflight
        expired: list[Pending[Any]] = []
        while inflight:
            ref = next(iter(inflight))
            entry = inflight[ref]
            if now - entry.sent < self.timeout_s:
                break
            del inflight[ref]
            self.counters[A.WORKER_VERDICT_TIMEOUT] += 1
            expired.append(entry)
        return expired

    def verdict_bits(self, act: Act) -> int | None:
        """Count the act; the mark bit the packet is re-injected with, or None when it is dropped here."""
        self.counters[ACT_COUNTER[act]] += 1
        if act is Act.DROP:
            return None
        return self.bits[act]

    def take_blocks(self) -> list[tuple[bytes, float]]:
        """Sources the guard cut off since the last call (address, seconds), for the kernel."""
        guard = self.judge.guard
        if guard is None or not guard.new_blocks:
            return []
        blocks, guard.new_blocks = guard.new_blocks, []
        return blocks

    def housekeeping(self, now: float, final: bool = False) -> list[dict[str, Any]]:
        """Forget idle flows, flush the guard's windows (all of them when `final`); the events gathered
        since the last call."""
        self.judge.sweep(now, final)
        return self.judge.take_events()
