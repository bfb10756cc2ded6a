"""Benchmark of DPI + threat detection on HTTP request bodies of 1 KiB, 16 KiB and 64 KiB (form and
JSON): requests/s of one core's CPU time through a worker's engine (reassembly, the HTTP parser, the
injection checks and sensors on every body part), each request on its own connection in 1,448-byte
segments, benign bodies (nothing blocked, so every byte is inspected).

    python scripts/bench_bodies.py [--quick] [--against REF [--reps N]]

`--against REF` measures revision REF and this tree alternately in one run (`--reps` times) and prints
the medians side by side with their ratio (this tree / REF): the cost of inspecting whole bodies
against the baseline that looked at their first `max_event_bytes` only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# `--tree DIR` (used by `--against`): import the code under test from another checkout
_TREE = sys.argv[sys.argv.index("--tree") + 1] if "--tree" in sys.argv[:-1] else str(ROOT)
sys.path.insert(0, _TREE)

from core.lookup import Action, Decision, Mode, Report  # noqa: E402
from core.packet import TCP_ACK, TCP_PSH  # noqa: E402
from tests.detect.build import handshake, packet, tcp4  # noqa: E402
from workers.detect.engine import build_engine, compile_threat_policy  # noqa: E402
from workers.dpi.settings import DpiSettings  # noqa: E402

SIZES = (1024, 16384, 65536)
SEGMENT = 1448
SERVER = "198.18.1.10"
SENSORS = [{"name": "cards", "predefined": "credit_card", "action": "alert"}]


class AllowAll:
    """Policy tables that allow every flow, in Protect (so a finding would reset it)."""

    def generation(self) -> int:
        return 1

    def decide(self, family: int, src: bytes, dst: bytes, proto: int, dport: int) -> Decision:
        return Decision(Action.ALLOW, False, 0, Mode.PROTECT, Report.NONE, "clients", "web", 1)

    def decide_app(
        self, family: int, src: bytes, dst: bytes, proto: int, dport: int, *rest: object
    ) -> Decision:
        return self.decide(family, src, dst, proto, dport)._replace(final=True)


def form_body(size: int) -> bytes:
    pairs, n = [], 0
    while sum(map(len, pairs)) + len(pairs) < size:
        pairs.append(b"field%d=O%%27Brien+street+%d+apt+%d" % (n, n, n * 7))
        n += 1
    return b"&".join(pairs)[:size]


def json_body(size: int) -> bytes:
    items, n = [], 0
    while sum(map(len, items)) + len(items) + 12 < size:
        items.append(b'{"id":%d,"name":"item %d","note":"50%% off, see terms","tags":["a","b"]}' % (n, n))
        n += 1
    return b'{"items":[' + b",".join(items) + b"]}"


def request(ctype: bytes, body: bytes) -> bytes:
    head = b"POST /api HTTP/1.1\r\nHost: web\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
    return head % (ctype, len(body)) + body


def flow_packets(req: bytes, n: int) -> list[Any]:
    """The packets of request number `n` on a connection of its own (client address and port from n)."""
    client, cport = f"198.18.9.{1 + n % 250}", 1024 + n // 250
    bufs = list(handshake(client, cport, SERVER, 80))
    for off in range(0, len(req), SEGMENT):
        piece = req[off : off + SEGMENT]
        flags = TCP_ACK | TCP_PSH
        bufs.append(tcp4(client, cport, SERVER, 80, flags, seq=1001 + off, ack=5001, payload=piece))
    return [packet(b) for b in bufs]


def measure(quick: bool) -> dict[str, float]:
    events: list[dict[str, Any]] = []
    engine = build_engine(
        DpiSettings(), AllowAll(), events.append, "n1", compile_threat_policy(1, None, SENSORS)
    )
    out: dict[str, float] = {}
    now, serial = 1000.0, 0
    budget = 0.4 if quick else 1.5  # CPU seconds per row
    for kind, ctype, make in (
        ("form", b"application/x-www-form-urlencoded", form_body),
        ("json", b"application/json", json_body),
    ):
        for size in SIZES:
            req = request(ctype, make(size))
            done, cpu = 0, 0.0
            while cpu < budget:
                pkts = flow_packets(req, serial)  # (built outside the timed part)
                serial += 1
                start = time.process_time()
                for meta, raw, key, direction in pkts:
                    engine.on_packet(raw, meta, key, direction, now)
                cpu += time.process_time() - start
                done += 1
                now += 0.01  # 100 new connections/s of capture time: far below any flood threshold
            out[f"{kind} {size // 1024} KiB requests/s"] = done / cpu
    threats = [e for e in events if e.get("type") == "threat"]
    out["threats raised (must be 0)"] = float(len(threats))
    return out


def compare(ref: str, reps: int, quick: bool) -> int:
    rows: dict[str, dict[str, list[float]]] = {"ref": {}, "this": {}}
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True
        ).stdout
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        for _ in range(reps):
            for side, tree in (("ref", tmp), ("this", str(ROOT))):
                cmd = [sys.executable, __file__, "--json", "--tree", tree] + (["--quick"] if quick else [])
                got = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
                for name, value in got.items():
                    rows[side].setdefault(name, []).append(float(value))
    print(f"{'row (median of ' + str(reps) + ')':34} {ref[:12]:>12} {'this tree':>12} {'ratio':>7}")
    for name in rows["ref"]:
        base, now = statistics.median(rows["ref"][name]), statistics.median(rows["this"][name])
        ratio = f"{now / base:7.2f}" if base else "      -"
        print(f"{name:34} {base:12.1f} {now:12.1f} {ratio}")
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="shorter runs (for a smoke test)")
    parser.add_argument("--against", metavar="REF", help="compare with git revision REF in the same run")
    parser.add_argument("--reps", type=int, default=3, help="alternations for --against")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--tree", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.against:
        return compare(args.against, args.reps, args.quick)
    figures = measure(args.quick)
    if args.json:
        print(json.dumps(figures))
    else:
        for name, value in figures.items():
            print(f"{name}: {value:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
