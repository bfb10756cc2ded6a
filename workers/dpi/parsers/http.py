"""HTTP/1.x, and the RTSP and SIP request/status lines that share its grammar.

Grammar first (pure functions over bytes), then the per-flow state machine (`HttpParser`), then the
mapping to events (`HttpRequest`, `HttpResponse`). One parser class serves three registry entries:
`protocol` says which version token (`HTTP/`, `RTSP/`, `SIP/`) it accepts, so an RTSP stream is named
RTSP and never HTTP. Bodies: Content-Length, chunked (de-chunked for the event), read-until-close for
responses without either (reported at their head, without body: the parser is not told when the
connection closes); 1xx/204/304 and responses to HEAD have none. After CONNECT 2xx or
101 Switching Protocols the stream is no longer HTTP: the parser stops inspecting and consumes.

A body longer than `max_event_bytes` is not cut short: the head event carries its first part and
`HttpBodyPart` events the rest, each at most `max_event_bytes`, so the detectors see every byte of it
while the parser holds at most one part. A form body is cut after an `&` where one falls in the last
quarter of a part (the next part starts with a whole pair); any other cut repeats the last quarter of
the part at the start of the next (`part_overlap`), so a value split by the cut is whole in one part.
"""

from __future__ import annotations

from core import anomalies as A
from workers.dpi.events import Headers, HttpBodyPart, HttpRequest, HttpResponse, ParseAnomaly, ParserEvent
from workers.dpi.parsers.base import FeedResult, Outcome, Side
from workers.dpi.settings import DpiSettings

HTTP_METHODS = (
    b"GET", b"POST", b"PUT", b"HEAD", b"DELETE", b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE",
    b"PROPFIND", b"PROPPATCH", b"MKCOL", b"COPY", b"MOVE", b"LOCK", b"UNLOCK", b"SEARCH", b"REPORT",
)  # fmt: skip
RTSP_METHODS = (
    b"DESCRIBE", b"SETUP", b"PLAY", b"PAUSE", b"TEARDOWN", b"ANNOUNCE", b"RECORD", b"GET_PARAMETER",
    b"SET_PARAMETER", b"REDIRECT", b"OPTIONS",
)  # fmt: skip
SIP_METHODS = (
    b"INVITE", b"ACK", b"BYE", b"CANCEL", b"REGISTER", b"OPTIONS", b"INFO", b"PRACK", b"SUBSCRIBE",
    b"NOTIFY", b"UPDATE", b"MESSAGE", b"REFER", b"PUBLISH",
)  # fmt: skip
_METHODS = {"HTTP": HTTP_METHODS, "RTSP": RTSP_METHODS, "SIP": SIP_METHODS}
_VERSION_PREFIX = {"HTTP": b"HTTP/", "RTSP": b"RTSP/", "SIP": b"SIP/"}
_MAX_METHOD = 16
_MAX_PENDING_METHODS = 64  # requests remembered for matching responses (HEAD has no body)

# Server applications named by response headers, as NeuVector does (header, token, app). The names are
# those of `core.apps.HTTP_SERVER_APPS`, so rules can name them.
SERVER_APP_HEADERS: tuple[tuple[bytes, bytes, str], ...] = (
    (b"server", b"apache", "Apache"),
    (b"server", b"nginx", "nginx"),
    (b"server", b"jetty", "Jetty"),
    (b"server", b"couchdb", "CouchDB"),
    (b"x-etcd-cluster-id", b"", "etcd"),
    (b"x-couchdb-body-time", b"", "CouchDB"),
    (b"x-pingback", b"xmlrpc.php", "WordPress"),
    (b"link", b"wp-json", "WordPress"),
    (b"x-powered-by", b"wordpress", "WordPress"),
    (b"x-elastic-product", b"elasticsearch", "ElasticSearch"),
    (b"x-consul-index", b"", "Consul"),
    (b"x-consul-default-acl-policy", b"", "Consul"),
)

