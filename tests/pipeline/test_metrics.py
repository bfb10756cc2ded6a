"""Prometheus exposition of the children's counters: one family per name, parsed by the client's parser."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from core import messages as M
from node.metrics import ChildCounters, render


class Heartbeats:
    """A status source built from heartbeat frames, as the supervisor builds its status."""

    def __init__(self, ready: bool = True) -> None:
        self.ready = ready
        self.children: list[dict[str, Any]] = []

    def receive(self, name: str, frame: bytes, alive: bool = True, restarts: int = 0) -> None:
        msg = M.decode(frame)
        assert isinstance(msg, M.Heartbeat)
        self.children.append({"name": name, "alive": alive, "restarts": restarts, "counters": msg.counters})

    def healthy(self) -> bool:
        return True

    def status(self) -> dict[str, Any]:
        return {"ready": self.ready, "children": self.children}


def _two_readers_two_workers() -> Heartbeats:
    source = Heartbeats()
    for q in (0, 1):
        counters = {"packets": 10 + q, "latency_us_le_50": 3, "latency_us_le_100": 2, "latency_us_le_inf": 1,
                    "latency_us_sum": 400, "rule.10": 5, "flows.active": 7, "decode.ipv4.truncated": 2}  # fmt: skip
        source.receive(f"reader q{q}", M.encode(M.Heartbeat("reader", q, 100 + q, counters)), restarts=q)
    for w in (0, 1):
        counters = {"packets": 9, "detect.sqli": w, "detect.xss": 1, "rule.10": 1}
        source.receive(f"worker {w}", M.encode(M.Heartbeat("worker", w, 200 + w, counters)), alive=w == 0)
    return source


def _parse(text: str) -> dict[str, Any]:
    families: dict[str, Any] = {}
    for family in text_string_to_metric_families(text):
        assert family.name not in families, f"duplicate family {family.name}"
        families[family.name] = family
    return families


def _value(family: Any, sample_name: str, **labels: str) -> float:
    values = [s.value for s in family.samples if s.name == sample_name and s.labels == labels]
    assert len(values) == 1, (sample_name, labels, family.samples)
    return float(values[0])


def test_every_family_is_one_block_with_a_child_label() -> None:
    text = render(_two_readers_two_workers())
    families = _parse(text)
    # Each family's lines are contiguous: a name never reappears after another family started.
    order = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert len(order) == len(set(order))
    packets = families["enforcer_reader_packets"]
    assert packets.type == "counter" and packets.documentation
    assert _value(packets, "enforcer_reader_packets_total", child="reader q1") == 11
    detect = families["enforcer_worker_detect_sqli"]
    assert [s.labels["child"] for s in detect.samples] == ["worker 0", "worker 1"]
    rules = families["enforcer_rule_hits"]
    assert _value(rules, "enforcer_rule_hits_total", child="worker 1", rule="10") == 1
    assert len(rules.samples) == 4
    assert families["enforcer_reader_flows_active"].type == "gauge"
    assert _value(families["enforcer_reader_decode_ipv4_truncated"],
                  "enforcer_reader_decode_ipv4_truncated_total", child="reader q0") == 2  # fmt: skip
    assert _value(families["enforcer_child_up"], "enforcer_child_up", child="worker 1") == 0
    assert _value(families["enforcer_child_restarts"], "enforcer_child_restarts_total", child="reader q1") == 1
    assert _value(families["enforcer_ready"], "enforcer_ready") == 1
    assert families["enforcer_supervisor_process_cpu_seconds"].type == "counter"


def test_latency_histogram_is_cumulative_in_seconds() -> None:
    families = _parse(render(_two_readers_two_workers()))
    latency = families["enforcer_worker_verdict_latency_seconds"]
    assert latency.type == "histogram"
    bucket = "enforcer_worker_verdict_latency_seconds_bucket"
    assert _value(latency, bucket, child="reader q0", le="5e-05") == 3
    assert _value(latency, bucket, child="reader q0", le="0.0001") == 5
    assert _value(latency, bucket, child="reader q1", le="+Inf") == 6
    assert _value(latency, "enforcer_worker_verdict_latency_seconds_count", child="reader q1") == 6
    assert _value(latency, "enforcer_worker_verdict_latency_seconds_sum", child="reader q0") == 0.0004


def test_keys_that_sanitise_to_one_name_give_one_sample() -> None:
    source = Heartbeats(ready=False)
    counters = {"a.b": 1, "a_b": 2, "c_total": 3}
    source.receive("worker 0", M.encode(M.Heartbeat("worker", 0, 1, counters)))
    families = _parse(render(source))
    assert _value(families["enforcer_worker_a_b"], "enforcer_worker_a_b_total", child="worker 0") == 1
    assert _value(families["enforcer_worker_c"], "enforcer_worker_c_total", child="worker 0") == 3
    assert _value(families["enforcer_ready"], "enforcer_ready") == 0


def test_collector_reads_the_source_on_every_scrape() -> None:
    source = Heartbeats()
    collector = ChildCounters(source)
    assert [f.name for f in collector.collect()] == ["enforcer_ready", "enforcer_child_up", "enforcer_child_restarts"]
    source.receive("policy 0", M.encode(M.Heartbeat("policy", 0, 5, {"policy.version": 4})))
    by_name = {f.name: f for f in collector.collect()}
    assert by_name["enforcer_policy_policy_version"].type == "gauge"
    assert by_name["enforcer_policy_policy_version"].samples[0].value == 4
