"""The `[detect]` table of the enforcer config → `DetectLimits` (every bound of the threat engine).

    [detect]
    max_clients = 65536
    aggregate_window = 5.0
    [detect.packet]            # PacketLimits
    max_flows = 65536
    [detect.evidence]          # EvidenceLimits
    packets_per_flow = 8

Unknown keys and wrong types are rejected with the key path named (`detect.packet.max_flows: …`);
every number must be positive (a zero cap would disable a table silently).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from workers.detect.engine import DetectLimits

T = TypeVar("T")


def _build(cls: type[T], table: Mapping[str, Any], path: str) -> T:
    if not isinstance(table, Mapping):
        raise ValueError(f"{path}: expected a table, got {type(table).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    defaults = cls()
    values: dict[str, Any] = {}
    for key, value in table.items():
        where = f"{path}.{key}"
        f = fields.get(key)
        if f is None:
            raise ValueError(f"{where}: unknown key (known: {', '.join(fields)})")
        default = getattr(defaults, key)
        if dataclasses.is_dataclass(default):
            values[key] = _build(type(default), value, where)
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{where}: expected a number, got {value!r}")
        if isinstance(default, int) and not isinstance(value, int):
            raise ValueError(f"{where}: expected a whole number, got {value!r}")
        if value <= 0:
            raise ValueError(f"{where}: expected a positive number, got {value!r}")
        values[key] = float(value) if isinstance(default, float) else value
    return cls(**values)


def detect_limits_from_mapping(table: Mapping[str, Any] | None, path: str = "detect") -> DetectLimits:
    """Build the threat engine's limits from the `[detect]` config table (None: all defaults)."""
    return DetectLimits() if table is None else _build(DetectLimits, table, path)
