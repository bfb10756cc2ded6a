"""Recompile cost of workload selectors: N workloads × G groups of every selector form, against the same
policy with plain equality selectors only (the baseline measured in the same run).

    .venv/bin/python scripts/bench_selectors.py [--workloads 5000] [--groups 500] [--reps 5]

Prints the median compile time of each policy and the ratio to the baseline. No timing is asserted.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core import workload_labels as WL
from policy.loader import parse_policy
from policy.tables import Workload, compile_policy


def workloads(n: int, namespaces: int) -> list[Workload]:
    out = []
    for i in range(n):
        ns = f"ns{i % namespaces}"
        app = f"app{i % 400}"
        labels = {
            WL.POD_NAME: f"{app}-{i}", WL.POD_NAMESPACE: ns, WL.WORKLOAD_NAME: app,
            WL.IMAGES: f"registry.example/{app}:1", "app": app, "tier": ("front", "back", "data")[i % 3],
            "version": f"v{i % 5}",
        }  # fmt: skip
        out.append(Workload((ipaddress.IPv4Address(0xC6120000 + i),), labels))
    return out


def policy(groups: int, rich: bool) -> dict:
    out = []
    for g in range(groups):
        app, ns = f"app{g % 400}", f"ns{g % 20}"
        if not rich:
            members = [{"app": app, "tier": ("front", "back", "data")[g % 3]}]
        elif g % 4 == 0:
            members = [{"matchLabels": {"app": app}, "matchExpressions": [
                {"key": "version", "operator": "NotIn", "values": ["v0", "v1"]}], "namespaces": [ns]}]  # fmt: skip
        elif g % 4 == 1:
            members = [{"criteria": [{"key": "service", "op": "=", "value": f"{app}.{ns}"},
                                     {"key": "domain", "op": "=", "value": ns}]}]  # fmt: skip
        elif g % 4 == 2:
            members = [{"criteria": [{"key": "app", "op": "regex", "value": f"^app{g % 40}[0-9]$"},
                                     {"key": "tier", "op": "!=", "value": "data"}]}]  # fmt: skip
        else:
            members = [{"criteria": [{"key": "image", "op": "prefix", "value": f"registry.example/{app}"},
                                     {"key": "app", "op": "contains", "value": f"p{g % 10}"}]}]  # fmt: skip
        out.append({"name": f"g{g}", "mode": "monitor", "members": members})
    return {"version": 1, "groups": out}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", type=int, default=5000)
    ap.add_argument("--groups", type=int, default=500)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument(
        "--nodes", type=int, default=20, help="nodes the workloads are spread over (controller side)"
    )
    args = ap.parse_args()
    pods = workloads(args.workloads, 20)
    plain, rich = parse_policy(policy(args.groups, False)), parse_policy(policy(args.groups, True))
    times: dict[str, list[float]] = {"equality": [], "every form": []}
    entries: dict[str, int] = {}
    for _ in range(args.reps):  # interleaved, so both see the same machine load
        for name, snap in (("equality", plain), ("every form", rich)):
            start = time.perf_counter()
            compiled = compile_policy(snap, pods)
            times[name].append(time.perf_counter() - start)
            entries[name] = compiled.prefix_count()
    naive: list[float] = []
    for _ in range(args.reps):  # the previous compile: every selector tested against every workload
        start = time.perf_counter()
        for g in plain.groups:
            for w in pods:
                any(all(w.labels.get(k) == v for k, v in sel) for sel in g.selectors)
        naive.append(time.perf_counter() - start)
    base = statistics.median(times["equality"])
    print(f"{args.workloads} workloads x {args.groups} groups, median of {args.reps} compiles")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:11s} {med * 1000:8.1f} ms  ({entries[name]} host entries)  ratio {med / base:.2f}")
    print(
        f"  equality matched workload by workload (the previous way): {statistics.median(naive) * 1000:.1f} ms"
    )
    membership(pods, rich, args.nodes, args.reps)
    return 0


def membership(pods: list[Workload], snapshot: Any, nodes: int, reps: int) -> None:
    """The controller's side: the workloads spread over `nodes` nodes; one pod relabelled, then the
    relevant set recomputed and every node's membership delta built."""
    from collections import Counter

    from controller.membership import ClusterMembership, PeerMembership
    from core import control as C
    from policy.loader import policy_to_dict

    cluster = ClusterMembership(Counter())
    cluster.set_policy(policy_to_dict(snapshot))
    per_node: dict[str, list[C.ReportedWorkload]] = {}
    for i, w in enumerate(pods):
        per_node.setdefault(f"node{i % nodes}", []).append(
            (f"w{i}", [a.packed for a in w.addresses], dict(w.labels))
        )
    for node, items in per_node.items():
        cluster.take_report(node, C.WorkloadReport(1, True, items, []))
    peers = {node: PeerMembership() for node in per_node}
    start = time.perf_counter()
    for node, peer in peers.items():
        cluster.updates_for(node, peer)
    first = time.perf_counter() - start
    times = []
    for rep in range(reps):
        wid, addrs, labels = per_node["node0"][0]
        changed = (wid, addrs, {**labels, "version": f"r{rep}"})
        cluster.take_report("node0", C.WorkloadReport(2 + rep, False, [changed], []))
        start = time.perf_counter()
        sent = sum(len(cluster.updates_for(node, peer)) for node, peer in peers.items())
        times.append(time.perf_counter() - start)
    print(
        f"controller membership, {len(pods)} workloads on {nodes} nodes ({len(cluster.relevant())} relevant): "
        f"first full distribution {first * 1000:.1f} ms; one relabel -> {sent} deltas in "
        f"{statistics.median(times) * 1000:.1f} ms (median of {reps})"
    )


if __name__ == "__main__":
    raise SystemExit(main())
