"""The `replay` subcommand: the live node's decisions over a capture; input, output, offload, bad input."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import dpkt
import pytest

from node import replay
from node.config import config_from_dict
from node.replay_capture import read_capture
from tests.dpi.conftest import PCAPS, load_generator

gen = load_generator()
ATTACKS = Path(__file__).resolve().parents[1] / "detect" / "pcaps"
# The web servers of the threat captures (tests/detect/pcaps) in Protect mode; HTTP is an app rule, so
# its flows go to a worker with the packaged configuration (`workers.inspect = "app"`).
WEB_POLICY = """\
version: 7
default_mode: protect
groups:
  - {name: web, mode: protect, members: [198.18.1.0/24]}
  - {name: clients, mode: protect, members: [198.18.9.0/24]}
rules:
  - {id: 10, from: clients, to: web, ports: [tcp/80], applications: [HTTP], action: allow}
"""


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="enforcer")
    sub = parser.add_subparsers(dest="command", required=True)
    replay.register(sub)
    return parser.parse_args(["replay", *argv])


def _run(*argv: str) -> tuple[int, list[dict]]:
    out = io.StringIO()
    code = replay._handler(_args(*argv, "--json"), out)
    return code, [json.loads(line) for line in out.getvalue().splitlines()]


def test_register_wires_the_handler() -> None:
    args = _args("x.pcap", "--json", "--policy", "p.yaml", "--evidence", "d", "--config", "c.toml")
    assert args.capture == "x.pcap" and args.json and args.policy == "p.yaml"
    assert args.evidence == "d" and args.config == "c.toml" and callable(args.func)


def test_text_output_renders_the_same_stream(capsys) -> None:
    pcap = str(PCAPS / "policy/app_rules.pcap")
    policy = str(PCAPS / "policy/app_rules.yaml")
    assert replay._handler(_args(pcap, "--policy", policy)) == 0
    out = capsys.readouterr().out
    assert "flow tcp 198.18.0.1:41002 -> 198.18.0.2:80 app=SSH verdict=blocked rule=103" in out
    assert "event violation 198.18.0.1:41002 -> 198.18.0.2:80 action=deny app=SSH" in out
    assert out.splitlines()[-3].startswith("summary: 41 packets, 6 flows, 3 events")


def test_json_lines_start_up_policy_reports_every_connection(tmp_path: Path) -> None:
    """Without --policy the node's start-up policy (monitor) applies: allowed and reported, decided at L4
    (`workers.inspect = "app"`), so the kernel takes the connection after its first packet."""
    config = tmp_path / "enforcer.toml"
    config.write_text('[workers]\ninspect = "app"\n')
    code, lines = _run(str(PCAPS / "tls/tls13.pcap"), "--config", str(config))
    assert code == 0 and [o["kind"] for o in lines] == ["event", "flow", "summary"]
    event, flow, summary = lines
    assert event["type"] == "violation" and event["mode"] == "monitor" and event["action"] == "allow"
    assert flow["verdict"] == "allowed" and flow["offloaded"] and flow["acts"] == {"allow": 1}
    assert flow["kernel_packets"] == sum(flow["packets"]) - 1 and flow["worker"] == -1
    assert summary["offloaded"] == flow["kernel_packets"] and summary["verdicts"] == {"allow": 1}


def test_the_packaged_default_inspects_every_new_flow() -> None:
    """Protection on by default: the same connection goes to a worker, its payload-less packets are let
    through by the reader (the worker learns of them), and its payload waits for the worker."""
    code, lines = _run(str(PCAPS / "tls/tls13.pcap"))
    assert code == 0
    (flow,) = [o for o in lines if o["kind"] == "flow"]
    summary = lines[-1]
    assert flow["app"] == "TLS/SSL" and flow["worker"] >= 0 and not flow["offloaded"]
    assert summary["verdicts"]["pass_learn"] > 0 and summary["verdicts"]["pass"] > 0
    # the worker saw every packet but the bare ACKs the kernel passed once the handshake was seen
    quiet = summary["counters"]["kernel.quiet_acks"]
    assert quiet > 0 and summary["counters"]["worker.packets"] == summary["packets"] - quiet


def test_pcapng_and_linux_cooked_input(tmp_path: Path) -> None:
    packets = gen.cap_redis()
    ng = tmp_path / "redis.pcapng"
    with ng.open("wb") as f:
        w = dpkt.pcapng.Writer(f, linktype=dpkt.pcap.DLT_EN10MB)
        for ts, ip in packets:
            w.writepkt(gen.frame(ip), ts=ts)
    sll = tmp_path / "redis_sll.pcap"
    with sll.open("wb") as f:
        w2 = dpkt.pcap.Writer(f, linktype=113)
        for ts, ip in packets:
            w2.writepkt(b"\x00\x00\x03\x04\x00\x06" + b"\x00" * 8 + b"\x08\x00" + ip, ts=ts)
    config = config_from_dict({"workers": {"inspect": "new"}}, environ={})
    for path in (ng, sll):
        lines = replay.replay_records(read_capture(str(path)), config)
        assert [o["app"] for o in lines if o["kind"] == "flow"] == ["Redis"], path
        assert lines[-1]["packets"] == len(packets), path


def test_policy_decides_as_live_with_the_l4_only_configuration(tmp_path: Path) -> None:
    """app_rules.yaml with `workers.inspect = "app"`: the app rules' flows go to workers, the DNS rule is
    decided at L4 and offloaded at once (so no worker ever names its application)."""
    config = tmp_path / "enforcer.toml"
    config.write_text('[workers]\ninspect = "app"\n')
    code, lines = _run(
        str(PCAPS / "policy/app_rules.pcap"), "--policy", str(PCAPS / "policy/app_rules.yaml"), "--config",
        str(config),
    )  # fmt: skip
    flows = [o for o in lines if o["kind"] == "flow"]
    assert code == 0 and [f["verdict"] for f in flows] == [
        "allowed", "blocked", "blocked", "allowed", "blocked", "allowed",
    ]  # fmt: skip
    assert [f["rule_id"] for f in flows] == [101, 103, 103, 102, 103, 104]
    assert [f["app"] for f in flows] == ["HTTP", "SSH", "unknown", "MySQL", "HTTP", ""]
    dns = flows[-1]
    assert dns["acts"] == {"allow": 1} and dns["offloaded"] and dns["worker"] == -1
    # a reset connection belongs to the kernel from its reset on: the rest of its packets are dropped there
    for blocked in flows[1:3]:
        assert blocked["acts"]["reset"] == 1 and blocked["kernel_packets"] == sum(blocked["packets"]) - 4
    # of the 26 packets the workers let through, 21 carry no payload: let through by the reader at once;
    # each connection's first bare ACK (5) also tells the kernel to pass its later ones (quiet ACKs), which
    # then never reach a reader
    verdicts = lines[-1]["verdicts"]
    assert verdicts == {"allow": 1, "pass": 5, "pass_learn": 14, "learn_quiet": 5, "reset": 3}
    assert lines[-1]["counters"]["kernel.quiet_acks"] == 21 - 14 - 5


def test_sql_injection_over_http_flows_and_threats_in_one_run(tmp_path: Path) -> None:
    policy = tmp_path / "web.yaml"
    policy.write_text(WEB_POLICY)
    evidence = tmp_path / "evidence"
    evidence.mkdir()
    code, lines = _run(
        str(ATTACKS / "http_attacks.pcap"), "--policy", str(policy), "--evidence", str(evidence)
    )
    assert code == 0
    flows = [o for o in lines if o["kind"] == "flow"]
    threats = [o for o in lines if o["kind"] == "event" and o["type"] == "threat"]
    sqli = [t for t in threats if t["name"] == "sql_injection"]
    assert len(sqli) == 2 and {t["action"] for t in sqli} == {"reset"}
    assert all(t["excerpt"] for t in sqli)
    by_client = {f["client"]: f for f in flows}
    for t in sqli:
        flow = by_client[f"{t['flow']['src']}:{t['flow']['sport']}"]
        assert flow["app"] == "HTTP" and flow["verdict"] == "blocked" and flow["acts"]["reset"] == 1
    written = {p.name for p in evidence.glob("*.pcap")}
    assert {Path(t["evidence_file"]).name for t in threats if "evidence_file" in t} == written
    assert all(Path(t["evidence_file"]).stat().st_size > 24 for t in sqli)
    summary = lines[-1]
    assert summary["threats"]["sql_injection"] == 2 and summary["flows"] == len(flows)


def test_evidence_must_be_a_directory(tmp_path: Path, capsys) -> None:
    pcap = str(PCAPS / "http/http_get.pcap")
    assert replay._handler(_args(pcap, "--evidence", str(tmp_path / "nope"))) == 2
    assert "not a directory" in capsys.readouterr().err


def test_bad_input_exits_2_with_a_message(tmp_path: Path, capsys) -> None:
    assert replay._handler(_args(str(tmp_path / "missing.pcap"))) == 2
    assert "cannot open capture" in capsys.readouterr().err
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"this is not a capture at all")
    assert replay._handler(_args(str(junk))) == 2
    assert "not a pcap or pcapng" in capsys.readouterr().err
    truncated = tmp_path / "truncated.pcap"
    truncated.write_bytes((PCAPS / "http/http_get.pcap").read_bytes()[:-10])
    assert replay._handler(_args(str(truncated))) == 2
    assert "truncated record" in capsys.readouterr().err
    bad_policy = tmp_path / "policy.yaml"
    bad_policy.write_text("version: [\n")
    assert replay._handler(_args(str(PCAPS / "http/http_get.pcap"), "--policy", str(bad_policy))) == 2
    assert "cannot load policy" in capsys.readouterr().err
    bad_config = tmp_path / "enforcer.toml"
    bad_config.write_text("[workers]\ncount = 'x'\n")
    assert replay._handler(_args(str(PCAPS / "http/http_get.pcap"), "--config", str(bad_config))) == 2
    assert "workers.count" in capsys.readouterr().err


@pytest.mark.parametrize("workers", [1, 3])
def test_flows_meet_the_worker_the_flow_hash_picks(workers: int) -> None:
    config = config_from_dict({"workers": {"inspect": "new", "count": workers}}, environ={})
    lines = replay.replay_records(read_capture(str(PCAPS / "nosql/nosql.pcap")), config)
    used = {o["worker"] for o in lines if o["kind"] == "flow"}
    assert used <= set(range(workers)) and (len(used) > 1) == (workers > 1)


def test_capture_read_from_a_pipe_matches_the_file(tmp_path) -> None:
    """A FIFO cannot be mapped: records are then read one by one, with the same result."""
    import os
    import threading

    source = PCAPS / "http/http_get.pcap"
    fifo = tmp_path / "capture.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_bytes(source.read_bytes()))
    writer.start()
    try:
        from_pipe = list(read_capture(str(fifo)))
    finally:
        writer.join(timeout=5)
    assert from_pipe == list(read_capture(str(source)))
    assert len(from_pipe) > 5


def test_a_flood_on_one_udp_socket_is_found_by_the_modelled_rate_check_and_cut(tmp_path: Path) -> None:
    """hping3 -k's shape: one 5-tuple, 6,000 datagrams in 60 ms. The flow is inspected, offloaded when its
    window closes, and the kernel's rate check (modelled) shows a reader its first datagram over
    `netfilter.udp_flow_rate`: udp_flood, and in Protect the rest is dropped in the kernel."""
    from tests.pipeline.packets import udp4

    policy = tmp_path / "udp.yaml"
    policy.write_text(WEB_POLICY.replace("tcp/80], applications: [HTTP]", "udp/9999]"))
    datagram = udp4("198.18.9.10", "198.18.1.10", 40000, 9999, b"\x00" * 16)
    flood = [(100.0 + i * 1e-5, datagram) for i in range(6000)]
    config = config_from_dict({"workers": {"inspect": "new"}, "netfilter": {"udp_flow_rate": 10000}}, {})
    lines = replay.replay_records(flood, config, str(policy))
    threats = [o for o in lines if o["kind"] == "event" and o["type"] == "threat"]
    assert [(t["name"], t["action"], t["detail"]) for t in threats] == [
        ("udp_flood", "drop", "a single UDP flow over the kernel's datagram rate")
    ]
    (flow,) = [o for o in lines if o["kind"] == "flow"]
    counters = lines[-1]["counters"]
    assert flow["verdict"] == "blocked" and counters["kernel.udp_rate_exceeded"] == 1
    # the window (8 KiB: 512 datagrams of 16 bytes), the burst (1,000) and the rate meanwhile went through
    assert counters["kernel.dropped"] > 4000
    # the same datagrams at half the rate are no flood
    calm = [(100.0 + i * 2e-4, datagram) for i in range(6000)]
    lines = replay.replay_records(calm, config, str(policy))
    assert not [o for o in lines if o["kind"] == "event" and o["type"] == "threat"]
