"""Compiled tables: longest-prefix match, rule order, ranges, the mode matrix, app-aware rules."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from core.lookup import Action, Mode, Report
from policy.loader import parse_policy_text
from policy.model import mode_name
from policy.tables import DictTables, Workload, compile_policy, load_policy_tables

DEMO = Path(__file__).resolve().parents[2] / "config" / "policies" / "demo.yaml"


def ip(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def fam(text: str) -> int:
    return 4 if ipaddress.ip_address(text).version == 4 else 6


def tables(doc: str, **kw: object) -> DictTables:
    return DictTables(compile_policy(parse_policy_text(doc), **kw))  # type: ignore[arg-type]


def decide(t: DictTables, src: str, dst: str, proto: int = 6, port: int = 80, app: str | None = None):
    if app is None:
        return t.decide(fam(src), ip(src), ip(dst), proto, port)
    return t.decide_app(fam(src), ip(src), ip(dst), proto, port, app)


LPM = """
version: 1
default_mode: protect
groups:
  - {name: wide, mode: protect, members: [198.18.0.0/16, "fd00:198::/32"]}
  - {name: mid, mode: protect, members: [198.18.4.0/24, "fd00:198:18:4::/64"]}
  - {name: host, mode: protect, members: [198.18.4.9, "fd00:198:18:4::9"]}
  - {name: other, mode: protect, members: [198.19.0.0/16, "fd00:199::/32"]}
"""


@pytest.mark.parametrize(
    ("addr", "group"),
    [
        ("198.18.4.9", "host"),
        ("198.18.4.8", "mid"),
        ("198.18.5.1", "wide"),
        ("198.19.255.255", "other"),
        ("198.20.0.1", "external"),
        ("fd00:198:18:4::9", "host"),
        ("fd00:198:18:4::8", "mid"),
        ("fd00:198:18:5::1", "wide"),
        ("fd00:199:ffff::1", "other"),
        ("fd00:200::1", "external"),
        ("::ffff:198.18.4.9", "external"),
    ],
)
def test_longest_prefix_match(addr: str, group: str) -> None:
    t = tables(LPM)
    assert decide(t, addr, "198.20.0.1" if fam(addr) == 4 else "fd00:200::1").src_group == group


RULES = """
version: 1
groups:
  - {name: c, mode: %s, members: [198.18.1.0/24, "fd00:198:18:1::/64"]}
  - {name: s, mode: %s, members: [198.18.2.0/24, "fd00:198:18:2::/64"]}
rules:
  - {id: 1, from: c, to: s, ports: [tcp/8000-8100], action: deny}
  - {id: 2, from: c, to: s, ports: [tcp/8050, udp/53], action: allow}
  - {id: 3, from: c, to: s, ports: [icmp], action: allow}
  - {id: 4, from: c, to: s, ports: [tcp/443], applications: [HTTP, TLS], action: allow}
  - {id: 5, from: c, to: s, ports: [tcp/443], action: deny}
  - {id: 6, from: c, to: external, ports: [tcp/443], action: allow}
  - {id: 7, from: c, to: external, ports: [udp/53], action: deny}
  - {id: 8, from: external, to: s, ports: [tcp/22], action: allow, order: -1}
