"""Parser unit tests on byte literals: identification, events, data split at every awkward point, and
no parser identifying another protocol's bytes."""

from __future__ import annotations

import struct

import pytest

from tests.detect.build import ssh_conversation
from tests.dpi.conftest import load_generator
from tests.dpi.drive import Session, drive, settings
from workers.dpi import events as E
from workers.dpi.parsers import dns, http, http2, mysql, postgres, redis, ssh, tls
from workers.dpi.parsers.base import Side
from workers.dpi.parsing import PROBE_BYTES
from workers.dpi.registry import PARSERS

gen = load_generator()
C, S = Side.CLIENT, Side.SERVER

# ------------------------------------------------------------------------------------ sessions by app

HTTP_SESSION: Session = [(C, gen.http_get()[0]), (S, gen.http_get()[1])]
SESSIONS: dict[tuple[str, str], Session] = {
    ("HTTP", "tcp"): HTTP_SESSION,
    ("RTSP", "tcp"): [
        (C, b"DESCRIBE rtsp://cam/1 RTSP/1.0\r\nCSeq: 2\r\n\r\n"),  # RTSP method + RTSP version
        (S, b"RTSP/1.0 200 OK\r\nCSeq: 2\r\nContent-Length: 3\r\n\r\nv=0"),
    ],
    ("SIP", "tcp"): [
        (C, b"REGISTER sip:example.test SIP/2.0\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n")
    ],
    ("SIP", "udp"): [(C, b"OPTIONS sip:example.test SIP/2.0\r\nContent-Length: 0\r\n\r\n")],
    ("TLS/SSL", "tcp"): [(C, gen.tls_client_hello(b"a.example.test", [b"h2"])), (S, gen.tls_server_hello())],
    ("SSH", "tcp"): [(S, b"SSH-2.0-OpenSSH_9.6p1 Debian-4\r\n"), (C, b"SSH-2.0-PuTTY_Release_0.80\r\n")],
    ("DNS", "udp"): [(C, gen.dns_query(7, "a.example.test", 1)), (S, gen.dns_response_cname(7))],
    ("DNS", "tcp"): [(C, struct.pack("!H", 32) + gen.dns_query(8, "b.example.test", 1))],
    ("GRPC", "tcp"): [(C, gen.h2_client(True))],
    ("HTTP2", "tcp"): [(C, gen.h2_client(False))],
    ("MySQL", "tcp"): [(C if side == 0 else S, data) for side, data in gen.mysql_session()],
    ("PostgreSQL", "tcp"): [(C if side == 0 else S, data) for side, data in gen.pg_session()],
    ("Redis", "tcp"): [(C if side == 0 else S, data) for side, data in gen.redis_session()],
    ("MongoDB", "tcp"): [(C if side == 0 else S, data) for side, data in gen.mongo_session()],
    ("Cassandra", "tcp"): [(C if side == 0 else S, data) for side, data in gen.cassandra_session()],
    ("Kafka", "tcp"): [(C if side == 0 else S, data) for side, data in gen.kafka_session()],
    ("ZooKeeper", "tcp"): [(C if side == 0 else S, data) for side, data in gen.zookeeper_session()],
    ("Memcached", "tcp"): [(C if side == 0 else S, data) for side, data in gen.memcached_session()],
    ("Couchbase", "tcp"): [(C, data) for _side, data in gen.couchbase_session()],
    ("Spark", "tcp"): [(C, data) for _side, data in gen.spark_session()],
    ("Oracle", "tcp"): [(C if side == 0 else S, data) for side, data in gen.oracle_session()],
    ("MSSQL", "tcp"): [(C if side == 0 else S, data) for side, data in gen.mssql_session()],
    ("DHCP", "udp"): [(C, gen.dhcp_discover())],
    ("NTP", "udp"): [(C, gen.ntp_packet(3, 0)), (S, gen.ntp_packet(4, 2))],
    ("TFTP", "udp"): [(C, gen.tftp_rrq())],
    ("ECHO", "tcp"): [(C, b"echo me"), (S, b"echo me")],
    ("ECHO", "udp"): [(C, b"ping 1"), (S, b"ping 1")],
}
SPECS = {(p.name, p.transport): p for p in PARSERS}


