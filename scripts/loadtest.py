#!/usr/bin/env python3
"""Size the enforcer with compiled generators: the lab without and with the enforcer, interleaved.

    sudo .venv/bin/python scripts/loadtest.py [--reps 3] [--seconds 3] [--modes new,app,all] [--json]

Generators (compiled, so the baseline measures the path and not the client): iperf3 (Debian) for TCP
bulk with 1 and 4 streams and for UDP 64-byte datagrams; `lab/rrgen.c` (built by scripts/setup.sh, or
here with gcc when missing) for new TCP connections per second (4 processes, one 64-byte request per
connection) and request/response on one connection. Policy: an L3/L4 Protect policy (no application
rule), so the default configuration inspects by default and `inspect = "app"` is the L4-only path.

Each rep runs, in this order, the baseline (no enforcer, conntrack on as on any Kubernetes node), then
the enforcer in each mode of `--modes`; figures are medians over the reps, printed beside the baseline
they are divided by. `all` (every packet through a reader and a worker) runs the UDP test only: its
figure is the packets/s the readers judged (a full queue passes the rest unjudged: delivered is not
judged), against the goal of 120k per reader+worker pair. For each enforced run: reader and worker CPU (cores, from
psutil) and the readers' worker-verdict latency histogram (inspected packets: reader → worker →
verdict), read from `/metrics`, summed over the reps. The machine's other load is not controlled: on a
shared machine absolute figures are noisy, and even the ratios move.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil

from lab.enforcer import LabEnforcer
from lab.topology import Lab, require_root

ROOT = Path(__file__).resolve().parent.parent
IPERF_PORT, RR_PORT = 5201, 80
CRR_PROCS = 4  # parallel connection loops (the lab's client has the machine's cores to itself)
POLICY = f"""
version: 1
default_mode: monitor
groups:
  - {{name: clients, mode: monitor, members: [198.18.1.0/24]}}
  - {{name: web, mode: protect, members: [198.18.2.11/32]}}
rules:
  - {{id: 10, from: clients, to: web, ports: [tcp/{RR_PORT}, tcp/{IPERF_PORT}, udp/{IPERF_PORT}], action: allow}}
threats:  # one client opening 30k connections/s is the test, not an attack: the guard still counts
  source_session_flood: {{thresholds: {{sessions_per_window: 10000000}}}}
  syn_flood: {{thresholds: {{syns_per_window: 10000000}}}}
  udp_flood: {{enabled: false}}  # an unlimited iperf3 -u on one socket is a single-flow flood by its nature
