"""Workload selectors: Kubernetes label selectors, namespaces and NeuVector criteria, as users write them."""

from __future__ import annotations

import ipaddress

import pytest

from core import workload_labels as WL
from core.selectors import (
    MAX_SELECTOR_REGEX_LEN,
    LabelIndex,
    SelectorError,
    selector_from_dict,
)
from policy.loader import parse_policy, parse_policy_text, policy_to_dict
from policy.model import PolicyError
from policy.tables import DictTables, Workload, compile_policy


def pod(name: str, namespace: str, workload: str = "", **labels: str) -> dict[str, str]:
    out = {WL.POD_NAME: name, WL.POD_NAMESPACE: namespace, **labels}
    if workload:
        out[WL.WORKLOAD_NAME] = workload
    return out


WEB = pod("web-1", "shop", "web", app="web", tier="front")
API = pod("api-1", "shop", "api", app="api", tier="back", version="v2")
DB = pod("db-1", "data", "db", app="db", tier="back", **{WL.IMAGES: "docker.io/mysql:8,docker.io/sidecar:1"})
OTHER = {"netns": "lab-x"}
PODS = [WEB, API, DB, OTHER]


def chosen(doc: dict) -> list[int]:
    return sorted(LabelIndex(PODS).select(selector_from_dict(doc, "test")))


def test_match_labels_and_expressions_are_anded() -> None:
    assert chosen({"matchLabels": {"tier": "back"}}) == [1, 2]
    assert chosen({"matchLabels": {"tier": "back"}, "matchExpressions": [
        {"key": "app", "operator": "In", "values": ["db", "web"]}]}) == [2]  # fmt: skip
    assert chosen({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}) == [1, 2, 3]
    assert chosen({"matchExpressions": [{"key": "version", "operator": "Exists"}]}) == [1]
    assert chosen({"matchExpressions": [{"key": "version", "operator": "DoesNotExist"}]}) == [0, 2, 3]


def test_namespaces_limit_a_selector() -> None:
    assert chosen({"namespaces": ["shop"]}) == [0, 1]
    assert chosen({"namespaces": ["shop", "data"], "matchLabels": {"tier": "back"}}) == [1, 2]
    by_name = "kubernetes.io/metadata.name"
    assert chosen({"namespaceSelector": {"matchLabels": {by_name: "data"}}}) == [2]
    assert chosen({"matchLabels": {"tier": "back"}, "namespaceSelector": {"matchExpressions": [
        {"key": by_name, "operator": "NotIn", "values": ["data"]}]}}) == [1]  # fmt: skip
    with pytest.raises(SelectorError, match="only kubernetes.io/metadata.name is known"):
        selector_from_dict({"namespaceSelector": {"matchLabels": {"team": "a"}}}, "g")


@pytest.mark.parametrize(
    ("criteria", "expected"),
    [
        ([{"key": "service", "op": "=", "value": "web.shop"}], [0]),
        ([{"key": "domain", "op": "=", "value": "shop"}], [0, 1]),
        ([{"key": "app", "op": "!=", "value": "web"}], [1, 2, 3]),
        ([{"key": "app", "op": "contains", "value": "p"}], [1]),
        ([{"key": "app", "op": "prefix", "value": "d"}], [2]),
        ([{"key": "app", "op": "regex", "value": "^(web|db)$"}], [0, 2]),
        ([{"key": "app", "op": "!regex", "value": "^(web|db)$"}], [1, 3]),
        ([{"key": "service", "op": "=", "value": "*.shop"}], [0, 1]),  # wildcard
        ([{"key": "service", "op": "=", "value": "ap?.shop"}], [1]),
        ([{"key": "image", "op": "prefix", "value": "docker.io/mysql"}], [2]),  # any of the images
        # same key: ORed
        ([{"key": "app", "op": "=", "value": "web"}, {"key": "app", "op": "=", "value": "db"}], [0, 2]),
        # different keys: ANDed
        ([{"key": "app", "op": "=", "value": "api"}, {"key": "domain", "op": "=", "value": "data"}], []),
        # a negative criterion narrows the positives of its key
        ([{"key": "tier", "op": "=", "value": "*"}, {"key": "tier", "op": "!=", "value": "front"}], [1, 2]),
    ],
)
def test_neuvector_criteria(criteria: list[dict[str, str]], expected: list[int]) -> None:
    assert chosen({"criteria": criteria}) == expected


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"criteria": [{"key": "app", "op": "regex", "value": "(unclosed"}]}, "bad regex"),
        (
            {"criteria": [{"key": "app", "op": "regex", "value": "a" * (MAX_SELECTOR_REGEX_LEN + 1)}]},
            "longer",
        ),
        ({"criteria": [{"key": "app", "op": "~", "value": "x"}]}, "operator"),
        ({"criteria": [{"key": "app", "op": "In", "value": "x"}]}, "Kubernetes operator"),
        ({"matchExpressions": [{"key": "app", "operator": "In", "values": []}]}, "at least one"),
        ({"matchExpressions": [{"key": "app", "operator": "Exists", "values": ["x"]}]}, "no values"),
        ({"matchExpressions": [{"key": "bad key!", "operator": "Exists"}]}, "label key"),
        ({"matchLabels": {}}, "empty"),
        ({"matchLabels": {"a": "b"}, "podSelector": {}}, "unknown selector key"),
    ],
)
def test_bad_selectors_are_refused_with_the_reason(doc: dict, message: str) -> None:
    with pytest.raises(SelectorError, match=message):
        selector_from_dict(doc, "group 'g'")


