"""Real traffic through the real enforcer: what the policy allows arrives intact, what it denies does not."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lab.enforcer import LabEnforcer
from lab.topology import Lab
from tests.integration.conftest import counter_total, ping, tcp, udp

pytestmark = pytest.mark.netns


@pytest.fixture
def enforcer(lab: Lab) -> Iterator[LabEnforcer]:
    """The L3/L4 path (`inspect = "app"`): in the default configuration the DPI would rightly take the
    echo tests' non-DNS datagrams to port 53 for a DNS overflow and block them in Protect."""
    e = LabEnforcer(lab, {"workers": {"inspect": "app"}})
    try:
        yield e.start()
    finally:
        e.cleanup()


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_allowed_flows_arrive_byte_for_byte(lab: Lab, enforcer: LabEnforcer, family: str) -> None:
    web = getattr(lab.host("s1"), family)
    api = getattr(lab.host("s2"), family)
    result = tcp(lab, "c1", web, 80, nbytes=300_000)
    assert result["ok"] and result["received"] == 300_000, result
    assert tcp(lab, "c2", api, 5201, nbytes=100_000)["ok"]
    assert udp(lab, "c1", web, 53)["ok"]
    assert ping(lab, "c1", web)
    # Monitor mode: a port no rule allows still flows (and is reported).
    assert tcp(lab, "c1", api, 22)["ok"]


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_denied_flows_get_nothing_through(lab: Lab, enforcer: LabEnforcer, family: str) -> None:
    web = getattr(lab.host("s1"), family)
    denied = tcp(lab, "c1", web, 22)
    assert not denied["ok"] and denied["error"] in ("refused", "reset")
    # Retrying is refused the same way (the kernel now drops the connection's packets itself).
    assert tcp(lab, "c1", web, 22)["error"] in ("refused", "reset", "timeout")
    # Protect mode: a port no rule names is blocked too; UDP gets no answer.
    assert tcp(lab, "c2", web, 5201)["ok"]  # allowed port next to it still works
    assert not udp(lab, "c1", web, 5353, count=2, timeout=0.5)["ok"]


def test_events_report_violations(lab: Lab, enforcer: LabEnforcer) -> None:
    import time

    assert not tcp(lab, "c1", lab.host("s1").ipv4, 22)["ok"]
    assert tcp(lab, "c1", lab.host("s2").ipv4, 22)["ok"]
    deadline = time.monotonic() + 5
    events: list[dict[str, object]] = []
    while time.monotonic() < deadline:
        events = [e for e in enforcer.events() if e["type"] == "violation"]
        if len(events) >= 2:
            break
        time.sleep(0.2)
    by_action = {(e["server_group"], e["action"], e["rule_id"]) for e in events}
    assert ("web", "deny", 11) in by_action
    assert ("api", "allow", 0) in by_action


def test_worker_blocks_a_connection_mid_stream_with_resets_both_ways(lab: Lab) -> None:
    # The lab check of the worker path: a payload pattern blocks the flow that carries it.
    pattern = b"forbidden-pattern-7f3a"
    with LabEnforcer(lab, {"workers": {"inspect": "new", "payload_pattern": pattern.hex()}}) as e:
        assert tcp(lab, "c1", lab.host("s2").ipv4, 80, nbytes=50_000)["ok"]  # clean traffic flows
        script = (
            "import socket,sys,time\n"
            "s=socket.create_connection((sys.argv[1],80),timeout=3)\n"
            "s.sendall(b'a'*1000); got=s.recv(1000); print('before', len(got))\n"
            f"s.sendall(b'x'*100+{pattern!r}+b'y'*100)\n"
            "try:\n"
            "  time.sleep(0.5); d=s.recv(5000); s.sendall(b'z'*100); d=s.recv(5000); print('after', len(d))\n"
            "except ConnectionResetError: print('reset')\n"
            "except OSError as e: print('error', e)\n"
        )
        out = lab.exec("c1", "python3", "-c", script, lab.host("s2").ipv4, check=False).stdout.split("\n")
        assert out[0] == "before 1000" and out[1] == "reset", out
        assert counter_total(e, "worker", "pattern.blocked") >= 1
        assert counter_total(e, "reader", "resets.sent", at_least=2) >= 2  # one to each end


def test_status_and_metrics_endpoints(lab: Lab, enforcer: LabEnforcer) -> None:
    import sys

    out = lab.node_exec(
        sys.executable, "-m", "node.cli", "status", "--config", str(enforcer.config_path), check=False
    )
    assert out.returncode == 0 and "reader q1" in out.stdout and "ready=True" in out.stdout, out
    metrics = lab.node_exec(
        sys.executable,
        "-c",
        "import urllib.request as u;print(u.urlopen('http://127.0.0.1:9464/metrics').read().decode())",
    ).stdout
    assert "enforcer_ready 1.0" in metrics and 'enforcer_child_up{child="reader q0"} 1.0' in metrics
    ready = lab.node_exec(
        sys.executable,
        "-c",
        "import urllib.request as u;print(u.urlopen('http://127.0.0.1:9464/readyz').status)",
    )
    assert ready.stdout.strip() == "200"
