"""Catalogue, per-group settings, effective actions and event aggregation."""

from __future__ import annotations

from typing import Any

import pytest

from core.lookup import Mode
from threats import catalogue as C
from threats.aggregate import EventAggregator, threat_event
from threats.catalogue import THREATS, Threat, ThreatAction, validate_catalogue
from threats.settings import (
    DEFAULT_SETTINGS,
    ThreatSettingsError,
    compile_group_settings,
    compile_threat_settings,
    effective_action,
)

from .build import addr


def test_catalogue_ids_names_and_defaults() -> None:
    validate_catalogue()
    assert [t.id for t in THREATS] == sorted(t.id for t in THREATS)
    assert len({t.name for t in THREATS}) == len(THREATS) >= 33
    neuvector = set(
        "syn_flood icmp_flood source_session_flood bad_packet ip_teardrop tcp_syn_data tcp_split_handshake "
        "tcp_no_data tcp_small_window tcp_small_mss ping_of_death dns_pointer_loop ssh_v1 heartbleed "
        "ssl_cipher_overflow ssl_v2_v3 tls_1_0 tls_1_1 http_negative_length http_smuggling http_slowloris "
        "dns_overflow mysql_access_denied dns_zone_transfer icmp_tunneling dns_null_type sql_injection "
        "struts_rce dns_tunneling k8s_extip_mitm".split()
    )
    assert neuvector <= set(C.BY_NAME)
    assert C.BY_ID[1001] is C.SYN_FLOOD and C.SYN_FLOOD.thresholds["syns_per_window"] == 1000


def test_catalogue_validation_rejects_duplicates() -> None:
    dup = (THREATS[0], THREATS[0])
    with pytest.raises(ValueError, match="repeats"):
        validate_catalogue(dup)
    bad = Threat(5000, "Bad-Name", "", C.Severity.LOW, ThreatAction.ALERT)
    with pytest.raises(ValueError, match="lowercase"):
        validate_catalogue((bad,))


def test_overrides_apply_and_keep_the_rest() -> None:
    s = compile_threat_settings(
        {"syn_flood": {"enabled": False}, "icmp_flood": {"action": "alert", "echo_per_window": 50},
         "tls_1_0": {"enabled": True}, "icmp_tunneling": {"window": 2}}
    )  # fmt: skip
    assert not s.enabled(C.SYN_FLOOD) and s.enabled(C.TLS_1_0)
    assert s.action(C.ICMP_FLOOD) is ThreatAction.ALERT and s.threshold(C.ICMP_FLOOD, "echo_per_window") == 50
    assert s.threshold(C.ICMP_FLOOD, "window") == 1.0
    assert s.threshold(C.ICMP_TUNNELING, "window") == 2
    assert DEFAULT_SETTINGS.enabled(C.SYN_FLOOD)  # defaults untouched


def test_group_settings_overlay_default() -> None:
    g = compile_group_settings(
        {"default": {"port_scan": {"ports_per_window": 30}},
         "groups": {"web": {"port_scan": {"action": "alert"}}, "db": {}}}
    )  # fmt: skip
    web, other = g.for_group("web"), g.for_group("nope")
    assert (
        web.threshold(C.PORT_SCAN, "ports_per_window") == 30 and web.action(C.PORT_SCAN) is ThreatAction.ALERT
    )
    assert other.action(C.PORT_SCAN) is ThreatAction.BLOCK_SOURCE and other is g.default


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"syn_flod": {}}, "threats.syn_flod: unknown threat"),
        ({"syn_flood": {"rate": 1}}, "threats.syn_flood.rate: unknown setting"),
        ({"syn_flood": {"enabled": "yes"}}, "threats.syn_flood.enabled: expected true or false"),
        ({"syn_flood": {"action": "kill"}}, "threats.syn_flood.action: expected one of alert, drop, reset"),
        (
            {"syn_flood": {"syns_per_window": -1}},
            "threats.syn_flood.syns_per_window: expected a non-negative",
        ),
        (
            {"syn_flood": {"syns_per_window": 1.5}},
            "threats.syn_flood.syns_per_window: expected a whole number",
        ),
        ({"syn_flood": {"syns_per_window": True}}, "expected a non-negative number"),
        ({"syn_flood": []}, "threats.syn_flood: expected a mapping"),
        ({"k8s_extip_mitm": {"external_ips": ["300.1.1.1"]}}, "threats.k8s_extip_mitm.external_ips[0]"),
        ({"k8s_extip_mitm": {"internal_nets": "10.0.0.0/8"}}, "internal_nets: expected a list"),
        ([], "threats: expected a mapping"),
    ],
)
def test_bad_documents_name_the_key(doc: Any, message: str) -> None:
    with pytest.raises(ThreatSettingsError) as err:
        compile_threat_settings(doc)
    assert message in str(err.value)


