#!/usr/bin/env python3
"""Reader hot-path costs and memory, measured in one run against baselines from the same run.

    .venv/bin/python scripts/bench_reader.py [--flows 100000] [--live]

Prints: the RSS of a reader core (judge + flow table + policy tables) empty and with N tracked flows
(target: ≤ 80 MB with 100k flows); with --live (root), the RSS of a real reader process in the lab
before and after N one-packet UDP flows went through it; per-packet CPU of decode, of the judge on known
and on new flows,
against a baseline of a bare dict lookup keyed by the packet's bytes (what the cheapest possible
flow cache would cost in Python).
"""

from __future__ import annotations

import argparse
import gc
import json
import socket
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil

from core.packet import decode
from lab.enforcer import LAB_POLICY
from node.config import config_from_dict
from pipeline.judge import Judge
from policy.tables import load_policy_tables


def syn(i: int) -> bytes:
    src = socket.inet_aton("198.18.1.1")[:2] + struct.pack("!H", 256 + i // 50000)
    tcp = struct.pack("!HHIIBBHHH", 10000 + i % 50000, 80, i, 0, 0x50, 0x02, 64240, 0, 0)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 40, 0, 0, 64, 6, 0, src, socket.inet_aton("198.18.2.11"))
    return ip + tcp


def per_packet_us(fn, packets: list[bytes]) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    for p in packets:
        fn(p)
    return (time.perf_counter() - start) / len(packets) * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--flows", type=int, default=100_000)
    ap.add_argument("--live", action="store_true", help="also measure a real reader in the lab (root)")
    args = ap.parse_args()
    proc = psutil.Process()
    config = config_from_dict({"flows": {"max_flows": max(args.flows, 1024)}}, {}).reader()
    judge = Judge(config, load_policy_tables(LAB_POLICY), seed=7, node="bench")
    packets = [syn(i) for i in range(args.flows)]
    gc.collect()
    rss_empty = proc.memory_info().rss
    new_us = per_packet_us(lambda p: judge.judge(p, 0.0), packets)
    gc.collect()
    rss_full = proc.memory_info().rss
    known_us = per_packet_us(lambda p: judge.judge(p, 1.0), packets)
    decode_us = per_packet_us(decode, packets)
    cache = {p: 1 for p in packets}
    dict_us = per_packet_us(cache.get, packets)
    result: dict[str, object] = {
        "flows": len(judge.flows),
        "rss_empty_mb": round(rss_empty / 2**20, 1),
        "rss_with_flows_mb": round(rss_full / 2**20, 1),
        "flows_mb": round((rss_full - rss_empty) / 2**20, 1),
        "bytes_per_flow": round((rss_full - rss_empty) / max(len(judge.flows), 1)),
        "decode_us": round(decode_us, 2),
        "judge_known_flow_us": round(known_us, 2),
        "judge_new_flow_us": round(new_us, 2),
        "baseline_dict_lookup_us": round(dict_us, 3),
        "known_flow_vs_dict": round(known_us / dict_us, 1),
    }
    if args.live:
        result["live"] = live(args.flows)
    print(json.dumps(result, indent=2))
    return 0


# Sends one UDP datagram per flow from a raw socket: distinct (source port, destination port) pairs.
SENDER = """
import socket, struct, sys, time
src, dst, n = socket.inet_aton(sys.argv[1]), socket.inet_aton(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
for i in range(n):
    udp = struct.pack("!HHHH", 1024 + i % 60000, 7000 + i // 60000, 9, 0) + b"x"
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 29, 0, 0, 64, 17, 0, src, dst)
    s.sendto(ip + udp, (sys.argv[2], 0))
    if i % 1000 == 999:
        time.sleep(0.02)  # paced so the queue never overflows (fail-open would let packets by unjudged)
"""


def live(flows: int) -> dict[str, object]:
    from lab.enforcer import LabEnforcer
    from lab.topology import Lab

    def reader_state(e: LabEnforcer) -> tuple[int, int]:
        for c in e.status()["children"]:
            if c["name"] == "reader q0":
                return psutil.Process(c["pid"]).memory_info().rss, c["counters"].get("flows.active", 0)
        raise RuntimeError("no reader")

    with Lab("br") as lab, LabEnforcer(lab, {"queues": {"readers": 1}, "workers": {"count": 1}}) as e:
        time.sleep(1.0)
        rss_before, _ = reader_state(e)
        lab.exec(
            "c1",
            sys.executable,
            "-c",
            SENDER,
            lab.host("c1").ipv4,
            lab.host("s2").ipv4,
            str(flows),
            timeout=120,
        )
        time.sleep(1.5)
        rss_after, tracked = reader_state(e)
    return {
        "reader_rss_before_mb": round(rss_before / 2**20, 1),
        "reader_rss_with_flows_mb": round(rss_after / 2**20, 1),
        "flows_tracked": tracked,
        "target_mb": 80,
    }


if __name__ == "__main__":
    sys.exit(main())
