"""The model and its validation: each error names the offending item."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.lookup import Mode
from policy.model import (
    PROTO_ANY,
    PROTO_ICMP,
    PROTO_TCP,
    PROTO_UDP,
    Group,
    PolicyError,
    PolicySnapshot,
    PortSpec,
    Rule,
    startup_snapshot,
    validate_snapshot,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("any", PortSpec(PROTO_ANY)),
        ("icmp", PortSpec(PROTO_ICMP)),
        ("tcp/80", PortSpec(PROTO_TCP, 80, 80)),
        ("udp/53", PortSpec(PROTO_UDP, 53, 53)),
        ("tcp/8000-8100", PortSpec(PROTO_TCP, 8000, 8100)),
        ("TCP/any", PortSpec(PROTO_TCP, 0, 65535)),
        ("udp", PortSpec(PROTO_UDP, 0, 65535)),
    ],
)
def test_port_spec_parses(text: str, expected: PortSpec) -> None:
    assert PortSpec.parse(text) == expected
    assert PortSpec.parse(str(expected)) == expected


@pytest.mark.parametrize(
    "text",
    ["tcp/65536", "tcp/100-80", "sctp/80", "tcp/http", "tcp/-5", "tcp/1-2-3", "", "tcp/123456", "udp/ 5"],
)
def test_bad_ports_are_rejected_by_name(text: str) -> None:
    with pytest.raises(PolicyError, match="port"):
        PortSpec.parse(text)


@given(st.text(max_size=20))
def test_port_parser_never_raises_anything_but_policy_error(text: str) -> None:
    try:
        spec = PortSpec.parse(text)
    except PolicyError:
        return
    assert 0 <= spec.low <= spec.high <= 65535


def test_port_matching() -> None:
    assert PortSpec.parse("tcp/8000-8100").matches(6, 8050)
    assert not PortSpec.parse("tcp/8000-8100").matches(17, 8050)
    assert not PortSpec.parse("tcp/8000-8100").matches(6, 8101)
    assert PortSpec.parse("icmp").matches(58, 0)
    assert PortSpec.parse("icmp").matches(1, 0)
    assert PortSpec.parse("any").matches(132, 9)


def _snapshot(groups: list[Group], rules: tuple[Rule, ...] = ()) -> PolicySnapshot:
    base = startup_snapshot(Mode.MONITOR, version=1)
    return PolicySnapshot(version=1, groups=tuple(groups) + base.groups, rules=rules)


def _net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)


def test_overlap_with_conflicting_modes_names_both_groups() -> None:
    a = Group("a", Mode.PROTECT, (_net("198.18.0.0/16"),))
    b = Group("b", Mode.MONITOR, (_net("198.18.4.0/24"),))
    with pytest.raises(PolicyError, match=r"198\.18\.4\.0/24 of group 'b'.*'a'"):
        validate_snapshot(_snapshot([a, b]))


def test_overlap_with_same_mode_is_accepted() -> None:
    a = Group("a", Mode.PROTECT, (_net("198.18.0.0/16"),))
    b = Group("b", Mode.PROTECT, (_net("198.18.4.0/24"),))
    assert validate_snapshot(_snapshot([a, b])) is None  # raises PolicyError if refused


def test_overlap_v6_conflict_detected_past_unrelated_prefixes() -> None:
    a = Group("a", Mode.PROTECT, (_net("fd00::/16"), _net("198.18.0.0/24")))
    c = Group("c", Mode.PROTECT, (_net("fd00:1::/32"),))
    b = Group("b", Mode.DISCOVER, (_net("fd00:1:2::/48"),))
    with pytest.raises(PolicyError, match="fd00:1:2::/48 of group 'b'"):
        validate_snapshot(_snapshot([a, c, b]))


def test_same_cidr_in_two_groups_is_ambiguous() -> None:
    a = Group("a", Mode.PROTECT, (_net("198.18.4.0/24"),))
    b = Group("b", Mode.PROTECT, (_net("198.18.4.0/24"),))
    with pytest.raises(PolicyError, match="in both group 'a' and group 'b'"):
        validate_snapshot(_snapshot([a, b]))


def test_external_takes_no_members() -> None:
    snap = PolicySnapshot(
        version=1,
        groups=(Group("external", Mode.MONITOR, (_net("198.18.9.0/24"),)), Group("nodes", Mode.MONITOR)),
    )
    with pytest.raises(PolicyError, match="external"):
        validate_snapshot(snap)


def test_rule_to_unknown_group_and_duplicate_id() -> None:
    a = Group("a", Mode.PROTECT)
    with pytest.raises(PolicyError, match="rule 5: to group 'nope' is not defined"):
        validate_snapshot(_snapshot([a], (Rule(5, "a", "nope"),)))
    with pytest.raises(PolicyError, match="rule id 5 is used twice"):
        validate_snapshot(_snapshot([a], (Rule(5, "a", "a"), Rule(5, "a", "external"))))


def test_rule_with_unknown_application_is_named() -> None:
    a = Group("a", Mode.PROTECT)
    with pytest.raises(PolicyError, match="rule 7: unknown application 'Gopher'"):
        validate_snapshot(_snapshot([a], (Rule(7, "a", "a", applications=("Gopher",)),)))


def test_startup_snapshot_is_valid() -> None:
    for mode in Mode:
        snap = startup_snapshot(mode)
        validate_snapshot(snap)
        assert snap.group("external").mode == mode
