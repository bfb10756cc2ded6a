"""A reader process: owns one NFQUEUE, its flow table and every verdict for its packets.

The I/O shell around `pipeline.judge.Judge`: a uvloop event loop on the queue's socket and on the
ZeroMQ socket that brings worker verdicts back. Packets that need inspection are batched per worker;
a batch leaves when full, or when the queue has been drained and it holds a packet that waits for its
worker's verdict, so a busy reader sends big batches and an idle one at once. Packets already let
through (no payload: the worker only learns from them) do not make a batch leave: they ride with the
flow's next packet that waits, in order, or leave within `LEARN_DELAY_S` — one message and one worker
wake-up per connection's handshake instead of one per packet. Every packet gets a verdict: from the
judge, from its worker, or from the exception policy when the worker is down or late, or when the
enforcer stops.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import uvloop
import zmq

from core import anomalies as A
from core import messages as M
from core.capture import MAX_SESSIONS, REPLY_HWM, REPLY_LINGER_MS, CaptureFilter, CaptureSession
from core.config import DROP
from core.lookup import PolicyTables
from core.packet import PacketMeta, decode
from core.sockets import (
    BATCH_HWM,
    EVENTS_HWM,
    HEARTBEAT_HWM,
    has_message,
    push_to,
    send_block_sources,
    send_now,
    spin_for_message,
)
from pipeline.conntrack import Conntrack
from pipeline.flowtable import Flow
from pipeline.judge import Act, Judge
from pipeline.latency import LatencyHistogram
from pipeline.nfqueue import NF_DROP, NF_REPEAT, NfQueue, QueuedPacket
from pipeline.reader_core import LEARNING, ReaderCore
from pipeline.reset import ResetSender
from pipeline.settings import ReaderConfig

if TYPE_CHECKING:
    from core.updates import Updates, UpdatesFactory
    from threats.settings import GroupThreatSettings

log = logging.getLogger(__name__)

TICK_S = 0.005  # timer resolution for verdict timeouts while packets are out at workers
# Longest a packet already let through waits in its batch for one that needs a verdict (the worker's view
# of the stream lags by this much at most; its verdicts, never).
LEARN_DELAY_S = 0.002
WORKER_CONNECT_TIMEOUT_S = 5.0  # longest a starting reader waits for its workers before reporting ready
FIRST_POLICY_WAIT_S = 2.0  # longest a starting reader waits for its guard's threat settings
# Tick period with nothing in flight: a new policy generation reaches offloaded flows within this (new flows
# see it at once); long, because an idle wake-up costs the node's workloads (node/supervisor.py, POLL_MS).
IDLE_TICK_S = 0.25
HOUSEKEEPING_S = 1.0  # flow sweep and event flush period
EVENTS_PER_MESSAGE = 256  # events per message to the policy process (well inside its bounds)
REVALIDATE_PER_TICK = 128  # offloaded flows re-decided per tick after a policy change (~1 ms of work)


class Reader:
    def __init__(
        self,
        config: ReaderConfig,
        index: int,
        tables: PolicyTables,
        seed: int,
        node: str,
        guard_updates: UpdatesFactory[GroupThreatSettings] | None = None,
    ) -> None:
        self.config = config
        self.index = index
        self.queue_num = config.queues.numbers[index]
        self.judge = Judge(config, tables, seed, node, reader=index)
        self.judge.wall_offset = time.time() - time.monotonic()
        # The decisions (judge, worker verdicts, failure actions) are the sans-io core's, shared with replay.
        self.core: ReaderCore[QueuedPacket] = ReaderCore(config, self.judge)
        n = config.netfilter
        self.ours = config.netfilter.our_marks
        # a datagram of an offloaded UDP flow over the kernel's rate check (`node.netfilter`)
        self.flood_bit = config.netfilter.flood_mark if config.netfilter.udp_flow_rate else 0
        self.batch_size = config.workers.batch_size
        self.recv_batch = config.queues.recv_batch
        self.spin_s = config.workers.spin_us / 1e6
        self.inflight = self.core.inflight
        self.batches: list[list[tuple[int, bytes, int]]] = [[] for _ in range(config.workers.count)]
        # Per worker: does its batch hold a packet that waits for a verdict (then it leaves at once)?
        self.waiting = [False] * config.workers.count
        self.learn_flush: asyncio.TimerHandle | None = None  # sends batches of let-through packets only
        self.loop: asyncio.AbstractEventLoop | None = None  # set by the serving loop
        self.counters: Counter[str] = self.core.counters
        self.guard_updates = guard_updates
        self.guard_settings: Updates[GroupThreatSettings] | None = None  # set by open()
        # Inspected packets: from taking one from the queue to issuing its worker's verdict.
        self.inspect_latency = LatencyHistogram()
        self.resets = ResetSender(n.pass_mark)
        self.conntrack: Conntrack | None = None
        self.stopping = False
        self.stop_deadline = 0.0
        self.done: asyncio.Future[None] | None = None
        self.captures: dict[str, tuple[CaptureSession, zmq.Socket[bytes]]] = {}  # `enforcer capture`

    # ---- set-up --------------------------------------------------------------------------------

    def open(self) -> None:
        q = self.config.queues
        self.nfq = NfQueue(
            # room for several whole packets per read (a GSO super-packet is up to 64 KiB)
            self.queue_num,
            recv_buffer=max(256 * 1024, q.copy_range * 4),
            socket_buffer=q.socket_buffer,
        )
        self.nfq.bind(q.copy_range, q.max_len, fail_open=self.config.failure.queue_full != DROP, gso=q.gso)
        self.open_sockets()

    def open_sockets(self) -> None:
        """The ZeroMQ side: a socket to each worker, the verdicts' inbox, events and heartbeats."""
        run_dir = self.config.paths.run_dir
        self.ctx = zmq.Context(1)
        self.to_workers = []
        monitors = []
        for w in range(self.config.workers.count):
            sock = self.ctx.socket(zmq.PUSH)
            # IMMEDIATE: never queue for a worker that is not connected, so a dead worker is noticed at send.
            sock.setsockopt(zmq.IMMEDIATE, 1)
            sock.setsockopt(zmq.SNDHWM, BATCH_HWM)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RECONNECT_IVL, 20)  # a restarted worker is found again within milliseconds
            # Handshake done, not just connected: with IMMEDIATE a send before the ZMTP greeting completes
            # raises zmq.Again, and the first packets would take the worker_down action.
            monitors.append(sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED))
            sock.connect(M.worker_endpoint(run_dir, w))
            self.to_workers.append(sock)
        self._wait_workers_connected(monitors)
        self.from_workers = self.ctx.socket(zmq.PULL)
        self.from_workers.setsockopt(zmq.LINGER, 0)
        self.from_workers.bind(M.reader_endpoint(run_dir, self.index))
        self.events = push_to(self.ctx, M.events_endpoint(run_dir), EVENTS_HWM)
        self.supervisor = push_to(self.ctx, M.supervisor_endpoint(run_dir), HEARTBEAT_HWM)
        if self.judge.guard is not None and self.guard_updates is not None:
            self.guard_settings = self.guard_updates(self.counters)
            self._first_guard_settings()

    def _first_guard_settings(self) -> None:
        """The policy's threat settings before this reader reports ready (and so before our rules go
        in): the guard must not count the first traffic with the catalogue's defaults. Bounded; a late
        compile is counted and the settings then follow at housekeeping."""
        assert self.guard_settings is not None and self.judge.guard is not None
        deadline = time.monotonic() + FIRST_POLICY_WAIT_S
        while time.monotonic() < deadline:
            threats = self.guard_settings.poll()
            if threats is not None:
                self.judge.guard.set_threat_settings(threats)
                return
            time.sleep(0.005)
        self.counters["guard.policy_late"] += 1

    def _wait_workers_connected(self, monitors: list[zmq.Socket[bytes]]) -> None:
        """Before this reader reports ready (and so before our rules go in), wait until every worker is
        connected: a flow's first packets must meet its worker, or the DPI would pick it up mid-stream.
        Bounded: a worker that does not come up is handled by the worker_down action."""
        deadline = time.monotonic() + WORKER_CONNECT_TIMEOUT_S
        pending = dict(enumerate(monitors))
        while pending and time.monotonic() < deadline:
            for w, mon in list(pending.items()):
                if mon.poll(10):
                    mon.recv_multipart()
                    del pending[w]
        for w, mon in enumerate(monitors):
            self.to_workers[w].disable_monitor()
            mon.close(linger=0)
        if pending:
            log.warning("reader q%d: workers %s not connected yet", self.queue_num, sorted(pending))

    def close(self) -> None:
        if hasattr(self, "events"):  # opened: the guard's open aggregation windows are counts, not lost
            self.housekeeping(final=True)
        if self.guard_settings is not None:
            self.guard_settings.close()
        self.nfq.close()
        self.resets.close()
        self.ctx.destroy(linger=0)

    # ---- packets from the queue ----------------------------------------------------------------

    def on_queue_readable(self) -> None:
        now = time.monotonic()
        packets, malformed = self.nfq.receive(self.recv_batch)
        if malformed:
            self.counters[A.QUEUE_MSG_MALFORMED] += malformed
        if not packets:
            return
        self.counters["packets"] += len(packets)
        admit = self.core.admit
        decided: list[tuple[int, int, int | None]] = []
        flood_bit = self.flood_bit
        for qp in packets:
            act, meta, flow = admit(qp.payload, now, bool(qp.mark & flood_bit))
            if act is Act.INSPECT and qp.cap_len > len(qp.payload):
                act = self.core.cut_short()
            if act is Act.INSPECT:
                act = self._to_worker(qp, meta, flow, now)
                if act is Act.INSPECT:
                    continue
            elif act in LEARNING:
                self._tell_worker(qp, flow, now)
            decided.append(self._kernel_verdict(act, qp, meta))
        waiting = self.waiting
        learned = sent_waiting = False
        for w, batch in enumerate(self.batches):
            if batch:
                if waiting[w]:
                    self._send_batch(w, now)
                    sent_waiting = True
                else:
                    learned = True
        if learned and self.learn_flush is None and self.loop is not None:
            self.learn_flush = self.loop.call_later(LEARN_DELAY_S, self.flush_learned)
        self._give(decided)
        if self.captures:
            self._offer_to_captures(packets)
        self.nfq.flush()
        blocks = self.core.take_blocks()
        if blocks:
            send_block_sources(self.supervisor, f"reader {self.index}", blocks, self.counters)
        if len(packets) >= self.recv_batch:
            # More may be waiting: come back after other callbacks (worker verdicts) had a turn.
            asyncio.get_running_loop().call_soon(self.on_queue_readable)
        elif sent_waiting and self.spin_s:
            self._spin_for_verdicts()

    def _spin_for_verdicts(self) -> None:
        """Poll for the verdicts just asked for, up to `workers.spin_us`, before going back to sleep: a
        verdict that comes back meanwhile is issued without this thread's wake-up (on a loaded machine,
        a wait for a CPU)."""
        if spin_for_message(self.from_workers, self.spin_s, self.counters):
            self.on_verdicts_readable()

    def _to_worker(self, qp: QueuedPacket, meta: PacketMeta, flow: Flow | None, now: float) -> Act:
        worker = self.core.hold(qp.packet_id, qp, meta, flow, now)
        if worker is None:
            return self.core.memory_cap_act
        self._batch(worker, qp, 0, now)
        self.waiting[worker] = True
        return Act.INSPECT

    def _tell_worker(self, qp: QueuedPacket, flow: Flow | None, now: float) -> None:
        """A packet already let through goes to its worker in the same batches, in order, unanswered."""
        self._batch(flow.worker if flow is not None else 0, qp, M.NO_VERDICT, now)

    def _batch(self, worker: int, qp: QueuedPacket, flags: int, now: float) -> None:
        batch = self.batches[worker]
        batch.append((qp.packet_id, qp.payload, flags))
        if len(batch) >= self.batch_size:
            self._send_batch(worker, now)

    def _send_batch(self, worker: int, now: float) -> None:
        batch = self.batches[worker]
        self.batches[worker] = []
        self.waiting[worker] = False
        try:
            send_now(self.to_workers[worker], M.encode(M.Inspect(self.index, batch)))
            self.counters["inspect.sent"] += len(batch)
            self.counters["inspect.messages"] += 1  # each one wakes the worker: packets per message tell
        except zmq.Again:
            # The worker is not connected (dead or restarting) or its inbox is full: exception policy.
            self.counters["worker.unavailable"] += len(batch)
            for ref, _, flags in batch:
                if flags & M.NO_VERDICT:
                    continue  # already let through: only the worker's stream state misses it
                entry = self.core.unsent(ref)
                if entry is not None:
                    self.nfq.verdict(
                        *self._kernel_verdict(self.core.worker_down_act, entry.packet, entry.meta)
                    )

    def flush_learned(self) -> None:
        """Send the batches that hold only packets already let through (their worker learns from them)."""
        self.learn_flush = None
        now = time.monotonic()
        for w, batch in enumerate(self.batches):
            if batch:
                self._send_batch(w, now)

    def _kernel_verdict(self, act: Act, qp: QueuedPacket, meta: PacketMeta) -> tuple[int, int, int | None]:
        bit = self.core.verdict_bits(act)
        if bit is None:
            return qp.packet_id, NF_DROP, None
        if act is Act.RESET:
            self.resets.send(meta)
        # Everything else is re-injected with our bit set, so that our chain lets it on (PASS), or saves
        # the bit to the connection mark for the kernel to handle the rest of the connection.
        return qp.packet_id, NF_REPEAT, (qp.mark & ~self.ours) | bit

    def _give(self, decided: list[tuple[int, int, int | None]]) -> None:
        """Send verdicts for packets decided at once, using batch verdicts where the kernel allows it.

        A batch verdict covers every packet of the queue up to an id, so it is only safe when no earlier
        packet is still out at a worker; runs of equal verdicts on consecutive ids are then one message.
        """
        n = len(decided)
        if not n:
            return
        oldest_inflight = next(iter(self.inflight)) if self.inflight else None
        nfq = self.nfq
        i = 0
        while i < n:
            pid, verdict, mark = decided[i]
            j = i
            while j + 1 < n:
                nxt = decided[j + 1]
                if nxt[0] != decided[j][0] + 1 or nxt[1] != verdict or nxt[2] != mark:
                    break
                j += 1
            last = decided[j][0]
            if j > i and (oldest_inflight is None or oldest_inflight > last):
                nfq.verdict_batch(last, verdict, mark)
                self.counters["verdict.batches"] += 1
            else:
                for k in range(i, j + 1):
                    nfq.verdict(*decided[k])
            i = j + 1

    # ---- verdicts from workers -----------------------------------------------------------------

    def on_verdicts_readable(self) -> None:
        sock = self.from_workers
        taken: list[float] = []  # when each answered packet was taken from the queue
        got = False
        while has_message(sock):
            try:
                frame = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                break
            try:
                msg = M.decode(frame)
            except M.MessageError as exc:
                self.counters[exc.anomaly] += 1
                continue
            if isinstance(msg, M.CaptureStart):
                self._start_capture(msg)
                continue
            if not isinstance(msg, M.Verdicts):
                self.counters[A.MESSAGE_UNKNOWN_TYPE] += 1
                continue
            got = True
            self._apply_worker_verdicts(msg, taken)
        if got:
            self.nfq.flush()
            self.inspect_latency.observe_since(taken, time.monotonic())  # the verdicts are issued now

    def _apply_worker_verdicts(self, msg: M.Verdicts, taken: list[float]) -> None:
        decided: list[tuple[int, int, int | None]] = []
        answer = self.core.answer
        for ref, verdict, _rule in msg.items:
            answered = answer(ref, verdict)
            if answered is None:
                continue
            act, entry = answered
            decided.append(self._kernel_verdict(act, entry.packet, entry.meta))
            taken.append(entry.sent)
        # A worker answers a batch in order, so its verdicts form runs that batch verdicts can cover.
        self._give(decided)

    # ---- timers --------------------------------------------------------------------------------

    def tick(self) -> float:
        """Verdict timeouts (the oldest in-flight packets first: the table is in send order), policy
        revalidation, stopping. Returns the delay until the next tick: short while there is work, long when
        idle, so an idle reader costs next to no CPU."""
        # The ZeroMQ descriptor is edge-triggered: poll it now and then so no wake-up is ever missed.
        self.on_verdicts_readable()
        now = time.monotonic()
        expired = self.core.timed_out(now)
        for entry in expired:
            self.nfq.verdict(*self._kernel_verdict(self.core.timeout_act, entry.packet, entry.meta))
        if expired:
            self.nfq.flush()
        self._revalidate()
        if self.stopping:
            self._check_stopped(now)
        busy = self.inflight or self.stopping or self.judge.revalidation_pending
        return TICK_S if busy else IDLE_TICK_S

    def _revalidate(self) -> None:
        """Hand connections whose fate a new policy changed back from the kernel (a slice per tick)."""
        for key, flow, family in self.judge.revalidate(REVALIDATE_PER_TICK):
            if self.conntrack is None:
                self.conntrack = Conntrack()
            self.conntrack.clear_marks(key, flow.client_dir, family, self.ours)

    def housekeeping(self, final: bool = False) -> None:
        now = time.monotonic()
        if self.guard_settings is not None and self.judge.guard is not None:
            threats = self.guard_settings.poll()
            if threats is not None:
                self.judge.guard.set_threat_settings(threats)
        events = self.core.housekeeping(now, final)
        if self.captures:
            self._flush_captures(now, final)
        # In pieces: a flood of distinct sources fills thousands of events, more than one message holds.
        for start in range(0, len(events), EVENTS_PER_MESSAGE):
            chunk = events[start : start + EVENTS_PER_MESSAGE]
            try:
                self.events.send(M.encode(M.Events(f"reader {self.index}", chunk)), zmq.NOBLOCK)
            except zmq.Again:
                self.counters["events.dropped"] += len(chunk)

    # ---- on-demand capture (`enforcer capture --flow/--group`) ---------------------------------

    def _start_capture(self, msg: M.CaptureStart) -> None:
        endpoint = M.capture_reply_endpoint(self.config.paths.run_dir, msg.reply)
        sock = push_to(self.ctx, endpoint, REPLY_HWM, REPLY_LINGER_MS)
        filt = CaptureFilter(msg.proto, msg.a_addr, msg.a_port, msg.b_addr, msg.b_port, msg.group)
        session = CaptureSession(msg.reply, filt, time.monotonic() + msg.seconds, msg.max_bytes)
        busy = len(self.captures) >= MAX_SESSIONS or msg.reply in self.captures
        refused = filt.problem() or (f"busy: {MAX_SESSIONS} captures already run" if busy else "")
        if refused:
            self._send_capture_chunk(session, sock, [], True, refused)
            sock.close()
            return
        self.captures[msg.reply] = (session, sock)
        self.counters["capture.started"] += 1

    def _offer_to_captures(self, packets: list[QueuedPacket]) -> None:
        """Copies of the packets the running captures match (decoded again: only while one runs)."""
        wall = time.time()
        tables = self.judge.tables

        def groups_of(meta: PacketMeta) -> tuple[str, str]:
            d = tables.decide(meta.family, meta.src, meta.dst, meta.proto, meta.dport)
            return d.src_group, d.dst_group

        sessions = [session for session, _ in self.captures.values()]
        for qp in packets:
            meta = decode(qp.payload)
            if meta.src:  # a packet too broken to carry addresses matches no filter
                for session in sessions:
                    session.offer(qp.payload, meta, wall, groups_of)

    def _flush_captures(self, now: float, final: bool) -> None:
        """Send what the captures copied; end those past their deadline (all of them when stopping)."""
        for token, (session, sock) in list(self.captures.items()):
            done = final or session.expired(now)
            while True:
                chunk = session.take_chunk()
                last = done and not session.pending
                if chunk or last:
                    self._send_capture_chunk(session, sock, chunk, last, "enforcer stopping" if final else "")
                if not session.pending:
                    break
            if done:
                sock.close()
                del self.captures[token]

    def _send_capture_chunk(
        self, session: CaptureSession, sock: zmq.Socket[bytes], records: list[Any], done: bool, note: str
    ) -> None:
        msg = M.CaptureChunk(self.index, session.token, records, done, session.over_budget, note)
        try:
            sock.send(M.encode(msg), zmq.NOBLOCK)
        except zmq.Again:
            self.counters["capture.unsent"] += len(records)

    def heartbeat(self) -> None:
        counters = dict(self.counters)
        counters.update(self.judge.stats())
        counters["inflight"] = len(self.inflight)
        counters["resets.sent"] = self.resets.sent
        if self.conntrack is not None:
            counters["conntrack.cleared"] = self.conntrack.cleared
            counters["conntrack.missing"] = self.conntrack.missing
            counters["conntrack.failed"] = self.conntrack.failed
        counters.update(self.inspect_latency.counters())
        try:
            self.supervisor.send(M.encode(M.Heartbeat("reader", self.index, _pid(), counters)), zmq.NOBLOCK)
        except zmq.Again:
            pass

    # ---- stopping ------------------------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop: our rules are already gone (the supervisor removes them first), so nothing new is queued;
        answer what is in the queue and at the workers, then leave."""
        if not self.stopping:
            self.stopping = True
            self.stop_deadline = time.monotonic() + self.config.supervisor.shutdown_grace_ms / 1000.0
            log.info("reader q%d stopping: %d packets at workers", self.queue_num, len(self.inflight))

    def _check_stopped(self, now: float) -> None:
        self.on_queue_readable()
        if self.inflight and now < self.stop_deadline:
            return
        for entry in self.inflight.values():
            self.nfq.verdict(*self._kernel_verdict(self.core.timeout_act, entry.packet, entry.meta))
        self.inflight.clear()
        self.nfq.flush()
        if self.done is not None and not self.done.done():
            self.done.set_result(None)


def _pid() -> int:
    import os

    return os.getpid()


class _Every:
    """Re-arming timer that keeps a reference to its handle (no fire-and-forget tasks). `fn` may return the
    delay until its next run (an adaptive period); otherwise `period` is used."""

    def __init__(self, loop: asyncio.AbstractEventLoop, period: float, fn: Any) -> None:
        self.loop, self.period, self.fn = loop, period, fn
        self.handle = loop.call_later(period, self._run)

    def _run(self) -> None:
        delay = self.period
        try:
            delay = self.fn() or self.period
        finally:
            self.handle = self.loop.call_later(delay, self._run)

    def cancel(self) -> None:
        self.handle.cancel()


async def _serve(reader: Reader) -> None:
    loop = asyncio.get_running_loop()
    reader.loop = loop
    reader.done = loop.create_future()
    loop.add_reader(reader.nfq.fileno(), reader.on_queue_readable)
    loop.add_reader(int(reader.from_workers.getsockopt(zmq.FD)), reader.on_verdicts_readable)
    loop.add_signal_handler(signal.SIGTERM, reader.request_stop)
    loop.add_signal_handler(signal.SIGINT, reader.request_stop)
    hb = reader.config.supervisor.heartbeat_interval_ms / 1000.0
    timers = [
        _Every(loop, TICK_S, reader.tick),
        _Every(loop, HOUSEKEEPING_S, reader.housekeeping),
        _Every(loop, hb, reader.heartbeat),
    ]
    reader.heartbeat()
    try:
        await reader.done
    finally:
        for t in timers:
            t.cancel()
        if reader.learn_flush is not None:
            reader.learn_flush.cancel()
        loop.remove_reader(reader.nfq.fileno())


def run_reader(
    config: ReaderConfig,
    index: int,
    tables: PolicyTables,
    seed: int,
    node: str,
    guard_updates: UpdatesFactory[GroupThreatSettings] | None = None,
) -> int:
    reader = Reader(config, index, tables, seed, node, guard_updates)
    reader.open()
    log.info("reader q%d bound", reader.queue_num)
    try:
        uvloop.run(_serve(reader))
    finally:
        reader.close()
    return 0
