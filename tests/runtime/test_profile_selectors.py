"""Process profiles and file rules follow the same selectors as the network tables: a group written as
users write it (Kubernetes label selectors, NeuVector criteria, `nv.<service>.<domain>` names) selects
the same workloads in the runtime monitor, through the policy's derived document."""

from __future__ import annotations

import pytest

from core import workload_labels as WL
from node.policy_document import runtime_policy_dict
from policy.loader import parse_policy_text
from runtime.identity import Workload, group_of
from runtime.profiles import policy_from_dict, policy_to_dict

POLICY = """
version: 1
groups:
  - name: web
    mode: protect
    members:
      - {criteria: [{key: service, op: "=", value: "web.shop"}, {key: tier, op: "!=", value: batch}]}
  - name: api
    mode: monitor
    members:
      - {matchLabels: {app: api}, matchExpressions: [{key: track, operator: In, values: [stable, canary]}],
         namespaces: [shop]}
  - name: nv.cache.shop
    mode: monitor
rules: []
process_profiles:
  - {group: web, processes: [{name: nginx, path: /usr/sbin/nginx, action: allow}]}
  - {group: api, processes: [{name: api, path: /app/api, action: allow}]}
  - {group: nv.cache.shop, processes: [{name: redis-server, path: "*", action: allow}]}
"""

POD_UID = "0c6b1d2e-3f4a-4b5c-8d6e-7f8091a2b3c4"
POD = Workload(f"pod:{POD_UID}", "pod", None, POD_UID, 4026532001, None, None)


def pod_labels(workload: str, namespace: str, **labels: str) -> dict[str, dict[str, str]]:
    """What the runtime child hands the monitor for a pod the container runtime reported."""
    identity = {WL.WORKLOAD_NAME: workload, WL.POD_NAMESPACE: namespace, WL.POD_UID: POD_UID}
    return {POD_UID: {**labels, **identity}}


def runtime_policy():
    return policy_from_dict(runtime_policy_dict(parse_policy_text(POLICY)))


@pytest.mark.parametrize(
    ("workload", "namespace", "labels", "group"),
    [
        ("web", "shop", {}, "web"),
        ("web", "shop", {"tier": "front"}, "web"),
        ("web", "shop", {"tier": "batch"}, None),  # the negative criterion narrows
        ("web", "staging", {}, None),  # same workload, another namespace: another service
        ("api-7f9c", "shop", {"app": "api", "track": "canary"}, "api"),
        ("api-7f9c", "shop", {"app": "api", "track": "nightly"}, None),
        ("api-7f9c", "other", {"app": "api", "track": "stable"}, None),  # namespaces: [shop]
        ("cache", "shop", {}, "nv.cache.shop"),  # the group's name is its service
    ],
)
def test_runtime_groups_select_as_the_policy_writes_them(
    workload: str, namespace: str, labels: dict[str, str], group: str | None
) -> None:
    policy = runtime_policy()
    found = group_of(POD, policy.groups, pod_labels(workload, namespace, **labels))
    assert found == group
    if group is not None:
        assert policy.profiles[group].entries  # and the group's profile is there to apply


def test_a_pod_without_runtime_labels_is_in_no_selected_group() -> None:
    assert group_of(POD, runtime_policy().groups, {}) is None


def test_selectors_survive_the_document_round_trip() -> None:
    policy = runtime_policy()
    assert policy_from_dict(policy_to_dict(policy)) == policy
    with pytest.raises(ValueError, match=r"groups\[0\]\.selector"):
        policy_from_dict(
            {"groups": [{"name": "g", "selector": {"criteria": [{"key": "a", "op": "regex", "value": "("}]}}]}
        )
