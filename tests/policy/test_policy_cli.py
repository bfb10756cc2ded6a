"""`enforcer policy check|import` and the CRD conversion, on CRD documents written from the schema."""

from __future__ import annotations

import argparse
import ipaddress
from pathlib import Path

import pytest
import yaml

from core import workload_labels as WL
from core.lookup import Action, Mode
from core.selectors import selector_from_dict
from node.policy_cli import register
from policy.crd import CrdError, convert_crds, rule_id_for
from policy.loader import load_policy, parse_policy
from policy.tables import DictTables, Workload, compile_policy

DATA = Path(__file__).parent / "data"
DEMO = Path(__file__).resolve().parents[2] / "config" / "policies" / "demo.yaml"


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="enforcer")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return int(args.func(args))


def test_check_prints_a_summary(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("policy", "check", str(DEMO)) == 0
    out = capsys.readouterr().out
    assert "policy version 1: valid" in out
    assert "rules: 5 (4 allow, 1 deny, 1 need the application, 0 name hosts)" in out


def test_check_names_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nrules: [{id: 1, from: a, to: external, action: allow}]\n")
    assert run("policy", "check", str(bad)) == 2
    assert "rule 1: from group 'a' is not defined" in capsys.readouterr().err
    assert run("policy", "check", str(tmp_path / "absent.yaml")) == 2


def test_import_converts_a_neuvector_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "native.yaml"
    assert (
        run("policy", "import", str(DATA / "nv_security_rules.yaml"), "-o", str(out), "--version", "4") == 0
    )
    err = capsys.readouterr().err
    assert "warning" in err and "dlp" in err  # sensor bindings are reported, not silently dropped
    snap = load_policy(out)
    assert snap.version == 4
    nginx = snap.group("nv.nginx-pod.demo")
    assert nginx.mode == Mode.PROTECT
    assert nginx.workload_selectors == (
        selector_from_dict({"criteria": [
            {"key": "service", "op": "=", "value": "nginx-pod.demo"}, {"key": "domain", "op": "=", "value": "demo"},
        ]}, "expected"),
    )  # fmt: skip
    assert snap.group("nv.kube-dns.kube-system").mode == Mode.DISCOVER
    partners = snap.group("partners")
    assert [str(c) for c in partners.cidrs] == ["198.18.9.0/24", "fd00:198:18:9::/64"]
    assert snap.group("example-sites").fqdns == ("*.example.com",)
    rules = {r.id: r for r in snap.rules}
    web_in = rules[rule_id_for("nv.nginx-pod.demo-ingress-0")]
    assert (web_in.from_group, web_in.to_group, web_in.applications) == (
        "nv.busybox-pod.demo", "nv.nginx-pod.demo", ("HTTP",),
    )  # fmt: skip
    dns_out = rules[rule_id_for("nv.nginx-pod.demo-egress-0")]
    assert [str(p) for p in dns_out.ports] == ["udp/53", "tcp/53"]
    assert dns_out.to_group == "nv.kube-dns.kube-system"
    tls = rules[rule_id_for("nv.busybox-pod.demo-egress-1")]
    assert tls.applications == ("TLS/SSL", "HTTP")
    prof = {p.group: p for p in snap.process_profiles}["nv.nginx-pod.demo"]
    assert [(p.name, p.action.value) for p in prof.processes][-1] == ("curl", "deny")
    assert [(f.filter, f.behavior.value) for f in snap.file_rules] == [
        ("/etc/nginx/*", "block"), ("/var/log/nginx/access.log", "monitor"),
    ]  # fmt: skip

    # and the imported policy decides traffic once workloads are known by their identity labels (CRI)
    def pod(workload: str, address: str) -> Workload:
        labels = {WL.POD_NAMESPACE: "demo", WL.WORKLOAD_NAME: workload, WL.POD_NAME: f"{workload}-7d9f"}
        return Workload((ipaddress.ip_address(address),), labels)

    workloads = [pod("nginx-pod", "198.18.2.10"), pod("busybox-pod", "198.18.1.10")]
    t = DictTables(compile_policy(snap, workloads=workloads))
    client, web = bytes([198, 18, 1, 10]), bytes([198, 18, 2, 10])
    assert t.decide(4, client, web, 6, 80).final is False  # HTTP rule: app needed
    assert t.decide_app(4, client, web, 6, 80, "HTTP").action == Action.ALLOW
    assert t.decide(4, client, web, 6, 22).action == Action.DENY  # protect, unmatched
    outside = t.decide(4, bytes([198, 19, 200, 1]), web, 6, 80)
    assert outside.rule_id == rule_id_for("nv.nginx-pod.demo-ingress-1")
    assert (outside.src_group, outside.action) == ("external", Action.DENY)
    assert t.decide(4, bytes([198, 18, 9, 1]), web, 6, 80).src_group == "partners"


def test_import_reads_operators_written_unquoted_as_neuvector_exports_them(tmp_path: Path) -> None:
    quoted = (DATA / "nv_security_rules.yaml").read_text()
    unquoted = tmp_path / "nv_export.yaml"
    unquoted.write_text(quoted.replace('op: "="', "op: ="))
    assert "op: =," in unquoted.read_text()
    out_q, out_u = tmp_path / "q.yaml", tmp_path / "u.yaml"
    assert run("policy", "import", str(DATA / "nv_security_rules.yaml"), "-o", str(out_q)) == 0
    assert run("policy", "import", str(unquoted), "-o", str(out_u)) == 0
    assert load_policy(out_u) == load_policy(out_q)


def test_import_to_stdout_is_native_yaml(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("policy", "import", str(DATA / "nv_security_rules.yaml")) == 0
    text = capsys.readouterr().out
    assert parse_policy(yaml.safe_load(text)).version == 1


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("nv_bad_operator.yaml", "criterion 'image': operator '=~' is not one of"),
        ("nv_bad_regex.yaml", "group 'nv.web.shop' criteria[0]: criterion 'app': bad regex"),
        ("nv_address_operator.yaml", "addresses take '=' only"),
        ("nv_unknown_app.yaml", "unknown application 'Gopher'"),
    ],
)
def test_import_errors_name_the_item(name: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("policy", "import", str(DATA / name)) == 2
    assert message in capsys.readouterr().err


def test_conversion_rejects_other_documents() -> None:
    with pytest.raises(CrdError, match="not an NvSecurityRule"):
        convert_crds([{"kind": "ConfigMap"}])
    with pytest.raises(CrdError, match="policymode 'Strict'"):
        target = {"policymode": "Strict", "selector": {"name": "g"}}
        convert_crds([{"kind": "NvSecurityRule", "spec": {"target": target}}])
    native, _ = convert_crds([])
    assert native["rules"] == []
