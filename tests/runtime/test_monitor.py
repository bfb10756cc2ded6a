"""run_runtime_monitor as the supervisor calls it: settings errors, policy errors, the /proc fallback."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from core import anomalies
from core.lookup import Mode
from runtime.monitor import run_runtime_monitor
from runtime.profiles import RuntimePolicy
from runtime.settings import RuntimeSettings
from tests.runtime.conftest import Harness, kill_tree, spawn_in
from tests.runtime.support import copy_bin, policy, settings


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("event_queue_max", 0),
        ("loop_tick_s", -1.0),
        ("file_backend", "dnotify"),
        ("reverse_shell_recheck_s", -1),
    ],
)
def test_invalid_settings_exit_2_naming_the_key(
    field: str, value: object, caplog: pytest.LogCaptureFixture
) -> None:
    events: list[dict[str, object]] = []
    bad = RuntimeSettings(**{field: value})  # type: ignore[arg-type]
    rc = run_runtime_monitor(bad, RuntimePolicy, events.append, threading.Event())
    assert rc == 2 and not events
    assert f"runtime.{field}" in caplog.text


def test_a_failing_policy_source_keeps_the_previous_policy(netns: str, tmp_path) -> None:
    forbidden = copy_bin("sleep", str(tmp_path), "forbidden")
    calls = {"n": 0}
    good = policy(netns, Mode.PROTECT)

    def get_profiles() -> RuntimePolicy:
        calls["n"] += 1
        if calls["n"] > 1:
            raise RuntimeError("policy store unavailable")
        return good

    events: list[dict[str, object]] = []
    counters: dict[str, int] = {}
    stop = threading.Event()
    t = threading.Thread(
        target=run_runtime_monitor,
        args=(settings(protected_pids=()), get_profiles, events.append, stop),
        kwargs={"counters": counters},
    )
    t.start()
    try:
        from tests.runtime.conftest import wait_for

        assert wait_for(lambda: counters.get(anomalies.RUNTIME_PROFILE_ERROR, 0) >= 2)
        # The policy of the first call is still in force. (This monitor runs in the test's process,
        # so the pod process must not descend from it: it is started through `setsid -f`, and execs
        # only once its forking parent is gone (reaped here), else it may be spared as ours. It waits
        # for our go, bounded, instead of sleeping for a time a loaded machine may not keep.)
        go = tmp_path / "go"
        until_go = f"i=0; while [ ! -e {go} ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done"
        p = spawn_in(netns, "setsid", "-f", "sh", "-c", f"{until_go}; exec {forbidden} 30")
        p.wait(5)
        go.touch()
        assert wait_for(
            lambda: [e for e in events if e.get("action") == "killed" and e.get("name") == "forbidden"]
        ), (events, counters)
    finally:
        stop.set()
        t.join(10)
    assert not t.is_alive()


def test_without_the_connector_the_proc_scan_still_enforces(
    netns: str, harness: Callable[..., Harness], tmp_path
) -> None:
    forbidden = copy_bin("sleep", str(tmp_path), "forbidden")
    h = harness(settings(use_connector=False, proc_scan_interval_s=0.2), policy(netns, Mode.PROTECT))
    started = h.find(what="runtime.started")[0]
    assert started["connector"] is False
    p = spawn_in(netns, forbidden, "30")
    try:
        assert p.wait(5) == -9
        ev = h.wait(type="process", action="killed", name="forbidden")
        assert ev and "latency_ms" not in ev[0]  # found by the scan, not announced by the kernel
        assert h.counters.get(anomalies.RUNTIME_CONNECTOR_UNAVAILABLE) == 1
    finally:
        kill_tree([p.pid])


def test_a_burst_against_a_small_queue_does_not_block_enforcement(
    netns: str, harness: Callable[..., Harness], tmp_path
) -> None:
    """Thousands of execs against a small queue: nothing blocks, short-lived processes are counted, and a
    forbidden program started right after is still reported (the periodic scan repairs what a full queue
    dropped). Whether this burst overflows the queue depends on the machine's scheduling; that a full
    queue drops and counts is proven deterministically in test_proc_connector (nobody drains there)."""
    from tests.runtime.conftest import wait_for
    from tests.runtime.support import in_pod

    forbidden = copy_bin("sleep", str(tmp_path), "forbidden")
    h = harness(settings(event_queue_max=32, proc_scan_interval_s=0.3), policy(netns, Mode.MONITOR))
    burst = "i=0; while [ $i -lt 2000 ]; do /bin/true; i=$((i+1)); done"
    assert in_pod(netns, f"({burst}) & ({burst}) & wait; {forbidden} 1").returncode == 0
    assert h.wait(type="process", action="violation", name="forbidden")
    assert wait_for(lambda: h.counters.get(anomalies.RUNTIME_PROCESS_UNEXAMINED, 0) > 0)