def test_every_registered_parser_has_a_session() -> None:
    assert set(SESSIONS) == set(SPECS)


def test_registry_names_are_policy_application_names() -> None:
    from core.apps import APPLICATIONS

    assert {p.name for p in PARSERS} <= set(APPLICATIONS)


def _run(key: tuple[str, str], session: Session, piece: int = 0):
    spec = SPECS[key]
    return drive(spec.factory(settings()), session, piece, datagram=spec.transport == "udp")


@pytest.mark.parametrize("key", sorted(SESSIONS))
def test_identifies_once(key: tuple[str, str]) -> None:
    spec = SPECS[key]
    first_side, first = SESSIONS[key][0]
    assert spec.probe(first_side, first)
    run = _run(key, SESSIONS[key])
    assert not run.gave_up
    assert run.finals == 1
    assert run.events


@pytest.mark.parametrize("piece", [1, 2, 3, 5, 7, 13])
@pytest.mark.parametrize("key", sorted(k for k in SESSIONS if k[1] == "tcp"))
def test_split_anywhere_gives_the_same_events(key: tuple[str, str], piece: int) -> None:
    whole = _run(key, SESSIONS[key])
    split = _run(key, SESSIONS[key], piece)
    assert not split.gave_up
    assert split.finals == 1
    assert split.events == whole.events


@pytest.mark.parametrize("key", sorted(k for k in SESSIONS if k[1] == "tcp"))
def test_any_one_cut_in_any_message_gives_the_same_events(key: tuple[str, str]) -> None:
    """Each message of the session cut in two at every offset (length fields, headers and bodies split
    mid-way, a segment boundary the parser must wait across)."""
    session = SESSIONS[key]
    whole = _run(key, session)
    for i, (side, message) in enumerate(session):
        for cut in range(1, len(message)):
            split = _run(key, [*session[:i], (side, message[:cut]), (side, message[cut:]), *session[i + 1 :]])
            assert (split.events, split.finals, split.gave_up) == (whole.events, 1, False), (i, cut)


# Which other protocols' first message (its first PROBE_BYTES, as the engine shows them) each parser's
# probe accepts, so the engine hires it there. A probe is a cheap pre-filter: these parsers must then be
# fired by the bytes they are fed (test_a_parser_claims_only_its_own_sessions). Changing a probe changes
# this table on purpose.
HIRED_FOR_OTHERS: dict[tuple[str, str], set[str]] = {
    ("Cassandra", "tcp"): {"ECHO"},
    ("Couchbase", "tcp"): {"MySQL", "SSH"},
    ("DHCP", "udp"): {"ECHO"},
    ("DNS", "tcp"): {"Cassandra", "ECHO"},
    ("DNS", "udp"): set(),
    ("ECHO", "tcp"): {
        "Cassandra", "Couchbase", "DNS", "GRPC", "HTTP", "HTTP2", "Kafka", "MSSQL", "Memcached", "MongoDB",
        "MySQL", "Oracle", "PostgreSQL", "RTSP", "Redis", "SIP", "SSH", "Spark", "TLS/SSL", "ZooKeeper",
    },  # an echo server answers anything: only the reply can tell
    ("ECHO", "udp"): {"DHCP", "DNS", "NTP", "SIP", "TFTP"},
    ("GRPC", "tcp"): {"HTTP2", "MySQL"},
    ("HTTP", "tcp"): set(),
    ("HTTP2", "tcp"): {"GRPC", "MySQL"},
    ("Kafka", "tcp"): {"Cassandra", "ECHO"},
    ("MSSQL", "tcp"): set(),
    ("Memcached", "tcp"): {"Couchbase", "MySQL", "SSH"},
    ("MongoDB", "tcp"): {"Cassandra", "ECHO"},
    ("MySQL", "tcp"): {
        "Cassandra", "Couchbase", "DNS", "ECHO", "GRPC", "HTTP", "HTTP2", "MSSQL", "Memcached", "MongoDB",
        "Oracle", "RTSP", "Redis", "SIP", "TLS/SSL",
    },  # the server speaks first: a client's first bytes cannot disprove it
    ("NTP", "udp"): set(),
    ("Oracle", "tcp"): {"DNS", "ECHO", "MongoDB"},
    ("PostgreSQL", "tcp"): {"ECHO", "SSH"},
    ("RTSP", "tcp"): set(),
    ("Redis", "tcp"): set(),
    ("SIP", "tcp"): set(),
    ("SIP", "udp"): set(),
    ("SSH", "tcp"): set(),
    ("Spark", "tcp"): set(),
    ("TFTP", "udp"): set(),
    ("TLS/SSL", "tcp"): set(),
    ("ZooKeeper", "tcp"): {"ECHO", "MySQL", "SSH"},
}  # fmt: skip


