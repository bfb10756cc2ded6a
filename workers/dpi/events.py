"""Typed parser events: what the protocol parsers saw, handed to detectors and to the replay output.

Every event is a frozen, slotted dataclass: cheap to build, immutable once emitted, and safe to keep in
a finding. Byte fields stay `bytes` (the wire form, never decoded with a guessed charset) so detectors
match exactly what crossed the wire; header lists are tuples of `(name, value)` byte pairs in wire
order, names as sent (compare with `.lower()`). Text that a protocol defines as text (SQL, DNS names)
is `str`, decoded with `errors="replace"` so a hostile byte never raises.

Bounds: parsers cap what they copy into an event (`DpiSettings.max_event_bytes` for bodies and SQL
text, `DpiSettings.max_headers` for header lists), and say so with a `truncated` flag; an event never
holds an unbounded slice of a stream.

Direction: events do not carry the packet direction; a detector reads it from the flow context it is
given (`ctx.direction`, `ctx.client_direction`, see `workers.dpi.engine`). Request-type events
(HttpRequest, SqlQuery, RedisCommand …) come from the client side, response-type ones from the server.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Headers = tuple[tuple[bytes, bytes], ...]


# ---------------------------------------------------------------------------------------------- generic


@dataclass(frozen=True, slots=True)
class ParseAnomaly:
    """A parser saw something malformed or suspicious (name from `core.anomalies`, DPI block)."""

    name: str
    app: str
    detail: str = ""


# ------------------------------------------------------------------------------------------------- HTTP


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """An HTTP/1.x request head (also RTSP and SIP, which share the grammar: see `protocol`)."""

    method: bytes
    uri: bytes
    version: bytes  # b"HTTP/1.1", b"RTSP/1.0", b"SIP/2.0"
    headers: Headers
    host: bytes  # Host header value (b"" when absent)
    body: bytes = b""  # first bytes of the body, up to max_event_bytes (de-chunked)
    body_truncated: bool = False  # the body goes on in `HttpBodyPart` events
    chunked: bool = False
    content_length: int = -1  # -1 when absent
    protocol: str = "HTTP"  # "HTTP" | "RTSP" | "SIP"


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """An HTTP/1.x (or RTSP/SIP) status line and headers."""

    version: bytes
    status: int
    reason: bytes
    headers: Headers
    body: bytes = b""
    body_truncated: bool = False
    chunked: bool = False
    content_length: int = -1
    server_app: str = ""  # server application named by the headers ("Apache", "nginx", "etcd" …), "" unknown
    protocol: str = "HTTP"


@dataclass(frozen=True, slots=True)
class HttpBodyPart:
    """A further part of an HTTP/1.x body too long for its head event (whose `body_truncated` is set).

    The head event carries the first part; these carry the rest, each at most `max_event_bytes`, so the
    detectors see every body byte while nothing holds the whole body. A part starts either where the
    previous one ended at a value boundary (`&` of a form) or a quarter of a part before its end
    (`workers.dpi.parsers.http.part_overlap`),
    so a value or an injection that straddles a cut is whole in one part. The last part of a body has
    `last` set (it may repeat the overlap when the body ended inside it). The request's
    content type and URI ride along: a detector judges the part without remembering the head.
    """

    offset: int  # position of data[0] in the (de-chunked) body
    data: bytes
    last: bool
    request: bool  # a request body (client side); else a response body
    content_type: bytes = b""  # the message's Content-Type value
    uri: bytes = b""  # the request's URI (a response: the URI of the request it answers, b"")
    protocol: str = "HTTP"


@dataclass(frozen=True, slots=True)
class Http2Frame:
    """One HTTP/2 frame header (payload not kept)."""

    frame_type: int
    flags: int
    stream_id: int
    length: int


@dataclass(frozen=True, slots=True)
class Http2Headers:
    """A decoded HTTP/2 HEADERS block (pseudo-headers included, e.g. b":path")."""

    stream_id: int
    headers: Headers
    end_stream: bool
    grpc: bool  # content-type application/grpc*


# -------------------------------------------------------------------------------------------------- TLS


@dataclass(frozen=True, slots=True)
class TlsClientHello:
    record_version: int  # e.g. 0x0301; 0x0002 for an SSLv2-framed hello
    handshake_version: int  # legacy_version in the hello body
    sni: bytes  # b"" when absent
    alpn: tuple[bytes, ...]
    cipher_count: int
    supported_versions: tuple[int, ...] = ()
    sslv2: bool = False


@dataclass(frozen=True, slots=True)
class TlsServerHello:
    record_version: int
    handshake_version: int
    cipher: int
    selected_version: int  # from supported_versions (TLS 1.3), else handshake_version
    alpn: bytes = b""


@dataclass(frozen=True, slots=True)
class TlsHeartbeat:
    """A heartbeat record. `declared_length` > `record_length` - 3 - 16 is the Heartbleed shape; an
    encrypted heartbeat (after ChangeCipherSpec) has `encrypted` set and an unreliable declared length."""

    record_version: int
    message_type: int  # 1 request, 2 response
    declared_length: int
    record_length: int
    encrypted: bool = False


@dataclass(frozen=True, slots=True)
class TlsAlert:
    level: int
    description: int
    encrypted: bool = False


# -------------------------------------------------------------------------------------------------- SSH


@dataclass(frozen=True, slots=True)
class SshBanner:
    proto_version: bytes  # b"2.0", b"1.99"
    software: bytes  # b"OpenSSH_9.6p1"
    comments: bytes


@dataclass(frozen=True, slots=True)
class SshAuthFailure:
    """The server refused an authentication attempt again: its answer is the same encrypted message as
    its answer to the connection's first attempt (`workers.dpi.parsers.ssh`)."""

    failures: int  # refused attempts in this connection so far


