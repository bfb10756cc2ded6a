"""The threat engine's DPI hooks: parser events and payload packets to the application detectors and
the DLP/WAF sensors.

`AppThreats.detector()` is the `workers.dpi.context.Detector` the DPI engine takes. Its event hook maps
parser events (HTTP requests and responses, HTTP/2 headers, SQL text, TLS hellos and heartbeats, SSH
banners, DNS over TCP, MySQL and PostgreSQL login failures) to the application detectors and the
sensors; its packet hook handles what needs payload bytes (DNS over UDP, SSLv2 records, slow-HTTP
timing, sensors of the `packet` context, streamed per flow direction).

Bodies: a body longer than the parser's `max_event_bytes` comes as the head event's first part and
`HttpBodyPart` events for the rest; every part gets the injection checks (in the request's content
type, JSON parts shaped by `workers.detect.bodypart`) and the body sensors, so a hit in the last part
acts exactly as one in the head.

Slow HTTP: a request is pending from its first bytes (a method) until the parser's `HttpRequest`
event, or its body's last `HttpBodyPart`, which come once its body is complete; the head is done at its blank line (looked for in the
client's payload). Pending too long in the head is `http_slowloris`, in the body at too low a rate
`http_slow_body`: judged on each client packet (which a Protect verdict then resets) and by `sweep` on
the engine's tick for connections that went silent, so it fires on the capture's clock in a replay
too. Login brute force pairs each HTTP response with its request (oldest unanswered first). Findings go back to the DPI
engine as `workers.dpi.events.Finding`s; it raises the `threat` event and, in Protect mode, resets or
blocks the flow when `block` is set. Each flow is judged with its deciding group's settings, resolved
once per flow through the owning `ThreatEngine`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from itertools import chain, islice
from typing import TYPE_CHECKING

from core import anomalies as A
from core.flow import FlowKey
from core.lookup import Mode
from core.packet import IPPROTO_TCP, IPPROTO_UDP, PacketMeta
from threats import catalogue as C
from threats.catalogue import Hit, Threat, ThreatAction, excerpt_of
from threats.settings import ThreatSettings
from threats.window import LruTable
from workers.detect.bodypart import body_values
from workers.detect.crlf import check_crlf
from workers.detect.database import AccessDeniedTracker
from workers.detect.decode import MAX_VALUE_TEXT, joined_values, percent_decode
from workers.detect.deserialize import deserialization_in
from workers.detect.dns import DnsDetector, tunnel_name
from workers.detect.http import (
    LoginFailures,
    check_headers,
    check_ognl,
    check_range,
    check_slow_body,
    check_struts_body,
    login_failed,
    ognl_texts,
)
from workers.detect.http2flood import ControlFrames
from workers.detect.injection import CLASSES as INJECTION_CLASSES
from workers.detect.injection import (
    check_request,
    check_sql_query,
    check_values,
    pair_values,
    parsed_body,
)
from workers.detect.jndi import check_lookups
from workers.detect.jwt import check_jwt
from workers.detect.multipart import FIELD, MultipartCursor, boundary_of
from workers.detect.phpobject import php_object_in
from workers.detect.prototype import prototype_in
from workers.detect.scanner import check_scanner
from workers.detect.sensitive import check_sensitive_path
from workers.detect.sensors import Context, SensorAction, SensorMatch, SensorStream
from workers.detect.serialized import serialized_in
from workers.detect.shared_counts import SharedCounts
from workers.detect.spring import check_spring, spring_texts
from workers.detect.ssrf import check_ssrf
from workers.detect.template import template_in
from workers.detect.tls import (
    check_encrypted_heartbeat,
    check_ssh_banner,
    check_sslv2,
    is_sslv2,
    version_hits,
)
from workers.detect.traversal import check_path_values, check_target
from workers.detect.upload import check_upload
from workers.detect.xxe import check_xml, xml_texts
from workers.dpi import events as E
from workers.dpi.context import Detector, FlowContext
from workers.dpi.parsers.base import Side
from workers.dpi.parsers.http2 import CONTINUATION_FLOOD, CONTROL_FRAMES, RAPID_RESET

if TYPE_CHECKING:
    from workers.detect.threat_engine import ThreatEngine

DETECTOR_NAME = "threats"
_HTTP_METHOD = re.compile(rb"[A-Z]{3,10} \S")
_DNS_PORT = 53
_DNS_THREATS = frozenset(
    t.id
    for t in (C.DNS_POINTER_LOOP, C.DNS_OVERFLOW, C.DNS_ZONE_TRANSFER, C.DNS_NULL_TYPE, C.DNS_TUNNELING,
              C.DNS_FLOOD)
)  # fmt: skip
_SLOW_THREATS = frozenset({C.HTTP_SLOWLORIS.id, C.HTTP_SLOW_BODY.id})
# Parser anomalies that are request smuggling forms (the parser keeps going; the threat is ours to raise).
# (Content-Length with chunked, and a bad Content-Length, are judged on the headers: `check_headers`.)
_SMUGGLING_ANOMALIES = frozenset({A.DPI_HTTP_BAD_CHUNK})
MAX_UNANSWERED = 16  # requests per flow remembered for pairing with responses (pipelining depth)
_MULTIPART = "multipart/form-data"
MAX_MULTIPART_BODIES = 8  # multipart bodies per flow followed across their parts (HTTP/2 streams)
SWEEP_PER_TICK = 512  # pending slow requests checked per tick
# Headers applications log or echo, where scanners (sqlmap --level 3) inject as well.
# Request headers whose value the injection checks see: every one an application may read and splice
# into a query (User-Agent, Referer, X-Forwarded-*, custom X-*, ...), except those whose syntax the HTTP
# standards fix and that applications do not splice into queries: content negotiation (RFC 9110 12.5),
# credentials (token68 or scheme parameters, RFC 9110 11), caching (RFC 9111), connection management
# and framing (RFC 9110 7, RFC 9112 6), conditionals and ranges (RFC 9110 13, 14), the authority
# (Host, :authority), structured fields of the browser (Sec-Fetch-*, Sec-CH-*, Priority: RFC 8941,
# 9218). Content-Type and Cookie are taken apart on their own; HTTP/2 pseudo-headers (":path") too.
_FIXED_SYNTAX_HEADERS = frozenset(
    {b"accept", b"accept-charset", b"accept-encoding", b"accept-language", b"accept-datetime",
     b"authorization", b"proxy-authorization", b"cache-control", b"pragma", b"connection",
     b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade",
     b"content-length", b"content-encoding", b"content-type", b"cookie", b"host", b"date",
     b"expect", b"max-forwards", b"if-match", b"if-none-match", b"if-modified-since",
     b"if-unmodified-since", b"if-range", b"range", b"origin", b"upgrade-insecure-requests",
     b"dnt", b"priority", b"http2-settings"}
)  # fmt: skip
_FIXED_SYNTAX_PREFIXES = (b":", b"sec-fetch-", b"sec-ch-", b"sec-websocket-")
MAX_HEADER_VALUES = 32  # header values checked per request (real requests carry 10-20 headers in all)
MAX_HEADER_VALUE_BYTES = 4096  # of each value, its head is checked (injections start near the value's start)
# Header values that cannot carry an injection, left unchecked (they are most of a request's headers and
# each checked value costs tens of microseconds): one token (no quote, space, bracket, comment star,
# percent escape, `;`, `=` but base64 padding: UUIDs, trace and API keys, JWTs), or a list of `name=token`
# pairs whose names start with a letter (tracestate, X-Amzn-Trace-Id): no number tautology (`1=1`), no
# stacked statement (`1;shutdown` has an item that is not a pair).
_INERT_VALUE = re.compile(
    rb"[A-Za-z0-9._~+/:-]+=*"
    rb"|[A-Za-z][A-Za-z0-9._~+/:-]*=[A-Za-z0-9._~+/:-]*=*(?:[;,][A-Za-z][A-Za-z0-9._~+/:-]*=[A-Za-z0-9._~+/:-]*=*)*"
)
_DENIED_PG = frozenset({b"28P01", b"28000"})  # invalid password / authorization specification


class _FlowState:
    """Per-flow state of the hooks, kept in `ctx.detector_state[DETECTOR_NAME]`."""

    __slots__ = ("group", "settings", "pending_since", "head_done", "body_bytes", "tail", "slow_fired", "swept",
                 "first_payload", "streams", "generation", "unanswered", "heartbeat", "multipart",
                 "control_frames")  # fmt: skip

    def __init__(self, group: str, settings: ThreatSettings, generation: int) -> None:
        self.group = group
        self.settings = settings
        self.generation = generation
        self.pending_since = -1.0  # slow HTTP: when the current request started (-1: none)
        self.head_done = -1.0  # ... and when its head completed (-1: not yet)
        self.body_bytes = 0  # body bytes since the head completed
        self.tail = b""  # the last bytes of the head so far (a blank line split across packets)
        self.slow_fired = False
        self.swept = False  # reported by the sweep (the next packet still fires, so Protect resets it)
        self.unanswered: list[tuple[bytes, bytes, bool]] = []  # (method, path, with credentials)
        self.heartbeat = [0, 0]  # per Side: record length of its unanswered encrypted heartbeat
        self.first_payload = [True, True]  # per Side
        self.streams: list[SensorStream | None] = [None, None]  # packet-context sensor streams per Side
        # multipart request bodies arriving in parts, by URI (one at a time in HTTP/1, a few in HTTP/2)
        self.multipart: dict[bytes, MultipartCursor] | None = None
        self.control_frames: ControlFrames | None = None  # an HTTP/2 client's control frames, timed


class AppThreats:
    """The DPI hooks of one worker's threat engine (`owner`: policy, groups, evidence, counters, blocks)."""

    def __init__(self, owner: ThreatEngine, max_clients: int, max_streams: int) -> None:
        self.owner = owner
        self.dns = DnsDetector(max_clients)
        self.denials = AccessDeniedTracker(max_clients)
        self.max_streams = max_streams  # packet-context sensor streams open at once (Hyperscan state)
        self.open_streams = 0  # closed with their flow
        self.logins = LoginFailures(max_clients)
        self.ssh_refusals = LoginFailures(max_clients, C.SSH_BRUTE_FORCE)
        self._slow: LruTable[FlowKey, FlowContext] = LruTable(max_clients)  # flows with a pending request
        self._now = 0.0  # time of the packet or event being handled

    def share_counts(self, counts: SharedCounts) -> None:
        """Count refused logins (SSH, HTTP, databases) and DNS query rates in the node's table, over every
        worker, not this one's share."""
        self.logins.counts = self.ssh_refusals.counts = self.denials.counts = self.dns.query_counts = counts

    def detector(self) -> Detector:
        return Detector(DETECTOR_NAME, on_packet=self.on_packet_hook, on_event=self.on_event_hook)

    def _state(self, ctx: FlowContext) -> _FlowState:
        st = ctx.detector_state.get(DETECTOR_NAME)
        if st is None:
            cached = self.owner.flow_groups.get(ctx.key)  # resolved by the raw packet path already?
            if cached is not None:
                group, settings = cached[0], cached[2]
            else:
                group, _mode = self.owner.group_of(
                    ctx.family, ctx.client_addr, ctx.server_addr, ctx.key.proto, ctx.server_port
                )
                settings = self.owner.policy.settings.for_group(group)
            st = _FlowState(group, settings, self.owner.policy.generation)
            ctx.detector_state[DETECTOR_NAME] = st
        assert isinstance(st, _FlowState)
        return st

    def on_flow_end(self, ctx: FlowContext) -> None:
        """Release the flow's sensor streams (the DPI engine's `on_flow_end` observer)."""
        self._slow.pop(ctx.key)
        st = ctx.detector_state.get(DETECTOR_NAME)
        if isinstance(st, _FlowState):
            for stream in st.streams:
                if stream is not None:
                    stream.close()
                    self.open_streams -= 1
            st.streams = [None, None]

    def on_packet_hook(
        self, ctx: FlowContext, meta: PacketMeta, packet: bytes, now: float
    ) -> list[E.Finding]:
        self._now = now
        end = min(meta.ip_len, len(packet))
        if end <= meta.payload_offset:
            return []
        payload = packet[meta.payload_offset : end]
        st = self._state(ctx)
        s = st.settings
        side = int(ctx.side)
        hits: list[Hit] = []
        first = st.first_payload[side]
        st.first_payload[side] = False
        if meta.proto == IPPROTO_UDP:
            if (ctx.server_port == _DNS_PORT or ctx.app == "DNS") and not _DNS_THREATS.isdisjoint(s.on):
                hits += self.dns.inspect(payload, ctx.client_addr, False, now, s, ctx.server_addr)
        elif meta.proto == IPPROTO_TCP:
            if first and is_sslv2(payload):
                hits += check_sslv2(payload)
            if side == Side.CLIENT and not _SLOW_THREATS.isdisjoint(s.on):
                hit = self._slow_http(ctx, st, payload, now, s)
                if hit is not None:
                    hits.append(hit)
        sensors = self.owner.policy.sensors
        if sensors.applies(st.group):
            stream = st.streams[side]
            if stream is None and self.open_streams < self.max_streams:
                stream = st.streams[side] = sensors.open_stream(Context.PACKET, st.group)
                self.open_streams += 1
            if stream is not None:
                hits += self._sensor_hits(stream.scan(payload))
            else:  # at the cap: this packet alone (a pattern split across packets is missed)
                self.owner.counters[A.DETECT_SENSOR_STREAMS_FULL] += 1
                hits += self._sensor_hits(sensors.scan(Context.PACKET, payload, st.group))
        return self._to_dpi(hits, st, ctx)

    def _slow_http(
        self, ctx: FlowContext, st: _FlowState, payload: bytes, now: float, s: ThreatSettings
    ) -> Hit | None:
        """One client packet of a possibly slow request (see the module's docstring)."""
        if ctx.app and ctx.app != "HTTP":
            return None  # identified as something else: no HTTP request to time
        if st.pending_since < 0:
            if not _HTTP_METHOD.match(payload):
                return None
            # cleared by the HttpRequest event once the request (head and body) is complete
            st.pending_since, st.head_done, st.body_bytes, st.tail = now, -1.0, 0, b""
            self._slow.put(ctx.key, ctx)
        if st.slow_fired:
            return None
        if st.head_done < 0:
            data = st.tail + payload
            end = data.find(b"\r\n\r\n")
            if end >= 0:
                st.head_done = now
                st.body_bytes = len(data) - end - 4
            else:
                st.tail = data[-3:]
        else:
            st.body_bytes += len(payload)
        hit = self._slow_check(st, now, s)
        if hit is not None:
            st.slow_fired = True
            self._slow.pop(ctx.key)
        return hit

    @staticmethod
    def _slow_check(st: _FlowState, now: float, s: ThreatSettings) -> Hit | None:
        if st.head_done < 0:
            if C.HTTP_SLOWLORIS.id not in s.on:
                return None
            if now - st.pending_since < s.threshold(C.HTTP_SLOWLORIS, "header_seconds"):
                return None
            return Hit(C.HTTP_SLOWLORIS, f"request head incomplete after {now - st.pending_since:.1f}s")
        if C.HTTP_SLOW_BODY.id not in s.on:
            return None
        return check_slow_body(st.head_done, st.body_bytes, now, s)

    def sweep(self, now: float) -> list[tuple[FlowContext, str, Hit]]:
        """Pending slow requests of connections that went silent: (flow, group, hit) to report. The
        flow's next packet still fires (and a Protect verdict resets it then)."""
        out = []
        for key, ctx in self._slow.oldest(SWEEP_PER_TICK):
            st = ctx.detector_state.get(DETECTOR_NAME)
            if not isinstance(st, _FlowState) or st.swept or st.slow_fired or st.pending_since < 0:
                self._slow.pop(key)
                continue
            hit = self._slow_check(st, now, st.settings)
            if hit is not None and hit.threat.id in st.settings.on:
                st.swept = True
                self._slow.pop(key)  # reported: the sweep's slots go to younger requests
                self.owner.counters["threats." + hit.threat.name] += 1
                out.append((ctx, st.group, hit))
        return out

    def on_event_hook(self, ctx: FlowContext, ev: object, now: float) -> list[E.Finding]:
        self._now = now
        st = self._state(ctx)
        s = st.settings
        on = s.on
        hits: list[Hit] = []
        if isinstance(ev, E.HttpRequest):
            if not ev.body_truncated:  # else the request is complete with its last body part
                self._request_done(ctx, st)
            if len(st.unanswered) < MAX_UNANSWERED:
                credentials = any(n.lower() == b"authorization" for n, _v in ev.headers)
                st.unanswered.append((ev.method, ev.uri.split(b"?", 1)[0], credentials))
            hits += self._http_request(ev.uri, ev.headers, ev.body, st, on, ev.body_truncated, ev.method)
        elif isinstance(ev, E.HttpBodyPart):
            if ev.request:
                if ev.last:
                    self._request_done(ctx, st)
                hits += self._request_part(ev, st, on)
            else:
                hits += self._sensor_body(ev.data, st)
        elif isinstance(ev, E.HttpResponse):
            hits += check_headers(ev.headers)
            hits += self._sensor_body(ev.body, st)
            if st.unanswered and ev.status >= 200:  # 1xx answers come before the final one
                method, path, credentials = st.unanswered.pop(0)
                if C.HTTP_BRUTE_FORCE.id in on and login_failed(method, credentials, ev.status, ev.body):
                    hit = self.logins.on_failure(ctx.client_addr, ctx.server_addr, path, now, s)
                    if hit is not None:
                        hits.append(hit)
        elif isinstance(ev, E.ParseAnomaly):
            if ev.name in _SMUGGLING_ANOMALIES:
                hits.append(Hit(C.HTTP_SMUGGLING, f"{ev.name} {ev.detail}".strip()))
            elif ev.name == RAPID_RESET:
                hits.append(Hit(C.HTTP2_RAPID_RESET, ev.detail))
            elif ev.name == CONTROL_FRAMES and C.HTTP2_CONTROL_FLOOD.id in on:
                if st.control_frames is None:
                    st.control_frames = ControlFrames()
                hit = st.control_frames.batch(ev.detail, now, s)
                if hit is not None:
                    hits.append(hit)
            elif ev.name == CONTINUATION_FLOOD:
                hits.append(Hit(C.HTTP2_CONTROL_FLOOD, ev.detail))
        elif isinstance(ev, E.Http2Headers):
            path = next((v for n, v in ev.headers if n == b":path"), b"")
            if path:
                hits += self._http_request(path, ev.headers, b"", st, on)
        elif isinstance(ev, E.SqlQuery):
            if C.SQL_INJECTION.id in on:
                hit = check_sql_query(ev.text)
                if hit is not None:
                    hits.append(hit)
            if self.owner.policy.sensors.applies(st.group):
                hits += self._sensor_hits(
                    self.owner.policy.sensors.scan(Context.SQL, ev.text.encode("utf-8", "replace"), st.group)
                )
        elif isinstance(ev, E.TlsClientHello):
            if not ev.sslv2:  # SSLv2 hellos are judged on their bytes by the packet hook
                offered = max(ev.supported_versions) if ev.supported_versions else ev.handshake_version
                hits += version_hits(True, offered)
        elif isinstance(ev, E.TlsServerHello):
            hits += version_hits(False, ev.selected_version or ev.handshake_version)
        elif isinstance(ev, E.TlsHeartbeat):
            if not ev.encrypted:
                if 3 + ev.declared_length + 16 > ev.record_length:
                    detail = (
                        f"heartbeat claims {ev.declared_length} bytes in a {ev.record_length}-byte record"
                    )
                    hits.append(Hit(C.HEARTBLEED, detail))
            else:
                side, other = int(ctx.side), 1 - int(ctx.side)
                outstanding = st.heartbeat[other]
                st.heartbeat[other] = 0
                if not outstanding:
                    st.heartbeat[side] = ev.record_length  # a request: the other side's answer echoes it
                hit = check_encrypted_heartbeat(ev.record_length, outstanding)
                if hit is not None:
                    hits.append(hit)
        elif isinstance(ev, E.SshBanner):
            hit = check_ssh_banner(b"SSH-" + ev.proto_version + b"-" + ev.software)
            if hit is not None:
                hits.append(hit)
        elif isinstance(ev, E.SshAuthFailure):
            self.owner.counters["detect.ssh.refused_logins"] += 1  # (seen below the threshold too)
            if C.SSH_BRUTE_FORCE.id in on:
                hit = self.ssh_refusals.on_failure(ctx.client_addr, ctx.server_addr, b"", now, s)
                if hit is not None:
                    hits.append(hit)
        elif isinstance(ev, E.DnsMessage):
            if ev.transport == "tcp":
                hits += self._dns_event(ev, ctx, now, s)
        elif isinstance(ev, E.MysqlError):  # a failed login also yields MysqlLoginResult: count one of them
            code = ev.code
            if code:
                hit = self.denials.on_error(ctx.client_addr, code, now, s)
                if hit is not None:
                    hits.append(hit)
        elif isinstance(ev, E.PgAuthResult):
            if not ev.ok and ev.code in _DENIED_PG:
                hit = self.denials.on_error(ctx.client_addr, 1045, now, s)
                if hit is not None:
                    hits.append(hit._replace(detail=hit.detail + " (PostgreSQL)"))
        return self._to_dpi(hits, st, ctx)

    def _request_done(self, ctx: FlowContext, st: _FlowState) -> None:
        """A request arrived whole (head and body): no longer pending for the slow-HTTP checks."""
        st.pending_since = -1.0
        st.slow_fired = st.swept = False
        self._slow.pop(ctx.key)

    def _request_part(self, ev: E.HttpBodyPart, st: _FlowState, on: frozenset[int]) -> list[Hit]:
        """A later part of a request body: the injection checks and the body sensors, as on the first
        part, in the request's content type (the URI and headers were judged with the head)."""
        if not ev.data:
            return []
        ctype = ev.content_type.decode("latin-1")
        hits: list[Hit] = []
        if C.LOG4SHELL.id in on:
            lookup = check_lookups((ev.data,))
            if lookup is not None:
                hits.append(lookup)
        if C.WEBSHELL_UPLOAD.id in on:
            shell = check_upload(ev.data, ctype, ev.uri)
            if shell is not None:
                hits.append(shell)
        sqli, xss, command, ldap = (c.id in on for c in INJECTION_CLASSES)
        if (sqli or xss or command or ldap) and _MULTIPART in ctype.lower():
            hits += self._multipart_part(ev.uri, ev.offset, ev.data, ctype, st, on, ev.last)
        elif sqli or xss or command or ldap:
            hits += check_request(
                "", body_values(ev.data, ctype), ctype, "", sqli, xss, command=command, ldap=ldap
            )
        if self.owner.policy.sensors.applies(st.group):
            hits += self._form_sensor_body(ev.data, ctype, st)
        return hits

    @staticmethod
    def _multipart_part(
        uri: bytes, offset: int, data: bytes, ctype: str, st: _FlowState, on: frozenset[int], last: bool
    ) -> list[Hit]:
        """A part of a multipart body cut into parts: its values, judged as the part of the form they
        continue (`workers.detect.multipart.MultipartCursor`, followed per flow and URI)."""
        bodies = st.multipart if st.multipart is not None else {}
        cursor = bodies.pop(uri, None)
        if cursor is None or not offset:  # (a body's first part: a new request to the same URI)
            boundary = boundary_of(ctype, data)
            if boundary is None:
                return []
            cursor = MultipartCursor(boundary)
            if offset:  # its start was not followed (too many bodies at once): judge the rest as text
                cursor.open_kind = FIELD
        values = cursor.feed(offset, data)
        if not last:
            while len(bodies) >= MAX_MULTIPART_BODIES:
                bodies.pop(next(iter(bodies)))
            bodies[uri] = cursor
        st.multipart = bodies or None
        return check_values(values, (c for c in INJECTION_CLASSES if c.id in on))

    def _http_request(
        self,
        uri: bytes,
        headers: E.Headers,
        body: bytes,
        st: _FlowState,
        on: frozenset[int],
        partial: bool = False,
        method: bytes = b"",
    ) -> list[Hit]:
        """The head of a request and its body's first part (`partial`: more parts follow)."""
        hits = check_headers(headers)
        if C.SCANNER_DETECTED.id in on:
            tool = check_scanner(headers)
            if tool is not None:
                hits.append(tool)
        if C.LOG4SHELL.id in on:
            lookup = check_lookups((uri, *(v for _n, v in headers), body))
            if lookup is not None:
                hits.append(lookup)
        if C.HTTP_RANGE_DOS.id in on:
            ranges = check_range(headers, st.settings)
            if ranges is not None:
                hits.append(ranges)
        ctype = cookie = ""
        for name, value in headers:
            low = name.lower()
            if low == b"content-type":
                ctype = value.decode("latin-1")
            elif low == b"cookie":
                cookie = value.decode("latin-1")
        injectable = injectable_header_values(headers)
        sqli, xss, command, ldap = (c.id in on for c in INJECTION_CLASSES)
        injections, traversals = sqli or xss or command or ldap, C.PATH_TRAVERSAL.id in on
        forgeries, splits = C.SSRF.id in on, C.CRLF_INJECTION.id in on
        gadgets = C.JAVA_DESERIALIZATION.id in on
        objects = C.PHP_OBJECT_INJECTION.id in on
        templates = C.TEMPLATE_INJECTION.id in on
        prototypes = C.PROTOTYPE_POLLUTION.id in on
        serialized = C.INSECURE_DESERIALIZATION.id in on
        tokens = C.JWT_FORGERY.id in on
        shared = objects or templates or prototypes or serialized or tokens
        target = uri.decode("latin-1")
        path, _, query = target.partition("?")
        # a whole body's values (a JSON document parsed), the cookie's, the query's and the headers', each
        # read once for every kind of check that looks at them
        valued = injections or traversals or forgeries or splits or gadgets or shared
        whole = parsed_body(body, ctype) if body and not partial and valued else None
        fields = whole[0] if whole else ()
        cookies = list(pair_values(cookie)) if cookie and valued else []
        named = forgeries or gadgets or shared  # (the checks reading the query's values)
        queries = list(pair_values(query)) if query and named else []
        free = free_header_values(headers) if traversals or forgeries or templates else []
        if traversals:
            traversal = check_target(uri, st.settings) or check_path_values(
                chain(cookies, free, fields), st.settings
            )
            if traversal is not None:
                hits.append(traversal)
        if injections:
            # a multipart body in parts is followed by a cursor from its first part on; any other first
            # part is judged as a part (a JSON part by its strings)
            followed = partial and _MULTIPART in ctype.lower()
            checked = body if not partial else b"" if followed else body_values(body, ctype)
            hits += check_request(target, checked, ctype, cookie, sqli, xss, injectable, command, ldap, whole)
            if followed:
                hits += self._multipart_part(uri, 0, body, ctype, st, on, False)
        if forgeries:
            forged = check_ssrf(chain((path,), queries, cookies, free, fields))
            if forged is not None:
                hits.append(forged)
        if splits:
            split = check_crlf(uri, chain(cookies, fields))
            if split is not None:
                hits.append(split)
        # The query's, cookie's and body's values joined, percent-decoded: one text for every check that
        # reads them beside a body (Java and PHP objects, other runtimes', templates, property paths, tokens).
        values_text = joined_values(chain(queries, cookies, fields)) if gadgets or shared else []
        if gadgets:
            gadget = deserialization_in(([body[:MAX_VALUE_TEXT]] if body else []) + values_text)
            if gadget is not None:
                hits.append(gadget)
        if C.XXE.id in on:
            entity = check_xml(xml_texts(uri, body, ctype))
            if entity is not None:
                hits.append(entity)
        if C.WEBSHELL_UPLOAD.id in on and body:
            shell = check_upload(body, ctype, uri, method)
            if shell is not None:
                hits.append(shell)
        if C.SENSITIVE_FILE_ACCESS.id in on:
            probed = check_sensitive_path(uri)
            if probed is not None:
                hits.append(probed)
        # (and a body no parser read into values, as it is)
        joined = ([body[:MAX_VALUE_TEXT]] if body and not fields else []) + values_text
        if objects:
            unserialized = php_object_in(joined)
            if unserialized is not None:
                hits.append(unserialized)
        if serialized:
            rebuilt = serialized_in(body, joined)
            if rebuilt is not None:
                hits.append(rebuilt)
        if templates:
            decoded_path = (
                percent_decode(path).encode("latin-1", "replace") if "%" in path else uri[: len(path)]
            )
            headers_text = joined_values(free)
            evaluated = template_in((decoded_path, *joined, *headers_text))
            if evaluated is not None:
                hits.append(evaluated)
        if tokens:
            forged_token = check_jwt((*(v for _n, v in headers), *joined))
            if forged_token is not None:
                hits.append(forged_token)
        if prototypes:
            polluted = prototype_in(joined, body if fields and "json" in ctype.lower() else b"")
            if polluted is not None:
                hits.append(polluted)
        if C.SPRING_RCE.id in on:
            bound = check_spring(spring_texts(uri, headers, body, ctype))
            if bound is not None:
                hits.append(bound)
        if C.STRUTS_RCE.id in on:
            hit = check_struts_body(body, ctype) if body else None
            hit = hit or check_ognl(ognl_texts(uri, headers, body, ctype))
            if hit is not None:
                hits.append(hit)
        sensors = self.owner.policy.sensors
        if sensors.applies(st.group):
            found = sensors.scan(Context.URL, uri, st.group)
            decoded = percent_decode(uri.decode("latin-1")).encode("latin-1", "replace")
            if decoded != uri:
                seen = {(m.sensor, m.rule) for m in found}
                found += [
                    m for m in sensors.scan(Context.URL, decoded, st.group) if (m.sensor, m.rule) not in seen
                ]
            head = b"\r\n".join(n + b": " + v for n, v in headers)
            found += sensors.scan(Context.HEADER, head, st.group)
            hits += self._sensor_hits(found)
            hits += self._form_sensor_body(body, ctype, st)
        return hits

    def _form_sensor_body(self, body: bytes, ctype: str, st: _FlowState) -> list[Hit]:
        """The body sensors on a body (part), and on a form's values as the application sees them."""
        body_hits = self._sensor_body(body, st)
        if body and "x-www-form-urlencoded" in ctype:
            form = percent_decode(body.decode("latin-1"), plus=True).encode("latin-1", "replace")
            if form != body:
                seen = {(h.sensor, h.rule) for h in body_hits}
                body_hits += [h for h in self._sensor_body(form, st) if (h.sensor, h.rule) not in seen]
        return body_hits

    def _sensor_body(self, body: bytes, st: _FlowState) -> list[Hit]:
        if not body or not self.owner.policy.sensors.applies(st.group):
            return []
        return self._sensor_hits(self.owner.policy.sensors.scan(Context.BODY, body, st.group))

    def _dns_event(self, ev: E.DnsMessage, ctx: FlowContext, now: float, s: ThreatSettings) -> list[Hit]:
        hits: list[Hit] = []
        for anomaly in ev.anomalies:
            if anomaly == "dpi.dns.pointer_loop":
                hits.append(Hit(C.DNS_POINTER_LOOP, "compression pointer loop"))
            elif anomaly in ("dpi.dns.name_too_long", "dpi.dns.truncated", "dpi.dns.bad_pointer"):
                hits.append(Hit(C.DNS_OVERFLOW, anomaly))
        if not ev.qr:
            for q in ev.questions:
                if q.qtype in (251, 252):
                    hits.append(
                        Hit(C.DNS_ZONE_TRANSFER, "AXFR" if q.qtype == 252 else "IXFR", excerpt_of(q.name))
                    )
                elif q.qtype == 10:
                    hits.append(Hit(C.DNS_NULL_TYPE, "NULL query", excerpt_of(q.name)))
                if C.DNS_TUNNELING.id in s.on:
                    reason = tunnel_name(
                        [label.encode("latin-1", "replace") for label in q.name.split(".")], s
                    )
                    if reason:
                        hits.append(Hit(C.DNS_TUNNELING, reason, excerpt_of(q.name)))
        return hits

    @staticmethod
    def _sensor_hits(matches: Sequence[SensorMatch]) -> list[Hit]:
        return [
            Hit(C.DLP_SENSOR, f"sensor {m.sensor} rule {m.rule} ({m.context.value})", m.excerpt.encode(),
                m.sensor, m.rule, m.action is SensorAction.BLOCK)
            for m in matches
        ]  # fmt: skip

    def _to_dpi(self, hits: list[Hit], st: _FlowState, ctx: FlowContext) -> list[E.Finding]:
        if not hits:
            return []
        s = st.settings
        out = []
        evidence = self.owner.evidence.snapshot(ctx.key)
        for h in hits:
            threat: Threat = h.threat
            if threat.id not in s.on:
                continue
            self.owner.counters["threats." + threat.name] += 1
            fields: dict[str, object] = {"threat_id": threat.id, "group": st.group, "count": 1}
            if h.sensor:
                fields.update(sensor=h.sensor, rule=h.rule)
                block = h.block
                configured = "block" if block else "alert"
            else:
                action = s.action(threat)
                block = action is not ThreatAction.ALERT
                configured = action.value
                if action is ThreatAction.BLOCK_SOURCE and ctx.mode == Mode.PROTECT:
                    # the DPI engine resets this flow; the client's next flows are dropped by the raw path
                    seconds = threat.thresholds.get("block_seconds")
                    if seconds is not None:
                        self.owner.block(
                            ctx.client_addr, float(s.threshold(threat, "block_seconds")), self._now
                        )
            fields["configured_action"] = configured
            if evidence:
                fields["evidence"] = evidence
            out.append(E.Finding(threat.name, threat.severity.value, block, h.detail, h.excerpt, fields))
        return out


