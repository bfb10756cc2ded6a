"""Generate the golden DPI captures in this directory (crafted with dpkt, no network I/O).

Run from the repository root:  python tests/data/pcaps/generate.py [--check]
Each capture is `<protocol>/<name>.pcap`; its expected replay output (`<name>.expected.jsonl`, the
`enforcer replay --json` lines with the volatile keys removed) is written by `--expected` and compared
by tests/dpi/test_golden.py. Addresses come from the lab ranges 198.18.0.0/15 and fd00::/8.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable
from pathlib import Path

import dpkt
import hpack

HERE = Path(__file__).resolve().parent
C4, S4 = bytes([198, 18, 0, 1]), bytes([198, 18, 0, 2])
R4 = bytes([198, 18, 0, 53])
C6 = bytes.fromhex("fd000000000000000000000000000001")
S6 = bytes.fromhex("fd000000000000000000000000000002")
MAC_C, MAC_S = b"\x02\x00\x00\x00\x00\x01", b"\x02\x00\x00\x00\x00\x02"

Packets = list[tuple[float, bytes]]


# ------------------------------------------------------------------------------------------- builders


def ip_packet(src: bytes, dst: bytes, proto: int, l4: bytes, ident: int = 1, frag: int = 0) -> bytes:
    if len(src) == 4:
        hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), ident, frag, 64, proto, 0, src, dst)
        return hdr[:10] + struct.pack("!H", _checksum(hdr)) + hdr[12:] + l4
    hdr = struct.pack("!IHBB", 6 << 28, len(l4), proto, 64) + src + dst
    return hdr + l4


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _pseudo(src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    if len(src) == 4:
        return src + dst + struct.pack("!BBH", 0, proto, length)
    return src + dst + struct.pack("!IxxxB", length, proto)


def tcp_segment(
    src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int, data: bytes
) -> bytes:
    hdr = struct.pack(
        "!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4, flags, 65535, 0, 0
    )
    csum = _checksum(_pseudo(src, dst, 6, len(hdr) + len(data)) + hdr + data)
    hdr = hdr[:16] + struct.pack("!H", csum) + hdr[18:]
    return ip_packet(src, dst, 6, hdr + data)


def udp_datagram(src: bytes, dst: bytes, sport: int, dport: int, data: bytes, ident: int = 1) -> bytes:
    hdr = struct.pack("!HHHH", sport, dport, 8 + len(data), 0)
    csum = _checksum(_pseudo(src, dst, 17, 8 + len(data)) + hdr + data) or 0xFFFF
    return ip_packet(src, dst, 17, hdr[:6] + struct.pack("!H", csum) + data, ident)


FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10


class TcpConversation:
    """A TCP connection between client and server, building packets with consistent numbers."""

    def __init__(self, out: Packets, client: bytes, cport: int, server: bytes, sport: int, t: float) -> None:
        self.out = out
        self.ends = ((client, cport), (server, sport))
        self.seq = [1000, 5000]
        self.t = t

    def _emit(self, side: int, flags: int, data: bytes, seq: int | None = None) -> None:
        (src, sp), (dst, dp) = self.ends[side], self.ends[1 - side]
        s = self.seq[side] if seq is None else seq
        self.t += 0.001
        self.out.append((round(self.t, 6), tcp_segment(src, dst, sp, dp, s, self.seq[1 - side], flags, data)))

    def handshake(self) -> TcpConversation:
        self._emit(0, SYN, b"")
        self.seq[0] += 1
        self._emit(1, SYN | ACK, b"")
        self.seq[1] += 1
        self._emit(0, ACK, b"")
        return self

    def send(self, side: int, data: bytes, mss: int = 1400) -> TcpConversation:
        for i in range(0, len(data), mss):
            chunk = data[i : i + mss]
            self._emit(side, PSH | ACK, chunk)
            self.seq[side] += len(chunk)
        return self

    def send_out_of_order(self, side: int, data: bytes, cut: int) -> TcpConversation:
        """Second part first, then the first part, then a retransmission of the first part."""
        base = self.seq[side]
        self._emit(side, PSH | ACK, data[cut:], seq=base + cut)
        self._emit(side, PSH | ACK, data[:cut], seq=base)
        self._emit(side, PSH | ACK, data[:cut], seq=base)
        self.seq[side] += len(data)
        return self

    def close(self) -> TcpConversation:
        self._emit(0, FIN | ACK, b"")
        self.seq[0] += 1
        self._emit(1, FIN | ACK, b"")
        self.seq[1] += 1
        self._emit(0, ACK, b"")
        return self


def udp_exchange(out: Packets, t: float, msgs: list[tuple[int, bytes]], client: bytes, cport: int,
                 server: bytes, sport: int) -> None:  # fmt: skip
    for i, (side, data) in enumerate(msgs):
        t += 0.001
        if side == 0:
            out.append((round(t, 6), udp_datagram(client, server, cport, sport, data, ident=100 + i)))
        else:
            out.append((round(t, 6), udp_datagram(server, client, sport, cport, data, ident=100 + i)))


# -------------------------------------------------------------------------------------- protocol bytes


def http_get() -> tuple[bytes, bytes]:
    req = (
        b"GET /index.html?q=1 HTTP/1.1\r\nHost: www.example.test\r\n"
        b"User-Agent: curl/8.5\r\nAccept: */*\r\n\r\n"
    )
    resp = (
        b"HTTP/1.1 200 OK\r\nServer: nginx/1.25.3\r\nContent-Type: text/plain\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    return req, resp


def tls_client_hello(sni: bytes, alpn: list[bytes], record_version: int = 0x0301) -> bytes:
    exts = b""
    name = struct.pack("!BH", 0, len(sni)) + sni
    exts += struct.pack("!HH", 0, len(name) + 2) + struct.pack("!H", len(name)) + name
    protos = b"".join(bytes([len(p)]) + p for p in alpn)
    exts += struct.pack("!HH", 16, len(protos) + 2) + struct.pack("!H", len(protos)) + protos
    versions = b"\x04\x03\x04\x03\x03"
    exts += struct.pack("!HH", 43, len(versions)) + versions
    ciphers = struct.pack("!3H", 0x1301, 0x1302, 0xC02F)
    body = (
        struct.pack("!H", 0x0303)
        + b"\x11" * 32
        + b"\x00"
        + struct.pack("!H", len(ciphers))
        + ciphers
        + b"\x01\x00"
    )
    body += struct.pack("!H", len(exts)) + exts
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return struct.pack("!BHH", 22, record_version, len(hs)) + hs


def tls_server_hello() -> bytes:
    exts = struct.pack("!HHH", 43, 2, 0x0304)
    body = struct.pack("!H", 0x0303) + b"\x22" * 32 + b"\x00" + struct.pack("!HB", 0x1301, 0)
    body += struct.pack("!H", len(exts)) + exts
    hs = b"\x02" + len(body).to_bytes(3, "big") + body
    return struct.pack("!BHH", 22, 0x0303, len(hs)) + hs


def sslv2_client_hello() -> bytes:
    ciphers = bytes.fromhex("010080030080")  # two SSLv2 cipher specs
    challenge = b"\x33" * 16
    body = b"\x01" + struct.pack("!HHHH", 0x0002, len(ciphers), 0, len(challenge)) + ciphers + challenge
    return struct.pack("!H", 0x8000 | len(body)) + body


def dns_name(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00"


def dns_query(ident: int, name: str, qtype: int) -> bytes:
    return struct.pack("!6H", ident, 0x0100, 1, 0, 0, 0) + dns_name(name) + struct.pack("!HH", qtype, 1)


def dns_response_cname(ident: int) -> bytes:
    """www.example.test CNAME web.example.test; web.example.test A 198.18.0.2 — with compression."""
    q = dns_name("www.example.test") + struct.pack("!HH", 1, 1)
    msg = struct.pack("!6H", ident, 0x8180, 1, 2, 0, 0) + q
    # answer 1: name = pointer to offset 12; CNAME rdata "web" + pointer to "example.test" (offset 16)
    cname_rdata = b"\x03web\xc0\x10"
    msg += b"\xc0\x0c" + struct.pack("!HHIH", 5, 1, 300, len(cname_rdata)) + cname_rdata
    cname_off = 12 + len(q) + 12  # where the CNAME rdata starts
    msg += struct.pack("!H", 0xC000 | cname_off) + struct.pack("!HHIH", 1, 1, 60, 4) + S4
    return msg


def dns_response_aaaa(ident: int) -> bytes:
    q = dns_name("v6.example.test") + struct.pack("!HH", 28, 1)
    return (
        struct.pack("!6H", ident, 0x8180, 1, 1, 0, 0)
        + q
        + b"\xc0\x0c"
        + struct.pack("!HHIH", 28, 1, 120, 16)
        + S6
    )


def dns_pointer_loop(ident: int) -> bytes:
    q = dns_name("loop.example.test") + struct.pack("!HH", 1, 1)
    msg = struct.pack("!6H", ident, 0x8180, 1, 1, 0, 0) + q
    here = len(msg)
    return msg + struct.pack("!H", 0xC000 | here) + struct.pack("!HHIH", 1, 1, 60, 4) + S4  # points at itself


def mysql_packet(seq: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "little") + bytes([seq]) + payload


def mysql_session() -> list[tuple[int, bytes]]:
    greeting = (
        b"\x0a8.0.36\x00" + struct.pack("<I", 42) + b"saltsalt\x00" + b"\xff\xf7\x21\x02\x00" + b"\x00" * 13
    )
    caps = 0x00000200 | 0x00000008 | 0x00008000 | 0x00080000
    login = (
        struct.pack("<IIB", caps, 1 << 24, 33)
        + b"\x00" * 23
        + b"app\x00"
        + b"\x14"
        + b"\x01" * 20
        + b"shop\x00"
    )
    return [
        (1, mysql_packet(0, greeting)),
        (0, mysql_packet(1, login)),
        (1, mysql_packet(2, b"\x00\x00\x00\x02\x00\x00\x00")),
        (0, mysql_packet(0, b"\x03SELECT * FROM users WHERE id = '1' OR '1'='1'")),
        (1, mysql_packet(1, b"\xff\x7a\x04#42S02Table 'shop.users' doesn't exist")),
    ]


def pg_session() -> list[tuple[int, bytes]]:
    params = b"user\x00app\x00database\x00shop\x00application_name\x00psql\x00\x00"
    startup = struct.pack("!II", 8 + len(params), 196608) + params
    auth_ok = b"R" + struct.pack("!II", 8, 0)
    ready = b"Z" + struct.pack("!I", 5) + b"I"
    q = b"SELECT version();\x00"
    query = b"Q" + struct.pack("!I", 4 + len(q)) + q
    err_body = b"SERROR\x00C42601\x00Msyntax error\x00\x00"
    err = b"E" + struct.pack("!I", 4 + len(err_body)) + err_body
    return [(0, startup), (1, auth_ok + ready), (0, query), (1, err + ready)]


def redis_session() -> list[tuple[int, bytes]]:
    return [
        (0, b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n"),
        (1, b"+OK\r\n"),
        (0, b"*2\r\n$6\r\nCONFIG\r\n$3\r\nGET\r\n"),
        (1, b"-ERR wrong number of arguments for 'config|get' command\r\n"),
    ]


def h2_frame(ftype: int, flags: int, stream: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + struct.pack("!I", stream) + payload


def h2_client(grpc: bool) -> bytes:
    enc = hpack.Encoder()
    headers = [
        (":method", "POST" if grpc else "GET"),
        (":scheme", "http"),
        (":authority", "svc.example.test"),
        (":path", "/helloworld.Greeter/SayHello" if grpc else "/"),
    ]
    if grpc:
        headers += [("content-type", "application/grpc"), ("te", "trailers")]
    block = enc.encode(headers)
    out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + h2_frame(4, 0, 0, b"")
    out += h2_frame(1, 0x4 | (0 if grpc else 0x1), 1, block)
    if grpc:
        out += h2_frame(0, 0x1, 1, b"\x00\x00\x00\x00\x07\n\x05world")
    return out


def bson(*elements: bytes) -> bytes:
    body = b"".join(elements) + b"\x00"
    return struct.pack("<i", 4 + len(body)) + body


def bson_int(name: str, value: int) -> bytes:
    return b"\x10" + name.encode() + b"\x00" + struct.pack("<i", value)


def bson_str(name: str, value: str) -> bytes:
    v = value.encode() + b"\x00"
    return b"\x02" + name.encode() + b"\x00" + struct.pack("<i", len(v)) + v


def mongo_msg(request_id: int, response_to: int, doc: bytes) -> bytes:
    body = struct.pack("<I", 0) + b"\x00" + doc
    return struct.pack("<iiii", 16 + len(body), request_id, response_to, 2013) + body


def mongo_session() -> list[tuple[int, bytes]]:
    hello = bson(bson_int("hello", 1), bson_str("$db", "admin"))
    ok = bson(b"\x01ok\x00" + struct.pack("<d", 1.0))
    find = bson(bson_str("find", "users"), bson_str("$db", "shop"))
    return [(0, mongo_msg(1, 0, hello)), (1, mongo_msg(100, 1, ok)), (0, mongo_msg(2, 0, find))]


def cql_frame(response: bool, stream: int, opcode: int, body: bytes) -> bytes:
    return bytes([0x84 if response else 0x04, 0]) + struct.pack("!hBI", stream, opcode, len(body)) + body


def cql_string(s: bytes) -> bytes:
    return struct.pack("!H", len(s)) + s


def cassandra_session() -> list[tuple[int, bytes]]:
    startup = struct.pack("!H", 1) + cql_string(b"CQL_VERSION") + cql_string(b"3.0.0")
    query = b"SELECT * FROM system.local"
    return [
        (0, cql_frame(False, 0, 0x05, b"")),
        (1, cql_frame(True, 0, 0x06, b"\x00\x00")),
        (0, cql_frame(False, 1, 0x01, startup)),
        (1, cql_frame(True, 1, 0x02, b"")),
        (0, cql_frame(False, 2, 0x07, struct.pack("!I", len(query)) + query + b"\x00\x01\x00")),
    ]


def kafka_request(key: int, version: int, corr: int, client: bytes, body: bytes) -> bytes:
    msg = struct.pack("!hhih", key, version, corr, len(client)) + client + body
    return struct.pack("!i", len(msg)) + msg


def kafka_session() -> list[tuple[int, bytes]]:
    metadata = struct.pack("!i", 1) + struct.pack("!h", 6) + b"orders"
    return [
        (0, kafka_request(18, 0, 1, b"kafka-cli", b"")),
        (1, struct.pack("!ii", 6, 1) + b"\x00\x00"),
        (0, kafka_request(3, 1, 2, b"kafka-cli", metadata)),
    ]


def zookeeper_session() -> list[tuple[int, bytes]]:
    connect = struct.pack("!iiqiqi", 44, 0, 0, 30000, 0, 16) + b"\x00" * 16
    reply = struct.pack("!iiiqi", 36, 0, 30000, 0x1234, 16) + b"\x00" * 16
    return [(0, connect), (1, reply)]


def memcached_session() -> list[tuple[int, bytes]]:
    return [(0, b"set greeting 0 0 5\r\nhello\r\n"), (1, b"STORED\r\n"), (0, b"get greeting\r\n")]


def couchbase_session() -> list[tuple[int, bytes]]:
    key = b"agent"
    features = struct.pack("!HH", 0x0B, 0x1B)
    hello = struct.pack("!BBHBBHIIQ", 0x80, 0x1F, len(key), 0, 0, 0, len(key) + len(features), 1, 0)
    return [(0, hello + key + features)]


def spark_session() -> list[tuple[int, bytes]]:
    body = b"\x01spark-rpc-body"
    frame = struct.pack("!QBqi", 21 + len(body), 3, 7, len(body)) + body
    return [(0, frame)]


def tns_connect() -> bytes:
    data = (b"(DESCRIPTION=(CONNECT_DATA=(SERVICE_NAME=ORCL)(CID=(PROGRAM=sqlplus)))"
            b"(ADDRESS=(PROTOCOL=TCP)(HOST=198.18.0.2)(PORT=1521)))")  # fmt: skip
    offset = 58
    fields = struct.pack("!HHHHHHHHHH", 314, 300, 0x0C41, 8192, 32767, 0x7F08, 0, 0x0100, len(data), offset)
    head_rest = fields + b"\x00" * (offset - 8 - len(fields))
    total = offset + len(data)
    return struct.pack("!HHBBH", total, 0, 1, 0, 0) + head_rest + data


def tns_data(payload: bytes) -> bytes:
    return struct.pack("!HHBBH", 10 + len(payload), 0, 6, 0, 0) + b"\x00\x00" + payload


def oracle_session() -> list[tuple[int, bytes]]:
    accept = struct.pack("!HHBBH", 32, 0, 2, 0, 0) + b"\x01\x3a" + b"\x00" * 22
    sql = b"\x11\x69\x00\x01\x01\x01SELECT ename FROM emp WHERE deptno = 10\x00\x01"
    return [(0, tns_connect()), (1, accept), (0, tns_data(sql))]


def tds_packet(ptype: int, payload: bytes) -> bytes:
    return struct.pack("!BBHHBB", ptype, 1, 8 + len(payload), 0, 1, 0) + payload


def mssql_session() -> list[tuple[int, bytes]]:
    options = b"\x00" + struct.pack("!HH", 11, 6) + b"\x01" + struct.pack("!HH", 17, 1) + b"\xff"
    prelogin = options + bytes([15, 0, 0x07, 0xD0, 0, 0]) + b"\x02"
    headers = struct.pack("<IIH", 22, 18, 2) + b"\x00" * 8 + struct.pack("<I", 1)
    batch = headers + "SELECT @@version".encode("utf-16-le")
    return [(0, tds_packet(18, prelogin)), (1, tds_packet(4, prelogin)), (0, tds_packet(1, batch))]


def dhcp_discover() -> bytes:
    fixed = struct.pack("!BBBBIHH", 1, 1, 6, 0, 0x3903F326, 0, 0x8000) + b"\x00" * 16
    fixed += MAC_C + b"\x00" * 10 + b"\x00" * 192
    options = b"\x35\x01\x01" + b"\x0c\x05pod-a" + b"\x32\x04" + bytes([198, 18, 0, 7]) + b"\xff"
    return fixed + b"\x63\x82\x53\x63" + options


def ntp_packet(mode: int, stratum: int) -> bytes:
    return bytes([(4 << 3) | mode, stratum, 6, 0xE9]) + b"\x00" * 44


def tftp_rrq() -> bytes:
    return b"\x00\x01config.txt\x00octet\x00"


# ------------------------------------------------------------------------------------------- captures


def cap_http_get() -> Packets:
    out: Packets = []
    req, resp = http_get()
    c = TcpConversation(out, C4, 40001, S4, 80, 1000.0).handshake()
    c.send_out_of_order(0, req, 20).send(1, resp, mss=60).close()
    return out


def cap_http_nonstandard_port() -> Packets:
    out: Packets = []
    body = b'{"name":"x"}'
    req = b"POST /api HTTP/1.1\r\nHost: api.example.test\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    resp = b"HTTP/1.1 201 Created\r\nServer: Apache/2.4\r\nContent-Length: 0\r\n\r\n"
    TcpConversation(out, C4, 40002, S4, 5432, 1000.0).handshake().send(0, req).send(1, resp).close()
    return out


def cap_http_midstream() -> Packets:
    """A flow picked up after its handshake (no SYN), client on a high port."""
    out: Packets = []
    c = TcpConversation(out, C4, 40003, S4, 8080, 1000.0)
    c.seq = [777, 888]
    req, resp = http_get()
    c.send(0, req).send(1, resp).close()
    return out


def cap_rtsp_sip() -> Packets:
    out: Packets = []
    rtsp = b"OPTIONS rtsp://198.18.0.2/stream RTSP/1.0\r\nCSeq: 1\r\n\r\n"
    TcpConversation(out, C4, 40004, S4, 554, 1000.0).handshake().send(0, rtsp).send(
        1, b"RTSP/1.0 200 OK\r\nCSeq: 1\r\nPublic: DESCRIBE, SETUP\r\n\r\n"
    ).close()
    sip = (b"INVITE sip:bob@example.test SIP/2.0\r\nVia: SIP/2.0/UDP 198.18.0.1\r\nCall-ID: 1@x\r\n"
           b"Content-Length: 0\r\n\r\n")  # fmt: skip
    udp_exchange(
        out, 1001.0, [(0, sip), (1, b"SIP/2.0 100 Trying\r\nContent-Length: 0\r\n\r\n")], C4, 5060, S4, 5060
    )
    return out


def cap_tls() -> Packets:
    out: Packets = []
    hello = tls_client_hello(b"api.example.test", [b"h2", b"http/1.1"])
    c = TcpConversation(out, C4, 40010, S4, 443, 1000.0).handshake()
    c.send(0, hello, mss=50).send(1, tls_server_hello() + b"\x14\x03\x03\x00\x01\x01")
    c.send(1, b"\x17\x03\x03\x00\x20" + b"\xaa" * 32).send(0, b"\x17\x03\x03\x00\x10" + b"\xbb" * 16).close()
    return out


def cap_tls_heartbleed() -> Packets:
    out: Packets = []
    c = TcpConversation(out, C4, 40011, S4, 8443, 1000.0).handshake()
    c.send(0, tls_client_hello(b"", [], 0x0302)).send(1, tls_server_hello())
    c.send(0, b"\x18\x03\x02\x00\x03\x01\x40\x00").close()  # heartbeat request claiming 16384 bytes
    return out


def cap_sslv2() -> Packets:
    out: Packets = []
    TcpConversation(out, C4, 40012, S4, 443, 1000.0).handshake().send(0, sslv2_client_hello()).close()
    return out


def cap_ssh_port_80() -> Packets:
    out: Packets = []
    c = TcpConversation(out, C4, 40020, S4, 80, 1000.0).handshake()
    c.send(1, b"SSH-2.0-OpenSSH_9.6p1 Debian-4\r\n").send(0, b"SSH-2.0-OpenSSH_9.2\r\n")
    c.send(0, b"\x00\x00\x01\x0c\x0a\x14" + b"\x00" * 16).close()
    return out


def cap_dns() -> Packets:
    out: Packets = []
    www = [(0, dns_query(0x1234, "www.example.test", 1)), (1, dns_response_cname(0x1234))]
    udp_exchange(out, 1000.0, www, C4, 53001, R4, 53)
    udp_exchange(out, 1000.1, [(0, dns_query(0x2345, "v6.example.test", 28)), (1, dns_response_aaaa(0x2345))],
                 C6, 53002, S6, 53)  # fmt: skip
    udp_exchange(out, 1000.2, [(0, dns_query(0x3456, "loop.example.test", 1)), (1, dns_pointer_loop(0x3456))],
                 C4, 53003, R4, 53)  # fmt: skip
    q = dns_query(0x4567, "tcp.example.test", 1)
    TcpConversation(out, C4, 40030, R4, 53, 1000.3).handshake().send(0, struct.pack("!H", len(q)) + q).close()
    # the connection that follows the lookup: its server address has a name in the FQDN cache
    TcpConversation(out, C4, 40031, S4, 80, 1000.4).handshake().send(0, http_get()[0]).close()
    return out


def cap_dns_fragmented() -> Packets:
    """A DNS response split into two IPv4 fragments (second fragment first)."""
    resp = dns_response_cname(0x5678)
    udp = struct.pack("!HHHH", 53, 53005, 8 + len(resp), 0) + resp
    first, second = udp[:48], udp[48:]
    out: Packets = [(1000.0, udp_datagram(C4, R4, 53005, 53, dns_query(0x5678, "www.example.test", 1)))]
    out.append((1000.002, ip_packet(R4, C4, 17, second, ident=777, frag=48 // 8)))
    out.append((1000.003, ip_packet(R4, C4, 17, first, ident=777, frag=0x2000)))
    return out


def cap_mysql() -> Packets:
    out: Packets = []
    c = TcpConversation(out, C4, 40040, S4, 3306, 1000.0).handshake()
    for side, data in mysql_session():
        c.send(side, data)
    c.close()
    return out


def cap_postgres() -> Packets:
    out: Packets = []
    c = TcpConversation(out, C4, 40050, S4, 5432, 1000.0).handshake()
    for side, data in pg_session():
        c.send(side, data)
    c.close()
    return out


def cap_redis() -> Packets:
    out: Packets = []
    c = TcpConversation(out, C4, 40060, S4, 6379, 1000.0).handshake()
    for side, data in redis_session():
        c.send(side, data)
    c.close()
    return out


def cap_http2() -> Packets:
    out: Packets = []
    settings = h2_frame(4, 0, 0, b"")
    TcpConversation(out, C4, 40070, S4, 50051, 1000.0).handshake().send(0, h2_client(True)).send(
        1, settings
    ).close()
    TcpConversation(out, C4, 40071, S4, 8080, 1001.0).handshake().send(0, h2_client(False)).send(
        1, settings
    ).close()
    return out


def cap_unknown() -> Packets:
    out: Packets = []
    noise = bytes((i * 37 + 11) % 256 for i in range(300))
    TcpConversation(out, C4, 40080, S4, 80, 1000.0).handshake().send(0, noise).close()
    return out


def cap_app_rules() -> Packets:
    """Replayed with policy/app_rules.yaml: only HTTP may use tcp/80 and only MySQL tcp/3306."""
    out: Packets = []
    req, resp = http_get()
    TcpConversation(out, C4, 41001, S4, 80, 1000.0).handshake().send(0, req).send(1, resp).close()
    c = TcpConversation(out, C4, 41002, S4, 80, 1001.0).handshake()
    c.send(1, b"SSH-2.0-OpenSSH_9.6p1\r\n").send(0, b"SSH-2.0-OpenSSH_9.2\r\n").close()
    noise = bytes((i * 91 + 7) % 256 for i in range(200))
    TcpConversation(out, C4, 41003, S4, 80, 1002.0).handshake().send(0, noise).close()
    c = TcpConversation(out, C4, 41004, S4, 3306, 1003.0).handshake()
    for side, data in mysql_session()[:3]:
        c.send(side, data)
    c.close()
    TcpConversation(out, C4, 41005, S4, 3306, 1004.0).handshake().send(0, req).close()
    www = [(0, dns_query(0x6789, "www.example.test", 1)), (1, dns_response_cname(0x6789))]
    udp_exchange(out, 1005.0, www, C4, 53010, R4, 53)
    return out


def http_exchange(host: bytes, response_headers: bytes) -> tuple[bytes, bytes]:
    req = b"GET /v2/keys HTTP/1.1\r\nHost: " + host + b"\r\nUser-Agent: curl/8.5\r\nAccept: */*\r\n\r\n"
    resp = b"HTTP/1.1 200 OK\r\n" + response_headers + b"Content-Length: 2\r\n\r\nok"
    return req, resp


def cap_host_rules() -> Packets:
    """Replayed with policy/host_rules.yaml: virtual hosts by HTTP Host and TLS SNI, and an etcd rule
    that is decided by the server's response (X-Etcd-Cluster-Id), not by the request."""
    out: Packets = []
    plain = b"Server: nginx/1.25.3\r\n"
    etcd = b"X-Etcd-Cluster-Id: cdf818194e3a8c32\r\nX-Etcd-Index: 8\r\n"
    for i, (port, host, headers) in enumerate(
        (
            (80, b"shop.example.test", plain),  # allowed by its host
            (80, b"SHOP.example.test:80", plain),  # the same host, another spelling
            (80, b"admin.example.test", plain),  # denied by its host
            (2379, b"198.18.0.2:2379", etcd),  # allowed once the server turns out to be etcd
            (2379, b"198.18.0.2:2379", plain),  # an nginx on the etcd port: denied on its response
        )
    ):
        req, resp = http_exchange(host, headers)
        c = TcpConversation(out, C4, 41101 + i, S4, port, 1000.0 + i).handshake()
        c.send(0, req).send(1, resp).close()
    for i, sni in enumerate((b"v2.api.example.test", b"api.example.test", b"")):
        c = TcpConversation(out, C4, 41201 + i, S4, 443, 1010.0 + i).handshake()
        c.send(0, tls_client_hello(sni, [b"h2"])).send(1, tls_server_hello()).close()
    return out


