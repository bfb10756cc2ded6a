"""The guard remembers each decision's deciding group and settings: a new policy's threat settings must
still apply to the decision objects it has seen, and each group keeps its own settings."""

from __future__ import annotations

import dpkt

from core.flow import flow_key
from core.lookup import Action, Decision, Mode, Report
from core.packet import decode
from pipeline.guard import DROP, PASS, Guard, GuardSettings
from tests.pipeline.packets import tcp4
from threats.settings import compile_group_settings

SYN = dpkt.tcp.TH_SYN
WEB = Decision(Action.ALLOW, True, 10, Mode.PROTECT, Report.NONE, "clients", "web", 1)
API = Decision(Action.ALLOW, True, 20, Mode.PROTECT, Report.NONE, "clients", "api", 1)


def _probe(guard: Guard, d: Decision, port: int, now: float) -> int:
    dst = "198.18.2.11" if d.dst_group == "web" else "198.18.2.12"  # ports are counted per address pair
    buf = tcp4(src="198.18.200.1", dst=dst, sport=40000 + port, dport=port, flags=SYN)
    meta = decode(buf)
    return guard.check(meta, flow_key(meta)[0], d, now, buf)


def _scan_settings(groups: dict[str, int]) -> dict[str, object]:
    """port_scan in Protect with `drop`, `ports_per_window` per group."""
    return {
        "default": {"port_scan": {"action": "drop"}},
        "groups": {g: {"port_scan": {"ports_per_window": n}} for g, n in groups.items()},
    }


def test_new_threat_settings_apply_to_a_decision_already_seen() -> None:
    guard = Guard(GuardSettings(), "n", lambda event: None)
    guard.set_threat_settings(compile_group_settings(_scan_settings({"web": 1000})))
    assert [_probe(guard, WEB, p, 1.0) for p in range(1, 6)] == [PASS] * 5
    # The same decision object, a stricter policy: the scan is now found at once.
    guard.set_threat_settings(compile_group_settings(_scan_settings({"web": 3})))
    assert _probe(guard, WEB, 6, 1.0) == DROP


def test_each_deciding_group_keeps_its_own_settings() -> None:
    guard = Guard(GuardSettings(), "n", lambda event: None)
    guard.set_threat_settings(compile_group_settings(_scan_settings({"web": 1000, "api": 3})))
    assert [_probe(guard, WEB, p, 1.0) for p in range(1, 4)] == [PASS] * 3
    assert [_probe(guard, API, p, 2.0) for p in range(10, 12)] == [PASS, PASS]
    assert _probe(guard, API, 12, 2.0) == DROP  # the third port for api's limit of 3
    assert _probe(guard, WEB, 13, 2.0) == PASS  # web's limit is still its own
