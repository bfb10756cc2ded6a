#!/usr/bin/env python3
"""What a running `enforcer capture` costs the readers: judged packets/s with and without one.

    sudo .venv/bin/python scripts/bench_capture.py [--reps 3] [--seconds 3]

The lab with the enforcer in `workers.inspect = "all"` (every packet through a reader and a worker) and
an iperf3 flood of 64-byte UDP datagrams (a compiled generator faster than the enforcer). In each rep,
interleaved, in an order rotated each rep: no capture (the baseline), a `--flow` capture that matches
nothing (the filter's cost alone), a `--flow` capture that matches the flood, and a `--group` capture of
the server's group (a policy lookup per packet: the dearest filter). The figure is the
readers' judged packets/s (their `packets` counter over the test, from the status endpoint); medians
over the reps are printed beside the baseline they are divided by, with what each capture wrote. Each
capture copies until its byte budget (`--max-bytes`, 64 MiB here), then only matches. The machine's
other load is not controlled: absolute figures are noisy on a shared machine.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lab.enforcer import LabEnforcer
from lab.topology import Lab, require_root
from scripts.loadtest import IPERF_PORT, iperf

MAX_BYTES = 64 << 20
POLICY = f"""
version: 1
default_mode: monitor
groups:
  - {{name: clients, mode: monitor, members: [198.18.1.0/24]}}
  - {{name: web, mode: protect, members: [198.18.2.11/32]}}
rules:
  - {{id: 10, from: clients, to: web, ports: [tcp/{IPERF_PORT}, udp/{IPERF_PORT}], action: allow}}
"""
WROTE = re.compile(r"^(\d+) packets \((\d+) bytes\)", re.M)


def _reader_sum(e: LabEnforcer, key: str) -> int:
    children = e.status().get("children", [])
    return sum(c["counters"].get(key, 0) for c in children if c["name"].startswith("reader"))


def measure(
    lab: Lab, e: LabEnforcer, seconds: float, capture: list[str] | None, out: Path
) -> tuple[float, str]:
    """Judged packets/s during one flood, with `capture` (capture arguments) running around it."""
    proc = None
    if capture is not None:
        readers = sum(1 for c in e.status().get("children", []) if c["name"].startswith("reader"))
        started = _reader_sum(e, "capture.started")
        cmd = [sys.executable, "-m", "node.cli", "capture", "--config", str(e.config_path), *capture,
               "--seconds", str(seconds + 2), "--max-bytes", str(MAX_BYTES), "-o", str(out)]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 5  # every reader runs it before the flood starts
        while time.monotonic() < deadline and _reader_sum(e, "capture.started") < started + readers:
            time.sleep(0.1)
    before, began = _reader_sum(e, "packets"), time.monotonic()
    iperf(lab, lab.host("s1").ipv4, seconds, "-u", "-b", "0", "-l", "64")
    rate = (_reader_sum(e, "packets") - before) / (time.monotonic() - began)
    wrote = ""
    if proc is not None:
        _, err = proc.communicate(timeout=seconds + 30)
        m = WROTE.search(err)
        wrote = f"{int(m.group(1))} packets, {int(m.group(2)) >> 20} MiB" if m else err.strip()[-120:]
    return rate, wrote


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    require_root()
    reps = min(max(args.reps, 1), 10)
    seconds = min(max(args.seconds, 1.0), 30.0)
    s1 = "198.18.2.11"
    cases = {
        "none": None,
        "nomatch": ["--flow", f"udp 198.18.1.99 {s1}:{IPERF_PORT}"],
        "flow": ["--flow", f"udp 198.18.1.11 {s1}:{IPERF_PORT}"],
        "group": ["--group", "web"],
    }
    rates: dict[str, list[float]] = {k: [] for k in cases}
    wrote: dict[str, list[str]] = {k: [] for k in cases}
    with tempfile.TemporaryDirectory() as tmp, Lab(f"bc{time.monotonic_ns() % 10000}") as lab:
        policy = Path(tmp) / "policy.yaml"
        policy.write_text(POLICY)
        server = lab.popen("s1", "iperf3", "-s", "-p", str(IPERF_PORT), stdout=subprocess.DEVNULL)
        try:
            time.sleep(0.3)  # iperf3 binds
            for rep in range(reps):
                with LabEnforcer(lab, {"workers": {"inspect": "all"}}, policy=policy) as e:
                    names = list(cases)
                    names = names[rep % len(names) :] + names[: rep % len(names)]  # no case always first
                    for name in names:
                        capture = cases[name]
                        rate, note = measure(lab, e, seconds, capture, Path(tmp) / f"{name}-{rep}.pcap")
                        rates[name].append(rate)
                        wrote[name].append(note)
        finally:
            server.terminate()
            server.wait(timeout=5)
    base = statistics.median(rates["none"])
    print(f"readers' judged packets/s, 64-byte UDP flood, inspect=all; median of {reps} reps of {seconds:g}s")
    for name in cases:
        med = statistics.median(rates[name])
        extra = f"  capture wrote: {'; '.join(wrote[name])}" if cases[name] else ""
        print(f"  {name:7s} {med:>10,.0f}/s  ratio {med / base:.2f} (baseline {base:,.0f}/s){extra}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