def _hired_for(key: tuple[str, str], other: tuple[str, str]) -> bool:
    side, head = SESSIONS[other][0]
    return bool(SPECS[key].probe(side, head[:PROBE_BYTES]))


def _same_transport(key: tuple[str, str]) -> list[tuple[str, str]]:
    return [other for other in sorted(SESSIONS) if other[1] == key[1]]


def test_the_hiring_table_covers_every_parser() -> None:
    assert set(HIRED_FOR_OTHERS) == set(SESSIONS)


@pytest.mark.parametrize("key", sorted(SESSIONS))
def test_which_other_protocols_a_parser_is_hired_for(key: tuple[str, str]) -> None:
    others = [other for other in _same_transport(key) if other[0] != key[0]]
    hired = {other[0] for other in others if _hired_for(key, other)}
    assert hired == HIRED_FOR_OTHERS[key]


@pytest.mark.parametrize("key", sorted(SESSIONS))
def test_a_parser_claims_only_its_own_sessions(key: tuple[str, str]) -> None:
    """Of every session of its transport, a parser is hired for and identifies (FINAL) its own alone; the
    others it is hired for it gives up on or never finalizes."""
    claimed = {
        other[0]
        for other in _same_transport(key)
        if _hired_for(key, other) and _run(key, SESSIONS[other]).finals
    }
    assert claimed == {key[0]}


# ------------------------------------------------------------------------------------------------ HTTP


def test_http_request_fields_and_chunked_response() -> None:
    run = _run(("HTTP", "tcp"), HTTP_SESSION, 1)
    req, resp = run.events
    assert isinstance(req, E.HttpRequest) and isinstance(resp, E.HttpResponse)
    assert (req.method, req.uri, req.version, req.host) == (
        b"GET",
        b"/index.html?q=1",
        b"HTTP/1.1",
        b"www.example.test",
    )
    assert (b"User-Agent", b"curl/8.5") in req.headers
    assert resp.status == 200 and resp.chunked and resp.body == b"hello world"
    assert resp.server_app == "nginx"


def test_http_pipelined_requests_and_head_response_without_body() -> None:
    p = http.HttpParser(settings())
    data = (
        b"HEAD /a HTTP/1.1\r\nHost: h\r\n\r\n"  # request 1: HEAD
        b"POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nabcd"  # request 2 with a body
    )
    res = p.feed(C, data)
    assert [e.method for e in res.events] == [b"HEAD", b"POST"]  # type: ignore[union-attr]
    assert res.events[1].body == b"abcd"  # type: ignore[union-attr]
    # the HEAD response announces a length but carries no body: the next response follows at once
    resp = b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"
    res = p.feed(S, resp)
    assert [e.status for e in res.events] == [200, 201]  # type: ignore[union-attr]


def test_http_body_prefix_is_capped_and_the_rest_follows_in_parts() -> None:
    p = http.HttpParser(settings(max_event_bytes=8))
    body = b"x" * 100
    res = p.feed(C, b"POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\n" + body)
    ev, *parts = res.events
    assert isinstance(ev, E.HttpRequest)
    assert ev.body == b"x" * 8 and ev.body_truncated
    assert parts and all(isinstance(part, E.HttpBodyPart) and len(part.data) <= 8 for part in parts)
    assert res.consumed == len(b"POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\n") + 100