@dataclass(frozen=True, slots=True)
class SshAuthEnd:
    """The authentication phase is over (the server answered otherwise than with its refusal)."""

    failures: int


# -------------------------------------------------------------------------------------------------- DNS


@dataclass(frozen=True, slots=True)
class DnsQuestion:
    name: str  # dotted, lowercase, no trailing dot; non-ASCII bytes as \\xNN
    qtype: int
    qclass: int


@dataclass(frozen=True, slots=True)
class DnsAnswer:
    name: str
    rtype: int
    rclass: int
    ttl: int
    data: bytes  # raw RDATA (A: 4 bytes, AAAA: 16 bytes)
    target: str = ""  # decoded name for CNAME/NS/PTR/MX (MX: exchange)


@dataclass(frozen=True, slots=True)
class DnsMessage:
    id: int
    qr: bool  # True: response
    opcode: int
    rcode: int
    flags: int  # the 16-bit flags word as sent
    questions: tuple[DnsQuestion, ...]
    answers: tuple[DnsAnswer, ...]
    authority_count: int
    additional_count: int
    size: int  # message length in bytes
    transport: str = "udp"  # "udp" | "tcp"
    anomalies: tuple[str, ...] = ()  # e.g. pointer loop, truncated record, counts beyond the message


# ------------------------------------------------------------------------------------------- databases


@dataclass(frozen=True, slots=True)
class SqlQuery:
    """SQL text sent by a client (MySQL COM_QUERY/COM_STMT_PREPARE, PostgreSQL Query/Parse, TDS SQL
    batch, Oracle TNS data …)."""

    dialect: str  # "mysql" | "postgresql" | "mssql" | "oracle" | "cql"
    text: str
    kind: str = "query"  # "query" | "prepare"
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class MysqlHandshake:
    protocol_version: int
    server_version: bytes
    connection_id: int


@dataclass(frozen=True, slots=True)
class MysqlLogin:
    user: bytes
    database: bytes
    ssl: bool = False


@dataclass(frozen=True, slots=True)
class MysqlLoginResult:
    ok: bool
    code: int = 0  # error code when not ok


@dataclass(frozen=True, slots=True)
class MysqlError:
    code: int
    state: bytes
    message: bytes


@dataclass(frozen=True, slots=True)
class PgStartup:
    protocol: int  # 196608 = 3.0; 80877103 = SSLRequest; 80877104 = GSSENCRequest; 80877102 = cancel
    user: bytes = b""
    database: bytes = b""
    application: bytes = b""


@dataclass(frozen=True, slots=True)
class PgAuthResult:
    ok: bool
    code: bytes = b""  # SQLSTATE on failure


