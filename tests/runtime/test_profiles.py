from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import anomalies
from core.lookup import Mode
from runtime.identity import GroupSelector
from runtime.profiles import (
    EntryAction,
    FileAction,
    FileRule,
    Learner,
    Outcome,
    ProcessEntry,
    ProcessProfile,
    RuntimePolicy,
    decide,
    policy_from_dict,
    policy_to_dict,
)

ENTRIES = (
    ProcessEntry("nginx", "/usr/sbin/nginx"),
    ProcessEntry("curl", "*", EntryAction.DENY),
    ProcessEntry("py*", "/usr/bin/python3*"),
    ProcessEntry("*", "/opt/app/bin/*"),
)


@pytest.mark.parametrize(
    ("mode", "name", "path", "outcome"),
    [
        (Mode.PROTECT, "nginx", "/usr/sbin/nginx", Outcome.ALLOWED),
        (Mode.PROTECT, "nginx", "/tmp/nginx", Outcome.KILL),  # right name, wrong path
        (Mode.PROTECT, "python3", "/usr/bin/python3.11", Outcome.ALLOWED),
        (Mode.PROTECT, "worker", "/opt/app/bin/worker", Outcome.ALLOWED),
        (Mode.PROTECT, "curl", "/usr/bin/curl", Outcome.KILL),
        (Mode.MONITOR, "curl", "/usr/bin/curl", Outcome.VIOLATION),
        (Mode.DISCOVER, "curl", "/usr/bin/curl", Outcome.VIOLATION),  # a deny entry is reported in Discover
        (Mode.DISCOVER, "bash", "/bin/bash", Outcome.LEARN),
        (Mode.MONITOR, "bash", "/bin/bash", Outcome.VIOLATION),
        (Mode.PROTECT, "bash", "/bin/bash", Outcome.KILL),
    ],
)
def test_decide(mode: Mode, name: str, path: str, outcome: Outcome) -> None:
    assert decide(ProcessProfile("g", mode, ENTRIES), name, path)[0] is outcome


def test_first_matching_entry_wins() -> None:
    entries = (ProcessEntry("curl", "*", EntryAction.DENY), ProcessEntry("*"))
    assert decide(ProcessProfile("g", Mode.PROTECT, entries), "curl", "/usr/bin/curl")[0] is Outcome.KILL
    assert (
        decide(ProcessProfile("g", Mode.PROTECT, entries[::-1]), "curl", "/usr/bin/curl")[0]
        is Outcome.ALLOWED
    )


def test_learned_processes_are_allowed_until_the_profile_comes_back() -> None:
    learned = frozenset({("bash", "/bin/bash")})
    prof = ProcessProfile("g", Mode.PROTECT, ())
    assert decide(prof, "bash", "/bin/bash", learned)[0] is Outcome.ALLOWED
    assert decide(prof, "bash", "/tmp/bash", learned)[0] is Outcome.KILL


def test_learner_is_bounded_and_counts() -> None:
    counters: dict[str, int] = {}
    lr = Learner(2, counters)
    assert lr.learn("g", "a", "/a") and not lr.learn("g", "a", "/a")
    assert lr.learn("g", "b", "/b")
    assert not lr.learn("g", "c", "/c")
    assert counters[anomalies.RUNTIME_LEARN_GROUP_FULL] == 1
    assert lr.learned("g") == {("a", "/a"), ("b", "/b")}
    assert lr.learn("h", "c", "/c")  # the bound is per group


def test_file_rule_covers_patterns_and_directories() -> None:
    assert FileRule("/etc/ssh").covers("/etc/ssh/sshd_config")
    assert FileRule("/etc/*.conf").covers("/etc/resolv.conf")
    assert not FileRule("/etc/ssh").covers("/etc/sshd")


def test_policy_round_trip_and_errors() -> None:
    pol = RuntimePolicy(
        groups=(GroupSelector("web", {"app": "web"}, ("198.18.0.0/24",)),),
        profiles={"web": ProcessProfile("web", Mode.PROTECT, ENTRIES)},
        file_rules={"web": (FileRule("/etc/passwd", FileAction.BLOCK, ("vipw",)),)},
        workload_labels={"rt-a": {"app": "web"}},
    )
    assert policy_from_dict(policy_to_dict(pol)) == pol
    with pytest.raises(ValueError, match=r"profiles\.g\.mode: expected one of discover, monitor, protect"):
        policy_from_dict({"profiles": {"g": {"entries": []}}})
    with pytest.raises(ValueError, match=r"profiles\.g\.entries\[0\]\.action"):
        policy_from_dict({"profiles": {"g": {"mode": "protect", "entries": [{"action": "maybe"}]}}})
    with pytest.raises(ValueError, match=r"groups\[0\]\.cidrs: not an address"):
        policy_from_dict({"groups": [{"name": "g", "cidrs": ["198.18.0.0/33"]}]})
    with pytest.raises(ValueError, match=r"file_rules\.g\[0\]\.path"):
        policy_from_dict({"file_rules": {"g": [{"action": "block"}]}})
    with pytest.raises(ValueError, match="unknown keys profile"):
        policy_from_dict({"profile": {}})


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)
_TOP_KEYS = ("groups", "profiles", "file_rules", "workload_labels")
_keys = st.sampled_from(_TOP_KEYS)


@given(st.dictionaries(_keys, _json, max_size=4))
def test_policy_from_dict_accepts_or_names_the_problem(data: dict[str, object]) -> None:
    """Whatever plain data arrives, the answer is a policy or a ValueError that names where the problem
    is, never another exception."""
    try:
        pol = policy_from_dict(data)
    except ValueError as exc:
        assert str(exc).startswith(("policy:", *_TOP_KEYS)), exc
        return
    assert policy_from_dict(policy_to_dict(pol)) == pol