def _tcp_session(out: Packets, cport: int, sport: int, t: float, session: list[tuple[int, bytes]]) -> None:
    c = TcpConversation(out, C4, cport, S4, sport, t).handshake()
    for side, data in session:
        c.send(side, data)
    c.close()


def cap_nosql() -> Packets:
    out: Packets = []
    _tcp_session(out, 42001, 27017, 1000.0, mongo_session())
    _tcp_session(out, 42002, 9042, 1001.0, cassandra_session())
    _tcp_session(out, 42003, 9092, 1002.0, kafka_session())
    _tcp_session(out, 42004, 2181, 1003.0, zookeeper_session())
    _tcp_session(out, 42005, 11211, 1004.0, memcached_session())
    _tcp_session(out, 42006, 11210, 1005.0, couchbase_session())
    _tcp_session(out, 42007, 7077, 1006.0, spark_session())
    return out


def cap_sql() -> Packets:
    out: Packets = []
    _tcp_session(out, 42101, 1521, 1000.0, oracle_session())
    _tcp_session(out, 42102, 1433, 1001.0, mssql_session())
    return out


def cap_udp_services() -> Packets:
    out: Packets = []
    udp_exchange(out, 1000.0, [(0, dhcp_discover())], bytes(4), 68, bytes([255] * 4), 67)
    udp_exchange(out, 1001.0, [(0, ntp_packet(3, 0)), (1, ntp_packet(4, 2))], C4, 42123, S4, 123)
    udp_exchange(out, 1002.0, [(0, tftp_rrq())], C4, 42069, S4, 69)
    udp_exchange(out, 1003.0, [(0, b"are you there?"), (1, b"are you there?")], C4, 42007, S4, 7)
    _tcp_session(out, 42008, 7, 1004.0, [(0, b"echo me back\r\n"), (1, b"echo me back\r\n")])
    return out


