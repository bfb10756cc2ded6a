"""NeuVector CRDs as NeuVector writes them, and our policies written back as CRDs NeuVector accepts."""

from __future__ import annotations

import ipaddress
import re
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from controller.learned_export import learned_as_crds
from core import workload_labels as WL
from core.lookup import Mode
from core.selectors import NEUVECTOR_OPS
from policy.crd import convert_crds, rule_id_for, snapshot_to_crds
from policy.loader import SafeDumper, parse_policy, parse_policy_text, yaml_load_all
from policy.model import PolicySnapshot
from policy.tables import Workload, compile_policy

DATA = Path(__file__).parent / "data"


def import_text(text: str) -> tuple[PolicySnapshot, list[str]]:
    native, warnings = convert_crds(yaml_load_all(text), version=2)
    return parse_policy(native), warnings


def pod(address: str, namespace: str, workload: str, **labels: str) -> Workload:
    ident = {WL.POD_NAMESPACE: namespace, WL.WORKLOAD_NAME: workload, WL.POD_NAME: f"{workload}-x1", **labels}
    return Workload((ipaddress.ip_address(address),), ident)


PODS = [
    pod("198.18.11.1", "finance", "ledger", app="ledger"),
    pod("198.18.11.2", "fin-ops", "payments", app="payments", tier="web"),
    pod("198.18.11.3", "fin-ops", "payout", app="payout", tier="batch"),  # tier != batch: not a payment
    pod("198.18.11.4", "finance", "postgres", app="db"),
    pod("198.18.11.5", "web", "front", **{WL.IMAGES: "docker.io/library/nginx:1.27"}),
    pod("198.18.11.6", "shop", "web", app="web", tier="front"),
    pod("198.18.11.7", "shop", "api", app="api", tier="back", version="v2"),
]


def groups_of(snapshot: PolicySnapshot) -> dict[str, str]:
    compiled = compile_policy(snapshot, PODS)
    return {
        str(ipaddress.IPv4Address(addr)): compiled.names[g] for addr, g in compiled.v4.get(32, {}).items()
    }


def test_a_neuvector_export_imports_and_reports_what_it_cannot_carry() -> None:
    snapshot, warnings = import_text((DATA / "nv_export_full.yaml").read_text())
    assert groups_of(snapshot) == {
        "198.18.11.1": "nv.ledger.finance",
        "198.18.11.2": "payments-tier",
        "198.18.11.4": "nv.postgres.finance",  # a selector without criteria: the nv.<service> name says
    }  # 198.18.11.5 runs nginx, but `container = web` names no workload label (reported below)
    modes = {g.name: g.mode for g in snapshot.groups}
    assert modes["nv.ledger.finance"] == Mode.PROTECT and modes["images-nginx"] == Mode.MONITOR
    assert modes["nv.postgres.finance"] == Mode.DISCOVER
    rule = {r.id: r for r in snapshot.rules}[rule_id_for("payments-to-ledger")]
    assert (rule.from_group, rule.to_group, rule.applications) == (
        "payments-tier",
        "nv.ledger.finance",
        ("HTTP",),
    )
    profile = {p.group: p for p in snapshot.process_profiles}["nv.ledger.finance"]
    assert [(p.name, p.action.value) for p in profile.processes] == [("ledger", "allow"), ("nc", "deny")]
    assert [(f.filter, f.behavior.value, f.recursive) for f in snapshot.file_rules] == [
        ("/etc/ledger", "block", True)
    ]
    reported = "\n".join(warnings)
    for item in ("baseline 'zero-drift'", "process 'nc': allow_update", "criterion container = web"):
        assert item in reported, reported
    assert all("NvSecurityRule" in w or "NvClusterSecurityRule" in w for w in warnings)  # each names its item


