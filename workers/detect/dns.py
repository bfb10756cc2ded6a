"""DNS threats over raw DNS messages: compression abuse, overflow, zone transfer, NULL type, tunneling,
floods.

`check_message` walks a message (UDP payload, or a TCP message without its length prefix) with its own
bounded name reader, so it sees what a lenient parser would hide: compression pointers that loop, point
forward (RFC 1035 pointers name a *prior* occurrence; every pointer of a name must point before the
last one, which also rules out every loop), chain beyond `max_pointer_jumps` or exceed
`max_pointers` in one message; labels over 63 bytes, names over 255, records running past the end,
oversized UDP answers without EDNS. `DnsDetector` adds the per-client state for tunneling (volume of
unusual query types in a window) and for floods (queries per client and per server, and the share of
NXDOMAIN answers a client gets: a random-subdomain storm asks names that do not exist).
"""

from __future__ import annotations

import math
import struct
from collections import Counter

from threats.catalogue import (
    DNS_FLOOD,
    DNS_NULL_TYPE,
    DNS_OVERFLOW,
    DNS_POINTER_LOOP,
    DNS_TUNNELING,
    DNS_ZONE_TRANSFER,
    Hit,
    excerpt_of,
)
from threats.settings import ThreatSettings
from threats.window import LruTable, WindowCounter
from workers.detect.shared_counts import Counts, LocalCounts

_HEADER = struct.Struct("!HHHHHH")
_RR_FIXED = struct.Struct("!HHIH")
QTYPE_NULL, QTYPE_TXT, QTYPE_OPT, QTYPE_IXFR, QTYPE_AXFR, QTYPE_ANY = 10, 16, 41, 251, 252, 255
# Query types ordinary clients ask for; any other counts toward the tunneling volume threshold. TXT is
# ordinary (SPF, DKIM, DMARC, ACME, site verification): a TXT tunnel meets the distinct TXT names check.
COMMON_QTYPES = frozenset({1, 2, 5, 6, 12, 15, 16, 28, 33, 35, 43, 48, 64, 65, 257})
MAX_NAME = 255
MAX_LABEL = 63
# Records walked per message (a message claiming more is walked up to this bound).
MAX_RECORDS = 256
RCODE_NXDOMAIN = 3


class _Malformed(Exception):
    def __init__(self, threat_name: str, detail: str) -> None:
        super().__init__(detail)
        self.threat_name = threat_name
        self.detail = detail


class _Budget:
    """Compression pointers followed in one message (`max_pointers`: a message of many names each
    chained through pointers costs a parser far more than its size)."""

    __slots__ = ("left",)

    def __init__(self, max_pointers: int) -> None:
        self.left = max_pointers


def read_name(msg: bytes, off: int, max_jumps: int, budget: _Budget | None = None) -> tuple[list[bytes], int]:
    """The labels of the name at `off` and the offset after it. Raises _Malformed on compression
    abuse (a loop, a forward pointer, too many pointers) or an overflow."""
    labels: list[bytes] = []
    length = 1  # the root label's zero byte counts toward the 255
    jumps = 0
    end = -1
    n = len(msg)
    while True:
        if off >= n:
            raise _Malformed("dns_overflow", "name runs past the message")
        b = msg[off]
        if b & 0xC0 == 0xC0:
            if off + 1 >= n:
                raise _Malformed("dns_overflow", "truncated compression pointer")
            target = ((b & 0x3F) << 8) | msg[off + 1]
            if end < 0:
                end = off + 2
            jumps += 1
            # a loop needs a pointer to itself or forward: both are refused here
            if target == off:
                raise _Malformed("dns_pointer_loop", f"pointer to {target} loops")
            if target > off:
                raise _Malformed("dns_pointer_loop", f"pointer at {off} forward to {target}")
            if jumps > max_jumps:
                raise _Malformed("dns_pointer_loop", f"chain of more than {max_jumps} pointers")
            if budget is not None:
                budget.left -= 1
                if budget.left < 0:
                    raise _Malformed("dns_pointer_loop", "too many compression pointers in one message")
            off = target
            continue
        if b & 0xC0:
            # 0x40..0xBF: an extended label type (obsolete) or a length over 63
            raise _Malformed("dns_overflow", f"label of {b} bytes (over {MAX_LABEL})")
        if b == 0:
            return labels, (end if end >= 0 else off + 1)
        if off + 1 + b > n:
            raise _Malformed("dns_overflow", "label runs past the message")
        length += b + 1
        if length > MAX_NAME:
            raise _Malformed("dns_overflow", f"name longer than {MAX_NAME}")
        labels.append(msg[off + 1 : off + 1 + b])
        off += 1 + b


