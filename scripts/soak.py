#!/usr/bin/env python3
"""Soak: the real enforcer in a lab under mixed inspected traffic for N minutes, with a policy change
every minute; RSS and open file descriptors of every process and the readers' inspect latency sampled
every few seconds.

Traffic (`lab.load mixed`, bounded rate): HTTP requests on a kept-alive connection (api, Monitor), on new
connections (web, Protect), DNS queries, and a SQL injection every `--attack-every` operations. The policy
file changes every `--policy-every` seconds (version bumped, a rule added or removed). The curve is printed
as a table (one line per sample); `--png FILE` draws it with matplotlib when it is installed.

Warm-up: until every worker's tables that traffic fills (`FILLING_TABLES`) are full: those with a cap in
entries (the evidence rings of recent flows, the injection checks' value cache) at their caps, read from the
workers' metrics; those bounded by time (the flows the threat detector follows) once their idle timeout has
passed. A run that ends before is a failure (`--warmup SECONDS` overrides). `--caps` prints each capped
table's cap in bytes.

Verdict after the warm-up: RSS of each process grows at most 5%
(median of the last fifth against the median of the first fifth after warm-up), its open descriptors do
not grow (same comparison), and the verdict latency does not rise (mean latency per interval: median of the
last third at most 1.5x that of the first third, plus one histogram bucket). Exit status 1 when one fails.

Run as root: `scripts/soak.py --minutes 30` (bounded: at most 240 minutes).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lab.enforcer import LAB_POLICY, LabEnforcer  # noqa: E402
from lab.topology import Lab, require_root  # noqa: E402
from threats.packets import PacketLimits  # noqa: E402
from workers.detect.evidence import EvidenceLimits  # noqa: E402
from workers.detect.injection import VALUE_CACHE_ENTRIES  # noqa: E402
from workers.dpi.settings import DpiSettings  # noqa: E402

MAX_MINUTES = 240.0
RSS_GROWTH_LIMIT = 0.05
LATENCY_RISE_LIMIT = 1.5
LATENCY_FAMILY = "enforcer_reader_inspect_latency_seconds"
METRICS = (
    "import urllib.request,sys;"
    "sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:9464/metrics',timeout=5).read().decode())"
)
SOAK_RULE = "  - {id: 70, from: clients, to: web, ports: [tcp/8070], action: allow, comment: soak}\n"


@dataclass(frozen=True)
class FillingTable:
    """A worker table that traffic fills: up to a cap in entries (LRU beyond it), or, without a cap, until
    its entries start to expire (`timeout` seconds after the traffic began: then it holds a sliding window)."""

    name: str
    metric: str  # the worker stat as the metrics endpoint names it
    cap: int  # 0: bounded by time
    timeout: float
    what: str


FILLING_TABLES = (
    FillingTable("evidence_flows", "enforcer_worker_detect_evidence_flows_total", EvidenceLimits().max_flows, 0.0,
                 "flows whose last packets are kept for evidence"),
    FillingTable("value_cache", "enforcer_worker_detect_value_cache_total", VALUE_CACHE_ENTRIES, 0.0,
                 "request values whose injection checks are remembered"),
    FillingTable("detect_flows", "enforcer_worker_detect_flows_total", 0, PacketLimits().flow_idle_timeout,
                 "flows the packet threat detector follows (forgotten after the idle timeout)"),
    FillingTable("dpi_flows", "enforcer_worker_flows_total", 0, DpiSettings().tcp_closed_timeout,
                 "flows the DPI engine holds (closed or blocked ones for the closed timeout)"),
)  # fmt: skip
TABLES = {t.name: t for t in FILLING_TABLES}
CAPTURES_METRIC = "enforcer_worker_detect_evidence_captures_total"


@dataclass
class Sample:
    t: float  # seconds since the start
    rss_mib: dict[str, float] = field(default_factory=dict)
    fds: dict[str, int] = field(default_factory=dict)
    latency_ms: float | None = None  # mean verdict latency of the workers since the previous sample
    verdicts: int = 0  # worker verdicts since the previous sample
    restarts: int = 0
    tables: dict[str, int] = field(default_factory=dict)  # entries per "<table> <child>" (FILLING_TABLES)


def process_table(e: LabEnforcer) -> dict[str, int]:
    pids = dict(e.child_pids())
    if e.proc is not None:
        pids["supervisor"] = e.proc.pid
    return pids


def read_metrics(lab: Lab) -> str:
    return lab.node_exec(sys.executable, "-c", METRICS, check=False).stdout


def latency_totals(text: str) -> tuple[float, float, list[tuple[float, float]]]:
    """(sum, count, buckets) of the readers' inspect latency histogram (queue → worker → verdict), summed over the readers."""
    from prometheus_client.parser import text_string_to_metric_families

    total = count = 0.0
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != LATENCY_FAMILY:
            continue
        for s in family.samples:
            if s.name.endswith("_sum"):
                total += s.value
            elif s.name.endswith("_count"):
                count += s.value
            elif s.name.endswith("_bucket"):
                le = float(s.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + s.value
    return total, count, sorted(buckets.items())


def table_fills(text: str) -> dict[str, int]:
    """Entries in each worker's bounded tables that fill under traffic, keyed "<table> <child>"."""
    from prometheus_client.parser import text_string_to_metric_families

    fills: dict[str, int] = {}
    for family in text_string_to_metric_families(text):
        for table in FILLING_TABLES:
            if family.name in (table.metric, table.metric.removesuffix("_total")):
                for s in family.samples:
                    fills[f"{table.name} {s.labels.get('child', '?')}"] = int(s.value)
    return fills


def captures(text: str) -> dict[str, int]:
    """Evidence snapshots each worker keeps now (a table the soak's attack rate fills slowly)."""
    from prometheus_client.parser import text_string_to_metric_families

    return {
        s.labels.get("child", "?"): int(s.value)
        for family in text_string_to_metric_families(text)
        if family.name in (CAPTURES_METRIC, CAPTURES_METRIC.removesuffix("_total"))
        for s in family.samples
        if s.name == CAPTURES_METRIC
    }


def full_time(table: FillingTable, key: str, samples: list[Sample], sweep_s: float) -> float | None:
    """When the table of one worker is full: the first sample at its cap (LRU tables stay full once full),
    or for a table bounded by time its timeout plus one sweep after the start (None: not in this run)."""
    if table.cap == 0:
        at = table.timeout + sweep_s
        return at if samples and samples[-1].t >= at else None
    return next((s.t for s in samples if s.tables.get(key, 0) >= table.cap), None)


def full_times(samples: list[Sample], sweep_s: float) -> dict[str, float | None]:
    """`full_time` of every table of every worker, keyed "<table> <child>"."""
    keys = sorted({key for s in samples for key in s.tables})
    return {key: full_time(TABLES[key.split(" ", 1)[0]], key, samples, sweep_s) for key in keys}


def warmup_end(samples: list[Sample], sweep_s: float) -> float | None:
    """The end of the warm-up: when the last of the workers' filling tables is full (None: never)."""
    times = list(full_times(samples, sweep_s).values())
    if not times or any(t is None for t in times):
        return None
    return max(t for t in times if t is not None)


def bucket_width_ms(buckets: list[tuple[float, float]], around_ms: float) -> float:
    """Width of the histogram bucket that holds `around_ms`: the resolution of a latency comparison."""
    bounds = [0.0] + [le * 1000 for le, _ in buckets if le != float("inf")]
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        if lo <= around_ms <= hi:
            return hi - lo
    return bounds[-1] if bounds else 0.0


class PolicyChanger:
    """Every change: the version goes up by one and the soak rule comes or goes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.version = 1
        self.with_rule = False
        path.write_text(LAB_POLICY.read_text())

    def change(self) -> int:
        self.version += 1
        self.with_rule = not self.with_rule
        text = LAB_POLICY.read_text().replace("version: 1\n", f"version: {self.version}\n")
        if self.with_rule:
            text = text.rstrip("\n") + "\n" + SOAK_RULE
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(self.path)
        return self.version


def keep_memtrace(run_dir: Path, dest: Path) -> list[str]:
    """Copy the children's allocation reports (node/memtrace.py) out of the run directory, which goes
    with the enforcer; private like the originals."""
    kept = []
    for report in sorted(run_dir.glob("memtrace-*.txt")):
        target = dest / report.name
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(report.read_text())
        kept.append(str(target))
    return kept


def traced_bytes(build: Callable[[], object]) -> int:
    """Python heap bytes that what `build` returns holds (tracemalloc: what is still allocated after it)."""
    import gc
    import tracemalloc

    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = build()
        gc.collect()
        size = tracemalloc.get_traced_memory()[0] - before
        del kept
    finally:
        tracemalloc.stop()
    return size


def table_caps() -> list[tuple[str, int, int, str]]:
    """(table, cap in entries, bytes at the cap, what fills it) of each worker table that grows under a
    soak, filled here to its cap with entries of the largest size it keeps."""
    from core.flow import FlowKey
    from workers.detect import injection
    from workers.detect.evidence import EvidenceStore

    lim = EvidenceLimits()
    big = bytes(1500)  # cut to max_packet_bytes when kept

    def flow(i: int) -> FlowKey:
        return FlowKey(
            6, bytes([198, 18, i >> 8 & 255, i & 255]), 40000 + i % 20000, bytes([198, 19, 0, 1]), 80
        )

    def rings() -> EvidenceStore:
        store = EvidenceStore(lim)
        for i in range(lim.max_flows * 2):  # twice the cap: the LRU keeps max_flows
            for n in range(lim.packets_per_flow):
                store.record(flow(i), float(n), big[:-1] + bytes([i & 255]))
        return store

    def captures() -> EvidenceStore:
        store = EvidenceStore(dataclasses.replace(lim, max_flows=1))
        for i in range(lim.max_captures * 2):
            for n in range(lim.packets_per_flow):
                store.record(flow(0), float(i * 100 + n), big)
            store.snapshot(flow(0), float(i), big[:-1] + bytes([i & 255]))
        store._rings = type(store._rings)(1)  # only the snapshots counted
        return store

    def values() -> int:
        injection._value_hits.cache_clear()
        for i in range(VALUE_CACHE_ENTRIES * 2):
            injection._value_hits(f"{i:08d}".ljust(injection.MAX_CACHED_VALUE, "a"), False)
        return injection.value_cache_entries()

    return [
        ("evidence rings", lim.max_flows, traced_bytes(rings),
         f"{lim.packets_per_flow} packets x {lim.max_packet_bytes} B per flow, LRU over flows"),
        ("evidence captures", lim.max_captures, traced_bytes(captures),
         f"snapshots of {lim.packets_per_flow + 1} packets x {lim.max_packet_bytes} B"),
        ("value cache", VALUE_CACHE_ENTRIES, traced_bytes(values),
         f"values of {injection.MAX_CACHED_VALUE} characters and their two checks"),
    ]  # fmt: skip


def print_caps() -> None:
    print(f"{'table (per worker)':<20} {'cap':>6} {'MiB at cap':>10}  entries of the largest size kept")
    for name, cap, size, what in table_caps():
        print(f"{name:<20} {cap:6d} {size / 2**20:10.2f}  {what}")


def fill_lines(samples: list[Sample], meta: dict[str, Any], warmup_s: float, sweep_s: float) -> list[str]:
    """Each worker's filling tables: when full, entries at the end of the warm-up and at the end."""
    lines = ["filling tables (per worker; caps in bytes: --caps):"]
    at_warmup = next((s for s in samples if s.t >= warmup_s), samples[-1])
    for key, t in full_times(samples, sweep_s).items():
        table = TABLES[key.split(" ", 1)[0]]
        bound = f"cap {table.cap}" if table.cap else f"timeout {table.timeout:g} s"
        when = f"full at {t / 60:5.2f} min" if t is not None else "not full"
        lines.append(f"  {key:<24} {bound:<15} {when:<17} entries {at_warmup.tables.get(key, 0):6d} at the "
                     f"warm-up's end, {samples[-1].tables.get(key, 0):6d} at the end")  # fmt: skip
    for child, n in sorted(meta.get("captures", {}).items()):
        lines.append(
            f"  evidence_captures {child:<8} cap {EvidenceLimits().max_captures:<11} {n:6d} at the end"
        )
    return lines


def median_of(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def judge(samples: list[Sample], warmup_s: float) -> tuple[list[str], list[str]]:
    """(lines of the verdict, failures)."""
    after = [s for s in samples if s.t >= warmup_s]
    lines: list[str] = []
    failures: list[str] = []
    if len(after) < 10:
        return lines, [f"only {len(after)} samples after the warm-up: run longer"]
    fifth = max(2, len(after) // 5)
    first, last = after[:fifth], after[-fifth:]
    for name in sorted(after[0].rss_mib):
        a = median_of([s.rss_mib[name] for s in first if name in s.rss_mib])
        b = median_of([s.rss_mib[name] for s in last if name in s.rss_mib])
        growth = (b - a) / a if a else 0.0
        fa = median_of([s.fds[name] for s in first if name in s.fds])
        fb = median_of([s.fds[name] for s in last if name in s.fds])
        ok = growth <= RSS_GROWTH_LIMIT and fb <= fa
        lines.append(f"  {name:<12} RSS {a:7.1f} -> {b:7.1f} MiB ({growth:+.1%})   fds {fa:5.0f} -> {fb:5.0f}"
                     + ("" if ok else "   FAILED"))  # fmt: skip
        if growth > RSS_GROWTH_LIMIT:
            failures.append(f"{name}: RSS grew {growth:.1%} after warm-up (limit {RSS_GROWTH_LIMIT:.0%})")
        if fb > fa:
            failures.append(f"{name}: open descriptors grew from {fa:.0f} to {fb:.0f}")
    third = max(2, len(after) // 3)
    lat_first = [s.latency_ms for s in after[:third] if s.latency_ms is not None]
    lat_last = [s.latency_ms for s in after[-third:] if s.latency_ms is not None]
    if not lat_first or not lat_last:
        failures.append("no verdict latency measured (no inspected traffic reached the workers)")
    else:
        a, b = median_of(lat_first), median_of(lat_last)
        slack = samples[-1].__dict__.get("bucket_ms", 0.0)
        limit = a * LATENCY_RISE_LIMIT + slack
        lines.append(f"  verdict latency (mean per interval) {a:.3f} -> {b:.3f} ms (limit {limit:.3f} ms)")
        if b > limit:
            failures.append(f"verdict latency rose from {a:.3f} to {b:.3f} ms (limit {limit:.3f} ms)")
    return lines, failures


def draw(samples: list[Sample], path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("soak: matplotlib is not installed; no PNG drawn", file=sys.stderr)
        return
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    names = sorted({n for s in samples for n in s.rss_mib})
    minutes = [s.t / 60 for s in samples]
    for name in names:
        ax1.plot(minutes, [s.rss_mib.get(name, float("nan")) for s in samples], label=name)
        ax2.plot(minutes, [s.fds.get(name, float("nan")) for s in samples], label=name)
    ax3.plot(minutes, [s.latency_ms if s.latency_ms is not None else float("nan") for s in samples])
    ax1.set_ylabel("RSS MiB")
    ax2.set_ylabel("open fds")
    ax3.set_ylabel("verdict latency ms (mean)")
    ax3.set_xlabel("minutes")
    ax1.legend(fontsize=7, ncol=4)
    fig.tight_layout()
    fig.savefig(path)
    print(f"soak: curve drawn to {path}")


def run(args: argparse.Namespace) -> tuple[list[Sample], dict[str, Any]]:
    seconds = args.minutes * 60
    samples: list[Sample] = []
    meta: dict[str, Any] = {"policy_changes": 0}
    with Lab(f"sk{__import__('os').getpid() % 10000}", clients=2, servers=2) as lab:
        procs: list[subprocess.Popen[Any]] = []
        try:
            lifetime = str(int(seconds + 120))
            for host in ("s1", "s2"):
                procs.append(lab.popen(host, sys.executable, "-m", "lab.load", "http-serve", "--seconds", lifetime,
                                       stdout=subprocess.PIPE, text=True, cwd=ROOT))  # fmt: skip
            procs.append(lab.popen("s1", sys.executable, "-m", "lab.traffic", "serve", "--udp", "53", "--seconds",
                                   lifetime, stdout=subprocess.PIPE, text=True, cwd=ROOT))  # fmt: skip
            for proc in procs:
                assert proc.stdout is not None
                proc.stdout.readline()
            work = Path(__import__("tempfile").mkdtemp(prefix="enforcer-soak-"))
            policy = PolicyChanger(work / "policy.yaml")
            overrides: dict[str, dict[str, Any]] = {
                "workers": {"inspect": "new"},
                "policy": {"watch_interval_ms": 500},
            }
            with LabEnforcer(lab, overrides, policy=policy.path) as e:
                client = lab.popen(
                    "c1", sys.executable, "-m", "lab.load", "mixed", "--keepalive", lab.host("s2").ipv4,
                    "--fresh", lab.host("s1").ipv4, "--dns", lab.host("s1").ipv4, "--rate", str(args.rate),
                    "--attack-every", str(args.attack_every), "--seconds", str(seconds),
                    stdout=subprocess.PIPE, text=True, cwd=ROOT,
                )  # fmt: skip
                procs.append(client)
                start = time.monotonic()
                next_change = start + args.policy_every
                prev = latency_totals(read_metrics(lab))
                print(f"{'min':>6} {'verdicts':>8} {'lat ms':>7}  RSS MiB / fds per process", flush=True)
                while time.monotonic() - start < seconds:
                    time.sleep(args.interval)
                    now = time.monotonic()
                    if now >= next_change:
                        meta["policy_changes"] += 1
                        policy.change()
                        next_change += args.policy_every
                    s = Sample(round(now - start, 1))
                    for name, pid in process_table(e).items():
                        try:
                            p = psutil.Process(pid)
                            s.rss_mib[name] = round(p.memory_info().rss / 2**20, 2)
                            s.fds[name] = p.num_fds()
                        except psutil.Error:
                            continue
                    status = e.status()
                    s.restarts = sum(c["restarts"] for c in status.get("children", []))
                    text = read_metrics(lab)
                    s.tables = table_fills(text)
                    cur = latency_totals(text)
                    dn = cur[1] - prev[1]
                    if dn > 0:
                        s.latency_ms = round((cur[0] - prev[0]) / dn * 1000, 4)
                        s.__dict__["bucket_ms"] = bucket_width_ms(cur[2], s.latency_ms)
                    s.verdicts = int(dn)
                    prev = cur
                    samples.append(s)
                    per = "  ".join(f"{n.replace('reader ', 'r').replace('worker ', 'w')}:{s.rss_mib[n]:.1f}/{s.fds.get(n, 0)}"
                                    for n in sorted(s.rss_mib))  # fmt: skip
                    lat = f"{s.latency_ms:7.3f}" if s.latency_ms is not None else "      -"
                    print(f"{s.t / 60:6.2f} {s.verdicts:8d} {lat}  {per}", flush=True)
                client.send_signal(__import__("signal").SIGTERM)
                out, _ = client.communicate(timeout=30)
                meta["traffic"] = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
                meta["restarts"] = samples[-1].restarts if samples else 0
                meta["restart_log"] = [line for line in e.log_path.read_text(errors="replace").splitlines()
                                       if "restarting" in line or "Error" in line][-10:]  # fmt: skip
                meta["policy_version"] = policy.version
                meta["threat_events"] = sum(1 for ev in e.events() if ev.get("type") == "threat")
                meta["captures"] = captures(read_metrics(lab))
                if args.memtrace:
                    meta["memtrace"] = keep_memtrace(Path(e.tmp) / "run", work)
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.terminate()
                    proc.wait(timeout=10)
    return samples, meta


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=30.0)
    p.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="seconds (default: measured, until every worker's filling tables are at their caps)",
    )
    p.add_argument("--caps", action="store_true",
                   help="only print the filling tables' caps in bytes (measured in this process; no root)")  # fmt: skip
    p.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    p.add_argument("--policy-every", type=float, default=60.0, help="seconds between policy changes")
    p.add_argument("--rate", type=float, default=60.0, help="client operations per second")
    p.add_argument("--attack-every", type=int, default=200, help="one SQL injection every N operations")
    p.add_argument("--png", help="draw the curve to this PNG (needs matplotlib)")
    p.add_argument("--json", action="store_true", help="also print the samples as JSON")
    p.add_argument("--memtrace", type=float, default=0.0, metavar="SECONDS",
                   help="trace the children's Python allocations (tracemalloc, slows them) and report the "
                        "sites that grew every SECONDS; the reports are kept in the soak's work directory")  # fmt: skip
    args = p.parse_args(argv)
    args.minutes = max(0.5, min(args.minutes, MAX_MINUTES))
    args.interval = max(1.0, args.interval)
    if args.caps:
        print_caps()
        return 0
    require_root()
    if args.memtrace:  # the enforcer's children inherit it
        os.environ["ENFORCER_MEMTRACE"] = str(args.memtrace)
    samples, meta = run(args)
    failures: list[str] = []
    sweep = args.interval  # a table bounded by time is full one sample after its timeout
    measured = warmup_end(samples, sweep)
    if args.warmup is not None:
        warmup, how = args.warmup, "given"
    elif measured is not None:
        warmup, how = measured, "measured: the workers' filling tables are full"
    else:
        warmup, how = samples[-1].t if samples else 0.0, "never ended"
        failures.append("the workers' filling tables were not full by the end of the run: run longer")
    lines, judged = judge(samples, warmup)
    failures += judged
    print(f"\nsoak: {args.minutes:g} min, {len(samples)} samples, warm-up {warmup:.0f} s ({how}), "
          f"{meta['policy_changes']} policy changes (v{meta.get('policy_version')}), "
          f"child restarts {meta.get('restarts')}, threat events {meta.get('threat_events')}")  # fmt: skip
    print(f"traffic: {json.dumps(meta.get('traffic', {}))}")
    for report in meta.get("memtrace", []):
        print(f"allocation report: {report}")
    print("\n".join(fill_lines(samples, meta, warmup, sweep)))
    print("\n".join(lines))
    if meta.get("restarts"):
        print("\n".join(meta.get("restart_log", [])))
        failures.append(f"{meta['restarts']} child restarts during the soak")
    for f in failures:
        print(f"FAILED: {f}")
    print("soak: " + ("PASSED" if not failures else "FAILED"))
    if args.png:
        draw(samples, args.png)
    if args.json:
        print(json.dumps([s.__dict__ for s in samples]))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
