from __future__ import annotations

import pytest

from runtime.settings import RuntimeSettings, settings_from_mapping


def test_defaults_are_valid() -> None:
    RuntimeSettings().validate()
    assert settings_from_mapping({}) == RuntimeSettings()


def test_table_values_are_converted() -> None:
    s = settings_from_mapping(
        {
            "event_queue_max": 128,
            "loop_tick_s": 1,
            "suspicious_tools": ["nmap"],
            "protected_pids": [7],
            "node": "n1",
        }
    )
    assert s.event_queue_max == 128 and s.loop_tick_s == 1.0 and isinstance(s.loop_tick_s, float)
    assert s.suspicious_tools == ("nmap",) and s.protected_pids == (7,) and s.node == "n1"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"event_queue_maxx": 1}, "runtime.event_queue_maxx: unknown key"),
        ({"event_queue_max": "big"}, "runtime.event_queue_max: expected an integer"),
        ({"event_queue_max": True}, "runtime.event_queue_max: expected an integer"),
        ({"use_connector": 1}, "runtime.use_connector: expected true or false"),
        ({"loop_tick_s": "fast"}, "runtime.loop_tick_s: expected a number"),
        ({"shells": "bash"}, "runtime.shells: expected a list of str"),
        ({"protected_pids": ["1"]}, "runtime.protected_pids: expected a list of int"),
        ({"event_queue_max": 0}, "runtime.event_queue_max must be positive"),
        ({"file_backend": "x"}, "runtime.file_backend must be"),
    ],
)
def test_errors_name_the_key(table: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace(".", r"\.")):
        settings_from_mapping(table)
