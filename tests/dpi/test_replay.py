"""The `replay` subcommand: argument wiring, pcap and pcapng input, text and JSON output, bad input."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import dpkt

from node import replay
from tests.dpi.conftest import PCAPS, load_generator

gen = load_generator()


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="enforcer")
    sub = parser.add_subparsers(dest="command", required=True)
    replay.register(sub)
    return parser.parse_args(["replay", *argv])


def test_register_wires_the_handler() -> None:
    args = _args("x.pcap", "--json", "--policy", "p.yaml")
    assert args.capture == "x.pcap" and args.json and args.policy == "p.yaml"
    assert callable(args.func)


def test_text_output(capsys) -> None:
    assert replay._handler(_args(str(PCAPS / "http/http_get.pcap"))) == 0
    out = capsys.readouterr().out
    assert "flow tcp 198.18.0.1:40001 -> 198.18.0.2:80 app=HTTP decision=allow" in out
    assert "HttpRequest method='GET'" in out
    assert out.splitlines()[-4].startswith("summary: 12 packets, 1 flows")


def test_json_lines(capsys) -> None:
    assert replay._handler(_args(str(PCAPS / "tls/tls13.pcap"), "--json")) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [o["kind"] for o in lines] == ["flow", "summary"]
    assert lines[0]["sni"] == "api.example.test" and lines[0]["app"] == "TLS/SSL"


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
    for path in (ng, sll):
        out = io.StringIO()
        summary = replay.Replay(out, as_json=True).run(replay.read_capture(str(path)))
        assert summary["apps"] == {"Redis": 1} and summary["packets"] == len(packets), path


def test_policy_option_decides(capsys) -> None:
    pcap = PCAPS / "policy/app_rules.pcap"
    assert replay._handler(_args(str(pcap), "--json", "--policy", str(PCAPS / "policy/app_rules.yaml"))) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["decisions"] == {"allow": 3, "reset": 3} and summary["policy_events"] == 3


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


def test_capture_read_from_a_pipe_matches_the_file(tmp_path) -> None:
    """A FIFO cannot be mapped: records are then read one by one, with the same result."""
    import os
    import threading

    from node.replay import read_capture

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
