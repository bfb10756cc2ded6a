"""The soak's warm-up (scripts/soak.py) ends when the workers' filling tables are full, measured: capped
tables at their caps in the samples, tables bounded by time once their timeout has passed; never a guess."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

import pytest

from .support import REPO


@pytest.fixture(scope="module")
def soak() -> ModuleType:
    spec = importlib.util.spec_from_file_location("soak_script", REPO / "scripts" / "soak.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def samples(soak: ModuleType, rows: list[tuple[float, dict[str, int]]]) -> list:
    return [soak.Sample(t, tables=dict(tables)) for t, tables in rows]


def test_a_capped_table_is_full_at_the_first_sample_at_its_cap(soak: ModuleType) -> None:
    cap = soak.TABLES["value_cache"].cap
    rows = samples(soak, [(5.0, {"value_cache worker 0": 10}), (10.0, {"value_cache worker 0": cap}),
                          (15.0, {"value_cache worker 0": cap})])  # fmt: skip
    assert soak.full_times(rows, 5.0) == {"value_cache worker 0": 10.0}
    assert soak.warmup_end(rows, 5.0) == 10.0


def test_the_warm_up_waits_for_the_last_table_of_every_worker(soak: ModuleType) -> None:
    rings, values = soak.TABLES["evidence_flows"].cap, soak.TABLES["value_cache"].cap
    timeout = soak.TABLES["detect_flows"].timeout
    full = {"evidence_flows worker 0": rings, "value_cache worker 0": values, "value_cache worker 1": values}
    late = {**full, "value_cache worker 1": values - 1}
    times = (100.0, timeout, timeout + 10, timeout + 700)
    rows = [(t, {**(late if t < timeout else full), "detect_flows worker 0": 100}) for t in times]
    assert soak.warmup_end(samples(soak, rows), 5.0) == timeout + 5.0  # the timed table is the last
    rows = [(t, {**(late if t < timeout + 700 else full), "detect_flows worker 0": 100}) for t in times]
    assert soak.warmup_end(samples(soak, rows), 5.0) == timeout + 700  # now worker 1's cache is


def test_no_warm_up_end_when_a_table_never_fills(soak: ModuleType) -> None:
    rows = samples(soak, [(t, {"evidence_flows worker 1": 5}) for t in (5.0, 10.0)])
    assert soak.warmup_end(rows, 5.0) is None
    timed = samples(soak, [(t, {"detect_flows worker 1": 5}) for t in (5.0, 10.0)])
    assert soak.warmup_end(timed, 5.0) is None  # a 10 s run never reaches the idle timeout
