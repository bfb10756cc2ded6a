#!/usr/bin/env python3
"""SYN and ping floods from hping3 against a Protect server, without and with the enforcer, in one run.

    sudo .venv/bin/python scripts/bench_synflood.py [--reps 3] [--seconds 3]

Each run floods the lab's web server (s1:80, Protect in the lab policy, here open to every source on
tcp/80 like a public site, so forged sources are allowed by the rules) from c2 with `hping3 -S --flood`
(from c2's own address, then with `--rand-source`), then with `hping3 --icmp --flood`, while c1, a real client, opens one connection after
another to the same port. Printed per kind of flood (medians of `--reps` runs): the rate hping3 reached,
how long the enforcer took to report the flood (first threat event − flood start), the share of the
flood's packets that reached the server (baseline: without the enforcer), and the real client's
connections: how many succeeded and how long they took (p50/max; a client first seen during a flood
waits for its SYN retransmission, about 1 s). Every flood is bounded by `timeout`, every client loop
by its count; only lab namespaces are touched.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lab.attacks import ClientProbe, FloodResult, icmp_flood, public_web_policy, syn_flood
from lab.enforcer import LabEnforcer
from lab.topology import Lab, require_root

# The one-source SYN flood comes last: it gets c2 blocked (block-source) for the rest of the run.
KINDS = (("ICMP echo", "icmp"), ("SYN, forged", "syn-rand"), ("SYN, one source", "syn"))


def first_threat(e: LabEnforcer, name: str, after: float, timeout: float = 8.0) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        times = [
            ev["time"] for ev in e.events()
            if ev["type"] == "threat" and ev.get("name") == name and ev["time"] >= after - 0.5
        ]  # fmt: skip
        if times:
            return min(times)
        time.sleep(0.3)
    return None


def run_once(lab: Lab, kind: str, seconds: float, e: LabEnforcer | None) -> dict[str, Any]:
    web = lab.host("s1").ipv4
    probe = ClientProbe(lab, "c1", web, 80, count=int(seconds / 0.5) + 1, interval=0.3).start()
    if kind == "icmp":
        flood: FloodResult = icmp_flood(lab, "c2", web, seconds)
    else:
        flood = syn_flood(lab, "c2", web, 80, seconds, rand_source=kind == "syn-rand")
    served = probe.join()
    detected = None
    if e is not None:
        at = first_threat(e, "icmp_flood" if kind == "icmp" else "syn_flood", flood.started)
        detected = None if at is None else at - flood.started
    # From one real source the attacker's kernel answers each SYN-ACK with a reset: two packets per SYN.
    per_syn = 2 if kind == "syn" else 1
    return {
        "rate": flood.rate,
        "delivered": flood.received / per_syn / flood.sent if flood.sent else 0.0,
        "detected_s": detected,
        "client_ok": sum(1 for r in served if r["ok"]),
        "client_n": len(served),
        "client_s": [r["seconds"] for r in served if r["ok"]],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    require_root()
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with Lab("sf") as lab:
        servers = [
            lab.popen(h, sys.executable, "-m", "lab.traffic", "serve", "--seconds", "600", "--tcp", "80",
                      stdout=subprocess.PIPE, text=True)
            for h in ("s1",)
        ]  # fmt: skip
        try:
            for proc in servers:
                assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            for _ in range(args.reps):
                for label, kind in KINDS:
                    results.setdefault((label, "baseline"), []).append(
                        run_once(lab, kind, args.seconds, None)
                    )
                    time.sleep(1)
                with (
                    tempfile.TemporaryDirectory() as tmp,
                    LabEnforcer(lab, policy=public_web_policy(Path(tmp))) as e,
                ):
                    for label, kind in KINDS:
                        results.setdefault((label, "enforced"), []).append(
                            run_once(lab, kind, args.seconds, e)
                        )
                        time.sleep(2.5)  # let the flood state and any block of the last run fade
        finally:
            for proc in servers:
                proc.terminate()
                proc.wait(timeout=5)
    print(f"{'flood':16s} {'run':9s} {'hping3 pps':>10s} {'detected':>9s} {'delivered':>9s} "
          f"{'client ok':>9s} {'client p50/max s':>16s}")  # fmt: skip
    for (label, run), runs in results.items():
        med = lambda key, runs=runs: statistics.median(r[key] for r in runs)  # noqa: E731
        detected = [r["detected_s"] for r in runs if r["detected_s"] is not None]
        times = sorted(t for r in runs for t in r["client_s"])
        ok = sum(r["client_ok"] for r in runs)
        total = sum(r["client_n"] for r in runs)
        det = f"{statistics.median(detected):.3f}s" if detected else ("-" if run == "baseline" else "never")
        lat = f"{statistics.median(times):.2f}/{max(times):.2f}" if times else "-"
        print(f"{label:16s} {run:9s} {med('rate'):10.0f} {det:>9s} {med('delivered'):9.1%} "
              f"{ok:>4d}/{total:<4d} {lat:>16s}")  # fmt: skip
    print("target: detected within 1 s, the flood's packets dropped, the real client's connections served")
    return 0


if __name__ == "__main__":
    sys.exit(main())
