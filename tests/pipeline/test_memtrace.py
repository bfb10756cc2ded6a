"""The opt-in allocation tracing of a child (node/memtrace.py): off unless asked, bad values refused with
the variable named, and reports that name the allocation site that grew, in a private file."""

from __future__ import annotations

import stat
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.memtrace import MemtraceError, MemTracer, settings_from, start_from_environment

_held: list[bytes] = []  # what the growing site keeps alive between two reports


def grow(blocks: int) -> None:
    _held.extend(bytes(1024) + bytes([i % 256]) for i in range(blocks))  # the site the report must name


@pytest.fixture
def tracing() -> Iterator[None]:
    assert not tracemalloc.is_tracing()
    tracemalloc.start(1)
    try:
        yield
    finally:
        tracemalloc.stop()
        _held.clear()


def test_off_unless_the_variable_is_set() -> None:
    assert settings_from({}) is None
    assert settings_from({"ENFORCER_MEMTRACE": " "}) is None
    assert settings_from({"ENFORCER_MEMTRACE": "60"}) == (60.0, 1)
    assert settings_from({"ENFORCER_MEMTRACE": "30", "ENFORCER_MEMTRACE_FRAMES": "5"}) == (30.0, 5)


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"ENFORCER_MEMTRACE": "soon"}, "ENFORCER_MEMTRACE:"),
        ({"ENFORCER_MEMTRACE": "1"}, "ENFORCER_MEMTRACE:"),
        ({"ENFORCER_MEMTRACE": "nan"}, "ENFORCER_MEMTRACE:"),
        ({"ENFORCER_MEMTRACE": "60", "ENFORCER_MEMTRACE_FRAMES": "0"}, "ENFORCER_MEMTRACE_FRAMES:"),
        ({"ENFORCER_MEMTRACE": "60", "ENFORCER_MEMTRACE_FRAMES": "x"}, "ENFORCER_MEMTRACE_FRAMES:"),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable(environ: dict[str, str], named: str) -> None:
    with pytest.raises(MemtraceError, match=f"^{named}"):
        settings_from(environ)


def test_a_bad_value_leaves_tracing_off_and_the_child_running(tmp_path: Path) -> None:
    assert start_from_environment(str(tmp_path), "worker 0", {"ENFORCER_MEMTRACE": "often"}) is None
    assert start_from_environment(str(tmp_path), "worker 0", {}) is None
    assert not tracemalloc.is_tracing()
    assert list(tmp_path.iterdir()) == []


def test_the_report_names_the_site_that_grew_in_a_private_file(tmp_path: Path, tracing: None) -> None:
    tracer = MemTracer(tmp_path / "memtrace-worker-0.txt", frames=1)
    first = tracer.report()
    assert "baseline taken" in first
    grow(2000)  # ~2 MiB held
    second = tracer.report()
    top = second.split("-- top sites by growth since the baseline")[1].splitlines()[1]
    assert f"{Path(__file__).name}:{grow.__code__.co_firstlineno + 1}" in top
    kib = float(top.split("KiB")[0])
    assert kib >= 2000 * 1024 / 1024  # at least the payload of what it holds
    text = tracer.path.read_text()
    assert text == first + second  # appended, both kept
    assert stat.S_IMODE(tracer.path.stat().st_mode) == 0o600


def test_growth_since_the_previous_report_shows_only_the_new_growth(tmp_path: Path, tracing: None) -> None:
    tracer = MemTracer(tmp_path / "memtrace-policy-0.txt", frames=1)
    tracer.report()
    grow(1000)
    tracer.report()
    third = tracer.report()  # nothing grew since the second
    since_baseline, since_previous = third.split("-- top sites by growth since the previous report")
    site = f"{Path(__file__).name}:{grow.__code__.co_firstlineno + 1}"
    assert site in since_baseline.splitlines()[2]
    assert all(site not in line or float(line.split("KiB")[0]) < 100 for line in since_previous.splitlines())
