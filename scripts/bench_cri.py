#!/usr/bin/env python3
"""Pod start → enforced membership, with a real containerd over the CRI and the real enforcer.

    sudo .venv/bin/python scripts/bench_cri.py [--pods 10] [--poll-ms 250]

A lab node namespace runs containerd (runc, CNI bridge) and the enforcer configured to take pod identity
from it (`cri.socket`). For each pod, as the kubelet does: RunPodSandbox (labels app=web), then
CreateContainer + StartContainer of its app. Printed per pod and as p50/max: how long RunPodSandbox took
(containerd's own work, the baseline), the time from its return until the pod's address is in group
`web` in the enforcer's shared tables (what the readers enforce with), that time as a ratio of the
baseline, and whether the membership was in force before the app container had started (before the
pod's first packet could leave). Bounded: at most 50 pods, each wait at most 15 s; only lab namespaces.
"""

from __future__ import annotations

import argparse
import ipaddress
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lab.containerd import LabContainerd
from lab.enforcer import LabEnforcer
from lab.topology import Lab
from policy.layout import tables_path
from policy.table_reader import SharedTables

MAX_PODS = 50
WAIT_S = 15.0
POLICY = """
version: 1
default_mode: monitor
groups:
  - {name: web, mode: protect, members: [{app: web}]}
rules: []
"""


def group_of(tables: SharedTables, address: str) -> str:
    packed = ipaddress.ip_address(address).packed
    return tables.decide(0, packed, packed, 6, 0).dst_group


class MembershipWatch(threading.Thread):
    """Polls the enforced tables for `address` in group web; `result()` is when it was first seen."""

    def __init__(self, tables: SharedTables, address: str, deadline: float) -> None:
        super().__init__(daemon=True)
        self.tables, self.address, self.deadline = tables, address, deadline
        self.seen: float | None = None
        self.start()

    def run(self) -> None:
        while time.monotonic() < self.deadline:
            if group_of(self.tables, self.address) == "web":
                self.seen = time.monotonic()
                return
            time.sleep(0.002)

    def result(self) -> float:
        self.join()
        if self.seen is None:
            raise SystemExit(f"pod {self.address} not in group web after {WAIT_S}s")
        return self.seen


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pods", type=int, default=10)
    ap.add_argument("--poll-ms", type=int, default=250, help="cri.poll_ms of the enforcer")
    args = ap.parse_args()
    pods = max(1, min(args.pods, MAX_PODS))
    rows: list[tuple[float, float, bool]] = []
    with Lab("crbn", clients=0, servers=0, external=0) as lab:
        with LabContainerd(lab) as ctd:
            policy = ctd.tmp / "policy.yaml"
            policy.write_text(POLICY)
            overrides = {"cri": {"socket": ctd.socket, "poll_ms": args.poll_ms}}
            with LabEnforcer(lab, overrides=overrides, policy=policy) as enforcer:
                tables = SharedTables(tables_path(str(enforcer.tmp / "run")), slot=None, cache=False)
                time.sleep(2)  # the runtime child connected and settled
                for i in range(pods):
                    pod = ctd.run_pod(f"web-5d8f7c9b4f-b{i:04d}", "bench", {"app": "web"}, route=False)
                    started, returned = pod.started_at, pod.returned_at
                    # the tables are watched while the app container is made, as the kubelet would
                    watch = MembershipWatch(tables, pod.ip, returned + WAIT_S)
                    ctd.start_container(pod, "app", ["/bin/busybox", "sleep", "3600"])
                    app_started = time.monotonic()
                    seen = watch.result()
                    rows.append((returned - started, seen - returned, seen <= app_started))
                    print(f"pod {i:2d} {pod.ip:15s} RunPodSandbox {1000 * (returned - started):6.0f} ms  "
                          f"return → enforced membership {1000 * (seen - returned):6.0f} ms  "
                          f"before the app container started: {'yes' if seen <= app_started else 'no'}")  # fmt: skip
                    ctd.remove_pod(pod)
    base = [r[0] for r in rows]
    lat = [r[1] for r in rows]
    print(f"\n{len(rows)} pods, cri.poll_ms={args.poll_ms}")
    print(
        f"RunPodSandbox (baseline)          p50 {1000 * statistics.median(base):6.0f} ms  max {1000 * max(base):6.0f} ms"
    )
    print(
        f"return → enforced membership      p50 {1000 * statistics.median(lat):6.0f} ms  max {1000 * max(lat):6.0f} ms"
    )
    print(f"ratio membership / RunPodSandbox  p50 {statistics.median(lat) / statistics.median(base):6.2f}")
    print(f"in force before the app container started: {sum(r[2] for r in rows)}/{len(rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