"""
TESTS = ["tcp_bulk_1", "tcp_bulk_4", "udp_small", "tcp_crr", "tcp_rr"]
FORCED_TESTS = ["udp_small"]


def variant(mode: str) -> dict[str, dict[str, Any]]:
    """The config sections of a `--modes` entry: an inspect mode, optionally with variants after `@`, so
    settings are compared interleaved in one run: `spinN` (`workers.spin_us = N`), `loudacks`
    (`netfilter.quiet_acks = false`: every bare ACK of an inspected connection is queued), `udprateN`
    (`netfilter.udp_flow_rate = N`: `udprate0` takes the kernel's rate check of offloaded UDP flows out,
    `udprate1000000` keeps it on every datagram of this lab's flows), e.g. `new@spin50`, `new@loudacks`."""
    inspect, _, extras = mode.partition("@")
    sections: dict[str, dict[str, Any]] = {"workers": {"inspect": inspect}}
    for extra in filter(None, extras.split("@")):
        if extra.startswith("spin") and extra[4:].isdigit():
            sections["workers"]["spin_us"] = int(extra[4:])
        elif extra == "loudacks":
            sections.setdefault("netfilter", {})["quiet_acks"] = False
        elif extra.startswith("udprate") and extra[7:].isdigit():
            sections.setdefault("netfilter", {})["udp_flow_rate"] = int(extra[7:])
        else:
            raise SystemExit(
                f"loadtest: bad mode variant {mode!r} (expected e.g. new@spin50, new@loudacks, new@udprate0)"
            )
    return sections


def inspect_of(mode: str) -> str:
    return mode.partition("@")[0]


FIGURE = {
    "tcp_bulk_1": "gbit_s",
    "tcp_bulk_4": "gbit_s",
    "udp_small": "pps",
    "tcp_crr": "conn_s",
    "tcp_rr": "rr_s",
}
# Targets of the "protection on by default, at line rate" issue: ratio to the baseline, per mode.
TARGETS = {
    "new": {"tcp_bulk_1": 0.9, "tcp_bulk_4": 0.9, "udp_small": 0.75, "tcp_crr": 0.35},
    "app": {"tcp_crr": 0.6},
}
TARGET_ADDED_RR_P50_US = {"new": 100, "app": 10}
LATENCY = re.compile(
    r'^enforcer_reader_inspect_latency_seconds_bucket\{child="([^"]+)",le="([^"]+)"\} ([0-9.e+]+)$'
)


def rrgen_binary() -> str:
    """The compiled request/response generator: the venv's (scripts/setup.sh), else built now."""
    built = Path(sys.executable).parent / "rrgen"
    if built.exists():
        return str(built)
    out = Path(tempfile.mkdtemp(prefix="rrgen-")) / "rrgen"
    subprocess.run(["gcc", "-O2", "-o", str(out), str(ROOT / "lab" / "rrgen.c")], check=True)
    return str(out)


def iperf(lab: Lab, addr: str, seconds: float, *extra: str) -> dict[str, Any]:
    out = lab.exec("c1", "iperf3", "-c", addr, "-p", str(IPERF_PORT), "-t", str(seconds), "-J", *extra,
                   check=False, timeout=seconds + 30)  # fmt: skip
    try:
        return json.loads(out.stdout)
    except json.JSONDecodeError:
        return {"error": out.stderr.strip() or out.stdout[-200:]}


def run_test(lab: Lab, rrgen: str, test: str, seconds: float) -> dict[str, Any]:
    web = lab.host("s1").ipv4
    if test in ("tcp_bulk_1", "tcp_bulk_4"):
        doc = iperf(lab, web, seconds, "-P", "1" if test == "tcp_bulk_1" else "4")
        bps = doc.get("end", {}).get("sum_received", {}).get("bits_per_second", 0.0)
        return {"gbit_s": round(bps / 1e9, 3), "error": doc.get("error", "")}
    if test == "udp_small":
        doc = iperf(lab, web, seconds, "-u", "-b", "0", "-l", "64")
        s = doc.get("end", {}).get("sum", {})
        delivered = s.get("packets", 0) - s.get("lost_packets", 0)
        return {"pps": round(delivered / max(s.get("seconds", seconds), 1e-9)), "sent": s.get("packets", 0),
                "error": doc.get("error", "")}  # fmt: skip
    if test in ("tcp_crr", "tcp_rr"):
        mode = "crr" if test == "tcp_crr" else "rr"
        args = [rrgen, mode, web, str(RR_PORT), str(seconds)] + ([str(CRR_PROCS)] if mode == "crr" else [])
        out = lab.exec("c1", *args, check=False, timeout=seconds + 30)
        try:
            doc = json.loads(out.stdout.strip().splitlines()[-1])
        except (json.JSONDecodeError, IndexError):
            return {FIGURE[test]: 0.0, "error": out.stderr.strip()[-200:]}
        return {FIGURE[test]: doc["per_s"], "p50_us": doc["p50_us"], "p99_us": doc["p99_us"],
                "errors": doc["errors"]}  # fmt: skip
    raise ValueError(test)


class Probe:
    """Reader/worker CPU time and the readers' latency histogram of a running enforcer around a test."""

    def __init__(self, e: LabEnforcer | None) -> None:
        self.e = e
        self.before = self._snap()

    def _cpu(self) -> tuple[dict[str, float], int]:
        """CPU seconds per child, and the packets the readers judged (a full queue passes the rest
        unjudged: `queues` fail-open, so delivered is not judged)."""
        assert self.e is not None
        cpu: dict[str, float] = {}
        judged = 0
        for c in self.e.status().get("children", []):
            if c.get("name", "").startswith("reader"):
                judged += c.get("counters", {}).get("packets", 0)
            try:
                t = psutil.Process(c["pid"]).cpu_times()
                cpu[c["name"]] = t.user + t.system
            except (psutil.Error, TypeError, KeyError):
                pass
        return cpu, judged

    def _latency(self) -> dict[str, int]:
        """Cumulative bucket counts summed over readers, from /metrics."""
        assert self.e is not None
        out = self.e.lab.node_exec(
            sys.executable, "-c",
            "import urllib.request,sys;sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:9464/metrics',"
            "timeout=2).read().decode())",
            check=False,
        )  # fmt: skip
        buckets: dict[str, int] = {}
        for line in out.stdout.splitlines():
            m = LATENCY.match(line)
            if m:
                buckets[m.group(2)] = buckets.get(m.group(2), 0) + int(float(m.group(3)))
        return buckets

    def _snap(self) -> dict[str, Any]:
        if self.e is None:
            return {}
        cpu, judged = self._cpu()
        return {"cpu": cpu, "judged": judged, "latency": self._latency()}

    def delta(self, seconds: float) -> dict[str, Any]:
        if self.e is None:
            return {}
        time.sleep(0.5)  # the heartbeat carries the counters a fraction of a second later
        after = self._snap()
        reader = sum(
            v - self.before["cpu"].get(k, 0.0) for k, v in after["cpu"].items() if k.startswith("reader")
        )
        worker = sum(
            v - self.before["cpu"].get(k, 0.0) for k, v in after["cpu"].items() if k.startswith("worker")
        )
        latency = {le: n - self.before["latency"].get(le, 0) for le, n in after["latency"].items()}
        judged_pps = round((after["judged"] - self.before["judged"]) / seconds)
        return {"reader_cpu": round(reader / seconds, 2), "worker_cpu": round(worker / seconds, 2),
                "latency": latency, "judged_pps": judged_pps}  # fmt: skip


def require_policy(e: LabEnforcer, timeout: float = 10.0) -> None:
    """Measure only under the test's policy: a rejected one leaves the start-up policy (Monitor, no rule)
    and the catalogue's flood thresholds in force, which is another test."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for c in e.status().get("children", []):
            counters = c.get("counters", {})
            if c.get("name", "").startswith("policy") and counters.get("policy.version") == 1:
                return
            if counters.get("policy.rejected"):
                raise RuntimeError(f"loadtest: the enforcer rejected the test policy:\n{e.log()[-2000:]}")
        time.sleep(0.2)
    raise RuntimeError("loadtest: the test policy was not applied in time")


def run_all(lab: Lab, e: LabEnforcer | None, rrgen: str, tests: list[str], seconds: float) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for test in tests:
        time.sleep(0.3)
        probe = Probe(e)
        r = run_test(lab, rrgen, test, seconds)
        r.update(probe.delta(seconds))
        results[test] = r
    return results


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3) if values else 0.0


def summarize(runs: dict[str, list[dict[str, Any]]], modes: list[str], tests: list[str]) -> dict[str, Any]:
    report: dict[str, Any] = {"tests": {}, "latency": {}}
    for test in tests:
        fig = FIGURE[test]
        base = median([r[test][fig] for r in runs["baseline"]])
        row: dict[str, Any] = {"figure": fig, "baseline": base}
        if "p50_us" in runs["baseline"][0][test]:
            row["baseline_p50_us"] = median([r[test]["p50_us"] for r in runs["baseline"]])
        for mode in modes:
            if inspect_of(mode) == "all" and test not in FORCED_TESTS:
                continue
            rs = [r[test] for r in runs[mode]]
            value = median([r[fig] for r in rs])
            cell: dict[str, Any] = {"value": value, "ratio": round(value / base, 3) if base else None,
                                    "reader_cpu": median([r["reader_cpu"] for r in rs]),
                                    "worker_cpu": median([r["worker_cpu"] for r in rs])}  # fmt: skip
            cell["judged_pps"] = median([r["judged_pps"] for r in rs])
            target = TARGETS.get(inspect_of(mode), {}).get(test)
            if target is not None:
                cell["target_ratio"] = target
            if "p50_us" in rs[0]:
                cell["p50_us"] = median([r["p50_us"] for r in rs])
                cell["p99_us"] = median([r["p99_us"] for r in rs])
                if test == "tcp_rr":
                    cell["added_p50_us"] = round(cell["p50_us"] - row["baseline_p50_us"], 1)
                    if inspect_of(mode) in TARGET_ADDED_RR_P50_US:
                        cell["target_added_p50_us"] = TARGET_ADDED_RR_P50_US[inspect_of(mode)]
            row[mode] = cell
        report["tests"][test] = row
    for mode in modes:
        hist: dict[str, int] = {}
        for r in runs[mode]:
            for test in r.values():
                for le, n in test.get("latency", {}).items():
                    hist[le] = hist.get(le, 0) + n
        report["latency"][mode] = dict(sorted(hist.items(), key=lambda kv: float(kv[0])))
    return report


def print_report(report: dict[str, Any], modes: list[str]) -> None:
    m = report["meta"]
    print(f"{m['reps']} interleaved reps of {m['seconds']} s per test, medians; {m['readers']} readers, "
          f"{m['workers']} workers, {m['cpus']} CPUs; wall {m['wall_s']} s. Shared machine: absolute figures "
          "are noisy.\n")  # fmt: skip
    for test, row in report["tests"].items():
        base = f"{row['baseline']} {row['figure']}"
        if "baseline_p50_us" in row:
            base += f" (p50 {row['baseline_p50_us']} µs)"
        print(f"{test:11s} baseline {base}")
        for mode in modes:
            cell = row.get(mode)
            if cell is None:
                continue
            line = f"  {mode:4s} {cell['value']:>12} {row['figure']:6s} ratio {cell['ratio']!s:6s}"
            if "target_ratio" in cell:
                line += f" (target ≥{cell['target_ratio']})"
            if "p50_us" in cell:
                line += f"  p50 {cell['p50_us']} p99 {cell['p99_us']} µs"
            if "added_p50_us" in cell:
                line += f", added p50 {cell['added_p50_us']} µs"
                if "target_added_p50_us" in cell:
                    line += f" (target ≤{cell['target_added_p50_us']})"
            line += f"  cpu reader {cell['reader_cpu']} worker {cell['worker_cpu']}, judged {cell['judged_pps']} pkt/s"
            print(line)
    print(
        "\nworker-verdict latency of inspected packets (reader → worker → verdict), cumulative counts, all reps:"
    )
    for mode, hist in report["latency"].items():
        counts = " ".join(f"≤{_us(le)}:{n}" for le, n in hist.items()) or "none"
        print(f"  {mode:4s} {counts}; median in ≤{_median_bucket(hist)} µs")


def _us(le: str) -> str:
    return le if le == "+Inf" else f"{float(le) * 1e6:g}"


def _median_bucket(hist: dict[str, int]) -> str:
    """The upper bound (µs) of the bucket holding the median of a cumulative histogram."""
    total = max(hist.values(), default=0)
    for le, n in hist.items():
        if total and n * 2 >= total:
            return _us(le)
    return "-"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--readers", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--modes", default="new,app,all", help="workers.inspect modes to measure, in this order")
    ap.add_argument("--tests", default=",".join(TESTS), help="tests to run, in this order")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = ap.parse_args()
    require_root()
    if shutil.which("iperf3") is None:
        print("loadtest: iperf3 is missing (scripts/setup.sh installs it)", file=sys.stderr)
        return 2
    modes = [m for m in args.modes.split(",") if m]
    for mode in modes:
        variant(mode)  # a bad entry stops us before the lab is built
    tests = [t for t in args.tests.split(",") if t]
    if not tests or any(t not in TESTS for t in tests):
        print(f"loadtest: --tests takes some of {','.join(TESTS)}", file=sys.stderr)
        return 2
    seconds = min(max(args.seconds, 1.0), 30.0)
    rrgen = rrgen_binary()
    runs: dict[str, list[dict[str, Any]]] = {"baseline": [], **{m: [] for m in modes}}
    started = time.monotonic()
    base = {"queues": {"readers": args.readers}, "workers": {"count": args.workers}}
    with tempfile.TemporaryDirectory() as tmp, Lab(f"lt{os.getpid() % 10000}") as lab:
        policy = Path(tmp) / "policy.yaml"
        policy.write_text(POLICY)
        # Every Kubernetes node tracks connections (kube-proxy): so does the baseline.
        for tool in ("iptables", "ip6tables"):
            lab.node_exec(
                tool, "-A", "FORWARD", "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"
            )
        servers = [
            lab.popen("s1", "iperf3", "-s", "-p", str(IPERF_PORT), stdout=subprocess.DEVNULL),
            lab.popen("s1", rrgen, "serve", str(RR_PORT), "3600", stdout=subprocess.PIPE, text=True),
        ]
        try:
            assert servers[1].stdout is not None and servers[1].stdout.readline().strip() == "ready"
            time.sleep(0.3)  # iperf3 binds
            for _ in range(args.reps):
                runs["baseline"].append(run_all(lab, None, rrgen, tests, seconds))
                for mode in modes:
                    chosen_sections = variant(mode)
                    sections = {
                        **chosen_sections,
                        "queues": base["queues"],
                        "workers": {**base["workers"], **chosen_sections["workers"]},
                    }
                    with LabEnforcer(lab, sections, policy=policy) as e:
                        require_policy(e)
                        chosen = (
                            [t for t in tests if t in FORCED_TESTS] if inspect_of(mode) == "all" else tests
                        )
                        runs[mode].append(run_all(lab, e, rrgen, chosen, seconds))
        finally:
            for proc in servers:
                proc.terminate()
                proc.wait(timeout=5)
    report = summarize(runs, modes, tests)
    report["meta"] = {"reps": args.reps, "seconds": seconds, "readers": args.readers, "workers": args.workers,
                      "cpus": psutil.cpu_count(), "wall_s": round(time.monotonic() - started, 1)}  # fmt: skip
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report, modes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
