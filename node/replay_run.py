"""The live node's decisions over a capture: kernel chain → reader core → flow's worker engine → verdict.

For each packet, in capture order and with the capture's timestamps as the clock: our chain as the kernel
runs it (`node/replay_kernel.py`: source blocks, offloaded connections); the reader's sans-io core
(`pipeline/reader_core.py`: decode, flow table, policy lookup, guard); for a packet the judge sends to a
worker, the worker engine the flow hash chose (`workers.worker.build_engine`, the engine the worker
process runs, with the policy's threat settings); its verdict back through the reader core, and the
verdict's bit into the kernel (offload). Timers run as in the processes (`HOUSEKEEPING_S` for the reader,
`EVENT_FLUSH_S` for workers), on the capture's clock. Workers answer at once: a verdict timeout cannot
happen in replay. What the live node sends elsewhere comes out here: events, block-source requests
(applied to the kernel chain), flow lines.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from core.flow import FlowKey, flow_key
from core.lookup import PolicyTables
from core.packet import Fragment, PacketMeta, decode
from core.verdict import WorkerVerdict
from node.config import Config
from node.replay_kernel import FLOODED, QUEUE, Connection, Kernel
from pipeline.judge import Act, Judge
from pipeline.reader import HOUSEKEEPING_S
from pipeline.reader_core import LEARNING, ReaderCore
from workers.detect.engine import ThreatPolicy
from workers.detect.shared_counts import SharedCounts
from workers.dpi.defrag import Defragmenter
from workers.worker import EVENT_FLUSH_S, Engine, ThreatPolicyUpdates, build_engine

NODE = "replay"
SEED = 0x5EED  # the flow hash seed (live: random per start); fixed so that replays repeat exactly
MAX_WAITING = 65536  # ended connections waiting for their worker's report; beyond it, written without the app

# A payload-less packet the reader lets through while its worker learns from it is, on the wire, a pass.
_ACT_NAMES = {act: act.name.lower() for act in Act} | {Act.PASS_LEARN: "pass", Act.LEARN_QUIET: "pass"}


class Sink(Protocol):
    def event(self, event: dict[str, Any]) -> None: ...

    def flow(self, conn: Connection) -> None: ...


class _Once:
    """An update source that hands over one value: the threat policy of the replayed policy."""

    def __init__(self, value: ThreatPolicy) -> None:
        self.value: ThreatPolicy | None = value

    def poll(self) -> ThreatPolicy | None:
        value, self.value = self.value, None
        return value

    def close(self) -> None:
        pass


def _inner(engine: Engine) -> Any:
    return getattr(engine, "engine", engine)  # through the lab's PatternRule wrapper


class NodeReplay:
    def __init__(
        self,
        config: Config,
        tables: PolicyTables,
        threat_policy: ThreatPolicy,
        sink: Sink,
        evidence_dir: Path | None = None,
        node: str = NODE,
        seed: int = SEED,
    ) -> None:
        self.sink = sink
        self.evidence_dir = evidence_dir
        reader = config.reader()
        self.judge = Judge(reader, tables, seed, node)  # wall_offset 0: the capture's clock is wall time
        if self.judge.guard is not None:
            self.judge.guard.set_threat_settings(threat_policy.settings)
        self.core: ReaderCore[None] = ReaderCore(reader, self.judge)
        self.kernel = Kernel(config.netfilter, self._connection_ended)
        # With conntrack, the kernel reassembles fragments before our chain: readers see whole datagrams.
        self.defrag = Defragmenter(config.dpi, self._count)
        self.engines: list[Engine] = []
        counts = SharedCounts.in_memory(config.workers.count)  # (the live workers' table, in memory)
        for w in range(config.workers.count):
            engine = build_engine(config.worker(), tables, node, self._emitter(w), self._fqdn, counts[w])
            ThreatPolicyUpdates(_Once(threat_policy)).poll(engine, tables)
            self._observe_flow_ends(engine)
            self.engines.append(engine)
        # the engines' threat detectors: block-source requests and evidence captures come from them
        self.detectors = [getattr(_inner(e), "threats", None) for e in self.engines]
        self.waiting: dict[FlowKey, list[Connection]] = {}  # ended, their worker's report still to come
        self.counters: Counter[str] = Counter()
        self.flows = 0
        self.events = 0
        self.threats: Counter[str] = Counter()  # findings per threat name, aggregated repeats counted

    # ---- the run -------------------------------------------------------------------------------

    def run(self, packets: Iterable[tuple[float, bytes]]) -> dict[str, Any]:
        started = time.perf_counter()
        core, kernel, engines, counters = self.core, self.kernel, self.engines, self.counters
        step, admit, verdict_bits, to_kernel = kernel.step, core.admit, core.verdict_bits, kernel.verdict
        next_housekeeping = next_flush = None
        count = 0
        now = 0.0
        for now, ip in packets:
            count += 1
            if next_housekeeping is None:
                next_housekeeping, next_flush = now + HOUSEKEEPING_S, now + EVENT_FLUSH_S
            meta = decode(ip)
            if meta.fragment is not Fragment.NONE and not meta.anomaly:
                rebuilt = self.defrag.add(ip, meta, now)
                if rebuilt is None:
                    continue  # held by the kernel until the datagram is whole
                ip = rebuilt
                meta = decode(ip)
            conn: Connection | None = None
            fate = QUEUE
            if not meta.anomaly:
                if kernel.unqueued(meta):
                    continue
                key, direction = flow_key(meta)
                fate, conn = step(meta, key, direction, now)
                if fate != QUEUE and fate != FLOODED:
                    continue
            act, meta, flow = admit(ip, now, fate == FLOODED)
            if act is Act.INSPECT:
                worker = core.hold(count, None, meta, flow, now)
                if worker is None:
                    act = core.memory_cap_act
                else:
                    verdict, rule = self._inspect(worker, ip, meta, now)
                    answered = core.answer(count, verdict)
                    act = answered[0] if answered is not None else core.worker_down_act
                    if conn is not None:
                        conn.worker, conn.to_worker = worker, True
                        if rule:
                            conn.worker_rule = rule
            elif act in LEARNING:
                # As the live reader: verdicted here, and the worker sees the packet without answering.
                worker = flow.worker if flow is not None else 0
                self._inspect(worker, ip, meta, now)
                if conn is not None:
                    conn.worker, conn.to_worker = worker, True
            bit = verdict_bits(act)
            if conn is not None:
                if flow is not None:
                    conn.rule_id = flow.rule_id
                to_kernel(conn, _ACT_NAMES[act], bit)
            else:
                counters[f"unkeyed.{_ACT_NAMES[act]}"] += 1
            self._take_blocks(now)
            if now >= next_housekeeping:
                next_housekeeping = now + HOUSEKEEPING_S
                self._housekeeping(now)
            if next_flush is not None and now >= next_flush:
                next_flush = now + EVENT_FLUSH_S
                self.defrag.expire(now)
                for engine in engines:
                    engine.expire(now)
        for engine in engines:
            engine.expire(now)
            close = getattr(engine, "close_all", None)
            if close is not None:
                close()
        self._housekeeping(now + HOUSEKEEPING_S, final=True)  # the guard's open windows and last reports
        kernel.close_all()
        for conns in self.waiting.values():
            for conn in conns:
                self._write_flow(conn)
        self.waiting.clear()
        return self._summary(count, time.perf_counter() - started)

    def _inspect(self, worker: int, ip: bytes, meta: PacketMeta, now: float) -> tuple[int, int]:
        """The worker's handling of one packet (`Worker.handle`): its engine's verdict and rule. The
        worker decodes the bytes it receives; the reader's decoding of the same bytes is that result."""
        key, direction = flow_key(meta)
        try:
            verdict, rule = self.engines[worker].on_packet(ip, meta, key, direction, now)
        except Exception:  # as in the worker: an engine bug passes the packet, counted
            self.counters["worker.engine_error"] += 1
            return int(WorkerVerdict.PASS), 0
        return int(verdict), rule

    def _count(self, name: str) -> None:
        self.counters[f"kernel.{name.removeprefix('dpi.')}"] += 1  # the kernel's reassembly refused it

    def _take_blocks(self, now: float) -> None:
        blocks = self.core.take_blocks()
        for threats in self.detectors:
            if threats is not None and threats.new_blocks:
                blocks = blocks + threats.new_blocks
                threats.new_blocks = []
        if blocks:
            self.kernel.block_sources(blocks, now)

    def _housekeeping(self, now: float, final: bool = False) -> None:
        for event in self.core.housekeeping(now, final):
            if event.get("type") != "threat":
                # The judge stamps its policy reports with the host's clock; replay's clock is the capture's.
                event = {**event, "time": now}
            self._event(event)

    # ---- what the node would send elsewhere ----------------------------------------------------

    def _emitter(self, worker: int) -> Callable[[dict[str, Any]], None]:
        def emit(event: dict[str, Any]) -> None:
            evidence = event.get("evidence")
            if self.evidence_dir is not None and evidence:
                event = self._write_evidence(worker, str(evidence), event)
            self._event(event)

        return emit

    def _write_evidence(self, worker: int, evidence: str, event: dict[str, Any]) -> dict[str, Any]:
        """The packets behind a worker's threat event into the evidence directory (ids are per worker)."""
        assert self.evidence_dir is not None
        threats = self.detectors[worker] if worker < len(self.detectors) else None
        pcap = threats.evidence_pcap(evidence) if threats is not None else None
        if pcap is None:
            return event
        path = self.evidence_dir / f"worker{worker}-{evidence}.pcap"
        path.write_bytes(pcap)
        return {**event, "evidence_file": str(path)}

    def _event(self, event: dict[str, Any]) -> None:
        self.events += 1
        if event.get("type") == "threat":
            self.threats[str(event.get("name"))] += int(event.get("count", 1))
        self.sink.event(event)

    def _fqdn(self, learnt: list[tuple[str, bytes, float]]) -> None:
        # Live, the policy process resolves FQDN groups from these; replay keeps the policy it was given.
        self.counters["dns_answers"] += len(learnt)

    def _observe_flow_ends(self, engine: Engine) -> None:
        """Learn each flow's application when its worker's DPI engine ends it (the engine's observer)."""
        dpi = getattr(_inner(engine), "inner", None)
        if dpi is None or not hasattr(dpi, "on_flow_end"):
            return
        chained: Callable[[Any], None] | None = dpi.on_flow_end

        def on_flow_end(ctx: Any) -> None:
            if chained is not None:
                chained(ctx)
            self._dpi_flow_ended(ctx)

        dpi.on_flow_end = on_flow_end

    def _dpi_flow_ended(self, ctx: Any) -> None:
        waiting = self.waiting.get(ctx.key)
        conn = waiting.pop(0) if waiting else self.kernel.connections.get(ctx.key)
        if waiting is not None and not waiting:
            del self.waiting[ctx.key]
        if conn is None:
            return
        conn.app, conn.host, conn.sni, conn.server_app = (
            ctx.app or "unknown",
            ctx.host,
            ctx.sni,
            ctx.server_app,
        )
        if conn.to_worker:
            conn.to_worker = False
            if waiting is not None:  # it had ended already: its line waited for this
                self._write_flow(conn)

    def _connection_ended(self, conn: Connection) -> None:
        if conn.to_worker and len(self.waiting) < MAX_WAITING:
            self.waiting.setdefault(conn.key, []).append(conn)
            return
        self._write_flow(conn)

    def _write_flow(self, conn: Connection) -> None:
        self.flows += 1
        self.sink.flow(conn)

    # ---- summary -------------------------------------------------------------------------------

    def _summary(self, packets: int, elapsed: float) -> dict[str, Any]:
        stats: Counter[str] = Counter(self.core.counters)
        stats.update(self.judge.stats())
        stats.update(self.kernel.counters)
        stats.update(self.counters)
        for engine in self.engines:
            stats.update({f"worker.{k}": v for k, v in engine.stats().items()})
        verdicts = {
            k.removeprefix("verdict."): v for k, v in sorted(stats.items()) if k.startswith("verdict.")
        }
        return {
            "kind": "summary",
            "packets": packets,
            "flows": self.flows,
            "events": self.events,
            "verdicts": verdicts,
            "offloaded": sum(v for k, v in stats.items() if k in ("kernel.accepted", "kernel.dropped")),
            "threats": dict(sorted(self.threats.items())),
            "counters": {k: v for k, v in sorted(stats.items()) if v and isinstance(v, int)},
            "elapsed_s": round(elapsed, 6),
            "packets_per_s": round(packets / elapsed) if elapsed > 0 else 0,
        }


def is_offloaded(conn: Connection) -> bool:
    return conn.mark != QUEUE


__all__ = ["NODE", "NodeReplay", "Sink", "is_offloaded"]