class DnsMessage:
    """What the detectors read from one message."""

    __slots__ = ("is_response", "rcode", "questions", "edns_size", "size")

    def __init__(self) -> None:
        self.is_response = False
        self.rcode = 0
        self.questions: list[tuple[list[bytes], int]] = []
        self.edns_size = 0
        self.size = 0


def parse_message(msg: bytes, max_jumps: int = 16, max_pointers: int = 512) -> DnsMessage:
    """Parse header, questions and record framing (raises _Malformed)."""
    if len(msg) < 12:
        raise _Malformed("dns_overflow", "shorter than a header")
    _id, flags, qd, an, ns, ar = _HEADER.unpack_from(msg)
    out = DnsMessage()
    out.is_response = bool(flags & 0x8000)
    out.rcode = flags & 0x0F
    budget = _Budget(max_pointers)
    out.size = len(msg)
    off = 12
    for _ in range(min(qd, MAX_RECORDS)):
        labels, off = read_name(msg, off, max_jumps, budget)
        if off + 4 > len(msg):
            raise _Malformed("dns_overflow", "question runs past the message")
        qtype = (msg[off] << 8) | msg[off + 1]
        out.questions.append((labels, qtype))
        off += 4
    for i in range(min(an + ns + ar, MAX_RECORDS)):
        _labels, off = read_name(msg, off, max_jumps, budget)
        if off + 10 > len(msg):
            raise _Malformed("dns_overflow", "record header runs past the message")
        rtype, rclass, _ttl, rdlength = _RR_FIXED.unpack_from(msg, off)
        off += 10
        if off + rdlength > len(msg):
            raise _Malformed("dns_overflow", "record data runs past the message")
        if rtype == QTYPE_OPT and i >= an + ns:
            out.edns_size = rclass
        off += rdlength
    return out


def label_entropy(text: bytes) -> float:
    """Shannon entropy in bits per character."""
    if not text:
        return 0.0
    counts = Counter(text)
    total = len(text)
    return -sum(c / total * math.log2(c / total) for c in counts.values())


# A name's tunneling score counts its characters that look like encoded data, not its length: long
# legitimate names (load balancers, CDNs, Kubernetes services) are words joined by dots and hyphens with at
# most one or two generated tokens (a 10-hex-digit hash, a GUID, a content hash), while a tunnel (iodine's
# base32/base64, dnscat2's hex) fills its query names with data, in long labels or chunked over several.
# Only the part below the registered domain counts. Labels starting with "_" (`_domainkey`,
# `_acme-challenge`, `_sip._tcp`) and the labels before them (a DKIM selector, an OPENPGPKEY or SMIMEA
# hash: RFC-defined, generated by design) are protocol names, not data; a tunnel hiding behind them still
# meets the per-client checks (distinct names, TXT/NULL names, unusual types under one domain).
MIN_DATA_TOKEN = 8  # shorter tokens ("k8s", "e1234", "us-east-1") are too short to tell anything
MAX_WORD_VOWEL_SHARE = 0.2  # letters-only tokens below this share of vowels are not words (base32 letters)
CHUNKED_LABELS = 3  # data in this many labels of one name is a tunnel's chunking (a legit name has 1-2)
_DIGITS = frozenset(b"0123456789")
_LETTERS = frozenset(b"abcdefghijklmnopqrstuvwxyz")
_VOWELS = frozenset(b"aeiouy")


