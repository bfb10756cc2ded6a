"""The native YAML format: parsing, strictness, round trip, error messages naming the item."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from core.lookup import Mode
from policy.loader import dump_policy, load_policy, parse_policy, parse_policy_text, policy_to_dict
from policy.model import PolicyError

DEMO = Path(__file__).resolve().parents[2] / "config" / "policies" / "demo.yaml"

BASE = """
version: 3
groups:
  - {name: web, mode: protect, members: [198.18.2.0/24, "fd00:198:18:2::/64"]}
  - {name: cli, members: [198.18.1.0/24]}
rules:
  - {id: 1, from: cli, to: web, ports: [tcp/80], applications: [http], action: allow}
"""


def _with(extra: str) -> str:
    return BASE + extra


def test_demo_policy_loads_and_round_trips() -> None:
    snap = load_policy(DEMO)
    assert snap.version == 1
    assert snap.group("servers").mode == Mode.PROTECT
    assert snap.group("servers-monitored").mode == Mode.MONITOR
    assert {g.name for g in snap.groups} >= {"external", "nodes", "clients"}
    assert parse_policy(policy_to_dict(snap)) == snap
    assert parse_policy_text(dump_policy(snap)) == snap
    assert snap.threats["syn_flood"].thresholds["syns_per_window"] == 1000
    assert snap.sensors[0].name == "credit-card"


def test_defaults_and_canonical_application_names() -> None:
    snap = parse_policy_text(BASE)
    assert snap.group("cli").mode == Mode.MONITOR  # default_mode
    assert snap.group("external").mode == Mode.MONITOR
    assert snap.rules[0].applications == ("HTTP",)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("  - {id: 1, from: cli, to: web, action: deny}\n", "rule id 1 is used twice"),
        ("  - {id: 2, from: cli, to: web, ports: [tcp/99999], action: deny}\n", "rule 2: port 'tcp/99999'"),
        ("  - {id: 3, from: cli, to: web, applications: [Gopher], action: deny}\n", "rule 3.*'Gopher'"),
        ("  - {id: 4, from: cli, to: web, action: maybe}\n", "rule 4.action: 'maybe'"),
        ("  - {id: 5, from: cli, to: web, action: allow, colour: red}\n", "unknown key 'colour'"),
        ("  - {id: 6, from: cli, to: db, action: allow}\n", "rule 6: to group 'db'"),
        ("  - {id: 0, from: cli, to: web, action: allow}\n", "rule 0: id must be"),
        ("  - {from: cli, to: web, action: allow}\n", r"rules\[1\]: missing key 'id'"),
    ],
)
def test_rule_errors_name_the_rule(extra: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse_policy_text(_with(extra))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            "sensors: [{name: s1, kind: dlp, context: body, patterns: ['(unclosed']}]\n",
            "sensor 's1': bad regular",
        ),
        ("sensors: [{name: s1, kind: dlp, context: toes, patterns: [a]}]\n", "sensor 's1'.context"),
        ("threats: {Bad Name: {enabled: true}}\n", "threat name 'Bad Name'"),
        ("threats: {x.y: {action: explode}}\n", "threat 'x.y'.action"),
        ("threats: {x.y: {thresholds: {rate: -1}}}\n", "threshold 'rate'"),
        ("file_rules: [{group: web, filter: etc/passwd}]\n", "not absolute"),
        ("process_profiles: [{group: ghost, processes: []}]\n", "group 'ghost'.*not defined"),
        ("colour: red\n", "unknown key 'colour'"),
    ],
)
def test_other_errors_name_the_item(extra: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse_policy_text(_with(extra))


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("version: 1\ngroups: [{name: a, members: [198.18.1.7/24]}]\n", "group 'a' member 0.*198.18.1.7/24"),
        ("version: 1\ngroups: [{name: a, mode: strict}]\n", "unknown mode 'strict'"),
        ("version: 1\ngroups: [{name: a}, {name: a}]\n", "group 'a' is defined twice"),
        ("version: 1\ngroups: [{name: a, fqdns: ['*.Example.com', 'x..com']}]\n", "FQDN 'x..com'"),
        ("version: 1\ngroups: [{name: a, members: [{'bad key!': v}]}]\n", "label key 'bad key!'"),
        (
            "version: 1\ngroups: [{name: a, mode: protect, members: [198.18.0.0/16]},"
            " {name: b, members: [198.18.1.0/24]}]\n",
            "198.18.1.0/24 of group 'b' \\(monitor\\) overlaps 198.18.0.0/16 of group 'a' \\(protect\\)",
        ),
        ("version: -1\n", "version -1"),
        ("groups: []\n", "missing key 'version'"),
        ("[1, 2]\n", "expected a mapping"),
        ("version: 1\nrules: {id: 1}\n", "rules: expected a list"),
        ("version: [\n", "not valid YAML"),
    ],
)
def test_document_errors(doc: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        parse_policy_text(doc)


def test_load_policy_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("version: 1\ngroups: [{name: a}, {name: a}]\n")
    with pytest.raises(PolicyError, match=r"p\.yaml: group 'a' is defined twice"):
        load_policy(path)
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "absent.yaml")


# Any YAML-ish value: the parser answers with a snapshot or a PolicyError, never anything else.
_scalars = st.none() | st.booleans() | st.integers(-5, 70000) | st.text(max_size=12)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {"version": st.integers(-2, 5) | st.text(max_size=3)},
        optional={
            "groups": st.lists(
                st.fixed_dictionaries(
                    {"name": st.sampled_from(["a", "b", "external", "nodes", "", "x y"])},
                    optional={"mode": _scalars, "members": _values, "fqdns": _values},
                ),
                max_size=4,
            ),
            "rules": st.lists(
                st.fixed_dictionaries(
                    {
                        "id": st.integers(-1, 4) | _scalars,
                        "from": st.sampled_from(["a", "b", "external"]),
                        "to": st.sampled_from(["a", "b", "nodes", "zz"]),
                        "action": st.sampled_from(["allow", "deny", "x"]),
                    },
                    optional={"ports": _values, "applications": _values, "order": _scalars},
                ),
                max_size=4,
            ),
            "threats": _values,
            "sensors": _values,
            "file_rules": _values,
            "process_profiles": _values,
        },
    )
)
def test_parser_only_raises_policy_error(doc: dict) -> None:
    try:
        snap = parse_policy(doc)
    except PolicyError:
        return
    assert parse_policy(policy_to_dict(snap)) == snap
    assert parse_policy(yaml.safe_load(dump_policy(snap))) == snap
