"""The `process` and `threat` events the process monitor and the exec guard emit (docs/runtime.md)."""

from __future__ import annotations

from core.lookup import Mode
from runtime import detections
from runtime.identity import Workload
from runtime.proc_connector import ProcessInfo
from runtime.process_events import Tracked, process_event, threat_event
from runtime.profiles import EntryAction, ProcessEntry, ProcessProfile

INFO = ProcessInfo(
    pid=40, ppid=30, name="nc", path="/usr/bin/nc.openbsd", cmdline=("nc", "-l", "4444"),
    ruid=1000, euid=0, user="app", start_time=1.0, parents=((30, "sh"), (20, "bash")),
)  # fmt: skip
WORKLOAD = Workload("netns:pod1", "netns", None, None, 7, "pod1", "")
TRACKED = Tracked(INFO, WORKLOAD, "web")


def test_process_event_names_what_the_profile_matched_and_the_rule() -> None:
    profile = ProcessProfile("web", Mode.PROTECT, ())
    rule = ProcessEntry("nc", "/usr/bin/*", EntryAction.DENY)
    ev = process_event("node-a", TRACKED, "killed", profile, rule, "nc", "/bin/nc", latency_ms=1.5)
    assert (ev["type"], ev["node"], ev["action"]) == ("process", "node-a", "killed")
    assert ev["workload"] == "netns:pod1"
    assert (ev["group"], ev["mode"], ev["rule"]) == ("web", "protect", "deny name=nc path=/usr/bin/*")
    assert (ev["name"], ev["path"]) == ("nc", "/bin/nc")  # as matched, not the examined image
    assert (ev["pid"], ev["ppid"], ev["uid"], ev["euid"], ev["user"]) == (40, 30, 1000, 0, "app")
    assert ev["cmdline"] == ["nc", "-l", "4444"] and ev["latency_ms"] == 1.5
    assert ev["chain"] == [{"pid": 30, "name": "sh"}, {"pid": 20, "name": "bash"}]
    discover = ProcessProfile("web", Mode.DISCOVER)
    learned = process_event("node-a", TRACKED, "learned", discover, None, "nc", "/x")
    assert learned["rule"] is None and learned["mode"] == "discover"


def test_threat_event_keeps_the_threat_name_and_the_process_name_apart() -> None:
    name = detections.SUSPICIOUS_PROCESS
    ev = threat_event("node-a", TRACKED, name, detections.SEVERITY[name], "alert", "nc -l")
    assert (ev["type"], ev["name"], ev["process_name"]) == ("threat", name, "nc")
    assert (ev["action"], ev["detail"], ev["flow"], ev["group"]) == ("alert", "nc -l", None, "web")
    assert ev["severity"] == detections.SEVERITY[name] and ev["path"] == "/usr/bin/nc.openbsd"
    assert ev["workload"] == "netns:pod1" and ev["chain"][0] == {"pid": 30, "name": "sh"}