"""


def test_first_match_wins_and_ranges() -> None:
    t = tables(RULES % ("protect", "protect"))
    assert decide(t, "198.18.1.1", "198.18.2.1", 6, 8050).rule_id == 1  # deny range comes first
    assert decide(t, "198.18.1.1", "198.18.2.1", 6, 8050).action == Action.DENY
    assert decide(t, "198.18.1.1", "198.18.2.1", 6, 8101).rule_id == 0
    assert decide(t, "198.18.1.1", "198.18.2.1", 17, 53).rule_id == 2
    assert decide(t, "198.18.1.1", "198.18.2.1", 6, 53).rule_id == 0  # tcp/53 is not udp/53
    assert decide(t, "198.18.1.1", "198.18.2.1", 1, 0).rule_id == 3
    assert decide(t, "fd00:198:18:1::1", "fd00:198:18:2::1", 58, 0).rule_id == 3  # icmp covers ICMPv6
    assert decide(t, "198.18.2.1", "198.18.1.1", 1, 0).rule_id == 0  # rules are directional


def test_order_field_overrides_position() -> None:
    doc = (
        RULES % ("protect", "protect")
        + "  - {id: 9, from: c, to: s, ports: [tcp/8050], action: allow, order: -5}\n"
    )
    assert decide(tables(doc), "198.18.1.1", "198.18.2.1", 6, 8050).rule_id == 9


@pytest.mark.parametrize(
    ("mode", "matched_deny", "unmatched"),
    [
        # mode: (action, report) for a deny rule and for unmatched traffic
        (Mode.DISCOVER, (Action.ALLOW, Report.VIOLATION), (Action.ALLOW, Report.LEARNED)),
        (Mode.MONITOR, (Action.ALLOW, Report.VIOLATION), (Action.ALLOW, Report.VIOLATION)),
        (Mode.PROTECT, (Action.DENY, Report.VIOLATION), (Action.DENY, Report.VIOLATION)),
    ],
)
def test_mode_matrix_east_west_uses_destination_mode(
    mode: Mode, matched_deny: tuple, unmatched: tuple
) -> None:
    other = Mode.PROTECT if mode != Mode.PROTECT else Mode.DISCOVER
    t = tables(RULES % (mode_name(other), mode_name(mode)))
    allow = decide(t, "198.18.1.1", "198.18.2.1", 17, 53)
    assert (allow.action, allow.report, allow.final, allow.mode) == (Action.ALLOW, Report.NONE, True, mode)
    deny = decide(t, "198.18.1.1", "198.18.2.1", 6, 8000)
    assert (deny.action, deny.report, deny.rule_id, deny.mode) == (*matched_deny, 1, mode)
    none = decide(t, "198.18.1.1", "198.18.2.1", 6, 9)
    assert (none.action, none.report, none.rule_id, none.mode) == (*unmatched, 0, mode)
    # ingress from outside: still the destination's mode
    ext = decide(t, "198.18.9.1", "198.18.2.1", 6, 9)
    assert (ext.action, ext.report, ext.src_group) == (*unmatched, "external")


@pytest.mark.parametrize(
    ("mode", "unmatched"),
    [
        (Mode.DISCOVER, (Action.ALLOW, Report.LEARNED)),
        (Mode.MONITOR, (Action.ALLOW, Report.VIOLATION)),
        (Mode.PROTECT, (Action.DENY, Report.VIOLATION)),
    ],
)
def test_egress_to_external_uses_source_mode(mode: Mode, unmatched: tuple) -> None:
    other = Mode.PROTECT if mode != Mode.PROTECT else Mode.DISCOVER
    doc = (RULES % (mode_name(mode), mode_name(other))).replace(
        "version: 1", f"version: 1\ndefault_mode: {mode_name(other)}"
    )
    t = tables(doc)
    d = decide(t, "198.18.1.1", "198.18.9.9", 6, 22)
    assert (d.action, d.report, d.mode, d.dst_group) == (*unmatched, mode, "external")
    assert decide(t, "198.18.1.1", "198.18.9.9", 6, 443).action == Action.ALLOW
    d = decide(t, "198.18.1.1", "198.18.9.9", 17, 53)
    assert d.rule_id == 7 and d.report == Report.VIOLATION
    assert d.action == (Action.DENY if mode == Mode.PROTECT else Action.ALLOW)
    # external to external: the `external` group's own mode (the default mode)
    assert decide(t, "198.18.9.1", "198.18.9.9", 6, 22).mode == other


def test_application_rules_are_provisional_until_the_app_is_known() -> None:
    t = tables(RULES % ("protect", "protect"))
    first = decide(t, "198.18.1.1", "198.18.2.1", 6, 443)
    assert (first.final, first.action, first.rule_id) == (False, Action.ALLOW, 4)
    for app in ("HTTP", "http", "TLS/SSL", "ssl"):
        d = decide(t, "198.18.1.1", "198.18.2.1", 6, 443, app=app)
        assert (d.final, d.action, d.rule_id) == (True, Action.ALLOW, 4)
    d = decide(t, "198.18.1.1", "198.18.2.1", 6, 443, app="SSH")
    assert (d.final, d.action, d.rule_id, d.report) == (True, Action.DENY, 5, Report.VIOLATION)
    d = decide(t, "198.18.1.1", "198.18.2.1", 6, 443, app="not-an-app")
    assert d.rule_id == 5
    # a port-only rule decides at once, and decide_app agrees with it
    assert decide(t, "198.18.1.1", "198.18.2.1", 17, 53, app="DNS").rule_id == 2


def test_label_and_fqdn_members() -> None:
    doc = """
