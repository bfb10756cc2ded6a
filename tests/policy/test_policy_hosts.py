"""Virtual-host rules (HTTP Host / TLS SNI) and rules naming server software (from HTTP responses):
the same answers from the in-process tables and from shared memory."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from core.lookup import Action, Decision, normalize_host
from policy.loader import parse_policy, parse_policy_text, policy_to_dict
from policy.model import PolicyError
from policy.table_reader import SharedTables
from policy.table_writer import TablesWriter
from policy.tables import DictTables, compile_policy

POLICY = """
version: 1
groups:
  - {name: clients, mode: protect, members: [198.18.1.0/24, "fd00:198:18:1::/64"]}
  - {name: web, mode: protect, members: [198.18.2.0/24, "fd00:198:18:2::/64"]}
rules:
  - {id: 10, from: clients, to: web, ports: [tcp/443], hosts: ["shop.example.com", "*.api.example.com"], action: allow}
  - {id: 11, from: clients, to: web, ports: [tcp/443], hosts: ["admin.example.com"], action: deny}
  - {id: 12, from: clients, to: web, ports: [tcp/80], applications: [HTTP], hosts: [Shop.Example.com.], action: allow}
  - {id: 20, from: clients, to: web, ports: [tcp/2379], applications: [etcd], action: allow}
  - {id: 21, from: clients, to: web, ports: [tcp/2379-2380], applications: [HTTP], action: deny}
  - {id: 30, from: clients, to: web, ports: [tcp/5984], applications: [CouchDB, SSH], action: allow}
"""

C4, W4 = ipaddress.ip_address("198.18.1.5").packed, ipaddress.ip_address("198.18.2.7").packed
C6, W6 = ipaddress.ip_address("fd00:198:18:1::5").packed, ipaddress.ip_address("fd00:198:18:2::7").packed


@pytest.fixture(params=["dict", "shm"])
def tables(request: pytest.FixtureRequest, private_dir: Path):
    compiled = compile_policy(parse_policy_text(POLICY))
    if request.param == "dict":
        yield DictTables(compiled)
        return
    writer = TablesWriter(private_dir / "policy.tables", table_bytes=1 << 19)
    writer.publish(compiled)
    reader = SharedTables(writer.path, slot=0)
    try:
        yield reader
    finally:
        reader.close()
        writer.close(unlink=True)


def app(t, port: int, name: str, host: str = "", server_app: str | None = "", v6: bool = False) -> Decision:
    src, dst = (C6, W6) if v6 else (C4, W4)
    return t.decide_app(6 if v6 else 4, src, dst, 6, port, name, host, server_app)


def outcome(d: Decision) -> tuple[bool, Action, int]:
    return d.final, d.action, d.rule_id


@pytest.mark.parametrize("v6", [False, True])
def test_host_rules_match_the_named_host_only(tables, v6: bool) -> None:
    src, dst, family = (C6, W6, 6) if v6 else (C4, W4, 4)
    # before DPI: provisional, so the flow reaches a worker
    assert outcome(tables.decide(family, src, dst, 6, 443)) == (False, Action.ALLOW, 10)
    assert outcome(app(tables, 443, "TLS/SSL", "shop.example.com", v6=v6)) == (True, Action.ALLOW, 10)
    assert outcome(app(tables, 443, "TLS/SSL", "v1.api.example.com", v6=v6)) == (True, Action.ALLOW, 10)
    assert outcome(app(tables, 443, "HTTP", "admin.example.com", v6=v6)) == (True, Action.DENY, 11)
    # '*.' matches below the name, not the name itself; no host matches no host rule
    for host in ("api.example.com", "shop.example.com.evil.test", "", "example.com"):
        assert outcome(app(tables, 443, "TLS/SSL", host, v6=v6)) == (True, Action.DENY, 0), host


def test_host_and_application_must_both_match(tables) -> None:
    assert outcome(app(tables, 80, "HTTP", "shop.example.com")) == (True, Action.ALLOW, 12)
    assert outcome(app(tables, 80, "SSH", "shop.example.com")) == (True, Action.DENY, 0)
    assert outcome(app(tables, 80, "HTTP", "www.example.com")) == (True, Action.DENY, 0)


def test_server_application_rules_wait_for_the_response(tables) -> None:
    # the request alone: the etcd rule cannot be decided yet
    assert outcome(app(tables, 2379, "HTTP", server_app=None)) == (False, Action.ALLOW, 20)
    assert outcome(app(tables, 2379, "HTTP", server_app="etcd")) == (True, Action.ALLOW, 20)
    assert outcome(app(tables, 2379, "HTTP", server_app="nginx")) == (True, Action.DENY, 21)
    assert outcome(app(tables, 2379, "HTTP", server_app="")) == (True, Action.DENY, 21)
    # a rule that does not need the server's software decides at the request
    assert outcome(app(tables, 2380, "HTTP", server_app=None)) == (True, Action.DENY, 21)
    # a rule listing a server app and another app: the other app decides at once
    assert outcome(app(tables, 5984, "SSH", server_app="")) == (True, Action.ALLOW, 30)
    assert outcome(app(tables, 5984, "HTTP", server_app=None)) == (False, Action.ALLOW, 30)
    assert outcome(app(tables, 5984, "HTTP", server_app="CouchDB")) == (True, Action.ALLOW, 30)


def test_hosts_round_trip_and_are_validated() -> None:
    snap = parse_policy_text(POLICY)
    assert snap.rules[2].hosts == ("shop.example.com",)  # lower case, trailing dot dropped
    assert parse_policy(policy_to_dict(snap)) == snap
    for bad in ('["-lead.example.com"]', '["*"]', '["localhost"]', "[7]", '["a..b.com"]'):
        with pytest.raises(PolicyError, match="rule 1"):
            parse_policy_text(
                "version: 1\ngroups: [{name: a, members: [198.18.1.0/24]}]\n"
                f"rules: [{{id: 1, from: a, to: a, hosts: {bad}, action: allow}}]\n"
            )


@pytest.mark.parametrize(
    ("raw", "want"),
    [
        (b"Shop.Example.COM", "shop.example.com"),
        (b"shop.example.com:8443", "shop.example.com"),
        (b"shop.example.com.", "shop.example.com"),
        (b"[fd00::1]:443", ""),
        (b"bad host\r\nx: y", ""),
        (b"\xff\xfe", ""),
        (b"a" * 300, ""),
        ("www.example.com", "www.example.com"),
    ],
)
def test_normalize_host(raw: bytes | str, want: str) -> None:
    assert normalize_host(raw) == want


def test_every_server_application_the_http_parser_names_can_be_ruled() -> None:
    from core.apps import APPLICATIONS, HTTP_SERVER_APPS
    from workers.dpi.parsers.http import SERVER_APP_HEADERS, server_app

    named = {app for _, _, app in SERVER_APP_HEADERS}
    assert named == set(HTTP_SERVER_APPS)
    assert named <= set(APPLICATIONS)
    for header, token, app in SERVER_APP_HEADERS:
        assert server_app(((header.title(), token.upper() + b"/1.0"),)) == app