POLICY = """
version: 3
groups:
  - name: web
    mode: protect
    members:
      - matchLabels: {app: web}
        namespaceSelector: {matchExpressions: [{key: kubernetes.io/metadata.name, operator: In, values: [shop]}]}
  - name: back
    members:
      - criteria: [{key: tier, op: "=", value: back}, {key: domain, op: "!=", value: data}]
  - name: nv.db.data
  - {name: legacy, members: [{netns: lab-x}]}
rules:
  - {id: 1, from: web, to: back, ports: [tcp/8080], action: allow}
"""


def test_policy_with_every_form_compiles_to_the_right_addresses() -> None:
    snapshot = parse_policy_text(POLICY)
    addr = {0: "10.0.0.1", 1: "10.0.0.2", 2: "10.0.0.3", 3: "10.0.0.4"}
    workloads = [Workload((ipaddress.ip_address(addr[i]),), labels) for i, labels in enumerate(PODS)]
    tables = DictTables(compile_policy(snapshot, workloads))
    names = tables.compiled.names
    group = {i: names[tables.group_of(2, ipaddress.ip_address(a).packed)] for i, a in addr.items()}
    assert group == {0: "web", 1: "back", 2: "nv.db.data", 3: "legacy"}


def test_policy_round_trips_through_the_native_form() -> None:
    snapshot = parse_policy_text(POLICY)
    assert parse_policy(policy_to_dict(snapshot)) == snapshot


def test_a_bad_regex_names_the_group() -> None:
    bad = POLICY.replace('op: "!=", value: data', 'op: regex, value: "[a-"')
    with pytest.raises(PolicyError, match="group 'back'.*bad regex"):
        parse_policy_text(bad)


# ---- the index against a direct reading of the documented semantics, on generated workloads ---------

import fnmatch  # noqa: E402
import re  # noqa: E402

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_VALUES = st.sampled_from(["web", "api", "db", "web-2", "x", ""])
_KEYS = st.sampled_from(["app", "tier", "service", "domain"])
_LABELS = st.dictionaries(
    st.sampled_from(["app", "tier", WL.POD_NAMESPACE, WL.WORKLOAD_NAME]), _VALUES, max_size=4
)


def _derived(labels: dict[str, str], key: str) -> str | None:
    if key == "service":
        ns, wl = labels.get(WL.POD_NAMESPACE), labels.get(WL.WORKLOAD_NAME)
        return f"{wl}.{ns}" if ns is not None and wl else None
    if key == "domain":
        return labels.get(WL.POD_NAMESPACE)
    return labels.get(key)


def _criterion_holds(labels: dict[str, str], c: dict[str, str]) -> bool:
    have = _derived(labels, c["key"])
    op, value = c["op"], c["value"]
    positive = {
        "=": lambda v: fnmatch.fnmatchcase(v, value) if ("*" in value or "?" in value) else v == value,
        "!=": lambda v: fnmatch.fnmatchcase(v, value) if ("*" in value or "?" in value) else v == value,
        "contains": lambda v: value in v,
        "prefix": lambda v: v.startswith(value),
        "regex": lambda v: re.search(value, v) is not None,
        "!regex": lambda v: re.search(value, v) is not None,
    }[op]
    hit = have is not None and positive(have)
    return not hit if op in ("!=", "!regex") else hit


def _reference(labels: dict[str, str], criteria: list[dict[str, str]]) -> bool:
    """Same key: any positive holds (if there is one) and every negative holds; keys ANDed."""
    for key in {c["key"] for c in criteria}:
        mine = [c for c in criteria if c["key"] == key]
        positives = [c for c in mine if c["op"] not in ("!=", "!regex")]
        negatives = [c for c in mine if c["op"] in ("!=", "!regex")]
        if positives and not any(_criterion_holds(labels, c) for c in positives):
            return False
        if not all(_criterion_holds(labels, c) for c in negatives):
            return False
    return True


_CRITERION = st.one_of(
    st.fixed_dictionaries(
        {"key": _KEYS, "op": st.sampled_from(["=", "!=", "contains", "prefix"]),
         "value": st.sampled_from(["web", "api", "we*", "?pi", "web.shop", "*.shop", "e"])}
    ),
    st.fixed_dictionaries(
        {"key": _KEYS, "op": st.sampled_from(["regex", "!regex"]),
         "value": st.sampled_from(["^w", "b$", "^(web|api)$", "e", r"\.shop$"])}
    ),
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(_LABELS, max_size=12), st.lists(_CRITERION, min_size=1, max_size=5))
def test_the_index_selects_what_a_direct_reading_of_the_semantics_does(
    workloads: list[dict[str, str]], criteria: list[dict[str, str]]
) -> None:
    selector = selector_from_dict({"criteria": criteria}, "generated")
    expected = {i for i, labels in enumerate(workloads) if _reference(labels, criteria)}
    assert set(LabelIndex(workloads).select(selector)) == expected