def _is_data_token(token: bytes) -> bool:
    """A token (a label's run between hyphens, lowercase) that looks generated rather than written:
    letters and digits changing places at least twice (hex, base32), or letters with hardly a vowel."""
    if len(token) < MIN_DATA_TOKEN:
        return False
    changes = 0
    was_digit = token[0] in _DIGITS
    letters = vowels = 0
    for ch in token:
        digit = ch in _DIGITS
        if digit != was_digit:
            changes += 1
            was_digit = digit
        if ch in _LETTERS:
            letters += 1
            vowels += ch in _VOWELS
    if changes >= 2:
        return True
    return letters == len(token) and vowels < MAX_WORD_VOWEL_SHARE * letters


def data_labels(labels: list[bytes]) -> list[int]:
    """Per label below the registered domain (protocol labels left out), its characters of encoded data;
    labels without any are left out."""
    below = labels[: len(labels) - _domain_labels(labels)]
    last_protocol = max((i for i, label in enumerate(below) if label.startswith(b"_")), default=-1)
    counts = []
    for label in below[last_protocol + 1 :]:
        n = sum(len(t) for t in label.lower().split(b"-") if _is_data_token(t))
        if n:
            counts.append(n)
    return counts


def tunnel_name(labels: list[bytes], settings: ThreatSettings) -> str:
    """A reason if the name carries data in its labels, else "": data over `data_chars` in the name, a
    label holding `data_label` characters of data, or data chunked over `CHUNKED_LABELS` labels holding
    `chunked_data_chars` together."""
    counts = data_labels(labels)
    if not counts:
        return ""
    total, longest = sum(counts), max(counts)
    t = DNS_TUNNELING
    if (
        total >= settings.threshold(t, "data_chars")
        or longest >= settings.threshold(t, "data_label")
        or (len(counts) >= CHUNKED_LABELS and total >= settings.threshold(t, "chunked_data_chars"))
    ):
        return f"{total} characters of encoded data in {len(counts)} labels of the name"
    return ""


def check_message(msg: bytes, is_tcp: bool, settings: ThreatSettings) -> list[Hit]:
    """Per-message DNS threats (no per-client state)."""
    return _check(msg, is_tcp, settings)[0]


def _check(msg: bytes, is_tcp: bool, settings: ThreatSettings) -> tuple[list[Hit], DnsMessage | None]:
    on = settings.on
    max_jumps = int(settings.threshold(DNS_POINTER_LOOP, "max_pointer_jumps"))
    max_pointers = int(settings.threshold(DNS_POINTER_LOOP, "max_pointers"))
    try:
        parsed = parse_message(msg, max_jumps, max_pointers)
    except _Malformed as bad:
        threat = DNS_POINTER_LOOP if bad.threat_name == "dns_pointer_loop" else DNS_OVERFLOW
        return ([Hit(threat, bad.detail, excerpt_of(msg))] if threat.id in on else []), None
    hits: list[Hit] = []
    if not is_tcp and DNS_OVERFLOW.id in on:
        limit = max(settings.threshold(DNS_OVERFLOW, "max_udp_size"), parsed.edns_size)
        if parsed.size > limit:
            hits.append(Hit(DNS_OVERFLOW, f"{parsed.size}-byte UDP message over {limit}", excerpt_of(msg)))
    if parsed.is_response:
        return hits, parsed
    for labels, qtype in parsed.questions:
        name = b".".join(labels)
        if qtype in (QTYPE_AXFR, QTYPE_IXFR) and DNS_ZONE_TRANSFER.id in on:
            hits.append(Hit(DNS_ZONE_TRANSFER, "AXFR" if qtype == QTYPE_AXFR else "IXFR", excerpt_of(name)))
        if qtype == QTYPE_NULL and DNS_NULL_TYPE.id in on:
            hits.append(Hit(DNS_NULL_TYPE, "NULL query", excerpt_of(name)))
        if DNS_TUNNELING.id in on:
            reason = tunnel_name(labels, settings)
            if reason:
                hits.append(Hit(DNS_TUNNELING, reason, excerpt_of(name)))
    return hits, parsed


