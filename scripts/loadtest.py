#!/usr/bin/env python3
"""Size the enforcer: the same lab measured without and with the enforcer, in one run, interleaved.

    sudo .venv/bin/python scripts/loadtest.py [--reps 3] [--seconds 2] [--readers 2 --workers 2] [--json]

Tests: TCP bulk throughput with 1 and 4 streams; UDP small-packet rate delivered; new TCP connections
per second (one request per connection) with p50/p99 latency; request/response on one connection with
p50/p99 latency; and forced full inspection (every packet through a reader and a worker) to show the
pipeline's own capacity in packets/s per reader. Each figure is the median of `--reps` interleaved
runs; the ratio is enforced/baseline. Reader and worker CPU time and packets queued per connection are
reported too. The load generators are Python processes sharing the machine's cores with the
enforcer, so absolute figures are the generators' as much as the path's: read the ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil

from lab.enforcer import LabEnforcer
from lab.topology import Lab, require_root

PY = sys.executable


def client(lab: Lab, host: str, *args: str, timeout: float = 60) -> dict[str, Any]:
    out = lab.exec(host, PY, "-m", "lab.load", *args, check=True, timeout=timeout)
    return json.loads(out.stdout.strip().splitlines()[-1])


def udp_rate(lab: Lab, server: str, clients: list[str], seconds: float) -> dict[str, Any]:
    addr = lab.host(server).ipv4
    sink = lab.popen(server, PY, "-m", "lab.load", "udp-sink", "--port", "53", "--seconds", str(seconds + 2.5),
                     stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert sink.stdout is not None
    sink.stdout.readline()
    floods = [lab.popen(c, PY, "-m", "lab.load", "udp-flood", addr, "--seconds", str(seconds), "--size", "64",
                        stdout=subprocess.PIPE, text=True) for c in clients]  # fmt: skip
    sent = sum(json.loads(f.communicate(timeout=seconds + 30)[0])["sent"] for f in floods)
    received = json.loads(sink.communicate(timeout=seconds + 30)[0])["received"]
    return {
        "pps": round(received / seconds),
        "sent_pps": round(sent / seconds),
        "loss": round(1 - received / max(sent, 1), 4),
    }


class Probe:
    """Reader/worker CPU time and counters of a running enforcer, before and after a test."""

    def __init__(self, e: LabEnforcer | None) -> None:
        self.e = e
        self.before = self._snap()

    def _snap(self) -> dict[str, Any]:
        if self.e is None:
            return {}
        snap: dict[str, Any] = {}
        for c in self.e.status().get("children", []):
            cpu = 0.0
            try:
                t = psutil.Process(c["pid"]).cpu_times()
                cpu = t.user + t.system
            except (psutil.Error, TypeError):
                pass
            snap[c["name"]] = {"cpu": cpu, "packets": c["counters"].get("packets", 0)}
        return snap

    def delta(self, seconds: float) -> dict[str, Any]:
        if self.e is None:
            return {}
        after = self._snap()
        out: dict[str, Any] = {
            "reader_cpu": 0.0,
            "worker_cpu": 0.0,
            "reader_packets": 0,
            "per_reader_pps": {},
        }
        for name, a in after.items():
            b = self.before.get(name, {"cpu": 0.0, "packets": 0})
            if name.startswith("reader"):
                out["reader_cpu"] += (a["cpu"] - b["cpu"]) / seconds
                out["reader_packets"] += a["packets"] - b["packets"]
                out["per_reader_pps"][name] = round((a["packets"] - b["packets"]) / seconds)
            elif name.startswith("worker"):
                out["worker_cpu"] += (a["cpu"] - b["cpu"]) / seconds
        out["reader_cpu"] = round(out["reader_cpu"], 2)
        out["worker_cpu"] = round(out["worker_cpu"], 2)
        return out


def run_tests(lab: Lab, e: LabEnforcer | None, seconds: float, tests: list[str]) -> dict[str, dict[str, Any]]:
    web = lab.host("s1").ipv4
    results: dict[str, dict[str, Any]] = {}
    for test in tests:
        time.sleep(0.3)
        probe = Probe(e)
        if test == "tcp_bulk_1":
            r = client(lab, "c1", "bulk", web, "--streams", "1", "--seconds", str(seconds))
        elif test == "tcp_bulk_4":
            r = client(lab, "c1", "bulk", web, "--streams", "4", "--seconds", str(seconds))
        elif test == "udp_small":
            r = udp_rate(lab, "s1", ["c1"], seconds)
        # Forced inspection goes to the api server (Monitor mode): towards web (Protect) the threat
        # engine rightly takes a one-client flood for a DoS and blocks it, which measures nothing.
        elif test == "inspect_udp_small":
            r = udp_rate(lab, "s2", ["c1"], seconds)
        elif test == "inspect_udp_4_clients":
            # Four client addresses spread over the readers (the kernel hashes the address pair).
            r = udp_rate(lab, "s2", ["c1", "c2", "c3", "c4"], seconds)
        elif test == "tcp_connrate":
            r = client(lab, "c1", "connrate", web, "--seconds", str(seconds))
        elif test == "tcp_rr":
            r = client(lab, "c1", "rr", web, "--seconds", str(seconds))
        else:
            raise ValueError(test)
        time.sleep(0.5)  # let the heartbeat carry the counters
        r.update(probe.delta(seconds))
        if test == "tcp_connrate" and e is not None and r.get("connections"):
            r["queued_per_conn"] = round(r["reader_packets"] / r["connections"], 2)
        results[test] = r
    return results


MAIN_TESTS = ["tcp_bulk_1", "tcp_bulk_4", "udp_small", "tcp_connrate", "tcp_rr"]
INSPECT_TESTS = ["inspect_udp_small", "inspect_udp_4_clients"]
FIGURE = {
    "tcp_bulk_1": "gbit_s", "tcp_bulk_4": "gbit_s", "udp_small": "pps", "tcp_connrate": "conn_s",
    "tcp_rr": "rr_s", "inspect_udp_small": "pps", "inspect_udp_4_clients": "pps",
}  # fmt: skip
TARGETS = {"tcp_bulk_1": 0.95, "tcp_bulk_4": 0.95, "udp_small": 0.75, "tcp_connrate": 0.6}


def median(values: list[float]) -> float:
    return round(statistics.median(values), 3) if values else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--readers", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    ap.add_argument(
        "--no-conntrack-baseline",
        dest="conntrack_baseline",
        action="store_false",
        help="measure the baseline without connection tracking (by default it tracks, as any Kubernetes node)",
    )
    args = ap.parse_args()
    require_root()
    seconds = min(args.seconds, 10.0)
    runs: dict[str, list[dict[str, dict[str, Any]]]] = {"baseline": [], "enforced": [], "inspect": []}
    started = time.monotonic()
    base = {"queues": {"readers": args.readers}, "workers": {"count": args.workers}}
    with Lab("lt", clients=4) as lab:
        server = lab.popen(
            "s1", PY, "-m", "lab.load", "serve", "--seconds", "900", stdout=subprocess.PIPE, text=True
        )
        assert server.stdout is not None
        if args.conntrack_baseline:
            # Every Kubernetes node tracks connections (kube-proxy): so does the baseline, with the usual
            # stateful accept. Without it the baseline skips conntrack, which the enforcer needs.
            for tool in ("iptables", "ip6tables"):
                lab.node_exec(
                    tool,
                    "-A",
                    "FORWARD",
                    "-m",
                    "conntrack",
                    "--ctstate",
                    "ESTABLISHED,RELATED",
                    "-j",
                    "ACCEPT",
                )
        server.stdout.readline()
        try:
            for _ in range(args.reps):
                runs["baseline"].append(run_tests(lab, None, seconds, MAIN_TESTS))
                with LabEnforcer(lab, base) as e:
                    runs["enforced"].append(run_tests(lab, e, seconds, MAIN_TESTS))
                forced = {"queues": base["queues"], "workers": {**base["workers"], "inspect": "all"}}
                with LabEnforcer(lab, forced) as e:
                    runs["inspect"].append(run_tests(lab, e, seconds, INSPECT_TESTS))
        finally:
            server.terminate()
            server.wait(timeout=5)
    report = summarize(runs)
    report["meta"] = {"reps": args.reps, "seconds": seconds, "readers": args.readers, "workers": args.workers,
                      "cpus": psutil.cpu_count(), "conntrack_baseline": args.conntrack_baseline,
                      "wall_s": round(time.monotonic() - started, 1)}  # fmt: skip
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_table(report)
    return 0


def summarize(runs: dict[str, list[dict[str, dict[str, Any]]]]) -> dict[str, Any]:
    out: dict[str, Any] = {"tests": {}}
    for test in MAIN_TESTS:
        fig = FIGURE[test]
        b = median([r[test][fig] for r in runs["baseline"]])
        e = median([r[test][fig] for r in runs["enforced"]])
        row: dict[str, Any] = {
            "figure": fig,
            "baseline": b,
            "enforced": e,
            "ratio": round(e / b, 3) if b else None,
        }
        if test in TARGETS:
            row["target_ratio"] = TARGETS[test]
        for extra in ("p50_us", "p99_us"):
            if extra in runs["baseline"][0][test]:
                row[f"baseline_{extra}"] = median([r[test][extra] for r in runs["baseline"]])
                row[f"enforced_{extra}"] = median([r[test][extra] for r in runs["enforced"]])
        if test == "tcp_rr":
            row["added_p50_us"] = round(row["enforced_p50_us"] - row["baseline_p50_us"], 1)
            row["target_added_p50_us"] = 15
        for extra in ("reader_cpu", "worker_cpu", "queued_per_conn"):
            values = [r[test][extra] for r in runs["enforced"] if extra in r[test]]
            if values:
                row[f"enforced_{extra}"] = median(values)
        out["tests"][test] = row
    for test in INSPECT_TESTS:
        per_reader = [r[test]["per_reader_pps"] for r in runs["inspect"]]
        names = sorted({n for pr in per_reader for n in pr})
        out["tests"][test] = {
            "figure": "pps",
            "delivered_pps": median([r[test]["pps"] for r in runs["inspect"]]),
            "per_reader_pps": {n: median([pr.get(n, 0) for pr in per_reader]) for n in names},
            "reader_cpu": median([r[test]["reader_cpu"] for r in runs["inspect"]]),
            "worker_cpu": median([r[test]["worker_cpu"] for r in runs["inspect"]]),
            "target_pps_per_pair": 120_000,
        }
    return out


def print_table(report: dict[str, Any]) -> None:
    print(
        f"{'test':24s} {'figure':8s} {'baseline':>12s} {'enforced':>12s} {'ratio':>7s} {'target':>7s}  notes"
    )
    for test, row in report["tests"].items():
        if "baseline" in row:
            target = row.get("target_ratio", "")
            notes = []
            if "enforced_p50_us" in row:
                notes.append(
                    f"p50 {row['baseline_p50_us']}→{row['enforced_p50_us']}µs p99 {row['baseline_p99_us']}→{row['enforced_p99_us']}µs"
                )
            if "added_p50_us" in row:
                notes.append(f"added p50 {row['added_p50_us']}µs (target ≤15)")
            if "enforced_queued_per_conn" in row:
                notes.append(f"queued/conn {row['enforced_queued_per_conn']}")
            notes.append(
                f"cpu reader {row.get('enforced_reader_cpu', 0)} worker {row.get('enforced_worker_cpu', 0)}"
            )
            print(
                f"{test:24s} {row['figure']:8s} {row['baseline']:>12} {row['enforced']:>12} {row['ratio']!s:>7s} {target!s:>7s}  {'; '.join(notes)}"
            )
        else:
            print(
                f"{test:24s} {'pps':8s} {'':>12s} {row['delivered_pps']:>12} {'':>7s} {'':>7s}  per reader {row['per_reader_pps']} "
                f"(target ≥{row['target_pps_per_pair']}/pair); cpu reader {row['reader_cpu']} worker {row['worker_cpu']}"
            )
    m = report["meta"]
    print(
        print(
            f"\n{m['reps']} interleaved runs of {m['seconds']}s per test, {m['readers']} readers, {m['workers']} workers, "
            f"{m['cpus']} CPUs, baseline with conntrack: {m.get('conntrack_baseline')}; wall {m['wall_s']}s"
        )
    )


if __name__ == "__main__":
    sys.exit(main())
