#!/usr/bin/env python3
"""Where a live reader's time goes under a bounded connection-rate load, in the lab.

    sudo .venv/bin/python scripts/profile_reader.py [--mode new|app] [--seconds 3] [--py-spy DIR]

Starts the lab and the enforcer (one reader, one worker, so every packet meets the one reader), drives
`rrgen crr` (new connections, one 64-byte request each) for `--seconds`, and prints for the reader and
the worker: CPU seconds (user and system, from /proc/PID/stat), packets judged, CPU µs per packet and
packets per CPU-second (less sensitive to the machine's other load than a rate), the context switches
per connection of each process's own threads and of its ZeroMQ I/O thread, the reader's counters that
changed, and the inspected-packet round-trip histogram. With `--py-spy DIR` (py-spy installed in the
venv) the reader and the worker are sampled meanwhile, one flame graph each.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lab.enforcer import LabEnforcer
from lab.topology import Lab, require_root
from scripts.loadtest import POLICY, RR_PORT, rrgen_binary

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> tuple[float, float]:
    """utime and stime of a process (every thread), from /proc. The kernel's share (stime) includes the
    forwarding of a re-injected packet, which runs in the verdict's system call."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def thread_switches(pid: int) -> dict[str, int]:
    """Context switches (voluntary + involuntary) per thread kind of a process, from /proc: each one a
    wake-up or a preemption. ZeroMQ's I/O thread ("ZMQbg/IO") apart from the process's own threads."""
    switches: dict[str, int] = {}
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        except OSError:
            continue  # the thread ended
        kind = "zmq io" if fields["Name"].strip().startswith("ZMQbg/IO") else "own"
        count = int(fields["voluntary_ctxt_switches"]) + int(fields["nonvoluntary_ctxt_switches"])
        switches[kind] = switches.get(kind, 0) + count
    return switches


def children(e: LabEnforcer) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in e.status().get("children", [])}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=("new", "app"), default="new")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--procs", type=int, default=4, help="rrgen crr client processes")
    ap.add_argument("--spin-us", type=int, default=None, help="workers.spin_us (default: the configured one)")
    ap.add_argument("--py-spy", default="", help="directory for py-spy flame graphs of the reader and worker")
    ap.add_argument("--py-spy-format", choices=("flamegraph", "raw"), default="flamegraph",
                    help="raw: collapsed stacks (one line per stack and its sample count), to sum by function")  # fmt: skip
    args = ap.parse_args()
    require_root()
    seconds = min(max(args.seconds, 1.0), 30.0)
    rrgen = rrgen_binary()
    workers: dict[str, Any] = {"count": 1, "inspect": args.mode}
    if args.spin_us is not None:
        workers["spin_us"] = args.spin_us
    sections = {"queues": {"readers": 1}, "workers": workers}
    with tempfile.TemporaryDirectory() as tmp, Lab(f"pr{os.getpid() % 10000}") as lab:
        policy = Path(tmp) / "policy.yaml"
        policy.write_text(POLICY)
        server = lab.popen("s1", rrgen, "serve", str(RR_PORT), "600", stdout=subprocess.PIPE, text=True)
        try:
            assert server.stdout is not None and server.stdout.readline().strip() == "ready"
            with LabEnforcer(lab, sections, policy=policy) as e:
                time.sleep(1.0)
                before = children(e)
                pids = {name: before[name]["pid"] for name in ("reader q0", "worker 0")}
                cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
                switches0 = {name: thread_switches(pid) for name, pid in pids.items()}
                spies = []
                if args.py_spy:
                    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
                    Path(args.py_spy).mkdir(parents=True, exist_ok=True)
                    for name, pid in pids.items():
                        suffix = ".svg" if args.py_spy_format == "flamegraph" else ".txt"
                        spy_out = Path(args.py_spy) / f"{args.mode}-{name.replace(' ', '-')}{suffix}"
                        spies.append(subprocess.Popen(
                            [spy, "record", "--native", "-r", "250", "-d", str(int(seconds) + 1), "-o", str(spy_out),
                             "-f", args.py_spy_format, "--pid", str(pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                        ))  # fmt: skip
                out = lab.exec("c1", rrgen, "crr", lab.host("s1").ipv4, str(RR_PORT), str(seconds),
                               str(args.procs), check=False, timeout=seconds + 30)  # fmt: skip
                cpu1 = {name: cpu_seconds(pid) for name, pid in pids.items()}
                switches1 = {name: thread_switches(pid) for name, pid in pids.items()}
                for spy_proc in spies:
                    spy_proc.wait(timeout=seconds + 30)
                time.sleep(1.2)  # the next heartbeats carry the counters
                after = children(e)
        finally:
            server.terminate()
            server.wait(timeout=5)
    gen = json.loads(out.stdout.strip().splitlines()[-1]) if out.stdout.strip() else {"error": out.stderr}
    spin = "" if args.spin_us is None else f", spin {args.spin_us} µs"
    print(f"mode {args.mode}{spin}, {seconds} s of rrgen crr x{args.procs}: {gen}")
    for name in pids:
        b, a = before[name]["counters"], after[name]["counters"]
        packets = a.get("packets", 0) - b.get("packets", 0)
        user, system = cpu1[name][0] - cpu0[name][0], cpu1[name][1] - cpu0[name][1]
        cpu = user + system
        per = cpu / packets * 1e6 if packets else 0.0
        print(f"{name}: cpu {cpu:.2f} s (user {user:.2f}, system {system:.2f}), packets {packets}, "
              f"{per:.1f} µs CPU per packet, {packets / cpu if cpu else 0:.0f} packets per CPU-second")  # fmt: skip
        ops = max(int(gen.get("ops", 0)), 1)
        woken = {kind: (n - switches0[name].get(kind, 0)) / ops for kind, n in switches1[name].items()}
        print(
            "  context switches per connection: "
            + ", ".join(f"{k} {v:.1f}" for k, v in sorted(woken.items()))
        )
        changed = {k: a[k] - b.get(k, 0) for k in sorted(a) if isinstance(a[k], int) and a[k] != b.get(k, 0)}
        print("  " + json.dumps(changed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