# Second-level labels under which registrations happen one level down (co.uk, com.au …): a heuristic in
# place of the public-suffix list, good enough to group a tunnel's names under its domain.
_SECOND_LEVEL = frozenset({b"co", b"com", b"net", b"org", b"gov", b"ac", b"edu", b"ne", b"or"})


def _domain_labels(labels: list[bytes]) -> int:
    """How many of the last labels make the registered domain (two, three under e.g. co.uk)."""
    if len(labels) >= 3 and len(labels[-1]) == 2 and labels[-2].lower() in _SECOND_LEVEL:
        return 3
    return 2


# Kubernetes' cluster domain. A pod's resolver tries each name under its search domains first
# (`api.example.com.default.svc.cluster.local`, … with ndots:5), so a pod resolving many hosts asks many
# distinct names under it; the cluster's DNS answers them itself, so none carries a tunnel out.
CLUSTER_DOMAINS = frozenset((b"cluster.local",))


def registered_domain(labels: list[bytes]) -> bytes:
    """The domain a name is registered under (last two labels, three under e.g. co.uk)."""
    return b".".join(label.lower() for label in labels[-_domain_labels(labels) :])


class _Names:
    __slots__ = ("start", "names")

    def __init__(self, start: float) -> None:
        self.start = start
        self.names: set[bytes] = set()


class _Answers:
    """Queries a client asked and NXDOMAIN answers it got in one window, with the distinct names among
    them (as hashes, as many as the threshold needs: then the NXDOMAIN answers when it filled)."""

    __slots__ = ("start", "asked", "nxdomain", "missing", "full_at")

    def __init__(self, start: float) -> None:
        self.start = start
        self.asked = 0
        self.nxdomain = 0
        self.missing: set[int] = set()
        self.full_at = 0

    def distinct(self, name: bytes, room: int) -> float:
        """Count an NXDOMAIN answer for `name`: the distinct names answered so, estimated past `room`
        from their share among the answers until then (a storm's are all distinct)."""
        self.nxdomain += 1
        if not self.full_at:
            self.missing.add(hash(name))
            if len(self.missing) < room:
                return len(self.missing)
            self.full_at = self.nxdomain
        return len(self.missing) * self.nxdomain / self.full_at


