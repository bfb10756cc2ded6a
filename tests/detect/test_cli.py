"""`enforcer threats list|check` and the deprecated `threats replay` alias of `enforcer replay`."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest

from node.threats_cli import _handler, register

PCAPS = Path(__file__).parent / "pcaps"


def run(argv: list[str]) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="enforcer")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    out = io.StringIO()
    return _handler(args, out), out.getvalue()


def test_list() -> None:
    code, text = run(["threats", "list", "--json"])
    rows = [json.loads(line) for line in text.splitlines()]
    assert code == 0 and rows[0]["name"] == "syn_flood" and rows[0]["id"] == 1001 and len(rows) >= 33


def test_check_accepts_detection_documents_and_whole_policies(tmp_path: Path) -> None:
    doc = tmp_path / "detect.yaml"
    doc.write_text(
        "threat_settings:\n  groups:\n    web: {sql_injection: {action: alert}}\n"
        "sensors:\n  - {name: keys, predefined: aws_access_key, groups: [web]}\n"
        "  - {name: odd, rules: [{name: br, pattern: '(a)\\1', context: body}]}\n"
    )
    code, text = run(["threats", "check", str(doc)])
    assert code == 0 and "per-group settings for: web" in text and "warning: sensor 'odd' rule 'br'" in text
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: 3\ngroups: [{name: web, mode: protect, members: [198.18.1.0/24]}]\n"
        "threats: {tcp.syn_flood: {action: drop, thresholds: {syns_per_window: 10}}}\n"
    )
    assert run(["threats", "check", str(policy)])[0] == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("threat_settings: {default: {syn_flood: {rate: 3}}}", "threat_settings.default.syn_flood.rate"),
        (
            "sensors: [{name: s, rules: [{name: r, pattern: 'a(', context: url}]}]",
            "sensor 's' rule 'r': bad pattern",
        ),
        ("other: 1", "unknown key 'other'"),
        ("- a\n- b", "expected a mapping"),
        ("a: [", "not YAML or JSON"),
    ],
)
def test_check_rejects_bad_input_with_status_2(
    tmp_path: Path, content: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = tmp_path / "bad.yaml"
    doc.write_text(content)
    code, _ = run(["threats", "check", str(doc)])
    assert code == 2 and message in capsys.readouterr().err


@pytest.fixture
def inspect_new(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every new flow to a worker (`workers.inspect = "new"`), so payload threats meet the detectors
    whatever the rules; the alias reads the node's configuration from the environment."""
    monkeypatch.setenv("ENFORCER_WORKERS_INSPECT", "new")
    monkeypatch.delenv("ENFORCER_CONFIG", raising=False)


def test_replay_alias_is_the_node_replay_with_a_note(
    tmp_path: Path, inspect_new: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text = run(
        ["threats", "replay", str(PCAPS / "dns_attacks.pcap"), "--json", "--evidence", str(tmp_path)]
    )
    assert "deprecated, use `enforcer replay" in capsys.readouterr().err
    lines = [json.loads(line) for line in text.splitlines()]
    assert code == 0 and lines[-1]["kind"] == "summary" and any(o["kind"] == "flow" for o in lines)
    assert lines[-1]["threats"] == {"dns_null_type": 1, "dns_overflow": 1, "dns_pointer_loop": 1,
                                    "dns_tunneling": 1, "dns_zone_transfer": 1}  # fmt: skip
    written = sorted(p.name for p in tmp_path.glob("*.pcap"))
    assert written and all(p.stat().st_size > 24 for p in tmp_path.glob("*.pcap"))
    threats = [o for o in lines if o["kind"] == "event" and o["type"] == "threat"]
    assert sorted(Path(e["evidence_file"]).name for e in threats) == written


def test_replay_missing_capture_is_status_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run(["threats", "replay", str(tmp_path / "nope.pcap")])
    assert code == 2 and "nope.pcap" in capsys.readouterr().err


def test_replay_with_a_whole_policy_applies_groups_and_modes(tmp_path: Path, inspect_new: None) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: 4\n"
        "groups:\n  - {name: web, mode: protect, members: [198.18.1.0/24]}\n"
        "  - {name: clients, mode: monitor, members: [198.18.9.0/24]}\n"
        "rules:\n  - {id: 1, from: clients, to: web, ports: [tcp/80], action: allow}\n"
        "sensors: [{name: waf, kind: waf, context: url, patterns: ['UnIoN'], action: alert, groups: [web]}]\n"
    )
    code, text = run(
        ["threats", "replay", str(PCAPS / "http_attacks.pcap"), "--policy", str(policy), "--json"]
    )
    lines = [json.loads(line) for line in text.splitlines()]
    events = [e for e in lines if e["kind"] == "event" and e["type"] == "threat"]
    assert code == 0 and {e["action"] for e in events if e["name"] == "sql_injection"} == {"reset"}
    assert all(e["group"] == "web" for e in events)
    assert [e["sensor"] for e in events if e["name"] == "dlp_sensor"] == ["waf"]
    flows = [o for o in lines if o["kind"] == "flow"]
    assert flows and all(f["rule_id"] == 1 for f in flows)