# A body part repeats 1/PART_OVERLAP_DIVISOR of the previous part where it could not be cut at a value
# boundary: an injection (or sensor match) up to that long that straddles the cut is whole in one part.
PART_OVERLAP_DIVISOR = 4
_FORM_TYPE = b"x-www-form-urlencoded"

# A chunk size beyond 2 GiB-1 overflows 32-bit parsers (request smuggling, CVE-2013-2028): none is real.
MAX_CHUNK_SIZE = 0x7FFFFFFF


def _prefixes(methods: tuple[bytes, ...]) -> frozenset[bytes]:
    """Every prefix of every "METHOD " token, so a probe on a short head is one set lookup."""
    return frozenset(m[:i] for m in methods for i in range(1, len(m) + 1)) | frozenset(
        m + b" " for m in methods
    )


_PREFIXES = {name: _prefixes(methods) for name, methods in _METHODS.items()}
_METHOD_SETS = {name: frozenset(methods) for name, methods in _METHODS.items()}


def _probe(protocol: str, side: Side, head: bytes) -> bool:
    if not head:
        return True
    if side is Side.CLIENT:
        sp = head.find(b" ", 0, _MAX_METHOD + 1)
        if sp >= 0:
            return head[:sp] in _METHOD_SETS[protocol]
        return len(head) <= _MAX_METHOD and head in _PREFIXES[protocol]
    prefix = _VERSION_PREFIX[protocol]
    n = min(len(head), len(prefix))
    return head[:n] == prefix[:n]


def probe_http(side: Side, head: bytes) -> bool:
    return _probe("HTTP", side, head)


def probe_rtsp(side: Side, head: bytes) -> bool:
    return _probe("RTSP", side, head)


def probe_sip(side: Side, head: bytes) -> bool:
    return _probe("SIP", side, head)


def _is_token(b: bytes) -> bool:
    return 0 < len(b) <= _MAX_METHOD and all(0x21 <= c < 0x7F for c in b) and b.upper() == b


def parse_request_line(line: bytes, protocol: str) -> tuple[bytes, bytes, bytes] | None:
    parts = line.split(b" ")
    if len(parts) != 3:
        return None
    method, uri, version = parts
    if not _is_token(method) or not uri or not version.startswith(_VERSION_PREFIX[protocol]):
        return None
    if protocol != "HTTP" and method not in _METHODS[protocol]:
        return None
    return method, uri, version


def parse_status_line(line: bytes, protocol: str) -> tuple[bytes, int, bytes] | None:
    parts = line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(_VERSION_PREFIX[protocol]):
        return None
    code = parts[1]
    if len(code) != 3 or not code.isdigit():
        return None
    return parts[0], int(code), parts[2] if len(parts) == 3 else b""


def parse_headers(block: bytes, max_headers: int) -> tuple[Headers, bool]:
    """Header lines (without the start line) → ((name, value) …, truncated). Obsolete folding joins."""
    out: list[tuple[bytes, bytes]] = []
    truncated = False
    for raw in block.split(b"\n"):
        line = raw.rstrip(b"\r")
        if not line:
            continue
        if line[:1] in (b" ", b"\t") and out:
            name, value = out[-1]
            out[-1] = (name, value + b" " + line.strip())
            continue
        name, sep, value = line.partition(b":")
        if not sep:
            continue
        if len(out) >= max_headers:
            truncated = True
            break
        out.append((name, value.strip()))  # the name as sent: `Transfer-Encoding :` is a smuggling form
    return tuple(out), truncated


def header(headers: Headers, name: bytes) -> bytes | None:
    for n, v in headers:
        if n.lower() == name:
            return v
    return None


def server_app(headers: Headers) -> str:
    for n, v in headers:
        ln = n.lower()
        lv = v.lower()
        for hname, token, app in SERVER_APP_HEADERS:
            if ln == hname and (not token or token in lv):
                return app
    return ""


def part_overlap(part_bytes: int) -> int:
    """Bytes of a part repeated at the start of the next when the cut is not at a value boundary."""
    return part_bytes // PART_OVERLAP_DIVISOR


