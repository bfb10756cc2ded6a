"""The one ordered registry of protocol parsers.

Order matters only as a tie-break: when two candidates finalize on the same bytes, the earlier entry
wins (candidates whose default ports include the flow's server port are tried first). `validate()` runs
at engine start: unique names per transport, known transports, ports in range. Names are the canonical
application names of `core.apps.APPLICATIONS` (what rules name), checked by the tests.
"""

from __future__ import annotations

from workers.dpi.parsers import (
    cassandra,
    dhcp,
    dns,
    echo,
    http,
    http2,
    kafka,
    memcached,
    mongodb,
    mssql,
    mysql,
    ntp,
    oracle,
    postgres,
    redis,
    spark,
    ssh,
    tftp,
    tls,
    zookeeper,
)
from workers.dpi.parsers.base import Parser, ParserSpec
from workers.dpi.settings import DpiSettings


def _http(s: DpiSettings) -> Parser:
    return http.HttpParser(s, "HTTP")


def _rtsp(s: DpiSettings) -> Parser:
    return http.HttpParser(s, "RTSP")


def _sip(s: DpiSettings) -> Parser:
    return http.HttpParser(s, "SIP")


def _dns_udp(s: DpiSettings) -> Parser:
    return dns.DnsParser(s, "udp")


def _dns_tcp(s: DpiSettings) -> Parser:
    return dns.DnsParser(s, "tcp")


def _memcached(s: DpiSettings) -> Parser:
    return memcached.MemcachedParser(s, couchbase=False)


def _couchbase(s: DpiSettings) -> Parser:
    return memcached.MemcachedParser(s, couchbase=True)


def _h2(s: DpiSettings) -> Parser:
    return http2.Http2Parser(s, grpc=False)


def _grpc(s: DpiSettings) -> Parser:
    return http2.Http2Parser(s, grpc=True)


PARSERS: tuple[ParserSpec, ...] = (
    ParserSpec(
        "HTTP", "tcp", (80, 8080, 8000, 8008, 8888), "HTTP/1.x requests and responses", http.probe_http, _http
    ),
    ParserSpec(
        "RTSP", "tcp", (554, 8554), "Real Time Streaming Protocol (HTTP-like)", http.probe_rtsp, _rtsp
    ),
    ParserSpec("SIP", "tcp", (5060, 5061), "Session Initiation Protocol over TCP", http.probe_sip, _sip),
    ParserSpec("SIP", "udp", (5060,), "Session Initiation Protocol over UDP", http.probe_sip, _sip),
    ParserSpec(
        "TLS/SSL",
        "tcp",
        (443, 8443, 993, 995, 465, 636),
        "SSLv2/SSLv3/TLS records and hellos",
        tls.probe,
        tls.TlsParser,
    ),
    ParserSpec("SSH", "tcp", (22, 2222), "SSH identification strings", ssh.probe, ssh.SshParser),
    ParserSpec("DNS", "udp", (53, 5353), "DNS messages over UDP", dns.probe, _dns_udp),
    ParserSpec("DNS", "tcp", (53,), "DNS messages over TCP (length-prefixed)", dns.probe_tcp, _dns_tcp),
    ParserSpec("GRPC", "tcp", (50051,), "gRPC over cleartext HTTP/2", http2.probe, _grpc),
    ParserSpec("HTTP2", "tcp", (80, 8080), "HTTP/2 with prior knowledge (h2c)", http2.probe, _h2),
    ParserSpec("MySQL", "tcp", (3306, 33060), "MySQL client/server protocol", mysql.probe, mysql.MysqlParser),
    ParserSpec(
        "PostgreSQL",
        "tcp",
        (5432,),
        "PostgreSQL frontend/backend protocol v3",
        postgres.probe,
        postgres.PostgresParser,
    ),
    ParserSpec(
        "Redis", "tcp", (6379,), "Redis serialization protocol (RESP)", redis.probe, redis.RedisParser
    ),
    ParserSpec("MongoDB", "tcp", (27017,), "MongoDB wire protocol", mongodb.probe, mongodb.factory),
    ParserSpec(
        "Cassandra", "tcp", (9042,), "Cassandra CQL native protocol v3-v5", cassandra.probe, cassandra.factory
    ),
    ParserSpec(
        "Kafka", "tcp", (9092,), "Kafka requests (API key, client id, topics)", kafka.probe, kafka.factory
    ),
    ParserSpec(
        "ZooKeeper",
        "tcp",
        (2181,),
        "ZooKeeper connect and four-letter words",
        zookeeper.probe,
        zookeeper.ZooKeeperParser,
    ),
    ParserSpec(
        "Memcached",
        "tcp",
        (11211,),
        "memcached text and binary protocols",
        memcached.probe_memcached,
        _memcached,
    ),
    ParserSpec(
        "Couchbase",
        "tcp",
        (11210,),
        "Couchbase binary protocol (memcached-derived)",
        memcached.probe_couchbase,
        _couchbase,
    ),
    ParserSpec("Spark", "tcp", (7077,), "Spark network-common RPC frames", spark.probe, spark.factory),
    ParserSpec(
        "Oracle",
        "tcp",
        (1521,),
        "Oracle TNS (connect descriptor, SQL text heuristic)",
        oracle.probe,
        oracle.factory,
    ),
    ParserSpec(
        "MSSQL", "tcp", (1433,), "SQL Server TDS (prelogin, SQL batch text)", mssql.probe, mssql.factory
    ),
    ParserSpec("DHCP", "udp", (67, 68), "DHCP (BOOTP with the magic cookie)", dhcp.probe, dhcp.DhcpParser),
    ParserSpec(
        "NTP", "udp", (123,), "NTP, including control and private (monlist) modes", ntp.probe, ntp.NtpParser
    ),
    ParserSpec("TFTP", "udp", (69,), "TFTP read/write requests", tftp.probe, tftp.TftpParser),
    ParserSpec(
        "ECHO",
        "tcp",
        (7,),
        "Echo: the server returns the client's bytes (only on its port)",
        echo.probe,
        echo.EchoParser,
        port_only=True,
    ),
    ParserSpec(
        "ECHO", "udp", (7,), "Echo over UDP (only on its port)", echo.probe, echo.EchoParser, port_only=True
    ),
)

TRANSPORTS = ("tcp", "udp")


def validate(parsers: tuple[ParserSpec, ...] = PARSERS) -> None:
    seen: set[tuple[str, str]] = set()
    for spec in parsers:
        if spec.transport not in TRANSPORTS:
            raise ValueError(f"parser {spec.name}: unknown transport {spec.transport!r}")
        if (spec.name, spec.transport) in seen:
            raise ValueError(f"parser {spec.name}/{spec.transport}: registered twice")
        seen.add((spec.name, spec.transport))
        if any(not 0 < p < 65536 for p in spec.ports):
            raise ValueError(f"parser {spec.name}: port out of range")


def server_ports(parsers: tuple[ParserSpec, ...] = PARSERS) -> dict[str, frozenset[int]]:
    """Known server ports per transport (for guessing the direction of a flow picked up mid-stream)."""
    out: dict[str, set[int]] = {t: set() for t in TRANSPORTS}
    for spec in parsers:
        out[spec.transport].update(spec.ports)
    return {t: frozenset(p) for t, p in out.items()}
