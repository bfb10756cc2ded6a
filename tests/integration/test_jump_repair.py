"""Coexisting with CNIs in the lab's node namespace: a rule inserted above our jump (as a CNI does) and
our jump deleted are both repaired within the re-check interval, counted, and enforcement holds again;
bridges without br_netfilter are reported at start-up. Only the lab's namespaces are touched."""

from __future__ import annotations

import sys
import time
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lab.enforcer import LabEnforcer
from lab.topology import Lab
from tests.integration.conftest import tcp

pytestmark = pytest.mark.netns

CHECK_MS = 1000  # the re-check interval under test (the default is 5 s)
TOOLS = {"ipv4": "iptables", "ipv6": "ip6tables"}


def forward_rules(lab: Lab, tool: str) -> list[str]:
    out = lab.node_exec(tool, "-S", "FORWARD").stdout
    return [line for line in out.splitlines() if line.startswith("-A FORWARD")]


def supervisor_counter(e: LabEnforcer, key: str) -> int:
    return int((e.status().get("counters") or {}).get(key, 0))


def metric(lab: Lab, sample: str, **labels: str) -> float:
    """One sample of the live /metrics endpoint, parsed by prometheus_client's parser."""
    out = lab.node_exec(
        sys.executable, "-c",
        "import urllib.request,sys;sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:9464/metrics',"
        "timeout=2).read().decode())",
    )  # fmt: skip
    values = [
        s.value
        for family in text_string_to_metric_families(out.stdout)
        for s in family.samples
        if s.name == sample and s.labels == labels
    ]
    assert len(values) == 1, (sample, values)
    return float(values[0])


def wait_for(what: Any, timeout: float) -> Any:
    """`what()` until it is truthy or `timeout` passes (its last value either way)."""
    deadline = time.monotonic() + timeout
    while True:
        value = what()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def refused(lab: Lab, addr: str) -> bool:
    """A connection the policy denies (c1 → web:22, Protect) got nothing through."""
    result = tcp(lab, "c1", addr, 22, nbytes=1000, timeout=2)
    return not result["ok"]


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_a_rule_above_our_jump_and_a_deleted_jump_are_repaired_and_enforcement_holds(
    lab: Lab, family: str
) -> None:
    tool = TOOLS[family]
    web = getattr(lab.host("s1"), family)
    overrides = {"workers": {"inspect": "app"}, "netfilter": {"jump_check_ms": CHECK_MS}}
    with LabEnforcer(lab, overrides) as e:
        assert forward_rules(lab, tool)[0] == "-A FORWARD -j ENFORCER"
        assert refused(lab, web)
        # The bound: one interval, plus a check's own run time, with the machine's jitter measured here.
        started = time.monotonic()
        assert e.status()  # the status endpoint answers (its latency is part of each poll below)
        poll_cost = time.monotonic() - started
        bound = 3 * CHECK_MS / 1000 + 10 * poll_cost

        for case, change in (
            ("a CNI's rule on top", ("-I", "FORWARD", "1", "-j", "ACCEPT")),
            ("our jump deleted", ("-D", "FORWARD", "-j", "ENFORCER")),
        ):
            before = supervisor_counter(e, "netfilter.jump_repaired")
            lab.node_exec(tool, *change)
            assert forward_rules(lab, tool)[0] != "-A FORWARD -j ENFORCER", case
            repaired = wait_for(lambda: forward_rules(lab, tool)[0] == "-A FORWARD -j ENFORCER", bound)
            assert repaired, f"{case}: not repaired within {bound:.1f}s: {forward_rules(lab, tool)}"
            assert forward_rules(lab, tool).count("-A FORWARD -j ENFORCER") == 1, case
            counted = wait_for(lambda b=before: supervisor_counter(e, "netfilter.jump_repaired") > b, bound)
            assert counted, case
            assert refused(lab, web), case  # enforcement holds again
        assert "-A FORWARD -j ACCEPT" in forward_rules(lab, tool)  # the CNI's rule stays, below ours
        log = e.log()
        assert "put our jump back first" in log and "-A FORWARD -j ACCEPT" in log and "deleted" in log
        repairs = metric(lab, "enforcer_supervisor_netfilter_jump_repaired_total", child="supervisor")
        assert repairs == supervisor_counter(e, "netfilter.jump_repaired") >= 2
        lab.node_exec(tool, "-D", "FORWARD", "-j", "ACCEPT")


def test_bridges_without_br_netfilter_are_reported_at_start_up(lab: Lab) -> None:
    key = "net.bridge.bridge-nf-call-iptables"
    # The lab's node routes between its bridges; with the call sysctl off (per namespace: the lab's
    # node only) traffic between pods on one bridge would skip FORWARD.
    lab.node_exec("sysctl", "-qw", f"{key}=0")
    try:
        with LabEnforcer(lab, {"workers": {"inspect": "app"}}) as e:
            status = e.status()
            warning = status["netfilter"]["bridges_unfiltered"]
            assert "br-cli" in warning and "bridge-nf-call-iptables=0" in warning and "IPv4" in warning
            assert "IPv6" not in warning  # bridge-nf-call-ip6tables stayed on
            assert status["counters"]["netfilter.bridge_unfiltered"] == 1
            assert "netfilter.bridge_unfiltered" in e.log()
        lab.node_exec("sysctl", "-qw", f"{key}=1")
        with LabEnforcer(lab, {"workers": {"inspect": "app"}}) as e:
            assert e.status()["netfilter"]["bridges_unfiltered"] == ""
            assert e.status()["counters"]["netfilter.bridge_unfiltered"] == 0
    finally:
        lab.node_exec("sysctl", "-qw", f"{key}=1", check=False)
