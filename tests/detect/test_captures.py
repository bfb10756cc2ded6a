"""Golden captures: each generated capture raises exactly the threats its expected file names.

The captures and expected files come from `tests/detect/pcaps/generate.py`; the DPI branch's own golden
captures (recorded without threats in mind) are replayed too, as traffic we did not craft for this.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from node.replay import read_capture
from node.threats_replay import replay_threats, threat_totals
from workers.detect.engine import compile_threat_policy

HERE = Path(__file__).parent / "pcaps"
DPI_CAPTURES = Path(__file__).parent.parent / "data" / "pcaps"


@pytest.mark.parametrize(
    "name", sorted(p.name.removesuffix(".expected.json") for p in HERE.glob("*.expected.json"))
)
def test_capture_raises_expected_threats(name: str) -> None:
    doc = json.loads((HERE / f"{name}.expected.json").read_text())
    policy = compile_threat_policy(1, doc["threat_settings"])
    events, _verdicts, _engine = replay_threats(read_capture(str(HERE / f"{name}.pcap")), policy)
    assert threat_totals(events) == doc["expected"]


def test_all_scenarios_have_captures() -> None:
    assert {p.stem for p in HERE.glob("*.pcap")} >= {
        "packet_threats",
        "floods",
        "http_attacks",
        "dns_attacks",
        "tls_ssh_attacks",
        "benign",
    }


DPI_EXPECTED = {
    "dns/dns": {"dns_pointer_loop": 1},  # the capture carries one looping name on purpose
    "dns/dns_fragmented": {},
    "http/http_get": {},
    "http/http_midstream": {},
    "http/http_nonstandard_port": {},
    "http/rtsp_sip": {},
    "http2/http2_grpc": {},
    "mysql/mysql": {"sql_injection": 1},  # COM_QUERY ... WHERE id = '1' OR '1'='1'
    "nosql/nosql": {},
    "postgres/postgres": {},
    "redis/redis": {},
    "sql/oracle_mssql": {},
    "ssh/ssh_port_80": {},
    "tls/heartbleed": {"heartbleed": 1},
    "tls/sslv2": {"ssl_v2_v3": 1},
    "tls/tls13": {},
    "udp/udp_services": {},
    "unknown/unknown_tcp": {},
}


@pytest.mark.parametrize("name", sorted(DPI_EXPECTED))
def test_dpi_golden_captures(name: str) -> None:
    path = DPI_CAPTURES / f"{name}.pcap"
    if not path.exists():
        pytest.fail(f"DPI capture {name} is missing")
    events, _, _ = replay_threats(read_capture(str(path)))
    assert threat_totals(events) == DPI_EXPECTED[name]
