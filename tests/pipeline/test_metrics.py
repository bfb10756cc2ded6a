"""Prometheus rendering of the children's counters."""

from __future__ import annotations

from node.metrics import render


def test_histogram_is_cumulative_and_rules_are_labelled() -> None:
    status = {
        "ready": True,
        "children": [
            {"name": "reader q0", "restarts": 1, "alive": True,
             "counters": {"latency_us_le_50": 3, "latency_us_le_100": 2, "latency_us_le_inf": 1,
                          "latency_us_sum": 400, "rule.10": 5, "flows.active": 7, "decode.ipv4.truncated": 2}},
            {"name": "worker 1", "restarts": 0, "alive": False, "counters": {"packets": 9}},
        ],
    }  # fmt: skip
    text = render(status).splitlines()
    assert 'enforcer_worker_verdict_latency_us_bucket{reader="q0",le="50"} 3' in text
    assert 'enforcer_worker_verdict_latency_us_bucket{reader="q0",le="100"} 5' in text
    assert 'enforcer_worker_verdict_latency_us_bucket{reader="q0",le="+Inf"} 6' in text
    assert 'enforcer_worker_verdict_latency_us_count{reader="q0"} 6' in text
    assert 'enforcer_rule_hits_total{reader="q0",rule="10"} 5' in text
    assert "# TYPE enforcer_reader_flows_active gauge" in text
    assert 'enforcer_reader_decode_ipv4_truncated{reader="q0"} 2' in text
    assert (
        'enforcer_child_up{child="worker 1"} 0' in text
        and 'enforcer_child_restarts_total{child="reader q0"} 1' in text
    )
    assert text.count("# TYPE enforcer_worker_verdict_latency_us histogram") == 1
