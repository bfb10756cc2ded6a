"""Golden captures: replay output must match the committed expected file, and every flow must be
identified as the application the capture was built to carry (accuracy: 100%, 0 misidentified)."""

from __future__ import annotations

import json

import pytest

from node.config import config_from_dict
from node.replay import read_capture, replay_records
from tests.dpi.conftest import PCAPS, load_generator

gen = load_generator()

# What each capture carries, flow by flow in replay output order: written by hand from the generator,
# independent of the engine's output.
EXPECTED_APPS = {
    "http/http_get": ["HTTP"],
    "http/http_nonstandard_port": ["HTTP"],
    "http/http_midstream": ["HTTP"],
    "http/rtsp_sip": ["RTSP", "SIP"],
    "tls/tls13": ["TLS/SSL"],
    "tls/heartbleed": ["TLS/SSL"],
    "tls/sslv2": ["TLS/SSL"],
    "ssh/ssh_port_80": ["SSH"],
    "dns/dns": ["DNS", "DNS", "DNS", "DNS", "HTTP"],
    "dns/dns_fragmented": ["DNS"],
    "mysql/mysql": ["MySQL"],
    "postgres/postgres": ["PostgreSQL"],
    "redis/redis": ["Redis"],
    "http2/http2_grpc": ["GRPC", "HTTP2"],
    "unknown/unknown_tcp": ["unknown"],
    "policy/app_rules": ["HTTP", "SSH", "unknown", "MySQL", "HTTP", "DNS"],
    "policy/host_rules": ["HTTP"] * 5 + ["TLS/SSL"] * 3,
    "nosql/nosql": ["MongoDB", "Cassandra", "Kafka", "ZooKeeper", "Memcached", "Couchbase", "Spark"],
    "sql/oracle_mssql": ["Oracle", "MSSQL"],
    "udp/udp_services": ["DHCP", "NTP", "TFTP", "ECHO", "ECHO"],
}
# With policy/app_rules.yaml: HTTP allowed on tcp/80, SSH and a raw stream on tcp/80 reset, MySQL allowed
# on tcp/3306, HTTP on tcp/3306 reset, DNS allowed at L3/L4.
# With policy/host_rules.yaml: the shop's host (two spellings) allowed, another host reset; the etcd port
# allowed when the server answers as etcd, reset when it answers as nginx; SNI below api.example.test
# allowed, the apex and a hello without SNI reset.
EXPECTED_DECISIONS = {
    "policy/app_rules": ["allowed", "blocked", "blocked", "allowed", "blocked", "allowed"],
    "policy/host_rules": [
        "allowed", "allowed", "blocked", "allowed", "blocked", "allowed", "blocked", "blocked",
    ],
}  # fmt: skip
# A blocked TCP flow is reset both ways by the reader (its last judged act).
EXPECTED_ACTS = {"allowed": ("pass", "allow"), "blocked": ("reset",)}
EXPECTED_RULES = {
    "policy/app_rules": [101, 103, 103, 102, 103, 104],
    "policy/host_rules": [201, 201, 204, 203, 204, 202, 204, 204],
}


def _policy(name: str):
    return PCAPS / gen.POLICIES[name] if name in gen.POLICIES else None


def test_every_capture_has_an_expectation() -> None:
    assert set(EXPECTED_APPS) == set(gen.CAPTURES)


# Lab captures (real curl/nginx, dig/dnsmasq, redis-cli/redis-server, ssh/sshd, openssl): the application
# of every flow, by the server port the recording script used.
LAB_APPS_BY_PORT = {
    53: "DNS",
    80: "HTTP",
    6379: "Redis",
    2222: "SSH",
    2223: "SSH",
    2224: "SSH",
    2225: "SSH",
    8080: "SSH",
    8443: "TLS/SSL",
    8000: "HTTP",
}


@pytest.mark.parametrize("name", gen.LAB_CAPTURES)
def test_lab_captures_identified(name: str) -> None:
    flows = [o for o in gen.replay_lines(PCAPS / f"{name}.pcap") if o["kind"] == "flow"]
    assert flows
    for flow in flows:
        port = int(flow["server"].rsplit(":", 1)[1])
        assert flow["app"] == LAB_APPS_BY_PORT[port], flow


@pytest.mark.parametrize("name", sorted(EXPECTED_APPS) + list(gen.LAB_CAPTURES))
def test_replay_matches_expected_file(name: str) -> None:
    got = gen.replay_lines(PCAPS / f"{name}.pcap", _policy(name))
    expected = [json.loads(line) for line in (PCAPS / f"{name}.expected.jsonl").read_text().splitlines()]
    assert got == expected


