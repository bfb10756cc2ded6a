"""The `[detect]` config table."""

from __future__ import annotations

from typing import Any

import pytest

from workers.detect.config import detect_limits_from_mapping
from workers.detect.engine import DetectLimits


def test_defaults_and_overrides() -> None:
    assert detect_limits_from_mapping(None) == DetectLimits()
    limits = detect_limits_from_mapping(
        {
            "aggregate_window": 2,
            "packet": {"max_flows": 100, "fragment_timeout": 5},
            "evidence": {"max_captures": 3},
        }
    )
    assert limits.aggregate_window == 2.0 and isinstance(limits.aggregate_window, float)
    assert limits.packet.max_flows == 100 and limits.packet.fragment_timeout == 5.0
    assert limits.evidence.max_captures == 3 and limits.max_clients == DetectLimits().max_clients


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"max_flow": 1}, "detect.max_flow: unknown key"),
        ({"packet": {"max_flows": 0}}, "detect.packet.max_flows: expected a positive number"),
        ({"packet": {"max_flows": 1.5}}, "detect.packet.max_flows: expected a whole number"),
        ({"evidence": {"max_captures": "9"}}, "detect.evidence.max_captures: expected a number"),
        ({"evidence": 3}, "detect.evidence: expected a table"),
        ({"max_clients": True}, "detect.max_clients: expected a number"),
    ],
)
def test_bad_tables_name_the_key(table: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError) as err:
        detect_limits_from_mapping(table)
    assert message in str(err.value)