POLICY = """
version: 9
default_mode: monitor
groups:
  - {name: web, mode: protect, members: [{matchLabels: {app: web}, namespaces: [shop]}]}
  - name: api
    mode: monitor
    members: [{matchExpressions: [{key: app, operator: In, values: [api, apiv2]},
                                  {key: version, operator: Exists}, {key: canary, operator: DoesNotExist}]}]
  - {name: nv.ledger.finance, mode: protect}
  - name: payments
    mode: discover
    members: [{criteria: [{key: app, op: regex, value: "^pay"}, {key: tier, op: "!=", value: batch}]}]
  - {name: nginx, members: [{criteria: [{key: image, op: contains, value: nginx}]}]}
  - {name: partners, mode: monitor, members: [198.18.9.0/24, "fd00:198:18:9::/64"]}
  - {name: legacy, members: [{app: db}]}
rules:
  - {id: 1, from: web, to: api, ports: [tcp/8080, tcp/8443], applications: [HTTP], action: allow, order: 1}
  - {id: 2, from: payments, to: nv.ledger.finance, ports: [tcp/8000-8100], action: allow, order: 2}
  - {id: 3, from: api, to: external, ports: [udp/53], action: allow, order: 3}
  - {id: 4, from: partners, to: web, ports: [tcp], action: deny, order: 4}
  - {id: 5, from: external, to: nginx, ports: [any], action: allow, order: 5}
process_profiles:
  - {group: web, processes: [{name: nginx, path: /usr/sbin/nginx}, {name: sh, path: "*", action: deny}]}
file_rules:
  - {group: nv.ledger.finance, filter: /etc/ledger/*, recursive: true, behavior: block, applications: [ledger]}
  - {group: web, filter: /var/log/nginx.log, behavior: monitor}
"""


def rules_of(snapshot: PolicySnapshot) -> list[tuple[Any, ...]]:
    return sorted(
        (r.id, r.from_group, r.to_group, r.ports, r.applications, r.action, r.order) for r in snapshot.rules
    )


def test_export_then_import_gives_the_same_policy() -> None:
    original = parse_policy_text(POLICY)
    crds, warnings = snapshot_to_crds(original)
    assert warnings == []
    text = yaml.dump(crds, Dumper=SafeDumper, sort_keys=False)
    back, _ = import_text(text)
    assert groups_of(back) == groups_of(original)
    assert len(groups_of(original)) == 6  # every group of ours but partners (addresses) selects a pod
    assert {g.name: g.mode for g in back.groups} == {g.name: g.mode for g in original.groups}
    assert {g.name: g.cidrs for g in back.groups} == {g.name: g.cidrs for g in original.groups}
    assert rules_of(back) == rules_of(original)
    assert back.process_profiles == original.process_profiles
    assert sorted(back.file_rules, key=str) == sorted(original.file_rules, key=str)
    legacy_pod = [Workload((ipaddress.ip_address("198.18.11.9"),), {"app": "db"})]
    assert compile_policy(back, legacy_pod).v4 == compile_policy(original, legacy_pod).v4


_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_PORTS = re.compile(r"^(any|icmp|(tcp|udp)(/(\d{1,5}(-\d{1,5})?|any))?)$")
_RULE_KEYS = {"action", "applications", "name", "ports", "priority", "selector"}


def check_neuvector_shape(doc: dict[str, Any]) -> None:
    """The documented CRD shape NeuVector's controller validates on admission (the fields we write)."""
    assert doc["apiVersion"] == "v1" and doc["kind"] == "List"
    for item in doc["items"]:
        assert item["apiVersion"] == "neuvector.com/v1"
        assert item["kind"] in ("NvSecurityRule", "NvClusterSecurityRule", "NvGroupDefinition")
        assert _DNS1123.match(item["metadata"]["name"]), item["metadata"]
        assert ("namespace" in item["metadata"]) == (item["kind"] == "NvSecurityRule")
        spec = item["spec"]
        selectors = (
            [spec["selector"]] if item["kind"] == "NvGroupDefinition" else [spec["target"]["selector"]]
        )
        if item["kind"] != "NvGroupDefinition":
            assert spec["target"]["policymode"] in ("Discover", "Monitor", "Protect")
            for rule in spec["ingress"] + spec["egress"]:
                assert set(rule) == _RULE_KEYS and rule["action"] in ("allow", "deny")
                assert all(_PORTS.match(p) for p in rule["ports"].split(",")), rule["ports"]
                assert isinstance(rule["priority"], int) and rule["applications"]
                selectors.append(rule["selector"])
            for f in spec.get("file", []):
                assert f["behavior"] in ("monitor_change", "block_access") and f["filter"].startswith("/")
        for sel in selectors:
            assert isinstance(sel["name"], str) and isinstance(sel["criteria"], list)
            for c in sel["criteria"]:
                assert set(c) == {"key", "op", "value"} and c["op"] in NEUVECTOR_OPS, c
                if c["key"] == "address":
                    assert c["op"] == "="