@dataclass(frozen=True, slots=True)
class PgError:
    severity: bytes
    code: bytes  # SQLSTATE
    message: bytes


@dataclass(frozen=True, slots=True)
class RedisCommand:
    args: tuple[bytes, ...]  # args[0] is the command name as sent
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class RedisError:
    message: bytes


@dataclass(frozen=True, slots=True)
class MongoMessage:
    opcode: int
    request_id: int
    response_to: int
    length: int
    command: str = ""  # first key of the OP_MSG body section, when readable


@dataclass(frozen=True, slots=True)
class CassandraFrame:
    version: int  # low 7 bits
    response: bool
    opcode: int
    stream: int
    length: int


@dataclass(frozen=True, slots=True)
class KafkaRequest:
    api_key: int
    api_version: int
    correlation_id: int
    client_id: bytes
    topics: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class ZooKeeperConnect:
    protocol_version: int
    timeout_ms: int
    session_id: int


@dataclass(frozen=True, slots=True)
class MemcachedCommand:
    binary: bool
    opcode: int  # binary opcode; -1 for text commands
    command: bytes  # text command name, or b"" for binary
    key: bytes


@dataclass(frozen=True, slots=True)
class TnsPacket:
    packet_type: int  # 1 connect, 2 accept, 4 refuse, 6 data …
    length: int
    connect_data: bytes = b""  # CONNECT_DATA string of a connect packet


@dataclass(frozen=True, slots=True)
class TdsPacket:
    packet_type: int  # 1 SQL batch, 3 RPC, 16 login7, 18 prelogin …
    status: int
    length: int


# ------------------------------------------------------------------------------------------ UDP services


@dataclass(frozen=True, slots=True)
class DhcpMessage:
    op: int  # 1 request, 2 reply
    message_type: int  # option 53; 0 when absent (BOOTP)
    xid: int
    client_mac: bytes
    hostname: bytes = b""
    requested_ip: bytes = b""


@dataclass(frozen=True, slots=True)
class NtpMessage:
    version: int
    mode: int  # 3 client, 4 server, 6 control, 7 private (monlist)
    stratum: int
    size: int


@dataclass(frozen=True, slots=True)
class TftpRequest:
    opcode: int  # 1 read, 2 write
    filename: bytes
    mode: bytes


@dataclass(frozen=True, slots=True)
class EchoData:
    length: int


@dataclass(frozen=True, slots=True)
class SparkMessage:
    """Spark RPC frame header (frame length, message type)."""

    length: int
    message_type: int


# ------------------------------------------------------------------------------------ detector findings


@dataclass(frozen=True, slots=True)
class Finding:
    """What a detector hook returns: one threat, with what it would like the engine to do.

    The engine turns it into a `threat` event (`core.events.make_event`) and acts only when `block`
    is set and the flow's deciding group is in protect mode (RESET_FLOW for TCP, BLOCK_FLOW otherwise);
    in discover/monitor (or with no policy) it only alerts.
    """

    name: str  # threat name, e.g. "dns.tunneling", "tls.heartbleed"
    severity: str  # "info" | "low" | "medium" | "high" | "critical"
    block: bool = False
    message: str = ""
    excerpt: bytes = b""
    fields: dict[str, object] = field(default_factory=dict)


ParserEvent = (
    ParseAnomaly
    | HttpRequest
    | HttpResponse
    | HttpBodyPart
    | Http2Frame
    | Http2Headers
    | TlsClientHello
    | TlsServerHello
    | TlsHeartbeat
    | TlsAlert
    | SshBanner
    | SshAuthFailure
    | SshAuthEnd
    | DnsMessage
    | SqlQuery
    | MysqlHandshake
    | MysqlLogin
    | MysqlLoginResult
    | MysqlError
    | PgStartup
    | PgAuthResult
    | PgError
    | RedisCommand
    | RedisError
    | MongoMessage
    | CassandraFrame
    | KafkaRequest
    | ZooKeeperConnect
    | MemcachedCommand
    | TnsPacket
    | TdsPacket
    | DhcpMessage
    | NtpMessage
    | TftpRequest
    | EchoData
    | SparkMessage
)
