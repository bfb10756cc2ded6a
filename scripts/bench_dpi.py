"""Benchmark of the DPI core and of `enforcer replay` on a mixed capture: packets per CPU-second.

    python scripts/bench_dpi.py [--copies N] [--out capture.pcap]

Builds a mixed capture in memory from the golden-capture generator (HTTP, DNS, TLS, SSH, Redis, MySQL,
PostgreSQL, gRPC …; each conversation repeated with its own client address), once with handshakes only
and once with bulk transfers added. Runs it through the worker's DPI engine alone (decode → flow →
DpiEngine, as a worker does for the packets it gets), and, with bulk transfers, through `enforcer replay
--json` end to end (pcap file → the node core: kernel chain, reader judge and guard, detecting worker
engines) with the packaged configuration (`workers.inspect = "app"`: the start-up policy decides every
flow at L4 and the kernel takes it over) and with `workers.inspect = "new"` (every flow through a worker
with the threat detectors). Process time, best of 3, so other load on a shared machine does not skew it.
No network I/O.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core.flow import flow_key  # noqa: E402
from core.packet import decode  # noqa: E402
from workers.dpi.engine import DpiEngine  # noqa: E402
from workers.dpi.settings import DpiSettings  # noqa: E402

REPEAT = 3  # best of: the machine is shared
MIX = ("http/http_get", "dns/dns", "tls/tls13", "ssh/ssh_port_80", "redis/redis", "mysql/mysql",
       "postgres/postgres", "http2/http2_grpc", "http/rtsp_sip")  # fmt: skip


def _generator():
    spec = importlib.util.spec_from_file_location("dpi_pcap_generate", ROOT / "tests/data/pcaps/generate.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _readdress(ip: bytes, i: int, c4: bytes, c6: bytes) -> bytes:
    """Copy `i` of a conversation: the client gets its own address (checksums are not checked by the
    engine, so they are left alone)."""
    if ip[0] >> 4 == 4:
        new = bytes([198, 19, (i >> 8) & 0xFF, i & 0xFF])
        src, dst = ip[12:16], ip[16:20]
        return ip[:12] + (new if src == c4 else src) + (new if dst == c4 else dst) + ip[20:]
    new6 = c6[:12] + i.to_bytes(4, "big")
    src, dst = ip[8:24], ip[24:40]
    return ip[:8] + (new6 if src == c6 else src) + (new6 if dst == c6 else dst) + ip[40:]


def bulk_conversations(gen) -> list[list[tuple[float, bytes]]]:
    """An HTTP download (128 KiB) and a TLS session with 64 application-data records, each with the
    client's ACKs: what most packets of a real capture look like."""
    out_http: list[tuple[float, bytes]] = []
    req, _ = gen.http_get()
    body = b"x" * 131072
    head = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: %d\r\n\r\n" % len(body)
    c = gen.TcpConversation(out_http, gen.C4, 45000, gen.S4, 80, 0.0).handshake().send(0, req)
    data = head + body
    for i in range(0, len(data), 1400):
        c.send(1, data[i : i + 1400])
        if (i // 1400) % 2:
            c._emit(0, gen.ACK, b"")
    c.close()
    out_tls: list[tuple[float, bytes]] = []
    c = gen.TcpConversation(out_tls, gen.C4, 45001, gen.S4, 443, 0.0).handshake()
    c.send(0, gen.tls_client_hello(b"bulk.example.test", [b"h2"])).send(1, gen.tls_server_hello())
    for _ in range(64):
        c.send(1, b"\x17\x03\x03\x05\x00" + b"\xee" * 1280)
        c._emit(0, gen.ACK, b"")
    c.close()
    return [out_http, out_tls]


def build(copies: int, bulk: bool = False) -> list[tuple[float, bytes]]:
    gen = _generator()
    base = [gen.CAPTURES[name]() for name in MIX]
    if bulk:
        base += bulk_conversations(gen)
    out: list[tuple[float, bytes]] = []
    t = 0.0
    for i in range(copies):
        for conv in base:
            for _ts, ip in conv:
                t += 0.00001
                out.append((t, _readdress(ip, i, gen.C4, gen.C6)))
    return out


def run(packets: list[tuple[float, bytes]]) -> tuple[float, dict[str, int]]:
    engine = DpiEngine(DpiSettings(), None, lambda e: None, "bench")
    start = time.process_time()  # CPU time: other processes on the machine do not count against us
    last = 0.0
    for ts, ip in packets:
        meta = decode(ip)
        key, direction = flow_key(meta)
        engine.on_packet(ip, meta, key, direction, ts)
        if ts - last > 1.0:
            engine.expire(ts)
            last = ts
    elapsed = time.process_time() - start
    return elapsed, engine.stats()


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--copies", type=int, default=300, help="copies of each conversation")
    ap.add_argument("--out", help="also write the mixed capture here (pcap)")
    args = ap.parse_args()
    for bulk in (False, True):
        packets = build(args.copies, bulk)
        if args.out and bulk:
            _generator().write_pcap(Path(args.out), packets)
        mix = "with bulk transfers" if bulk else "handshakes only"
        print(f"mixed capture, {mix}: {len(packets)} packets")
        elapsed, stats = min(run(packets) for _ in range(REPEAT))
        print(f"  {'DPI engine (worker)':30s} {stats['flows_created']} flows in {elapsed:.2f}s: "
              f"{len(packets) / elapsed:,.0f} packets/s; identified {stats.get('identified', 0)}, "
              f"unidentified {stats.get('dpi.app.unidentified', 0)}")  # fmt: skip
        if bulk:
            replay_file(packets)
    return 0


def replay_file(packets: list[tuple[float, bytes]]) -> None:
    """`enforcer replay --json` end to end: pcap written, read back, the node core, output discarded."""
    import io
    import tempfile

    from node.config import config_from_dict
    from node.replay import load_policy_snapshot, policy_of, read_capture, replay

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mixed.pcap"
        _generator().write_pcap(path, packets)
        for inspect in ("app", "new"):
            config = config_from_dict({"workers": {"inspect": inspect}}, environ={})
            elapsed = 1e9
            for _ in range(REPEAT):
                tables, threat_policy = policy_of(load_policy_snapshot(None, config))
                start = time.process_time()
                summary = replay(read_capture(str(path)), io.StringIO(), True, config, tables, threat_policy)
                elapsed = min(elapsed, time.process_time() - start)
            label = f"replay --json, inspect={inspect}"
            print(f"  {label:30s} {summary['flows']} flows in {elapsed:.2f}s: "
                  f"{summary['packets'] / elapsed:,.0f} packets/s; {summary['offloaded']} packets offloaded")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