def _free_headers(headers: E.Headers) -> Iterator[bytes]:
    """The non-empty values of a request's headers of no fixed syntax (`_FIXED_SYNTAX_HEADERS`)."""
    for name, value in headers:
        low = name.lower()
        if value and low not in _FIXED_SYNTAX_HEADERS and not low.startswith(_FIXED_SYNTAX_PREFIXES):
            yield value


def free_header_values(headers: E.Headers) -> list[str]:
    """`_free_headers`, tokens too (a path is one: `/etc/shadow`): at most `MAX_HEADER_VALUES`, each cut to
    `MAX_HEADER_VALUE_BYTES`."""
    return [
        v[:MAX_HEADER_VALUE_BYTES].decode("latin-1")
        for v in islice(_free_headers(headers), MAX_HEADER_VALUES)
    ]


def injectable_header_values(headers: E.Headers) -> list[str]:
    """The values of a request's headers the injection checks see (`_FIXED_SYNTAX_HEADERS` says which
    are left out and why): at most `MAX_HEADER_VALUES`, each cut to `MAX_HEADER_VALUE_BYTES`; empty and
    inert values (`_INERT_VALUE`: tokens, `name=token` lists) are skipped."""
    active = (v for v in _free_headers(headers) if not _INERT_VALUE.fullmatch(v))
    return [v[:MAX_HEADER_VALUE_BYTES].decode("latin-1") for v in islice(active, MAX_HEADER_VALUES)]
