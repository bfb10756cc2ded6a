"""Golden captures: replay output must match the committed expected file, and every flow must be
identified as the application the capture was built to carry (accuracy: 100%, 0 misidentified)."""

from __future__ import annotations

import json

import pytest

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
}


def test_every_capture_has_an_expectation() -> None:
    assert set(EXPECTED_APPS) == set(gen.CAPTURES)


@pytest.mark.parametrize("name", sorted(EXPECTED_APPS))
def test_replay_matches_expected_file(name: str) -> None:
    got = gen.replay_lines(PCAPS / f"{name}.pcap")
    expected = [json.loads(line) for line in (PCAPS / f"{name}.expected.jsonl").read_text().splitlines()]
    assert got == expected


@pytest.mark.parametrize("name", sorted(EXPECTED_APPS))
def test_identification(name: str) -> None:
    lines = gen.replay_lines(PCAPS / f"{name}.pcap")
    apps = [obj["app"] for obj in lines if obj["kind"] == "flow"]
    assert apps == EXPECTED_APPS[name]


def test_committed_captures_match_generator(tmp_path) -> None:
    """The committed pcaps are exactly what the committed script writes."""
    for name, build in gen.CAPTURES.items():
        out = tmp_path / f"{name.replace('/', '_')}.pcap"
        gen.write_pcap(out, build())
        assert out.read_bytes() == (PCAPS / f"{name}.pcap").read_bytes(), name
