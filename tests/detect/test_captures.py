"""Golden captures: each generated capture raises exactly the threats its expected file names.

The captures and expected files come from `tests/detect/pcaps/generate.py`; the DPI branch's own golden
captures (recorded without threats in mind) are replayed too, as traffic we did not craft for this.
They go through `enforcer replay`'s node core with every new flow sent to a worker
(`workers.inspect = "new"`) and one worker, so that each detector sees every flow of the capture (with
several workers the flow hash spreads a flood's connections, and each worker counts only its share).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from node.config import config_from_dict
from node.replay import read_capture, replay_records
from workers.detect.engine import compile_threat_policy

HERE = Path(__file__).parent / "pcaps"
DPI_CAPTURES = Path(__file__).parent.parent / "data" / "pcaps"
ONE_WORKER_SEES_ALL = config_from_dict({"workers": {"inspect": "new", "count": 1}}, environ={})
# Fragment attacks never reach a reader: the kernel reassembles fragments before our chain (conntrack)
# and refuses overlapping and oversized datagrams; the replay's kernel counts them.
KERNEL_REFUSED = {"ip_teardrop": "kernel.frag.overlap", "ping_of_death": "kernel.frag.too_big"}


def _replay(path: Path, threat_settings: object = None) -> dict:
    policy = compile_threat_policy(1, threat_settings)
    return replay_records(read_capture(str(path)), ONE_WORKER_SEES_ALL, threat_policy=policy)[-1]


@pytest.mark.parametrize(
    "name", sorted(p.name.removesuffix(".expected.json") for p in HERE.glob("*.expected.json"))
)
def test_capture_raises_expected_threats(name: str) -> None:
    doc = json.loads((HERE / f"{name}.expected.json").read_text())
    summary = _replay(HERE / f"{name}.pcap", doc["threat_settings"])
    expected = {k: v for k, v in doc["expected"].items() if k not in KERNEL_REFUSED}
    assert summary["threats"] == expected
    for threat, counter in KERNEL_REFUSED.items():
        if threat in doc["expected"]:
            assert summary["counters"].get(counter) == doc["expected"][threat], threat


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
    assert _replay(path)["threats"] == DPI_EXPECTED[name]