@pytest.mark.parametrize("name", sorted(EXPECTED_APPS))
def test_identification(name: str) -> None:
    lines = gen.replay_lines(PCAPS / f"{name}.pcap", _policy(name))
    flows = [obj for obj in lines if obj["kind"] == "flow"]
    assert [f["app"] for f in flows] == EXPECTED_APPS[name]
    if name in EXPECTED_DECISIONS:
        assert [f["verdict"] for f in flows] == EXPECTED_DECISIONS[name]
        assert [f["rule_id"] for f in flows] == EXPECTED_RULES[name]
        for flow in flows:
            assert set(flow["acts"]) & set(EXPECTED_ACTS[flow["verdict"]]), flow
            # a blocked connection is the kernel's from its reset on: none of its packets is judged again
            assert flow["offloaded"] or flow["verdict"] == "allowed", flow
        violations = [e for e in lines if e["kind"] == "event" and e["type"] == "violation"]
        denied = [
            r for r, d in zip(EXPECTED_RULES[name], EXPECTED_DECISIONS[name], strict=True) if d != "allowed"
        ]
        assert sorted(e["rule_id"] for e in violations) == sorted(denied)


def test_committed_captures_match_generator(tmp_path) -> None:
    """The committed pcaps are exactly what the committed script writes."""
    for name, build in gen.CAPTURES.items():
        out = tmp_path / f"{name.replace('/', '_')}.pcap"
        gen.write_pcap(out, build())
        assert out.read_bytes() == (PCAPS / f"{name}.pcap").read_bytes(), name


def test_the_recorded_slowhttptest_slow_read_is_tcp_slow_read_in_replay() -> None:
    """Real slowhttptest -X against Python's HTTP server (record.sh): its three connections offer a
    1152-byte window, shut it, and read 32 bytes every 5 s; its probe connection reads at once."""
    lines = gen.replay_lines(PCAPS / "lab" / "http_slow_read.pcap")
    [summary] = [o for o in lines if o["kind"] == "summary"]
    assert set(summary["threats"]) == {"tcp_slow_read"}, summary["threats"]
    # each of the three slow connections (not the probe's), once by the sweep as it went quiet and once
    # on its packets (their events aggregate: one client, one server)
    assert summary["counters"]["worker.threats.tcp_slow_read"] == 3 * 2


def test_the_recorded_hydra_run_is_ssh_brute_force_in_replay() -> None:
    """Real hydra against real dropbear (record.sh): 60 guesses on 6 connections of up to 10 attempts, far
    below the connection count; the refusals inside the connections are what finds it."""
    lines = gen.replay_lines(PCAPS / "lab" / "ssh_hydra_dropbear.pcap")
    [summary] = [o for o in lines if o["kind"] == "summary"]
    assert set(summary["threats"]) == {"ssh_brute_force"}, summary["threats"]
    flows = [o for o in lines if o["kind"] == "flow"]
    assert len(flows) < 30  # no connection count could have seen it


@pytest.mark.parametrize("name", ["ssh_hydra_openssh", "ssh_hydra_openssh_kbdint"])
def test_the_recorded_hydra_runs_against_openssh_are_ssh_brute_force_in_replay(name: str) -> None:
    """Real hydra against real OpenSSH (record.sh), its passwords refused as passwords, or asked for
    through keyboard-interactive (PAM: a prompt, the password, the refusal, in turns on each connection,
    two seconds apart). Either way the refusals inside the connections find it, not their count."""
    lines = gen.replay_lines(PCAPS / "lab" / f"{name}.pcap")
    [summary] = [o for o in lines if o["kind"] == "summary"]
    assert set(summary["threats"]) == {"ssh_brute_force"}, summary["threats"]
    assert summary["counters"]["worker.detect.ssh.refused_logins"] >= 40, summary["counters"]
    flows = [o for o in lines if o["kind"] == "flow"]
    assert len(flows) < 30  # no connection count could have seen it


def test_refused_logins_spread_over_workers_are_counted_whole() -> None:
    """The same hydra run against OpenSSH's keyboard-interactive prompts, replayed with four workers:
    the flow hash gives each a quarter of the connections, about 13 refusals, under the threshold of
    20 in a minute; the node's table sums them, as the live workers' shared file does."""
    config = config_from_dict({"workers": {"inspect": "new", "count": 4}}, environ={})
    [*_, summary] = replay_records(read_capture(str(PCAPS / "lab" / "ssh_hydra_openssh_kbdint.pcap")), config)
    assert set(summary["threats"]) == {"ssh_brute_force"}, summary["threats"]