CAPTURES: dict[str, Callable[[], Packets]] = {
    "http/http_get": cap_http_get,
    "http/http_nonstandard_port": cap_http_nonstandard_port,
    "http/http_midstream": cap_http_midstream,
    "http/rtsp_sip": cap_rtsp_sip,
    "tls/tls13": cap_tls,
    "tls/heartbleed": cap_tls_heartbleed,
    "tls/sslv2": cap_sslv2,
    "ssh/ssh_port_80": cap_ssh_port_80,
    "dns/dns": cap_dns,
    "dns/dns_fragmented": cap_dns_fragmented,
    "mysql/mysql": cap_mysql,
    "postgres/postgres": cap_postgres,
    "redis/redis": cap_redis,
    "http2/http2_grpc": cap_http2,
    "unknown/unknown_tcp": cap_unknown,
    "policy/app_rules": cap_app_rules,
    "policy/host_rules": cap_host_rules,
    "nosql/nosql": cap_nosql,
    "sql/oracle_mssql": cap_sql,
    "udp/udp_services": cap_udp_services,
}
# Recorded from real clients and servers by lab/record.sh (not generated here): expected outputs only.
LAB_CAPTURES = (
    "lab/dns_dig",
    "lab/http_curl_nginx",
    "lab/redis_cli",
    "lab/ssh_port_2222",
    "lab/ssh_port_8080",
    "lab/ssh_hydra_dropbear",
    "lab/ssh_hydra_openssh",
    "lab/ssh_hydra_openssh_kbdint",
    "lab/http_slow_read",
    "lab/tls_openssl",
)
# Captures replayed with a policy file (beside them); the others run with no policy (identify only).
POLICIES = {"policy/app_rules": "policy/app_rules.yaml", "policy/host_rules": "policy/host_rules.yaml"}


