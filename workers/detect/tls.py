"""TLS/SSL and SSH threats on plain values: versions, Heartbleed, SSLv2 overflows, SSH v1.

`check_records(data, encrypted)` walks whole records in a chunk of one direction's stream (a record
split across chunks is the caller's to reassemble; the DPI stream layer does); `check_ssh_banner` reads
the identification line. `check_encrypted_heartbeat` judges heartbeats after ChangeCipherSpec by their
record lengths alone: a response echoes its request's payload, so its record is as long as the
request's (the same cipher adds the same overhead, give or take a CBC block); Heartbleed's answer
carries up to 64 KiB of server memory for a request of a few dozen bytes. Version threats: `ssl_v2_v3` for an SSLv2 hello, a client whose highest
offered version is SSL 3.0, or a server that picks SSL 3.0; `tls_1_0`/`tls_1_1` when the server picks
them (off by default: still common on legacy internal services).
"""

from __future__ import annotations

import struct

from threats.catalogue import (
    HEARTBLEED,
    SSH_V1,
    SSL_CIPHER_OVERFLOW,
    SSL_V2_V3,
    TLS_1_0,
    TLS_1_1,
    Hit,
    excerpt_of,
)

SSL3, TLS10, TLS11, TLS12, TLS13 = 0x0300, 0x0301, 0x0302, 0x0303, 0x0304
_CT_HANDSHAKE, _CT_HEARTBEAT = 22, 24
_HS_CLIENT_HELLO, _HS_SERVER_HELLO = 1, 2
_EXT_SUPPORTED_VERSIONS = 43
_HEARTBEAT_MIN_PADDING = 16  # RFC 6520
_HEARTBEAT_MIN = 3 + _HEARTBEAT_MIN_PADDING  # type, length, no payload, the padding
# An encrypted response may exceed its request by this much (a CBC block, a longer MAC) and still echo it.
HEARTBEAT_RESPONSE_SLACK = 64
# Records walked per chunk.
MAX_RECORDS_PER_CHUNK = 64
_VERSION_THREATS = {SSL3: SSL_V2_V3, TLS10: TLS_1_0, TLS11: TLS_1_1}
_RECORD = struct.Struct("!BHH")


def check_ssh_banner(banner: bytes) -> Hit | None:
    """SSH identification string announcing protocol 1 (1.99 means 2 with 1 fallback: fine)."""
    line = banner.split(b"\n", 1)[0].rstrip(b"\r")
    if line.startswith(b"SSH-1.") and not line.startswith(b"SSH-1.99-"):
        return Hit(SSH_V1, line[:32].decode("ascii", "replace"), excerpt_of(line))
    return None


def check_sslv2(record: bytes) -> list[Hit]:
    """An SSLv2 record (2-byte header with the high bit set): hello version and length overflows."""
    if len(record) < 3:
        return []
    length = ((record[0] & 0x7F) << 8) | record[1]
    body = record[2 : 2 + length]
    hits: list[Hit] = []
    msg = body[0]
    if msg == 1 and len(body) >= 9:  # CLIENT-HELLO
        version, cipher_len, sid_len, chal_len = struct.unpack_from("!HHHH", body, 1)
        if 9 + cipher_len + sid_len + chal_len > length or sid_len > 32 or chal_len > 32:
            hits.append(
                Hit(SSL_CIPHER_OVERFLOW, "SSLv2 client hello lengths beyond the record", excerpt_of(record))
            )
        if version in (0x0002, SSL3):
            hits.append(Hit(SSL_V2_V3, f"SSLv2 client hello for version {version:#06x}", excerpt_of(record)))
    elif msg == 2 and len(body) >= 10:  # CLIENT-MASTER-KEY
        clear_len, enc_len, arg_len = struct.unpack_from("!HHH", body, 4)
        if arg_len > 8 or 10 + clear_len + enc_len + arg_len > length:
            hits.append(
                Hit(SSL_CIPHER_OVERFLOW, f"SSLv2 master key arg of {arg_len} bytes", excerpt_of(record))
            )
    elif msg == 4:  # SERVER-HELLO: the server speaks SSLv2
        hits.append(Hit(SSL_V2_V3, "SSLv2 server hello", excerpt_of(record)))
    return hits


def is_sslv2(data: bytes) -> bool:
    """Does the chunk start with an SSLv2 record carrying a hello or master key?"""
    return len(data) >= 3 and bool(data[0] & 0x80) and data[2] in (1, 2, 4)


