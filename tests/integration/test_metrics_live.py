"""The live `/metrics` endpoint of the real enforcer is valid Prometheus exposition."""

from __future__ import annotations

import sys

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lab.enforcer import LabEnforcer
from lab.topology import Lab
from tests.integration.conftest import settled_counters, tcp

pytestmark = pytest.mark.netns

FETCH = "import urllib.request as u,sys;sys.stdout.write(u.urlopen('http://127.0.0.1:9464/metrics',timeout=3).read().decode())"


def _scrape(lab: Lab) -> str:
    return lab.node_exec(sys.executable, "-c", FETCH).stdout


def test_live_metrics_parse_with_one_block_per_family(lab: Lab) -> None:
    overrides = {"workers": {"inspect": "new", "count": 2}, "queues": {"readers": 2}}
    with LabEnforcer(lab, overrides) as e:
        # Traffic through both readers and both workers, so every child reports non-trivial counters.
        for port in (80, 5201, 8080):
            for client in ("c1", "c2"):
                assert tcp(lab, client, lab.host("s2").ipv4, port, nbytes=5000)["ok"]
        settled_counters(e, "")  # every child's heartbeats since the traffic have arrived
        text = _scrape(lab)
    names: list[str] = []
    by_name = {}
    for family in text_string_to_metric_families(text):
        assert family.name not in by_name, f"family {family.name} appears twice"
        names.append(family.name)
        by_name[family.name] = family
    assert by_name["enforcer_ready"].samples[0].value == 1
    up = {s.labels["child"]: s.value for s in by_name["enforcer_child_up"].samples}
    assert {"reader q0", "reader q1", "worker 0", "worker 1", "policy 0"} <= set(up) and all(up.values())
    packets = by_name["enforcer_reader_packets"]
    assert packets.type == "counter"
    assert {s.labels["child"] for s in packets.samples} == {"reader q0", "reader q1"}
    assert sum(s.value for s in packets.samples) > 0
    # The families the workers share (the split seen before): every one holds both workers' samples.
    worker_families = [
        f for n, f in by_name.items() if n.startswith("enforcer_worker_") and f.type == "counter"
    ]
    assert worker_families
    shared = [
        f for f in worker_families if {s.labels["child"] for s in f.samples} == {"worker 0", "worker 1"}
    ]
    assert len(shared) >= 3, [f.name for f in worker_families]
    latency = by_name["enforcer_reader_inspect_latency_seconds"]
    assert latency.type == "histogram"
    # the payload packets above waited for their workers: each reader that saw one observed it
    counts = [s.value for s in latency.samples if s.name.endswith("_count")]
    assert counts and sum(counts) > 0