def test_group_document_errors_name_the_group() -> None:
    with pytest.raises(
        ThreatSettingsError, match=r"threat_settings\.groups\.web\.syn_flood\.x: unknown setting"
    ):
        compile_group_settings({"groups": {"web": {"syn_flood": {"x": 1}}}})
    with pytest.raises(ThreatSettingsError, match=r"threat_settings\.extra: unknown key"):
        compile_group_settings({"extra": {}})


def test_extip_lists() -> None:
    s = compile_threat_settings({"k8s_extip_mitm": {"external_ips": ["198.18.5.5", "fd00::5"],
                                                    "internal_nets": ["198.18.0.0/16"]}})  # fmt: skip
    assert s.external_ips == {addr("198.18.5.5"), addr("fd00::5")}
    assert s.is_internal(addr("198.18.3.3")) and not s.is_internal(addr("10.0.0.1"))


@pytest.mark.parametrize("action", list(ThreatAction))
def test_effective_action(action: ThreatAction) -> None:
    assert effective_action(Mode.PROTECT, action) is action
    assert effective_action(Mode.MONITOR, action) is ThreatAction.ALERT
    assert effective_action(Mode.DISCOVER, action) is ThreatAction.ALERT


# -- aggregation -----------------------------------------------------------------------------------------


def finding(threat: Threat, src: str = "198.18.0.1", dst: str = "198.18.1.1", dport: int = 80) -> C.Finding:
    return C.Finding(threat, None, None, addr(src), addr(dst), 1234, dport, 6, "detail", b"x" * 1000)


def test_threat_event_fields() -> None:
    ev = threat_event("n1", finding(C.SQL_INJECTION), ThreatAction.RESET, "web", 5.0, "protect", "pod-a")
    assert ev["type"] == "threat" and ev["name"] == "sql_injection" and ev["threat_id"] == 1027
    assert ev["severity"] == "critical" and ev["action"] == "reset" and ev["group"] == "web"
    assert ev["flow"] == {
        "family": 4,
        "proto": 6,
        "src": "198.18.0.1",
        "sport": 1234,
        "dst": "198.18.1.1",
        "dport": 80,
    }
    assert len(ev["excerpt"]) == 256 and ev["workload"] == "pod-a" and ev["count"] == 1


def test_aggregator_counts_repeats_and_flushes_windows() -> None:
    out: list[dict[str, Any]] = []
    agg = EventAggregator(out.append, "n1", window=5.0)
    for i in range(10):  # spoofed sources: one key per destination for floods
        agg.emit(
            threat_event(
                "n1", finding(C.SYN_FLOOD, src=f"203.0.113.{i}"), ThreatAction.DROP, "web", 100.0 + i * 0.1
            )
        )
    agg.emit(threat_event("n1", finding(C.SQL_INJECTION), ThreatAction.RESET, "web", 100.5))
    agg.emit({"type": "audit", "what": "x", "time": 100.6})
    assert [e["type"] for e in out] == ["threat", "threat", "audit"] and agg.suppressed == 9
    agg.flush(102.0)
    assert len(out) == 3  # window still open
    agg.flush(106.0)
    summary = out[-1]
    assert summary["name"] == "syn_flood" and summary["count"] == 9 and summary["aggregated"]
    assert summary["first_time"] == 100.0 and summary["last_time"] == pytest.approx(100.9)
    assert len(out) == 4  # the SQLi key had no repeats: no summary
    agg.emit(threat_event("n1", finding(C.SYN_FLOOD), ThreatAction.DROP, "web", 107.0))
    assert out[-1]["count"] == 1 and not out[-1].get("aggregated")


def test_aggregator_is_bounded_and_flushes_evicted_keys() -> None:
    out: list[dict[str, Any]] = []
    agg = EventAggregator(out.append, "n1", window=60.0, max_keys=3)
    for dport in (1, 1, 2, 3, 4):
        agg.emit(threat_event("n1", finding(C.TCP_SYN_DATA, dport=dport), ThreatAction.DROP, "web", 1.0))
    assert len(agg) == 3 and agg.evicted == 1
    assert [e.get("count") for e in out] == [1, 1, 1, 1, 1]  # dport 1 evicted with one repeat: summarised
    agg.flush(0.0, force=True)
    assert len(agg) == 0


def test_every_threat_is_exercised_by_a_test_or_capture() -> None:
    from pathlib import Path

    here = Path(__file__).parent
    sources = [p.read_text("utf-8") for p in here.glob("test_*.py") if p.name != "test_settings.py"]
    sources += [p.read_text("utf-8") for p in (here / "pcaps").glob("*.expected.json")]
    text = "\n".join(sources)
    missing = [t.name for t in THREATS if f'"{t.name}"' not in text and f"C.{t.name.upper()}" not in text]
    assert missing == []
