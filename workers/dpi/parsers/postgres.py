"""PostgreSQL frontend/backend protocol v3: startup, SSLRequest, simple and extended query text, errors.

The client speaks first with an untyped startup packet (length, protocol code, NUL-terminated key/value
pairs); later messages are a type byte, a 4-byte length including itself, and the body. A server answer
of `S` to an SSLRequest starts TLS: the parser then only consumes.
"""

from __future__ import annotations

from workers.dpi.events import ParserEvent, PgAuthResult, PgError, PgStartup, SqlQuery
from workers.dpi.parsers.base import FeedResult, Outcome, Side
from workers.dpi.settings import DpiSettings

PROTOCOL_3 = 196608
SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104
CANCEL_REQUEST = 80877102
_STARTUP_CODES = frozenset((PROTOCOL_3, SSL_REQUEST, GSSENC_REQUEST, CANCEL_REQUEST))
MAX_STARTUP = 10000  # the server's own bound on a startup packet


_BACKEND_TYPES = frozenset(b"RSEKZNCDTInst12AGHWcdV")  # message type bytes a server sends (N/S: SSL answer)


def probe(side: Side, head: bytes) -> bool:
    if side is Side.SERVER:  # the server never speaks first: only rule out what cannot be a reply
        return not head or head[0] in _BACKEND_TYPES
    if len(head) < 8:
        return True
    length = int.from_bytes(head[0:4], "big")
    code = int.from_bytes(head[4:8], "big")
    return 8 <= length <= MAX_STARTUP and code in _STARTUP_CODES


def parse_startup(p: bytes) -> PgStartup | None:
    """`p` is the whole startup packet including its length."""
    code = int.from_bytes(p[4:8], "big")
    if code not in _STARTUP_CODES:
        return None
    if code != PROTOCOL_3:
        return PgStartup(code) if len(p) in (8, 16) else None
    params = p[8:]
    if not params.endswith(b"\x00"):
        return None
    items = params[:-1].split(b"\x00")
    if items and items[-1] == b"":
        items = items[:-1]
    if len(items) % 2:
        return None
    kv = dict(zip(items[0::2], items[1::2], strict=True))
    return PgStartup(code, kv.get(b"user", b""), kv.get(b"database", b""), kv.get(b"application_name", b""))


def parse_error(body: bytes) -> PgError:
    fields: dict[bytes, bytes] = {}
    for part in body.split(b"\x00"):
        if part:
            fields[part[:1]] = part[1:]
    return PgError(fields.get(b"S", b""), fields.get(b"C", b""), fields.get(b"M", b""))


_STARTUP, _SSL_ANSWER, _RUN, _TLS = range(4)


class PostgresParser:
    __slots__ = ("s", "state", "identified", "authenticated", "skip")

    def __init__(self, settings: DpiSettings) -> None:
        self.s = settings
        self.state = _STARTUP
        self.identified = False
        self.authenticated = False
        self.skip = [0, 0]

    def feed(self, side: Side, data: bytes) -> FeedResult:
        events: list[ParserEvent] = []
        pos = 0
        n = len(data)
        newly = False
        while pos < n:
            if self.state == _TLS:
                return FeedResult(n, 0, events, self._out(newly))
            if self.skip[side]:
                take = min(self.skip[side], n - pos)
                self.skip[side] -= take
                pos += take
                continue
            if self.state in (_STARTUP, _SSL_ANSWER) and side is Side.SERVER and self.state == _SSL_ANSWER:
                answer = data[pos : pos + 1]
                pos += 1
                self.state = _TLS if answer == b"S" else _STARTUP
                continue
            if self.state == _STARTUP and side is Side.CLIENT:
                if n - pos < 8:
                    return FeedResult(pos, 8 - (n - pos), events, self._out(newly))
                length = int.from_bytes(data[pos : pos + 4], "big")
                if not 8 <= length <= MAX_STARTUP:
                    return self._bad(pos, events, newly)
                if n - pos < length:
                    return FeedResult(pos, length - (n - pos), events, self._out(newly))
                st = parse_startup(data[pos : pos + length])
                if st is None:
                    return self._bad(pos, events, newly)
                pos += length
                events.append(st)
                if not self.identified:
                    self.identified = newly = True
                if st.protocol in (SSL_REQUEST, GSSENC_REQUEST):
                    self.state = _SSL_ANSWER
                elif st.protocol == PROTOCOL_3:
                    self.state = _RUN
                continue
            if not self.identified:
                return FeedResult(pos, 0, events, Outcome.GIVE_UP)
            if n - pos < 5:
                return FeedResult(pos, 5 - (n - pos), events, self._out(newly))
            mtype = data[pos : pos + 1]
            length = int.from_bytes(data[pos + 1 : pos + 5], "big")
            if length < 4:
                return self._bad(pos, events, newly)
            total = 1 + length
            cap = self.s.max_event_bytes + 64
            if n - pos < total and total > cap:
                if n - pos < min(total, cap):
                    return FeedResult(pos, min(total, cap) - (n - pos), events, self._out(newly))
                self._on_message(side, mtype, data[pos + 5 : pos + cap], events, truncated=True)
                self.skip[side] = total - cap
                pos += cap
                continue
            if n - pos < total:
                return FeedResult(pos, total - (n - pos), events, self._out(newly))
            self._on_message(side, mtype, data[pos + 5 : pos + total], events, truncated=False)
            pos += total
        return FeedResult(pos, 0, events, self._out(newly))

    def _out(self, newly: bool) -> Outcome:
        return Outcome.FINAL if newly else Outcome.KEEP

    def _bad(self, pos: int, events: list[ParserEvent], newly: bool) -> FeedResult:
        if newly:
            return FeedResult(pos, 0, events, Outcome.FINAL)
        return FeedResult(pos, 0, events, Outcome.GIVE_UP)

    def _on_message(
        self, side: Side, mtype: bytes, body: bytes, events: list[ParserEvent], truncated: bool
    ) -> None:
        limit = self.s.max_event_bytes
        if side is Side.CLIENT:
            if mtype == b"Q":
                text = body.split(b"\x00", 1)[0]
                events.append(
                    SqlQuery(
                        "postgresql",
                        text[:limit].decode("utf-8", "replace"),
                        "query",
                        truncated or len(text) > limit,
                    )
                )
            elif mtype == b"P":
                parts = body.split(b"\x00", 2)
                if len(parts) >= 2:
                    text = parts[1]
                    events.append(
                        SqlQuery(
                            "postgresql",
                            text[:limit].decode("utf-8", "replace"),
                            "prepare",
                            truncated or len(text) > limit,
                        )
                    )
            return
        if mtype == b"R" and len(body) >= 4 and not self.authenticated:
            if int.from_bytes(body[:4], "big") == 0:
                self.authenticated = True
                events.append(PgAuthResult(True))
        elif mtype == b"E":
            err = parse_error(body)
            if not self.authenticated:
                events.append(PgAuthResult(False, err.code))
            events.append(err)
