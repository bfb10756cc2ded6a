"""`enforcer controller learned --crd`: learned connections as NeuVector CRDs, with the served policy's
group criteria, that `enforcer policy import` reads back."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from controller.cli import register
from controller.store import EventStore
from core.events import EventType, make_event
from policy.crd import convert_crds
from policy.loader import parse_policy, yaml_load_all


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="enforcer")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return int(args.func(args))


def test_learned_rules_as_crds_with_the_policy_groups(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "c.db"
    store = EventStore(db)
    store.add_events("node-1", [
        make_event(EventType.CONNECTION, "node-1", client_group="frontend", server_group="nv.api.shop",
                   app="HTTP", port=8080, count=2, proto=6),
        make_event(EventType.CONNECTION, "node-1", client_group="frontend", server_group="cache",
                   app="", port=6379, count=1, proto=6),
    ])  # fmt: skip
    store.close()
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "groups.yaml").write_text(
        "version: 1\ngroups:\n  - name: frontend\n    mode: discover\n"
        "    members: [{matchLabels: {app: frontend}, namespaces: [shop]}]\n"
    )
    out = tmp_path / "learned-crds.yaml"
    assert (
        run(
            "controller",
            "learned",
            "--db",
            str(db),
            "--crd",
            "--policy-dir",
            str(policies),
            "--export",
            str(out),
        )
        == 0
    )
    assert "group 'cache': not in the served policy" in capsys.readouterr().err  # reported, still exported
    doc = yaml.safe_load(out.read_text())
    kinds = sorted(item["kind"] for item in doc["items"])
    assert kinds.count("NvGroupDefinition") == 3
    frontend = next(
        i for i in doc["items"] if i["kind"] == "NvSecurityRule" and i["metadata"]["name"] == "frontend"
    )
    assert {"key": "app", "op": "=", "value": "frontend"} in frontend["spec"]["target"]["selector"][
        "criteria"
    ]
    native, _ = convert_crds(yaml_load_all(out.read_text()))
    back = parse_policy(native)
    assert sorted((r.from_group, r.to_group, str(r.ports[0])) for r in back.rules) == [
        ("frontend", "cache", "tcp/6379"), ("frontend", "nv.api.shop", "tcp/8080"),
    ]  # fmt: skip
