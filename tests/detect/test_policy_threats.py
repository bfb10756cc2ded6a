"""Threat settings as the policy carries them: node-wide defaults, per-group overrides, catalogue defaults."""

from __future__ import annotations

import pytest

from policy.loader import parse_policy, policy_to_dict
from policy.model import PolicyError, ThreatAction
from threats.catalogue import BY_NAME
from threats.catalogue import ThreatAction as DetectAction
from workers.detect.engine import threat_policy_from_snapshot

DOC = {
    "version": 3,
    "groups": [{"name": "web", "mode": "protect", "members": ["198.18.2.0/24"]}],
    "threats": {
        "tcp.syn_flood": {"thresholds": {"syns_per_window": 500}},
        "sql_injection": {"action": "alert"},
    },
    "group_threats": {
        "web": {"sql_injection": {"action": "reset"}, "mysql_access_denied": {"action": "block-source"}}
    },
}


def test_group_threats_round_trip_and_reach_the_detectors() -> None:
    snapshot = parse_policy(DOC)
    assert snapshot.threats["tcp.syn_flood"].action is None  # not given: the catalogue decides
    assert snapshot.group_threats["web"]["mysql_access_denied"].action is ThreatAction.BLOCK_SOURCE
    assert parse_policy(policy_to_dict(snapshot)) == snapshot
    policy = threat_policy_from_snapshot(snapshot, use_hyperscan=False)
    default = policy.settings.default
    web = policy.settings.groups["web"]
    syn, sqli, mysql = BY_NAME["syn_flood"], BY_NAME["sql_injection"], BY_NAME["mysql_access_denied"]
    assert default.action(syn) is DetectAction.DROP  # catalogue default kept
    assert default.threshold(syn, "syns_per_window") == 500
    assert default.action(sqli) is DetectAction.ALERT
    assert web.action(sqli) is DetectAction.RESET
    assert web.action(mysql) is DetectAction.BLOCK_SOURCE
    assert web.threshold(syn, "syns_per_window") == 500  # groups overlay the node-wide settings


def test_group_threats_name_an_unknown_group() -> None:
    with pytest.raises(PolicyError, match="group_threats: group 'db' is not defined"):
        parse_policy({**DOC, "group_threats": {"db": {}}})


def test_policy_process_rejects_threat_settings_the_workers_cannot_compile() -> None:
    from workers.detect.engine import threat_policy_problem

    assert threat_policy_problem(parse_policy(DOC)) == ""
    bad = parse_policy({**DOC, "threats": {"syn_flood": {"thresholds": {"rate": 5}}}})
    assert "syn_flood.rate: unknown setting" in threat_policy_problem(bad)
    sensor = {
        "name": "s",
        "kind": "waf",
        "context": "url",
        "patterns": ["(?i)union\\\\s+select"],
        "action": "block",
    }
    assert threat_policy_problem(parse_policy({**DOC, "sensors": [sensor]})) == ""  # leading flags are fine
