#!/usr/bin/env python3
"""The reader's whole per-packet path in one process, deterministic enough to compare two commits.

    .venv/bin/python scripts/bench_reader_path.py [--mode app|new] [--conns N] [--per-wakeup K]
    .venv/bin/python scripts/bench_reader_path.py --callgrind      # instructions per packet (valgrind)

A real `pipeline.reader.Reader` (judge, guard, flow table, shared-memory policy tables, verdict
messages, ZeroMQ batches) and a real `workers.worker.Worker` (message decoding, verdict batches; its
DPI engine left out with `--engine none`, the default, so the figure is the reader and the crossing).
The kernel side is the one thing replaced: NFQUEUE messages (built as nfnetlink_queue sends them) are
written into a datagram socket pair whose other end the reader reads and answers, so the reader pays
the same system calls per wake-up as on a queue, and nothing touches any netfilter table.

Connections are the lab's `rrgen crr` shape: SYN, SYN/ACK, ACK, a 64-byte request, a 64-byte answer, a
RST from the client. `app` (L4 only) queues only the SYN of each connection, as our chain does once the
connection is offloaded; `new` (the default configuration) queues all six, the two payload packets
waiting for the worker. `--per-wakeup` packets are handed over per reader wake-up (1: a lightly loaded
reader, one packet per epoll round).

Prints wall and process CPU time per queued packet (the process holds the reader, the worker and both
ZeroMQ I/O threads). With `--callgrind`, runs itself under valgrind twice (N and 2N connections) and
prints the difference in instructions per packet: start-up cancels out, and the count does not depend
on what else the machine runs.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml
import zmq

from core.gctune import tune_for_packets
from node.config import config_from_dict
from pipeline import nfqueue as Q
from pipeline.reader import Reader
from policy.loader import parse_policy
from policy.table_reader import SharedTables
from policy.table_writer import TablesWriter
from policy.tables import compile_policy
from threats.settings import compile_group_settings
from workers.worker import Worker

POLICY = """
version: 1
default_mode: monitor
groups:
  - {name: clients, mode: monitor, members: [198.18.1.0/24]}
  - {name: web, mode: protect, members: [198.18.2.11/32]}
rules:
  - {id: 10, from: clients, to: web, ports: [tcp/80], action: allow}
threat_settings:
  default:  # a connection rate test, not an attack
    source_session_flood: {sessions_per_window: 10000000}
    syn_flood: {syns_per_window: 10000000}
