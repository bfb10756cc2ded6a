"""The file monitor: aggregation on literals; real fanotify (and the inotify fallback) in a lab pod."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable

from core import anomalies
from core.lookup import Mode
from runtime.file_monitor import Aggregator, expand_paths
from runtime.identity import GroupSelector
from runtime.profiles import FileAction, FileRule, ProcessEntry, ProcessProfile, RuntimePolicy
from runtime.settings import RuntimeSettings
from tests.runtime.conftest import Harness, wait_for
from tests.runtime.support import in_pod, settings

ANYTHING = (ProcessEntry("*"),)


def file_policy(netns: str, mode: Mode, rules: tuple[FileRule, ...]) -> RuntimePolicy:
    return RuntimePolicy(
        groups=(GroupSelector("pod", labels={"netns": netns}),),
        profiles={"pod": ProcessProfile("pod", mode, ANYTHING)},
        file_rules={"pod": rules},
    )


def file_settings(**kw: object) -> RuntimeSettings:
    base: dict[str, object] = dict(file_monitor=True, sensitive_paths=(), file_aggregate_window_s=1.0)
    base.update(kw)
    return settings(**base)


def test_aggregator_reports_first_then_folds_the_window() -> None:
    counters: dict[str, int] = {}
    agg = Aggregator(window_s=5.0, max_keys=2, counters=counters)
    first = agg.add(("w", "/etc/passwd", "sh", "modified"), {"path": "/etc/passwd"}, now=100.0)
    assert first == {"path": "/etc/passwd", "count": 1}
    for i in range(999):
        assert (
            agg.add(("w", "/etc/passwd", "sh", "modified"), {"path": "/etc/passwd"}, now=100.0 + i / 1000)
            is None
        )
    assert agg.flush(104.0) == []  # window not over
    assert agg.add(("w", "/b", "sh", "modified"), {"path": "/b"}, now=101.0) is not None
    assert agg.add(("w", "/c", "sh", "modified"), {"path": "/c"}, now=101.0) is None  # third key: dropped
    assert counters[anomalies.RUNTIME_FILE_AGGREGATE_FULL] == 1
    assert agg.flush(105.0) == [{"path": "/etc/passwd", "count": 999, "aggregated": True}]
    # A new window starts fresh.
    assert agg.add(("w", "/etc/passwd", "sh", "modified"), {"path": "/etc/passwd"}, now=105.5) is not None


def test_expand_paths_with_homes(tmp_path) -> None:
    root = str(tmp_path)
    for p in (
        "etc/passwd",
        "root/.ssh/authorized_keys",
        "home/alice/.ssh/id_rsa",
        "home/bob/x",
        "usr/bin/ls",
    ):
        os.makedirs(os.path.dirname(os.path.join(root, p)), exist_ok=True)
        open(os.path.join(root, p), "w").close()
    got = expand_paths(root, ("/etc/passwd", "/etc/shadow", "~/.ssh", "/usr/bin", "/home/*/x", "/nope/*"))
    assert got == [
        f"{root}/etc/passwd",
        f"{root}/root/.ssh",
        f"{root}/home/alice/.ssh",
        f"{root}/usr/bin",
        f"{root}/home/bob/x",
    ]


def test_changes_by_a_pod_are_reported_and_aggregated(
    netns: str, harness: Callable[..., Harness], tmp_path
) -> None:
    secret = os.path.join(str(tmp_path), "app.conf")
    with open(secret, "w") as f:
        f.write("x\n")
    watched_dir = os.path.join(str(tmp_path), "ssh")
    os.mkdir(watched_dir)
    rules = (FileRule(secret), FileRule(watched_dir))
    h = harness(file_settings(), file_policy(netns, Mode.MONITOR, rules))
    assert h.find(what="runtime.started")[0]["file_monitor"] == "fanotify"
    # The node itself writing the file is not a workload's activity.
    with open(secret, "a") as f:
        f.write("node\n")
    # The writer stays a moment: a process that writes and exits within a millisecond may be gone before
    # it is identified (then it is counted as runtime.file.unattributed, see the README).
    loop = f"i=0; while [ $i -lt 200 ]; do echo $i >> {secret}; i=$((i+1)); done; echo k > {watched_dir}/key"
    r = in_pod(netns, loop + "; sleep 0.2")
    assert r.returncode == 0
    first = h.wait(type="file", path=secret, action="modified")
    assert first, (h.snapshot(), h.counters)
    assert first[0]["workload"] == f"netns:{netns}" and first[0]["group"] == "pod"
    assert first[0]["process"] == "sh" and first[0]["count"] == 1
    assert h.wait(type="file", path=f"{watched_dir}/key", action="modified")
    time.sleep(1.5)  # past the aggregation window
    # 200 appends (the kernel merges some while queued): one event at once, at most one folded
    # event for the rest of the window; nothing for the node's own write.
    events = h.find(type="file", path=secret)
    assert 1 <= len(events) <= 2, events
    assert all(e["process"] == "sh" for e in events)
    if len(events) == 2:
        assert events[1]["aggregated"] is True and int(events[1]["count"]) >= 1  # type: ignore[call-overload]


def test_protect_denies_opening_a_protected_file(
    netns: str, harness: Callable[..., Harness], tmp_path
) -> None:
    secret = os.path.join(str(tmp_path), "shadow")
    with open(secret, "w") as f:
        f.write("root:x\n")
    rules = (FileRule(secret, FileAction.BLOCK, apps=("cat",)),)
    h = harness(file_settings(), file_policy(netns, Mode.PROTECT, rules))
    w = in_pod(netns, f"echo owned >> {secret}")
    assert w.returncode != 0 and "not permitted" in w.stderr, w
    with open(secret) as f:
        assert f.read() == "root:x\n"
    r = in_pod(netns, f"cat {secret}")
    assert r.returncode == 0 and r.stdout == "root:x\n"  # the app the rule allows
    ev = h.wait(type="file", path=secret, action="denied")
    assert ev and ev[0]["process"] == "sh" and ev[0]["workload"] == f"netns:{netns}"
    assert wait_for(lambda: h.counters.get(anomalies.RUNTIME_FILE_DENIED, 0) >= 1)
    # The node opens it freely.
    with open(secret) as f:
        assert f.read() == "root:x\n"
    # In Monitor the same rule reports instead of denying.
    h.policy = file_policy(netns, Mode.MONITOR, rules)  # returns once the monitor has it in force
    assert in_pod(netns, f"exec 3< {secret}; sleep 0.2").returncode == 0
    assert h.wait(type="file", path=secret, action="violation", process="sh")


def test_inotify_fallback_reports_changes(netns: str, harness: Callable[..., Harness], tmp_path) -> None:
    secret = os.path.join(str(tmp_path), "hosts")
    with open(secret, "w") as f:
        f.write("x\n")
    h = harness(file_settings(file_backend="inotify"), file_policy(netns, Mode.MONITOR, (FileRule(secret),)))
    assert h.find(what="runtime.started")[0]["file_monitor"] == "inotify"
    assert wait_for(lambda: h.counters.get(anomalies.RUNTIME_FILE_FANOTIFY_UNAVAILABLE, 0) == 1)
    assert in_pod(netns, f"echo y >> {secret}; sleep 0.2").returncode == 0
    ev = h.wait(type="file", path=secret, action="modified")
    assert ev and ev[0]["group"] == "pod" and ev[0]["process"] is None  # inotify knows no process
    subprocess.run(["true"], check=True)