version: 1
groups:
  - {name: web, mode: protect, members: [{app: web, namespace: shop}]}
  - {name: sites, mode: protect, fqdns: ["*.example.com", "api.example.org"]}
rules:
  - {id: 1, from: web, to: sites, ports: [tcp/443], action: allow}
"""
    wl = [
        Workload(
            (ipaddress.ip_address("198.18.1.5"), ipaddress.ip_address("fd00::5")),
            {"app": "web", "namespace": "shop", "x": "y"},
        ),
        Workload((ipaddress.ip_address("198.18.1.6"),), {"app": "web", "namespace": "dev"}),
    ]
    fq = {
        "www.example.com": [ipaddress.ip_address("198.18.9.10")],
        "example.com": [ipaddress.ip_address("198.18.9.11")],
        "api.example.org.": [ipaddress.ip_address("198.18.9.12")],
    }
    t = tables(doc, workloads=wl, fqdn_addresses=fq)
    assert decide(t, "198.18.1.5", "198.18.9.10", 6, 443).rule_id == 1
    assert (
        decide(t, "fd00::5", "198.18.9.10", 6, 443).src_group == "web"
    )  # mixed family: groups still resolve
    assert decide(t, "198.18.1.5", "198.18.9.12", 6, 443).dst_group == "sites"
    assert (
        decide(t, "198.18.1.5", "198.18.9.11", 6, 443).dst_group == "external"
    )  # *.example.com ≠ example.com
    assert decide(t, "198.18.1.6", "198.18.9.10", 6, 443).src_group == "external"


def test_generation_moves_on_publish() -> None:
    t = tables(RULES % ("protect", "protect"))
    assert t.generation() == 1
    assert decide(t, "198.18.1.1", "198.18.2.1", 6, 9).action == Action.DENY
    g = t.publish(compile_policy(parse_policy_text(RULES % ("protect", "monitor"))))
    d = decide(t, "198.18.1.1", "198.18.2.1", 6, 9)
    assert (g, d.generation, d.action) == (2, 2, Action.ALLOW)


def test_demo_policy_for_the_lab() -> None:
    t = load_policy_tables(DEMO)
    for src, srv, mon, ext in (
        ("198.18.1.10", "198.18.2.10", "198.18.2.200", "198.18.9.1"),
        ("fd00:198:18:1::10", "fd00:198:18:2::10", "fd00:198:18:2:8000::10", "fd00:198:18:9::1"),
    ):
        f = fam(src)
        icmp = 1 if f == 4 else 58
        for proto, port in ((6, 80), (6, 5201), (icmp, 0)):
            d = t.decide(f, ip(src), ip(srv), proto, port)
            assert (d.action, d.final, d.mode) == (Action.ALLOW, True, Mode.PROTECT)
        d = t.decide(f, ip(src), ip(srv), 6, 22)
        assert (d.action, d.rule_id, d.report) == (Action.DENY, 11, Report.VIOLATION)
        d = t.decide(f, ip(src), ip(mon), 6, 22)
        assert (d.action, d.report, d.mode) == (Action.ALLOW, Report.VIOLATION, Mode.MONITOR)
        assert t.decide(f, ip(src), ip(mon), 6, 80).final is False
        assert t.decide(f, ip(src), ip(ext), 17, 53).rule_id == 30