def test_export_has_the_shape_neuvector_accepts() -> None:
    crds, _ = snapshot_to_crds(parse_policy_text(POLICY))
    check_neuvector_shape(crds)
    kinds = Counter(item["kind"] for item in crds["items"])
    assert kinds == {
        "NvGroupDefinition": 7,
        "NvSecurityRule": 2,
        "NvClusterSecurityRule": 5,
    }  # web, ledger: one namespace


def test_what_cannot_be_exported_is_reported() -> None:
    policy = POLICY.replace("order: 1}", 'order: 1, hosts: ["shop.example.com"]}').replace(
        "  - {name: legacy, members: [{app: db}]}", "  - {name: legacy, members: [{app: db}, {app: cache}]}"
    )
    _, warnings = snapshot_to_crds(parse_policy_text(policy))
    assert any("rule 1: virtual hosts" in w for w in warnings)
    assert any("group 'legacy': 2 selectors ORed" in w for w in warnings)


def test_learned_rules_export_as_crds_and_import_back() -> None:
    learned = {"rules": [
        {"id": 100000, "from": "nv.busybox.demo", "to": "nv.nginx.demo", "ports": ["tcp/80"],
         "applications": ["HTTP"], "action": "allow", "comment": "learned from 3 connection(s)"},
        {"id": 100001, "from": "nv.nginx.demo", "to": "external", "ports": ["udp/53"],
         "applications": "any", "action": "allow"},
    ]}  # fmt: skip
    crds, warnings = learned_as_crds(learned, None)
    assert warnings == []
    check_neuvector_shape(crds)
    back, _ = import_text(yaml.dump(crds, Dumper=SafeDumper))
    assert [(r.id, r.from_group, r.to_group) for r in sorted(back.rules, key=lambda r: r.id)] == [
        (100000, "nv.busybox.demo", "nv.nginx.demo"), (100001, "nv.nginx.demo", "external"),
    ]  # fmt: skip
    nginx = pod("198.18.11.8", "demo", "nginx")
    assert compile_policy(back, [nginx]).v4[32] == {int(ipaddress.ip_address("198.18.11.8")): 3}


@pytest.mark.parametrize("bad", ["items: null", "items: []"])
def test_an_empty_list_imports_as_an_empty_policy(bad: str) -> None:
    snapshot, warnings = import_text(f"apiVersion: v1\nkind: List\n{bad}\n")
    assert snapshot.rules == () and warnings == []


def test_plain_label_criteria_import_as_the_plain_selector_the_runtime_uses_too() -> None:
    text = """
kind: NvClusterSecurityRule
metadata: {name: web}
spec:
  target:
    policymode: Protect
    selector:
      name: web
      criteria: [{key: app, op: =, value: web}, {key: tier, op: =, value: front}]
"""
    snapshot, _ = import_text(text)
    web = snapshot.group("web")
    assert web.selectors == ((("app", "web"), ("tier", "front")),) and web.workload_selectors == ()
    regex = text.replace("op: =, value: front", "op: regex, value: ^fr")
    assert import_text(regex)[0].group("web").selectors == ()  # any other operator: a criteria selector
