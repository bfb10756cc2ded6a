"""MySQL client/server protocol: handshake v10, login, COM_QUERY / COM_STMT_PREPARE text, OK/ERR.

Packets are a 3-byte little-endian length, a sequence id and the payload. The server speaks first, so
identification is the server's handshake (protocol 10, NUL-terminated version, sequence 0). A login
asking for SSL switches the stream to TLS: the parser then only consumes. Large packets are skipped
without buffering; only the first `max_event_bytes` of SQL text are kept.
"""

from __future__ import annotations

from workers.dpi.events import MysqlError, MysqlHandshake, MysqlLogin, MysqlLoginResult, ParserEvent, SqlQuery
from workers.dpi.parsers.base import FeedResult, Outcome, Side
from workers.dpi.settings import DpiSettings

CLIENT_CONNECT_WITH_DB = 0x00000008
CLIENT_PROTOCOL_41 = 0x00000200
CLIENT_SSL = 0x00000800
COM_QUERY, COM_STMT_PREPARE, COM_QUIT = 0x03, 0x16, 0x01
MAX_HANDSHAKE = 1024  # a server greeting longer than this is not MySQL


def probe(side: Side, head: bytes) -> bool:
    if side is Side.CLIENT:  # the server speaks first; client bytes seen first (mid-stream) prove nothing
        return len(head) < 4 or (head[0] | (head[1] << 8) | (head[2] << 16)) > 0
    if len(head) < 5:
        return True
    length = head[0] | (head[1] << 8) | (head[2] << 16)
    return head[3] == 0 and head[4] in (10, 0xFF) and 5 <= length <= MAX_HANDSHAKE


def parse_handshake(p: bytes) -> MysqlHandshake | None:
    if not p or p[0] != 10:
        return None
    nul = p.find(b"\x00", 1)
    if nul < 0 or nul > 64 or len(p) < nul + 5:
        return None
    version = p[1:nul]
    if not version or any(c < 0x20 or c > 0x7E for c in version):
        return None
    conn_id = int.from_bytes(p[nul + 1 : nul + 5], "little")
    return MysqlHandshake(10, version, conn_id)


def parse_login(p: bytes) -> MysqlLogin | None:
    if len(p) < 32:
        return None
    caps = int.from_bytes(p[0:4], "little")
    if len(p) == 32 and caps & CLIENT_SSL:
        return MysqlLogin(b"", b"", True)
    nul = p.find(b"\x00", 32)
    if nul < 0:
        return None
    user = p[32:nul]
    db = b""
    if caps & CLIENT_CONNECT_WITH_DB:
        off = nul + 1
        if off < len(p):
            alen = p[off]
            off += 1 + alen
            end = p.find(b"\x00", off)
            if end > 0:
                db = p[off:end]
    return MysqlLogin(user, db, False)


def parse_error(p: bytes) -> MysqlError:
    code = int.from_bytes(p[1:3], "little") if len(p) >= 3 else 0
    if len(p) >= 9 and p[3:4] == b"#":
        return MysqlError(code, p[4:9], p[9:])
    return MysqlError(code, b"", p[3:])


_GREETING, _LOGIN, _AUTH, _COMMAND, _TLS = range(5)


class MysqlParser:
    __slots__ = ("s", "state", "identified", "skip")

    def __init__(self, settings: DpiSettings) -> None:
        self.s = settings
        self.state = _GREETING
        self.identified = False
        self.skip = [0, 0]

    def feed(self, side: Side, data: bytes) -> FeedResult:
        events: list[ParserEvent] = []
        pos = 0
        n = len(data)
        newly = False
        while pos < n:
            if self.state == _TLS:
                pos = n
                break
            if self.skip[side]:
                take = min(self.skip[side], n - pos)
                self.skip[side] -= take
                pos += take
                continue
            if n - pos < 4:
                return FeedResult(pos, 4 - (n - pos), events, self._out(newly))
            length = data[pos] | (data[pos + 1] << 8) | (data[pos + 2] << 16)
            seq = data[pos + 3]
            if not self.identified and (side is Side.CLIENT or seq != 0 or length > MAX_HANDSHAKE):
                return FeedResult(pos, 0, events, Outcome.GIVE_UP)
            whole = 4 + length
            if self.state == _COMMAND and length > self.s.max_event_bytes + 1 and n - pos < whole:
                # a big packet: read its head for the event, skip the rest without buffering
                head_len = min(n - pos - 4, self.s.max_event_bytes + 1)
                if head_len < 1:
                    return FeedResult(pos, 1, events, self._out(newly))
                self._on_packet(side, data[pos + 4 : pos + 4 + head_len], events, truncated=True)
                self.skip[side] = whole - (4 + head_len)
                pos += 4 + head_len
                continue
            if n - pos < whole:
                return FeedResult(pos, whole - (n - pos), events, self._out(newly))
            payload = data[pos + 4 : pos + whole]
            pos += whole
            if self.state == _GREETING:
                if side is Side.CLIENT:
                    continue
                if payload[:1] == b"\xff":
                    if not self.identified:
                        return FeedResult(pos - whole, 0, events, Outcome.GIVE_UP)
                    events.append(parse_error(payload))
                    continue
                hs = parse_handshake(payload)
                if hs is None:
                    return FeedResult(pos - whole, 0, events, Outcome.GIVE_UP)
                events.append(hs)
                self.identified = newly = True
                self.state = _LOGIN
                continue
            self._on_packet(side, payload, events, truncated=False)
        return FeedResult(pos, 0, events, self._out(newly))

    def _out(self, newly: bool) -> Outcome:
        return Outcome.FINAL if newly else Outcome.KEEP

    def _on_packet(self, side: Side, p: bytes, events: list[ParserEvent], truncated: bool) -> None:
        if self.state == _LOGIN:
            if side is Side.CLIENT:
                login = parse_login(p)
                if login is not None:
                    events.append(login)
                    self.state = _TLS if login.ssl else _AUTH
            return
        if self.state == _AUTH:
            if side is Side.SERVER and p[:1] == b"\x00":
                events.append(MysqlLoginResult(True))
                self.state = _COMMAND
            elif side is Side.SERVER and p[:1] == b"\xff":
                err = parse_error(p)
                events.append(MysqlLoginResult(False, err.code))
                events.append(err)
            return
        if side is Side.CLIENT:
            if p[:1] in (bytes((COM_QUERY,)), bytes((COM_STMT_PREPARE,))):
                text = p[1 : 1 + self.s.max_event_bytes]
                kind = "query" if p[0] == COM_QUERY else "prepare"
                cut = truncated or len(p) - 1 > self.s.max_event_bytes
                events.append(SqlQuery("mysql", text.decode("utf-8", "replace"), kind, cut))
        elif p[:1] == b"\xff":
            events.append(parse_error(p))