def frame(ip: bytes) -> bytes:
    etype = 0x0800 if ip[0] >> 4 == 4 else 0x86DD
    return MAC_S + MAC_C + struct.pack("!H", etype) + ip


def write_pcap(path: Path, packets: Packets) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        w = dpkt.pcap.Writer(f, linktype=dpkt.pcap.DLT_EN10MB)
        for ts, ip in packets:
            w.writepkt(frame(ip), ts=ts)


VOLATILE_KEYS = ("id", "elapsed_s", "packets_per_s")  # differ between runs: left out of expected files


# Golden captures replay with every new flow sent to the DPI (as `workers.inspect = "new"` runs live), so
# that each flow is identified whatever its rule; everything else is the packaged default configuration.
GOLDEN_CONFIG = {"workers": {"inspect": "new"}}


def replay_lines(path: Path, policy: Path | None = None) -> list[dict]:
    """The replay --json output for one capture, volatile keys removed (used by the golden test too)."""
    import io
    import json

    from node.config import config_from_dict
    from node.replay import load_policy_snapshot, policy_of, read_capture, replay

    config = config_from_dict(GOLDEN_CONFIG, environ={})
    tables, threat_policy = policy_of(load_policy_snapshot(str(policy) if policy else None, config))
    out = io.StringIO()
    replay(read_capture(str(path)), out, True, config, tables, threat_policy)
    lines = []
    for line in out.getvalue().splitlines():
        obj = json.loads(line)
        for key in VOLATILE_KEYS:
            obj.pop(key, None)
        lines.append(obj)
    return lines


def main(argv: list[str]) -> int:
    import json

    for name, build in CAPTURES.items():
        write_pcap(HERE / f"{name}.pcap", build())
    print(f"wrote {len(CAPTURES)} captures under {HERE.name}/")
    if "--expected" in argv:
        for name in (*CAPTURES, *LAB_CAPTURES):
            policy = HERE / POLICIES[name] if name in POLICIES else None
            lines = replay_lines(HERE / f"{name}.pcap", policy)
            text = "".join(json.dumps(obj, sort_keys=True) + "\n" for obj in lines)
            (HERE / f"{name}.expected.jsonl").write_text(text)
        print("wrote expected replay outputs (review them before committing)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