def test_http_head_too_long_is_an_anomaly_and_gives_up() -> None:
    p = http.HttpParser(settings(max_header_bytes=64))
    res = p.feed(C, b"GET / HTTP/1.1\r\n" + b"X-Long: " + b"a" * 200)
    assert res.outcome.name in ("FINAL", "GIVE_UP")
    res = p.feed(C, b"GET / HTTP/1.1\r\n" + b"X-Long: " + b"a" * 200)
    assert res.outcome.name == "GIVE_UP"
    assert any(isinstance(e, E.ParseAnomaly) and e.name == "dpi.http.head_too_long" for e in res.events)


def test_http_bad_chunk_size_is_an_anomaly() -> None:
    p = http.HttpParser(settings())
    p.feed(C, b"GET / HTTP/1.1\r\n\r\n")
    res = p.feed(S, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n")
    assert any(isinstance(e, E.ParseAnomaly) and e.name == "dpi.http.bad_chunk" for e in res.events)


def test_http_connect_tunnel_stops_parsing() -> None:
    p = http.HttpParser(settings())
    p.feed(C, b"CONNECT db:5432 HTTP/1.1\r\nHost: db:5432\r\n\r\n")
    res = p.feed(S, b"HTTP/1.1 200 Connection established\r\n\r\n\x16\x03\x01\x00\x05hello")
    assert len(res.events) == 1 and res.consumed == 0 or res.events[0].status == 200  # type: ignore[union-attr]
    res = p.feed(C, b"\x16\x03\x01\x02\x00" + b"\x01" * 30)
    assert res.events == [] and res.consumed == 35


@pytest.mark.parametrize(
    ("headers", "app"),
    [
        (((b"Server", b"Apache/2.4.58 (Debian)"),), "Apache"),
        (((b"Server", b"Jetty(9.4.z-SNAPSHOT)"),), "Jetty"),
        (((b"Server", b"CouchDB/3.3.3 (Erlang OTP/24)"),), "CouchDB"),
        (((b"X-Etcd-Cluster-Id", b"cdf818194e3a8c32"),), "etcd"),
        (((b"Link", b'<https://x.test/wp-json/>; rel="https://api.w.org/"'),), "WordPress"),
        (((b"Server", b"gunicorn"),), ""),
    ],
)
def test_server_applications_from_headers(headers, app) -> None:
    assert http.server_app(headers) == app


def test_rtsp_is_not_http_and_http_is_not_rtsp() -> None:
    rtsp_req = b"OPTIONS rtsp://cam/1 RTSP/1.0\r\nCSeq: 1\r\n\r\n"
    assert http.HttpParser(settings(), "HTTP").feed(C, rtsp_req).outcome.name == "GIVE_UP"
    assert http.HttpParser(settings(), "RTSP").feed(C, rtsp_req).outcome.name == "FINAL"
    assert (
        http.HttpParser(settings(), "RTSP").feed(C, b"OPTIONS * HTTP/1.1\r\n\r\n").outcome.name == "GIVE_UP"
    )


# ------------------------------------------------------------------------------------------------- TLS


def test_tls_client_hello_fields() -> None:
    ev = _run(("TLS/SSL", "tcp"), SESSIONS[("TLS/SSL", "tcp")], 1).events[0]
    assert isinstance(ev, E.TlsClientHello)
    assert ev.sni == b"a.example.test" and ev.alpn == (b"h2",) and ev.cipher_count == 3
    assert ev.record_version == 0x0301 and ev.handshake_version == 0x0303
    assert ev.supported_versions == (0x0304, 0x0303)


def test_tls_heartbeat_reports_declared_and_record_length() -> None:
    p = tls.TlsParser(settings())
    p.feed(C, gen.tls_client_hello(b"", [], 0x0302))
    # heartbeat record: type 24, TLS 1.1, length 3; message: request (1), payload length 0x4000
    res = p.feed(C, bytes.fromhex("18 0302 0003 01 4000"))
    (hb,) = res.events
    assert hb == E.TlsHeartbeat(0x0302, 1, 0x4000, 3, False)


def test_sslv2_and_sslv3_hellos() -> None:
    run = drive(tls.TlsParser(settings()), [(C, gen.sslv2_client_hello())], 1)
    assert run.finals == 1
    assert run.events[0].sslv2 and run.events[0].cipher_count == 2  # type: ignore[union-attr]
    sslv3 = gen.tls_client_hello(b"old.example.test", [], 0x0300)
    assert drive(tls.TlsParser(settings()), [(C, sslv3)]).events[0].record_version == 0x0300  # type: ignore[union-attr]


def test_tls_application_data_is_skipped_not_buffered() -> None:
    p = tls.TlsParser(settings())
    p.feed(C, gen.tls_client_hello(b"x", []))
    res = p.feed(C, bytes.fromhex("17 0303 4000") + b"\x00" * 100)  # a 16 KiB record, 100 bytes seen
    assert res.consumed == 105 and res.events == []


def test_tls_rejects_non_tls() -> None:
    assert not tls.probe(C, b"GET / HTTP/1.1\r\n")
    assert tls.TlsParser(settings()).feed(C, bytes.fromhex("16 0909 0010")).outcome.name == "GIVE_UP"


# ------------------------------------------------------------------------------------------------- SSH


def test_ssh_banner_fields_and_prelude_lines() -> None:
    p = ssh.SshParser(settings())
    res = p.feed(S, b"Welcome\r\nSSH-1.99-Cisco-1.25\r\n")
    (ev,) = res.events
    assert ev == E.SshBanner(b"1.99", b"Cisco-1.25", b"")
    assert res.outcome.name == "FINAL"
    assert ssh.parse_banner(b"SSH-2.0-") is None
    assert ssh.SshParser(settings()).feed(C, b"HELLO\r\n").outcome.name == "GIVE_UP"


def ssh_session(*exchanges: tuple[int, int], banner: bytes = b"SSH-2.0-OpenSSH_9.6p1\r\n") -> Session:
    return [(Side(side), data) for side, data in ssh_conversation(*exchanges, banner=banner)]


def ssh_events(session: Session, piece: int = 0) -> list[E.ParserEvent]:
    run = drive(ssh.SshParser(settings()), session, piece)
    assert not run.gave_up
    return [ev for ev in run.events if not isinstance(ev, E.SshBanner)]


SERVICE, NONE = (44, 44), (60, 52)  # service request and accept; the `none` method and its refusal


@pytest.mark.parametrize("piece", [0, 1, 7, 100])
def test_ssh_refused_guesses_are_counted_by_the_refusals_encrypted_size(piece: int) -> None:
    # hydra on dropbear: `none`, then ten passwords refused alike; the last refusal is never followed
    # by another request (the server closes): nine counted
    events = ssh_events(ssh_session(SERVICE, NONE, *[(76, 52)] * 10), piece)
    assert events == [E.SshAuthFailure(n) for n in range(1, 10)]


def test_ssh_a_success_ends_the_authentication_phase() -> None:
    # two mistyped passwords, the right one, then a session whose echoes are all one size
    events = ssh_events(ssh_session(SERVICE, NONE, (84, 52), (84, 52), (84, 28), (96, 44), *[(36, 36)] * 20))
    assert events == [E.SshAuthFailure(1), E.SshAuthFailure(2), E.SshAuthEnd(2)]


def test_ssh_the_last_refusal_counts_once_the_connection_ends() -> None:
    # one password per connection (an ssh client with one prompt): `none`, the guess refused, then
    # the client closes; the refusal is complete at its FIN (`stream_ended`), once
    p = ssh.SshParser(settings())
    run = drive(p, ssh_session(SERVICE, NONE, (84, 52)))
    assert not [ev for ev in run.events if isinstance(ev, E.SshAuthFailure)]
    assert p.stream_ended(C) == [E.SshAuthFailure(1)]
    assert p.stream_ended(S) == []
    # a session that ends after its authentication phase counts nothing more
    p = ssh.SshParser(settings())
    drive(p, ssh_session(SERVICE, NONE, (84, 28), (96, 44), (36, 36)))
    assert p.stream_ended(C) == [] and p.stream_ended(S) == []


def test_ssh_a_login_banner_beside_the_first_refusal_is_learnt_past() -> None:
    # the server sends its banner (USERAUTH_BANNER) once, in the flight of its first refusal
    events = ssh_events(ssh_session(SERVICE, (60, 52 + 120), *[(76, 52)] * 10))
    assert events == [E.SshAuthFailure(n) for n in range(1, 10)]


@pytest.mark.parametrize("piece", [0, 7])
def test_ssh_keyboard_interactive_refusals_take_turns_with_prompts(piece: int) -> None:
    # OpenSSH with PAM: each keyboard-interactive request is answered by a prompt (60), each password sent
    # to it by the refusal (52, as the `none` request's); counted once two rounds show the turns
    rounds = [(70, 60), (84, 52)] * 3
    events = ssh_events(ssh_session(SERVICE, NONE, *rounds, (70, 60)), piece)
    assert events == [E.SshAuthFailure(1), E.SshAuthFailure(2), E.SshAuthFailure(3)]
    # a mistyped password, then the right one: the success answers the second password, no refusal
    events = ssh_events(ssh_session(SERVICE, NONE, (70, 60), (84, 52), (70, 60), (84, 28), *[(36, 36)] * 20))
    assert events == [E.SshAuthEnd(0)]


def test_ssh_a_first_time_success_is_no_refusal() -> None:
    # `none` refused, the password right; the session's answers (one of them the success's size) follow
    events = ssh_events(ssh_session(SERVICE, NONE, (84, 28), (96, 44), (60, 28), *[(36, 36)] * 20))
    assert events == [E.SshAuthEnd(0)]


def test_ssh_refused_public_keys_are_no_guesses() -> None:
    # an agent offering three keys: two refused (same refusal, large requests), the third accepted
    events = ssh_events(ssh_session(SERVICE, NONE, (136, 52), (440, 52), (136, 300), (600, 28)))
    assert events == [E.SshAuthEnd(0)]


@pytest.mark.parametrize(
    "session",
    [
        [(S, b"SSH-1.5-OldServer\r\n" + b"\x00\x00\x01\x04" + b"\x01" * 300), (C, b"SSH-1.5-x\r\n")],
        [(S, b"SSH-2.0-x\r\n" + b"\xff\xff\xff\xff" + b"\x00" * 40), (C, b"SSH-2.0-y\r\n")],  # no packet
    ],
)
def test_ssh_streams_without_ssh_2_packets_are_not_followed(session: Session) -> None:
    events = ssh_events(session)
    assert events == [E.SshAuthEnd(0)]


# ------------------------------------------------------------------------------------------------- DNS


def test_dns_compression_and_cname() -> None:
    msg = dns.parse_message(gen.dns_response_cname(7), settings())
    assert msg is not None and msg.qr and msg.rcode == 0
    assert msg.questions == (E.DnsQuestion("www.example.test", 1, 1),)
    cname, a = msg.answers
    assert (cname.rtype, cname.target) == (5, "web.example.test")
    assert (a.name, a.rtype, a.ttl, a.data) == ("web.example.test", 1, 60, bytes([198, 18, 0, 2]))
    assert msg.anomalies == ()


def test_dns_pointer_loop_is_an_anomaly() -> None:
    msg = dns.parse_message(gen.dns_pointer_loop(9), settings())
    assert msg is not None and dns.A.DPI_DNS_POINTER_LOOP in msg.anomalies


def test_dns_two_pointers_pointing_at_each_other() -> None:
    header = struct.pack("!6H", 1, 0x8180, 0, 1, 0, 0)
    # offset 12: pointer to 14; offset 14: pointer to 12
    body = b"\xc0\x0e\xc0\x0c" + struct.pack("!HHIH", 1, 1, 1, 4) + b"\x01\x02\x03\x04"
    msg = dns.parse_message(header + body, settings())
    assert msg is not None and msg.anomalies == (dns.A.DPI_DNS_POINTER_LOOP,)


def test_dns_pointer_hop_bound_is_configurable() -> None:
    header = struct.pack("!6H", 1, 0x8180, 0, 1, 0, 0)  # one answer, no question
    owner = b"\xc0\x1c"  # offset 12: pointer to 28
    rec = struct.pack("!HHIH", 1, 1, 1, 4) + b"\x01\x02\x03\x04"  # offsets 14..27: A record
    chain = b"\xc0\x1e" + b"\xc0\x20" + b"\xc0\x22" + b"\x01a\x00"  # 28→30→32→34: "a"
    data = header + owner + rec + chain  # the owner name takes 4 pointer hops
    msg = dns.parse_message(data, settings(max_dns_pointer_hops=4))
    assert msg is not None and msg.anomalies == () and msg.answers[0].name == "a"
    msg = dns.parse_message(data, settings(max_dns_pointer_hops=3))
    assert msg is not None and msg.anomalies == (dns.A.DPI_DNS_POINTER_LOOP,)


def test_dns_record_cap() -> None:
    msg = dns.parse_message(gen.dns_response_cname(7), settings(max_dns_records=1))
    assert msg is not None and len(msg.answers) == 1 and dns.A.DPI_DNS_TOO_MANY_RECORDS in msg.anomalies


def test_dns_truncated_answer_is_an_anomaly_not_an_error() -> None:
    full = gen.dns_response_cname(7)
    msg = dns.parse_message(full[:-3], settings())
    assert msg is not None and dns.A.DPI_DNS_TRUNCATED in msg.anomalies and len(msg.answers) == 1


def test_dns_tcp_two_messages_in_one_segment_split_anywhere() -> None:
    q1, q2 = gen.dns_query(1, "a.test", 1), gen.dns_query(2, "b.test", 28)
    data = struct.pack("!H", len(q1)) + q1 + struct.pack("!H", len(q2)) + q2
    for piece in (1, 3, len(data)):
        run = drive(dns.DnsParser(settings(), "tcp"), [(C, data)], piece)
        assert [m.id for m in run.events] == [1, 2]  # type: ignore[union-attr]


def test_dns_client_response_first_is_not_identified() -> None:
    assert not dns.probe(C, gen.dns_response_cname(1))


# ------------------------------------------------------------------------------------------- databases


def test_mysql_events() -> None:
    run = _run(("MySQL", "tcp"), SESSIONS[("MySQL", "tcp")], 1)
    kinds = [type(e).__name__ for e in run.events]
    assert kinds == ["MysqlHandshake", "MysqlLogin", "MysqlLoginResult", "SqlQuery", "MysqlError"]
    assert run.events[0].server_version == b"8.0.36"  # type: ignore[union-attr]
    assert run.events[1] == E.MysqlLogin(b"app", b"shop", False)
    assert run.events[3].text.startswith("SELECT * FROM users")  # type: ignore[union-attr]
    assert run.events[4].code == 1146 and run.events[4].state == b"42S02"  # type: ignore[union-attr]


def test_mysql_big_query_is_truncated_and_skipped() -> None:
    p = mysql.MysqlParser(settings(max_event_bytes=16))
    for side, data in gen.mysql_session()[:3]:
        p.feed(C if side == 0 else S, data)
    sql = b"SELECT '" + b"a" * 5000 + b"'"
    pkt = gen.mysql_packet(0, b"\x03" + sql)
    run = drive(p, [(C, pkt)], 100)
    (q,) = run.events
    assert q.text == "SELECT 'aaaaaaaa" and q.truncated  # type: ignore[union-attr]


def test_mysql_ssl_login_switches_to_consuming() -> None:
    p = mysql.MysqlParser(settings())
    p.feed(S, gen.mysql_session()[0][1])
    ssl_req = gen.mysql_packet(1, struct.pack("<IIB", 0x0800 | 0x0200, 1 << 24, 33) + b"\x00" * 23)
    assert p.feed(C, ssl_req).events == [E.MysqlLogin(b"", b"", True)]
    res = p.feed(C, b"\x16\x03\x01\x00\x10" + b"\x00" * 16)
    assert res.consumed == 21 and res.events == []


def test_postgres_events_and_extended_query() -> None:
    run = _run(("PostgreSQL", "tcp"), SESSIONS[("PostgreSQL", "tcp")], 1)
    assert run.events[0] == E.PgStartup(196608, b"app", b"shop", b"psql")
    assert run.events[1] == E.PgAuthResult(True)
    assert run.events[2] == E.SqlQuery("postgresql", "SELECT version();", "query", False)
    assert run.events[3] == E.PgError(b"ERROR", b"42601", b"syntax error")
    p = postgres.PostgresParser(settings())
    p.feed(C, gen.pg_session()[0][1])
    body = b"stmt1\x00SELECT $1::int\x00\x00\x00"
    res = p.feed(C, b"P" + struct.pack("!I", 4 + len(body)) + body)
    assert res.events == [E.SqlQuery("postgresql", "SELECT $1::int", "prepare", False)]


def test_postgres_ssl_request_then_tls() -> None:
    p = postgres.PostgresParser(settings())
    res = p.feed(C, struct.pack("!II", 8, postgres.SSL_REQUEST))
    assert res.outcome.name == "FINAL" and res.events == [E.PgStartup(postgres.SSL_REQUEST)]
    p.feed(S, b"S")
    assert p.feed(C, b"\x16\x03\x01\x00\x05hello").consumed == 10


def test_redis_command_and_error() -> None:
    run = _run(("Redis", "tcp"), SESSIONS[("Redis", "tcp")], 1)
    assert run.events[0] == E.RedisCommand((b"SET", b"key", b"value"))
    assert isinstance(run.events[-1], E.RedisError)
    assert redis.RedisParser(settings()).feed(C, b"*2\r\n$3\r\nGET\r\nxx").outcome.name == "GIVE_UP"


def test_grpc_headers() -> None:
    run = _run(("GRPC", "tcp"), SESSIONS[("GRPC", "tcp")], 1)
    (hdrs,) = [e for e in run.events if isinstance(e, E.Http2Headers)]
    assert hdrs.grpc and (b":path", b"/helloworld.Greeter/SayHello") in hdrs.headers
    assert http2.Http2Parser(settings(), grpc=True).feed(C, gen.h2_client(False)).outcome.name == "GIVE_UP"


def test_http_smuggling_shapes_are_anomalies() -> None:
    p = http.HttpParser(settings())
    res = p.feed(C, b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    names = [e.name for e in res.events if isinstance(e, E.ParseAnomaly)]
    assert names == ["dpi.http.content_length_and_chunked"]
    res = p.feed(C, b"POST / HTTP/1.1\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcd")
    names = [e.name for e in res.events if isinstance(e, E.ParseAnomaly)]
    assert names == ["dpi.http.bad_content_length"]


def test_http_response_read_until_close_is_reported_at_its_head() -> None:
    p = http.HttpParser(settings())
    p.feed(C, b"GET / HTTP/1.0\r\n\r\n")
    res = p.feed(S, b"HTTP/1.0 200 OK\r\nServer: Jetty(9.4)\r\n\r\nbody until the connection closes")
    (resp,) = res.events
    assert isinstance(resp, E.HttpResponse) and resp.status == 200 and resp.server_app == "Jetty"
    assert p.feed(S, b"more body").events == []


def test_tls_encrypted_heartbeat_and_alerts() -> None:
    p = tls.TlsParser(settings())
    p.feed(C, gen.tls_client_hello(b"x", []))
    p.feed(S, gen.tls_server_hello())
    res = p.feed(S, bytes.fromhex("15 0303 0002 02 28"))  # alert: fatal, handshake_failure
    assert res.events == [E.TlsAlert(2, 40)]
    p.feed(C, bytes.fromhex("14 0303 0001 01"))  # ChangeCipherSpec: the client's records are encrypted now
    res = p.feed(C, bytes.fromhex("18 0303 0020") + b"\x99" * 32)
    assert res.events == [E.TlsHeartbeat(0x0303, 0x99, 0x9999, 32, True)]


def test_http2_undecodable_header_block_is_an_anomaly_and_plain_http2() -> None:
    bad_block = b"\xff\xff\xff\xff\xff"  # an indexed field far beyond any table
    data = http2.PREFACE + gen.h2_frame(4, 0, 0, b"") + gen.h2_frame(1, 0x4, 1, bad_block)
    res = http2.Http2Parser(settings()).feed(C, data)
    assert res.outcome.name == "FINAL"
    assert any(isinstance(e, E.ParseAnomaly) and e.name == "dpi.http2.hpack_error" for e in res.events)