def hello_version(body: bytes) -> tuple[int, int]:
    """(handshake type, version) of a ClientHello/ServerHello body (after the 4-byte handshake header).

    For a ClientHello the version is the highest offered (supported_versions if present); for a
    ServerHello the one chosen. (0, 0) when the body is not a hello or is cut short."""
    if len(body) < 6:
        return 0, 0
    hs_type = body[0]
    if hs_type not in (_HS_CLIENT_HELLO, _HS_SERVER_HELLO):
        return 0, 0
    msg = body[4 : 4 + int.from_bytes(body[1:4], "big")]
    if len(msg) < 35:
        return hs_type, 0
    version = (msg[0] << 8) | msg[1]
    off = 34
    sid_len = msg[off]
    off += 1 + sid_len
    if hs_type == _HS_CLIENT_HELLO:
        if off + 2 > len(msg):
            return hs_type, version
        off += 2 + int.from_bytes(msg[off : off + 2], "big")  # cipher suites
        if off >= len(msg):
            return hs_type, version
        off += 1 + msg[off]  # compression methods
    else:
        off += 3  # cipher suite + compression method
    if off + 2 > len(msg):
        return hs_type, version
    ext_end = min(len(msg), off + 2 + int.from_bytes(msg[off : off + 2], "big"))
    off += 2
    while off + 4 <= ext_end:
        ext_type = int.from_bytes(msg[off : off + 2], "big")
        ext_len = int.from_bytes(msg[off + 2 : off + 4], "big")
        data = msg[off + 4 : off + 4 + ext_len]
        if ext_type == _EXT_SUPPORTED_VERSIONS:
            if hs_type == _HS_SERVER_HELLO and len(data) >= 2:
                return hs_type, int.from_bytes(data[:2], "big")
            if hs_type == _HS_CLIENT_HELLO and data:
                end = min(len(data), 1 + data[0])
                offered = [int.from_bytes(data[i : i + 2], "big") for i in range(1, end - 1, 2)]
                offered = [v for v in offered if v & 0x0F0F != 0x0A0A]  # drop GREASE values
                if offered:
                    return hs_type, max(offered)
        off += 4 + ext_len
    return hs_type, version


def check_records(data: bytes, encrypted: bool = False) -> list[Hit]:
    """TLS threats in the whole records of `data` (one direction). `encrypted`: after ChangeCipherSpec,
    when heartbeat contents are ciphertext and cannot be checked."""
    if is_sslv2(data):
        return check_sslv2(data)
    hits: list[Hit] = []
    off = 0
    for _ in range(MAX_RECORDS_PER_CHUNK):
        if off + 5 > len(data):
            break
        ctype, _rversion, length = _RECORD.unpack_from(data, off)
        body = data[off + 5 : off + 5 + length]
        if ctype == _CT_HEARTBEAT and not encrypted and len(body) >= 3:
            claimed = int.from_bytes(body[1:3], "big")
            if 3 + claimed + _HEARTBEAT_MIN_PADDING > length:
                hits.append(Hit(HEARTBLEED, f"heartbeat claims {claimed} bytes in a {length}-byte record",
                                excerpt_of(data[off : off + 16])))  # fmt: skip
        elif ctype == _CT_HANDSHAKE and not encrypted:
            hs_type, version = hello_version(body)
            hits += version_hits(hs_type == _HS_CLIENT_HELLO, version)
        off += 5 + length
    return hits


def version_hits(from_client: bool, version: int) -> list[Hit]:
    """Version threats for a hello's version (a client's highest offer or the server's choice)."""
    if version == 0:
        return []
    if from_client:
        # a client whose best is SSL 3.0 (or lower); TLS 1.0/1.1 offers are judged by the server's answer
        return [Hit(SSL_V2_V3, f"client offers at most {version:#06x}")] if version <= SSL3 else []
    threat = _VERSION_THREATS.get(version)
    if threat is None and version < SSL3:
        threat = SSL_V2_V3
    return [Hit(threat, f"server chose {version:#06x}")] if threat is not None else []


def check_encrypted_heartbeat(record_length: int, outstanding_request: int) -> Hit | None:
    """An encrypted heartbeat record by its length: one too short to hold any heartbeat, or an answer
    longer than the request it answers (`outstanding_request`: the record length of the other side's
    unanswered heartbeat, 0 when there is none and this record is a request)."""
    if record_length < _HEARTBEAT_MIN:
        return Hit(HEARTBLEED, f"encrypted heartbeat of {record_length} bytes, below the {_HEARTBEAT_MIN} "
                               "a heartbeat takes")  # fmt: skip
    if outstanding_request > 0 and record_length > outstanding_request + HEARTBEAT_RESPONSE_SLACK:
        return Hit(HEARTBLEED, f"encrypted heartbeat response of {record_length} bytes to a "
                               f"{outstanding_request}-byte request")  # fmt: skip
    return None
