"""Policy deltas: make/apply round trip, gaps and malformed deltas."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policy.delta import apply_delta, make_delta
from policy.loader import parse_policy, policy_to_dict
from policy.model import PolicyError
from policy.synth import synthetic_policy


def _mutate(doc: dict, seed: int) -> dict:
    rnd = random.Random(seed)
    new = {k: (list(v) if isinstance(v, list) else v) for k, v in doc.items()}
    new["version"] = doc["version"] + 1
    rules = new["rules"]
    for _ in range(rnd.randrange(0, 5)):
        if rules:
            rules.pop(rnd.randrange(len(rules)))
    for _ in range(rnd.randrange(0, 5)):
        i = rnd.randrange(len(rules))
        rules[i] = dict(rules[i], action="deny" if rules[i]["action"] == "allow" else "allow")
    added = {"id": 10_000 + seed, "from": "g1", "to": "new", "ports": ["tcp/9"], "applications": "any",
             "action": "allow", "order": 3}  # fmt: skip
    rules.insert(rnd.randrange(len(rules) + 1), added)
    if rnd.random() < 0.5:
        rules.reverse()
    groups = new["groups"]
    groups.insert(
        rnd.randrange(len(groups) + 1), {"name": "new", "mode": "protect", "members": ["fd00:198:ffff::/48"]}
    )
    for i, g in enumerate(groups):
        if g["name"] in ("external", "nodes") and rnd.random() < 0.5:
            groups[i] = dict(g, mode="protect" if g["mode"] != "protect" else "discover")
    if rnd.random() < 0.5:
        new["default_mode"] = "protect"
    return new


@pytest.mark.parametrize("seed", range(6))
def test_delta_round_trip(seed: int) -> None:
    old = policy_to_dict(synthetic_policy(40, 120, seed=seed, version=3))
    new = policy_to_dict(parse_policy(_mutate(old, seed)))
    delta = make_delta(old, new)
    assert apply_delta(old, delta) == new
    assert parse_policy(apply_delta(old, delta)) == parse_policy(new)
    assert len(str(delta)) < len(str(new))  # smaller than a full snapshot


def test_empty_delta_and_gap() -> None:
    doc = policy_to_dict(synthetic_policy(5, 5, version=2))
    same = dict(doc, version=3)
    delta = make_delta(doc, same)
    assert set(delta) == {"base", "version"}
    assert apply_delta(doc, delta) == same
    with pytest.raises(PolicyError, match="cannot apply to version 3"):
        apply_delta(same, delta)


@pytest.mark.parametrize(
    ("delta", "message"),
    [
        ({"base": 2, "version": 3, "remove": {"rules": [999_999]}}, "lacks"),
        ({"base": 2, "version": 3, "order": {"rules": [1]}}, "order of rules"),
        ({"base": 2, "version": 3, "upsert": {"groups": [{"mode": "x"}]}}, "has no 'name'"),
        ({"base": 2, "version": 3, "upsert": []}, "must be mappings"),
        ({"base": 2, "version": 3, "remove": {"rules": 5}}, "not a list"),
        ([1, 2], "not a mapping"),
    ],
)
def test_malformed_deltas_are_refused(delta: object, message: str) -> None:
    doc = policy_to_dict(synthetic_policy(5, 5, version=2))
    with pytest.raises(PolicyError, match=message):
        apply_delta(doc, delta)  # type: ignore[arg-type]


_junk = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.text(max_size=4),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(["name", "id", "group", "x"]), inner, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(
    st.fixed_dictionaries(
        {"base": st.just(2), "version": st.integers(0, 5)},
        optional={
            k: st.dictionaries(
                st.sampled_from(["groups", "rules", "sensors", "process_profiles", "x"]), _junk, max_size=3
            )
            | _junk
            for k in ("upsert", "remove", "order", "replace")
        }
        | {"drop": _junk},
    )
)
def test_apply_delta_raises_only_policy_error(delta: dict) -> None:
    doc = policy_to_dict(synthetic_policy(3, 3, version=2))
    try:
        out = apply_delta(doc, delta)
    except PolicyError:
        return
    assert out["version"] == delta["version"]