class DnsDetector:
    """Per-message checks plus per-client state for tunneling: the volume of unusual query types, the
    number of distinct names asked under one domain (a tunnel encodes data in ever-new names), and the
    number of distinct TXT/NULL names under one domain (a tunnel's downstream rides on those answers,
    while DKIM and ACME lookups ask the same few names); and for floods: queries per client and per
    server, NXDOMAIN answers per client. Bounded by `max_clients` keys each; a client's
    name set holds at most the threshold. `query_counts` may be the node's workers' table
    (`workers.detect.shared_counts`): the query rates are then the node's, over every worker."""

    def __init__(self, max_clients: int = 65536) -> None:
        self._unusual: WindowCounter[bytes] = WindowCounter(max_clients)
        self._names: LruTable[tuple[bytes, bytes], _Names] = LruTable(max_clients)
        self._txt_names: LruTable[tuple[bytes, bytes], _Names] = LruTable(max_clients)
        # queries per client (keys b"c" + address) and per server (b"s" + address)
        self.query_counts: Counts = LocalCounts(2 * max_clients)
        self._answers: LruTable[bytes, _Answers] = LruTable(max_clients)

    def inspect(
        self,
        msg: bytes,
        client: bytes,
        is_tcp: bool,
        now: float,
        settings: ThreatSettings,
        server: bytes = b"",
    ) -> list[Hit]:
        hits, parsed = _check(msg, is_tcp, settings)
        if parsed is not None and DNS_FLOOD.id in settings.on:
            hit = self.flood(parsed, client, server, now, settings)
            if hit is not None:
                hits.append(hit)
        if parsed is None or parsed.is_response or DNS_TUNNELING.id not in settings.on:
            return hits
        window = settings.threshold(DNS_TUNNELING, "window")
        limit = settings.threshold(DNS_TUNNELING, "unusual_per_window")
        unique_limit = settings.threshold(DNS_TUNNELING, "unique_names_per_window")
        txt_limit = settings.threshold(DNS_TUNNELING, "txt_names_per_window")
        flagged = any(h.threat is DNS_TUNNELING for h in hits)
        for labels, qtype in parsed.questions:
            if flagged or len(labels) < 3:
                continue
            name = b".".join(labels).lower()
            if qtype not in COMMON_QTYPES and qtype not in (QTYPE_AXFR, QTYPE_IXFR):
                count = self._unusual.hit(client, now, window)
                if count > limit:
                    hits.append(Hit(DNS_TUNNELING, f"{count:.0f} type-{qtype} queries", excerpt_of(name)))
                    flagged = True
                    continue
            domain = registered_domain(labels)
            if domain in CLUSTER_DOMAINS:
                continue  # (the cluster's own DNS answers these: no tunnel reaches a server through them)
            tables = [(self._names, unique_limit, "names")]
            if qtype in (QTYPE_TXT, QTYPE_NULL):
                tables.append((self._txt_names, txt_limit, "TXT/NULL names"))
            for table, most, what in tables:
                if _distinct(table, (client, domain), name, now, window, most):
                    detail = f"over {most:.0f} distinct {what} under {domain.decode('ascii', 'replace')}"
                    hits.append(Hit(DNS_TUNNELING, detail, excerpt_of(name)))
                    flagged = True
                    break
        return hits

    def flood(
        self, parsed: DnsMessage, client: bytes, server: bytes, now: float, settings: ThreatSettings
    ) -> Hit | None:
        """`dns_flood` for one message: a query counts toward its client's and its server's rate, an
        answer toward its client's NXDOMAIN share (a random-subdomain storm)."""
        s = settings
        nx_window = s.threshold(DNS_FLOOD, "nxdomain_window")
        seen = self._answers.get(client)
        if seen is None or now - seen.start >= nx_window:
            seen = _Answers(now)
            self._answers.put(client, seen)
        if not parsed.is_response:
            seen.asked += 1
            window = s.threshold(DNS_FLOOD, "window")
            from_client = self.query_counts.add(DNS_FLOOD.id, b"c" + client, now, window)
            if from_client > s.threshold(DNS_FLOOD, "queries_per_window"):
                return Hit(DNS_FLOOD, f"{from_client:.0f} queries from one client in {window:g}s")
            if server:
                to_server = self.query_counts.add(DNS_FLOOD.id, b"s" + server, now, window)
                if to_server > s.threshold(DNS_FLOOD, "server_queries_per_window"):
                    return Hit(DNS_FLOOD, f"{to_server:.0f} queries to one server in {window:g}s")
            return None
        if parsed.rcode != RCODE_NXDOMAIN:
            return None
        # Distinct names: a storm asks ever-new random names, while a resolver's search path answers the
        # same few expansions NXDOMAIN each time a pod looks a name up (`api.example.com.default.svc.
        # cluster.local`, … with Kubernetes' ndots:5: six of every eight answers), which is no storm.
        name = b".".join(parsed.questions[0][0]).lower() if parsed.questions else b""
        needed = s.threshold(DNS_FLOOD, "nxdomain_per_window")
        missing = seen.distinct(name, max(1, int(needed)))
        if missing < needed:
            return None
        if missing < s.threshold(DNS_FLOOD, "nxdomain_ratio") * max(seen.asked, missing):
            return None
        detail = f"{missing:.0f} names answered NXDOMAIN of {seen.asked} queries"
        return Hit(DNS_FLOOD, detail, excerpt_of(name))


def _distinct(
    table: LruTable[tuple[bytes, bytes], _Names],
    key: tuple[bytes, bytes],
    name: bytes,
    now: float,
    window: float,
    most: float,
) -> bool:
    """Add `name` to the key's names of the current window; True once they number over `most`."""
    seen = table.get(key)
    if seen is None or now - seen.start >= window:
        seen = _Names(now)
        table.put(key, seen)
    if len(seen.names) <= most:
        seen.names.add(name)
    return len(seen.names) > most