def cut_part(buf: bytes, part_bytes: int, form: bool) -> tuple[int, int]:
    """Where to cut the next part off a body buffer longer than `part_bytes`: (end of this part, start
    of the next). A form is cut after its last `&` in the part's last quarter; else at `part_bytes`, the
    next part starting `part_overlap` earlier."""
    overlap = part_overlap(part_bytes)
    if form and overlap:
        amp = buf.rfind(b"&", part_bytes - overlap, part_bytes)
        if amp >= 0:
            return amp + 1, amp + 1
    return part_bytes, part_bytes - overlap


_HEAD, _BODY_LEN, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILERS, _UNTIL_CLOSE, _TUNNEL = range(8)


class _SideState:
    # (slots kept few: every inspected HTTP flow holds two of these)
    __slots__ = ("state", "remaining", "body", "pending", "emitted", "offset")

    def __init__(self) -> None:
        self.state = _HEAD
        self.remaining = 0
        self.body = b""  # the body bytes not yet handed out whole (at most one part once `feed` returns)
        self.pending: HttpRequest | HttpResponse | None = None  # head waiting for its body prefix
        self.emitted = False  # the head event is out (its later body bytes go out as parts)
        self.offset = 0  # body position of body[0]


class HttpParser:
    __slots__ = ("s", "protocol", "identified", "client", "server", "methods")

    def __init__(self, settings: DpiSettings, protocol: str = "HTTP") -> None:
        self.s = settings
        self.protocol = protocol
        self.identified = False
        self.client = _SideState()
        self.server = _SideState()
        # request methods awaiting their response (bounded); a shared empty tuple while there are none
        self.methods: list[bytes] | tuple[()] = ()

    def feed(self, side: Side, data: bytes) -> FeedResult:
        st = self.client if side is Side.CLIENT else self.server
        events: list[ParserEvent] = []
        pos = 0
        newly = False
        n = len(data)
        while pos < n:
            if st.state == _HEAD:
                end = data.find(b"\r\n\r\n", pos)
                sep = 4
                if end < 0:
                    end = data.find(b"\n\n", pos)
                    sep = 2
                if not self.identified or end < 0:
                    nl = data.find(b"\n", pos)
                    line_end = nl if nl >= 0 else -1
                    if line_end < 0:
                        if n - pos > self.s.max_header_bytes:
                            return self._too_long(pos, events)
                        if not self._plausible_partial(side, data[pos:]):
                            return FeedResult(pos, 0, events, Outcome.GIVE_UP)
                        break
                    line = data[pos:line_end].rstrip(b"\r")
                    ok = (
                        parse_request_line(line, self.protocol)
                        if side is Side.CLIENT
                        else parse_status_line(line, self.protocol)
                    )
                    if ok is None:
                        if not self.identified:
                            return FeedResult(pos, 0, events, Outcome.GIVE_UP)
                        events.append(ParseAnomaly("dpi.http.bad_start_line", self.protocol))
                        st.state = _TUNNEL
                        continue
                    if not self.identified:
                        self.identified = newly = True
                    if end < 0:
                        if n - pos > self.s.max_header_bytes:
                            return self._too_long(pos, events)
                        break
                head = data[pos:end]
                pos = end + sep
                self._on_head(side, st, head, events)
            elif st.state == _BODY_LEN:
                take = min(st.remaining, n - pos)
                self._body(st, data[pos : pos + take], events)
                pos += take
                st.remaining -= take
                if st.remaining == 0:
                    self._end_message(st, events)
            elif st.state == _UNTIL_CLOSE:
                pos = n
            elif st.state == _TUNNEL:
                pos = n
            elif st.state == _CHUNK_SIZE:
                nl = data.find(b"\n", pos)
                if nl < 0:
                    if n - pos > 1024:
                        events.append(ParseAnomaly(A.DPI_HTTP_BAD_CHUNK, self.protocol))
                        st.state = _TUNNEL
                        continue
                    break
                size_text = data[pos:nl].split(b";", 1)[0].strip()
                pos = nl + 1
                try:
                    size = int(size_text, 16)
                except ValueError:
                    size = -1
                if size < 0 or len(size_text) > 16:
                    events.append(ParseAnomaly(A.DPI_HTTP_BAD_CHUNK, self.protocol, size_text[:32].hex()))
                    self._emit(st, events)
                    st.state = _TUNNEL
                    continue
                if size > MAX_CHUNK_SIZE:  # still parsed: the detectors judge it (request smuggling)
                    detail = "oversized " + size_text[:32].decode("ascii", "replace")
                    events.append(ParseAnomaly(A.DPI_HTTP_BAD_CHUNK, self.protocol, detail))
                if size == 0:
                    st.state = _TRAILERS
                else:
                    st.remaining = size
                    st.state = _CHUNK_DATA
            elif st.state == _CHUNK_DATA:
                take = min(st.remaining, n - pos)
                self._body(st, data[pos : pos + take], events)
                pos += take
                st.remaining -= take
                if st.remaining == 0:
                    st.state = _CHUNK_CRLF
            elif st.state == _CHUNK_CRLF:
                nl = data.find(b"\n", pos)
                if nl < 0:
                    if n - pos > 2:
                        events.append(ParseAnomaly(A.DPI_HTTP_BAD_CHUNK, self.protocol))
                        st.state = _TUNNEL
                        continue
                    break
                pos = nl + 1
                st.state = _CHUNK_SIZE
            elif st.state == _TRAILERS:
                nl = data.find(b"\n", pos)
                if nl < 0:
                    if n - pos > self.s.max_header_bytes:
                        return self._too_long(pos, events)
                    break
                line = data[pos:nl].rstrip(b"\r")
                pos = nl + 1
                if not line:
                    self._end_message(st, events)
        if not self.identified:
            return FeedResult(pos, 0, events, Outcome.KEEP)
        return FeedResult(pos, 0, events, Outcome.FINAL if newly else Outcome.KEEP)

    def _plausible_partial(self, side: Side, head: bytes) -> bool:
        if self.identified:
            return True
        return _probe(self.protocol, side, head)

    def _too_long(self, pos: int, events: list[ParserEvent]) -> FeedResult:
        events.append(ParseAnomaly(A.DPI_HTTP_HEAD_TOO_LONG, self.protocol))
        return FeedResult(pos, 0, events, Outcome.GIVE_UP)

    def _on_head(self, side: Side, st: _SideState, head: bytes, events: list[ParserEvent]) -> None:
        first, _, rest = head.partition(b"\n")
        first = first.rstrip(b"\r")
        headers, truncated = parse_headers(rest, self.s.max_headers)
        if truncated:
            events.append(ParseAnomaly("dpi.http.too_many_headers", self.protocol))
        te = header(headers, b"transfer-encoding")
        chunked = te is not None and b"chunked" in te.lower()
        cl_raw = header(headers, b"content-length")
        cl = int(cl_raw) if cl_raw is not None and cl_raw.isdigit() and len(cl_raw) < 19 else -1
        if cl_raw is not None:
            lengths = {v for n, v in headers if n.lower() == b"content-length"}
            if cl < 0 or len(lengths) > 1:
                # request smuggling shapes: an unreadable or repeated, disagreeing Content-Length
                events.append(ParseAnomaly(A.DPI_HTTP_BAD_CONTENT_LENGTH, self.protocol, cl_raw[:32].hex()))
            if chunked:
                events.append(ParseAnomaly(A.DPI_HTTP_CL_TE, self.protocol))
        st.body = b""
        st.emitted = False
        st.offset = 0
        msg: HttpRequest | HttpResponse
        if side is Side.CLIENT:
            parsed = parse_request_line(first, self.protocol)
            if parsed is None:
                events.append(ParseAnomaly("dpi.http.bad_start_line", self.protocol))
                st.state = _TUNNEL
                return
            method, uri, version = parsed
            if not self.methods:
                self.methods = [method]
            elif len(self.methods) < _MAX_PENDING_METHODS:
                self.methods.append(method)
            host = header(headers, b"host") or b""
            msg = HttpRequest(method, uri, version, headers, host, b"", False, chunked, cl, self.protocol)
            has_body = chunked or cl > 0
            until_close = False
        else:
            parsed_s = parse_status_line(first, self.protocol)
            if parsed_s is None:
                events.append(ParseAnomaly("dpi.http.bad_start_line", self.protocol))
                st.state = _TUNNEL
                return
            version, status, reason = parsed_s
            request_method = b""
            if self.methods and status >= 200:
                request_method = self.methods.pop(0)
                if not self.methods:
                    self.methods = ()
            msg = HttpResponse(
                version, status, reason, headers, b"", False, chunked, cl, server_app(headers), self.protocol
            )
            no_body = status < 200 or status in (204, 304) or request_method == b"HEAD"
            if (request_method == b"CONNECT" and 200 <= status < 300) or status == 101:
                events.append(msg)
                st.state = _TUNNEL
                self.client.state = _TUNNEL
                return
            has_body = not no_body and (chunked or cl > 0 or (cl < 0 and self.protocol == "HTTP"))
            until_close = not no_body and not chunked and cl < 0 and self.protocol == "HTTP"
        st.pending = msg
        if not has_body:
            self._end_message(st, events)
        elif chunked:
            st.state = _CHUNK_SIZE
        elif until_close:
            # The body ends with the connection, which a parser is not told about: report the head now
            # (without body) rather than never.
            self._emit(st, events)
            st.state = _UNTIL_CLOSE
        else:
            st.remaining = cl
            st.state = _BODY_LEN

    def _body(self, st: _SideState, chunk: bytes, events: list[ParserEvent]) -> None:
        """Take body bytes; hand out every full part (the head event first), keep the rest."""
        msg = st.pending
        if msg is None:
            return
        body = st.body + chunk if st.body else chunk
        limit = max(1, self.s.max_event_bytes)
        if len(body) > limit:
            ctype = header(msg.headers, b"content-type") or b""
            form = _FORM_TYPE in ctype.lower()
            while len(body) > limit:
                end, nxt = cut_part(body, limit, form)
                if not st.emitted:
                    self._emit_head(st, body[:end], True, events)
                else:
                    events.append(self._part(st, body[:end], False, ctype))
                st.offset += nxt
                body = body[nxt:]
        st.body = body

    def _part(self, st: _SideState, data: bytes, last: bool, ctype: bytes | None = None) -> HttpBodyPart:
        msg = st.pending
        assert msg is not None
        if ctype is None:
            ctype = header(msg.headers, b"content-type") or b""
        uri = msg.uri if isinstance(msg, HttpRequest) else b""
        return HttpBodyPart(st.offset, data, last, st is self.client, ctype, uri, self.protocol)

    def _emit(self, st: _SideState, events: list[ParserEvent]) -> None:
        """The message's events are complete: its head with the whole body, or the body's last part
        (which repeats the overlap when the body ended inside it)."""
        if st.pending is None:
            return
        if not st.emitted:
            self._emit_head(st, st.body, False, events)
        else:
            events.append(self._part(st, st.body, True))
            st.pending = None  # once: a body cut off by a bad chunk ends here too
        st.body = b""

    def _emit_head(self, st: _SideState, body: bytes, truncated: bool, events: list[ParserEvent]) -> None:
        msg = st.pending
        assert msg is not None
        if isinstance(msg, HttpRequest):
            events.append(
                HttpRequest(
                    msg.method, msg.uri, msg.version, msg.headers, msg.host, body, truncated,
                    msg.chunked, msg.content_length, msg.protocol,
                )
            )  # fmt: skip
        else:
            events.append(
                HttpResponse(
                    msg.version, msg.status, msg.reason, msg.headers, body, truncated, msg.chunked,
                    msg.content_length, msg.server_app, msg.protocol,
                )
            )  # fmt: skip
        st.emitted = True

    def _end_message(self, st: _SideState, events: list[ParserEvent]) -> None:
        self._emit(st, events)
        st.pending = None
        st.state = _HEAD