"""
CLIENT, SERVER = socket.inet_aton("198.18.1.11"), socket.inet_aton("198.18.2.11")
SYN, SYN_ACK, ACK, PSH_ACK, RST = 0x02, 0x12, 0x10, 0x18, 0x04
_NLMSG = struct.Struct("=IHHII")
_NFGEN = struct.Struct("!BBH")


def tcp_packet(conn: int, to_server: bool, flags: int, data: bytes = b"") -> bytes:
    cport = 10000 + conn % 50000
    src, dst, sport, dport = (CLIENT, SERVER, cport, 80) if to_server else (SERVER, CLIENT, 80, cport)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1000 + conn, 0, 0x50, flags, 64240, 0, 0) + data
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0, src, dst)
    return ip + tcp


def connection(conn: int, mode: str) -> list[bytes]:
    """The queued packets of one `rrgen crr` connection."""
    syn = tcp_packet(conn, True, SYN)
    if mode == "app":
        return [syn]
    return [
        syn,
        tcp_packet(conn, False, SYN_ACK),
        tcp_packet(conn, True, ACK),
        tcp_packet(conn, True, PSH_ACK, b"q" * 64),
        tcp_packet(conn, False, PSH_ACK, b"a" * 64),
        tcp_packet(conn, True, RST),
    ]


def _attr(kind: int, data: bytes) -> bytes:
    return struct.pack("=HH", 4 + len(data), kind) + data + b"\0" * (-len(data) % 4)


def queue_message(packet_id: int, packet: bytes) -> bytes:
    """One NFQNL_MSG_PACKET as the kernel sends it (the attributes a forwarded packet carries)."""
    attrs = (
        _attr(Q.NFQA_PACKET_HDR, struct.pack("!IHB", packet_id, 0x0800, 2) + b"\0")
        + _attr(Q.NFQA_IFINDEX_INDEV, struct.pack("!I", 3))
        + _attr(Q.NFQA_IFINDEX_OUTDEV, struct.pack("!I", 4))
        + _attr(Q.NFQA_SKB_INFO, struct.pack("!I", 0))
        + _attr(Q.NFQA_PAYLOAD, packet)
    )
    body = _NFGEN.pack(socket.AF_INET, 0, 0) + attrs
    kind = (Q.NFNL_SUBSYS_QUEUE << 8) | Q.NFQNL_MSG_PACKET
    return _NLMSG.pack(_NLMSG.size + len(body), kind, 0, 0, 0) + body


class Bench:
    def __init__(self, mode: str, engine: str, tmp: Path) -> None:
        doc = yaml.safe_load(POLICY)
        config = config_from_dict(
            {
                "paths": {"run_dir": str(tmp)},
                "queues": {"readers": 1},
                "workers": {"count": 1, "inspect": mode},
            },
            {},
        )
        self.writer = TablesWriter(str(tmp / "policy.tables"), table_bytes=1 << 20)
        self.writer.publish(
            compile_policy(parse_policy({k: v for k, v in doc.items() if k != "threat_settings"}))
        )
        tables = SharedTables(str(tmp / "policy.tables"), slot=1)
        # The kernel end and the reader's end of the "queue".
        self.kernel, reader_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.kernel.setblocking(False)
        reader_end.setblocking(False)
        self.worker = Worker(config.worker(), 0)
        if engine == "dpi":
            from workers.worker import build_engine

            self.worker.engine = build_engine(config.worker(), tables, "bench", self.worker.emit)
        self.worker.open()
        self.reader = Reader(config.reader(), 0, tables, seed=7, node="bench")
        self.reader.open_sockets()
        # A loop that never runs: packets let through wait for the flow's next packet that needs a verdict
        # (a busy reader's case), not for the reader's short timer.
        self.reader.loop = asyncio.new_event_loop()
        self.reader.nfq = Q.NfQueue.__new__(Q.NfQueue)
        Q.NfQueue.__init__(self.reader.nfq, 0, recv_buffer=256 * 1024)
        self.reader.nfq._sock.close()
        self.reader.nfq._sock = reader_end  # type: ignore[assignment]
        assert self.reader.judge.guard is not None
        self.reader.judge.guard.set_threat_settings(compile_group_settings(doc["threat_settings"]))
        self.poller = zmq.Poller()
        self.poller.register(self.worker.inbox, zmq.POLLIN)
        self.poller.register(self.reader.from_workers, zmq.POLLIN)
        self.next_id = 1
        self.verdict_bytes = 0

    def feed(self, packets: list[bytes]) -> None:
        for p in packets:
            self.kernel.send(queue_message(self.next_id, p))
            self.next_id += 1
        self.reader.on_queue_readable()
        # The worker takes what reached it and answers; the reader applies the answers when they come (its
        # descriptor would wake it). Packets let through unanswered may still be on their way: the next
        # round takes them.
        self._work()
        deadline = time.monotonic() + 5.0
        while self.reader.inflight:
            if time.monotonic() > deadline:
                raise RuntimeError("no verdict from the worker within 5 s")
            self.poller.poll(100)
            self._work()
            self.reader.on_verdicts_readable()
        self._drain_verdicts()

    def _work(self) -> None:
        inbox = self.worker.inbox
        while inbox.get(zmq.EVENTS) & zmq.POLLIN:
            self.worker.handle(inbox.recv(), time.time())

    def _drain_verdicts(self) -> None:
        while True:
            try:
                self.verdict_bytes += len(self.kernel.recv(1 << 16))
            except BlockingIOError:
                return

    def close(self) -> None:
        if self.reader.loop is not None:
            self.reader.loop.close()
        self.reader.ctx.destroy(linger=0)
        self.worker.ctx.destroy(linger=0)
        self.writer.close(unlink=True)


def run(mode: str, conns: int, per_wakeup: int, engine: str, profile: str = "") -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp).chmod(0o700)
        bench = Bench(mode, engine, Path(tmp))
        warm = [p for c in range(200) for p in connection(100_000 + c, mode)]
        for i in range(0, len(warm), per_wakeup):
            bench.feed(warm[i : i + per_wakeup])
        packets = [p for c in range(conns) for p in connection(c, mode)]
        tune_for_packets()
        profiler = cProfile.Profile() if profile else None
        wall, cpu = time.perf_counter(), time.process_time()
        if profiler is not None:
            profiler.enable()
        for i in range(0, len(packets), per_wakeup):
            bench.feed(packets[i : i + per_wakeup])
        if profiler is not None:
            profiler.disable()
            profiler.dump_stats(profile)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        flush_learned = getattr(bench.reader, "flush_learned", None)
        if flush_learned is not None:
            flush_learned()
        time.sleep(0.05)
        bench._work()  # the last packets let through, so the worker's count is complete
        counters = dict(bench.reader.counters)
        bench.close()
    n = len(packets)
    return {
        "mode": mode,
        "packets": n,
        "per_wakeup": per_wakeup,
        "wall_us_per_packet": round(wall / n * 1e6, 2),
        "cpu_us_per_packet": round(cpu / n * 1e6, 2),
        "inspect_sent": counters.get("inspect.sent", 0),
        "unknown_refs": counters.get("worker.unknown_ref", 0),
    }


def instructions(args: argparse.Namespace, conns: int) -> int:
    """Instructions of one run of this script under callgrind (the whole process, every thread)."""
    cmd = [
        "valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__,
        "--mode", args.mode, "--conns", str(conns), "--per-wakeup", str(args.per_wakeup), "--engine", args.engine,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONHASHSEED": "0"}  # the same dict layouts in both runs
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=1800, env=env)
    m = re.search(r"Collected : (\d+)", out.stderr)
    if m is None:
        raise RuntimeError(f"no instruction count from valgrind: {out.stderr[-500:]}")
    return int(m.group(1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=("app", "new"), default="app")
    ap.add_argument("--conns", type=int, default=5000)
    ap.add_argument("--per-wakeup", type=int, default=1)
    ap.add_argument("--engine", choices=("none", "dpi"), default="none")
    ap.add_argument("--callgrind", action="store_true", help="instructions per packet under valgrind")
    ap.add_argument("--cprofile", default="", help="write a cProfile of the measured loop to this file")
    args = ap.parse_args()
    if not args.callgrind:
        print(run(args.mode, args.conns, args.per_wakeup, args.engine, args.cprofile))
        return 0
    n = args.conns
    small, large = instructions(args, n), instructions(args, 2 * n)
    packets = n * len(connection(0, args.mode))
    print({"mode": args.mode, "per_wakeup": args.per_wakeup, "engine": args.engine,
           "instructions_per_packet": round((large - small) / packets), "packets": packets,
           "instructions_n": small, "instructions_2n": large})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
