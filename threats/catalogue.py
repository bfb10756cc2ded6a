"""The catalogue of built-in threats and the detector contract.

One ordered registry (`THREATS`): each threat has a stable numeric id (never reused or renumbered: the
controller stores it), a stable lowercase name, a description, a severity, a default action and default
thresholds. Per-group settings (`threats.settings`) override the enable flag, the action and any
threshold by name; a threshold that is not declared here is rejected there, so the registry is the one
place that says what is tunable.

Detectors are pure code over values (packets, flow state, parser fields) that return `Finding`s; the
engine turns findings into `threat` events and verdicts. Ids follow NeuVector's order where the threat
exists there (1001…), so logs from both can be compared; threats NeuVector lacks come after.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

from core.flow import Direction, FlowKey


class Severity(enum.StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class ThreatAction(enum.StrEnum):
    """What a threat does to traffic in Protect mode (Discover/Monitor only ever alert)."""

    ALERT = "alert"  # raise the event, let the packet through
    DROP = "drop"  # drop the offending packet; the flow goes on under inspection
    RESET = "reset"  # block the flow and reset TCP both ways
    # block the flow, and the source's later packets for the threat's `block_seconds` (threats that have
    # that threshold; for the others it acts as reset)
    BLOCK_SOURCE = "block-source"


Threshold = int | float


@dataclasses.dataclass(frozen=True, slots=True, eq=False, repr=False)
class Threat:
    """One built-in threat. Instances are the catalogue's singletons: compared and hashed by identity."""

    id: int
    name: str
    description: str
    severity: Severity
    action: ThreatAction
    thresholds: Mapping[str, Threshold] = dataclasses.field(default_factory=lambda: MappingProxyType({}))
    enabled: bool = True

    def __repr__(self) -> str:
        return f"<Threat {self.id} {self.name}>"


def _t(
    id_: int,
    name: str,
    severity: Severity,
    action: ThreatAction,
    description: str,
    enabled: bool = True,
    **thresholds: Threshold,
) -> Threat:
    return Threat(id_, name, description, severity, action, MappingProxyType(dict(thresholds)), enabled)


S, A = Severity, ThreatAction

# Thresholds are named after their unit: `*_per_window` counts within `window` seconds, `min_*`/`max_*`
# bounds on one value. Defaults are deliberately above what ordinary clients do (see each reason).
THREATS: tuple[Threat, ...] = (
    _t(1001, "syn_flood", S.CRITICAL, A.DROP,
       "TCP SYN flood: SYNs that never complete a handshake, per destination or per source",
       # a busy service takes a few thousand new connections/s, but nearly all of them complete
       syns_per_window=1000, window=1.0),
    _t(1002, "icmp_flood", S.CRITICAL, A.DROP,
       "ICMP flood: echo requests to one destination above a rate",
       # ordinary ping sends 1/s, `ping -f` ~100/s; monitoring fleets stay far below this
       echo_per_window=500, window=1.0),
    _t(1003, "source_session_flood", S.CRITICAL, A.BLOCK_SOURCE,
       "IP source session flood: new sessions from one source above a rate",
       sessions_per_window=3000, window=1.0, block_seconds=30),
    _t(1004, "bad_packet", S.MEDIUM, A.DROP,
       "Malformed packet: illegal TCP flag combination, bad header lengths or TCP options"),
    _t(1005, "ip_teardrop", S.HIGH, A.DROP,
       "IP teardrop: overlapping IP fragments"),
    _t(1006, "tcp_syn_data", S.MEDIUM, A.DROP,
       "TCP SYN carrying payload (not TCP Fast Open)",
       allow_fast_open=1),
    _t(1007, "tcp_split_handshake", S.HIGH, A.RESET,
       "TCP split handshake: the responder answers a SYN with a SYN of its own"),
    _t(1008, "tcp_no_data", S.LOW, A.ALERT,
       "TCP connection established but the client sends no data within a time (connection exhaustion)",
       # slow clients send their request well within 30 s; keep-alive idles come after data
       seconds=30),
    _t(1009, "tcp_small_window", S.MEDIUM, A.RESET,
       "TCP advertised receive window below a minimum (resource exhaustion, e.g. sockstress)",
       min_window=64),
    _t(1010, "tcp_small_mss", S.MEDIUM, A.RESET,
       "TCP SYN advertising a maximum segment size below a minimum (e.g. CVE-2019-11477)",
       # Linux clamps to 48 at least; real paths carry >= 536
       min_mss=88),
    _t(1011, "ping_of_death", S.HIGH, A.DROP,
       "Ping of death: ICMP fragments that reassemble beyond 65535 bytes"),
    _t(1012, "dns_pointer_loop", S.HIGH, A.DROP,
       "DNS name compression abuse: a pointer loop, a pointer forward, a chain of pointers or too many "
       "pointers in one message",
       # encoders point each name once at a prior name (one jump); a full 512-byte answer holds < 100
       max_pointer_jumps=16, max_pointers=512),
    _t(1013, "ssh_v1", S.HIGH, A.RESET,
       "SSH protocol version 1 (broken cryptography)"),
    _t(1014, "heartbleed", S.CRITICAL, A.RESET,
       "TLS heartbeat whose payload length exceeds its record (CVE-2014-0160)"),
    _t(1015, "ssl_cipher_overflow", S.HIGH, A.RESET,
       "SSLv2 hello or master key with lengths beyond the record (CVE-2002-0656)"),
    _t(1016, "ssl_v2_v3", S.HIGH, A.RESET,
       "SSL version 2 or 3 negotiated or offered as the highest version"),
    _t(1017, "tls_1_0", S.MEDIUM, A.ALERT,
       "TLS 1.0 negotiated", enabled=False),
    _t(1018, "tls_1_1", S.MEDIUM, A.ALERT,
       "TLS 1.1 negotiated", enabled=False),
    _t(1019, "http_negative_length", S.HIGH, A.RESET,
       "HTTP Content-Length negative or not a number"),
    _t(1020, "http_smuggling", S.HIGH, A.RESET,
       "HTTP request smuggling: conflicting Content-Length, Content-Length with chunked, "
       "or an obfuscated Transfer-Encoding"),
    _t(1021, "http_slowloris", S.HIGH, A.RESET,
       "HTTP Slowloris: request headers not complete within a time budget",
       header_seconds=20),
    _t(1022, "dns_overflow", S.HIGH, A.DROP,
       "DNS message overflow: oversized message, label or name, or record lengths beyond the message",
       max_udp_size=512),
    _t(1023, "mysql_access_denied", S.MEDIUM, A.BLOCK_SOURCE,
       "MySQL access-denied burst (password brute force) from one client",
       denials_per_window=10, window=60.0, block_seconds=300),
    _t(1024, "dns_zone_transfer", S.MEDIUM, A.DROP,
       "DNS zone transfer request (AXFR or IXFR)"),
    _t(1025, "icmp_tunneling", S.HIGH, A.DROP,
       "ICMP tunneling: echo replies that do not echo the request, or echo volume beyond a rate",
       # a flood ping of 56-byte payloads moves ~6 kB/s
       bytes_per_window=100_000, window=10.0),
    _t(1026, "dns_null_type", S.MEDIUM, A.DROP,
       "DNS query of type NULL (used by DNS tunnels)"),
    _t(1027, "sql_injection", S.CRITICAL, A.RESET,
       "SQL injection in HTTP URIs, query strings, form or JSON bodies, or database protocol queries"),
    _t(1028, "struts_rce", S.CRITICAL, A.RESET,
       "Apache Struts remote code execution: an OGNL expression in a request (CVE-2017-5638's Content-Type, "
       "a file name, the path, a parameter) or the REST plugin's XStream gadgets (CVE-2017-9805)"),
    _t(1029, "dns_tunneling", S.HIGH, A.DROP,
       "DNS tunneling: names carrying encoded data, many distinct names or TXT/NULL names under one "
       "domain, or many unusual query types from one client",
       # scored by what tunnels look like, not by length: a legitimate name holds one or two generated
       # tokens (a hash, a GUID: 10-64 characters, at most 32 in one label), a tunnel's query fills labels
       # near their 63 bytes or chunks 40-200 characters over several; a browser asks a few dozen names per
       # domain a minute, a mail server the same few DKIM TXT names
       data_chars=100, data_label=48, chunked_data_chars=40, unusual_per_window=60, unique_names_per_window=150, txt_names_per_window=30,
       window=60.0),
    _t(1030, "k8s_extip_mitm", S.HIGH, A.RESET,
       "Kubernetes Service ExternalIP man-in-the-middle (CVE-2020-8554): traffic to a Service "
       "external IP from inside"),
    _t(1031, "xss", S.HIGH, A.RESET,
       "Cross-site scripting in an HTTP request"),
    _t(1032, "port_scan", S.MEDIUM, A.BLOCK_SOURCE,
       "Port scan: one source probing many ports of a host, many hosts (or a ping sweep), or many "
       "probes answered by resets",
       # monitoring (Prometheus) reaches a few hundred targets per scrape interval, not 1000 in 10 s
       ports_per_window=100, hosts_per_window=1000, resets_per_window=50, window=10.0, block_seconds=60),
    _t(1033, "dlp_sensor", S.HIGH, A.ALERT,
       "A DLP/WAF sensor pattern matched (the sensor's own action applies)"),
    _t(1034, "ssh_brute_force", S.HIGH, A.BLOCK_SOURCE,
       "SSH brute force: many new connections from one source to one server's SSH port, or many refused "
       "logins inside its connections, in a window",
       # a password guesser opens a connection per few tries; an operator or an Ansible run without
       # connection sharing opens a few per minute per host, a busy CI far below 30. Refused logins
       # (any port: `workers.dpi.parsers.ssh` finds them): a person mistypes a few times, a guesser
       # tries hundreds a minute
       sessions_per_window=30, failures_per_window=20, window=60.0, port=22, block_seconds=300),
    _t(1035, "http_brute_force", S.HIGH, A.BLOCK_SOURCE,
       "HTTP login brute force: many refused logins from one source to one path (401 to a request with "
       "credentials; 401, 403 or a login failure page answering a POST)",
       # a person mistypes a password a few times; a guesser tries hundreds a minute
       failures_per_window=20, window=60.0, block_seconds=300),
    _t(1036, "udp_flood", S.CRITICAL, A.DROP,
       "UDP flood: new UDP flows (first datagrams of new 5-tuples) to one destination or from one source "
       "above a rate, or one offloaded flow over the kernel's datagram rate (netfilter.udp_flow_rate)",
       # a busy resolver takes a few hundred new client ports a second per node; flood tools send
       # tens of thousands with a new source port each
       flows_per_window=2000, window=1.0),
    _t(1037, "dns_flood", S.HIGH, A.DROP,
       "DNS flood: queries from one client or to one server above a rate, or a random-subdomain "
       "(NXDOMAIN) storm from one client",
       # dnsperf-style load tests and busy clients stay at a few hundred queries/s; a storm of random
       # names makes most answers NXDOMAIN, ordinary clients see a few per cent
       queries_per_window=1000, server_queries_per_window=5000, nxdomain_per_window=100,
       nxdomain_ratio=0.5, window=1.0, nxdomain_window=10.0),
    _t(1038, "http_slow_body", S.HIGH, A.RESET,
       "HTTP slow body (slow POST): a request body not complete within a time budget after its head",
       # uploads move at network speed: even a 10 MB form on a slow link sends data every second;
       # slow-POST tools send a byte every ten seconds
       body_seconds=30, min_bytes_per_second=100),
    _t(1039, "command_injection", S.CRITICAL, A.RESET,
       "OS command injection in an HTTP request value: a shell command separator or substitution followed "
       "by a command an attacker runs"),
    _t(1040, "ldap_injection", S.HIGH, A.RESET,
       "LDAP injection in an HTTP request value: filter syntax that closes the application's filter and "
       "opens one of its own"),
    _t(1041, "http_range_dos", S.HIGH, A.RESET,
       "HTTP Range request asking for more byte ranges than a client needs, or for overlapping ones "
       "(Apache Killer, slowhttptest -R): the server builds and sends a part for each",
       # media players and download managers ask for one range; PDF viewers for a few dozen that never
       # overlap; the attack asks for hundreds, each overlapping the first
       max_ranges=64, max_overlapping=2),
    _t(1042, "tcp_slow_read", S.HIGH, A.RESET,
       "TCP slow read: a client that never offers more than a tiny receive window keeps the server's "
       "data waiting, read a few bytes at a time (slowhttptest -X)",
       # every stack offers tens of kilobytes (Linux 64 KB, lwIP 5.8 KB); a slow reader offers a few
       # hundred bytes and reads a few a second, so the server's data and socket stay held for minutes
       max_window=4096, seconds=20, min_bytes_per_second=100),
    _t(1043, "log4shell", S.CRITICAL, A.RESET,
       "Log4Shell: a JNDI lookup (`${jndi:…}`, also hidden behind Log4j's own lookups) in an HTTP request's "
       "path, headers or body, which a vulnerable Log4j 2 logs and runs (CVE-2021-44228)"),
    _t(1044, "path_traversal", S.HIGH, A.RESET,
       "Path traversal: a request's path that climbs out of the served directory (`/../`, also encoded), "
       "or a query value that climbs far or names a system file (`../../../etc/passwd`, `/etc/passwd`)",
       # browsers and HTTP libraries resolve `..` before sending; a relative link in a value climbs one
       # or two levels, a file-disclosure probe as many as it takes
       min_levels=3),
    _t(1045, "xxe", S.HIGH, A.RESET,
       "XML external entity (XXE): XML in a request that declares an external entity or DTD (a file read, "
       "a URL fetched) or entities that expand without end (billion laughs)"),
    _t(1046, "ssrf", S.HIGH, A.RESET,
       "Server-side request forgery (SSRF): a request value that points the server's own fetch at the "
       "cloud metadata service (169.254.169.254, metadata.google.internal), at an address spelt to pass "
       "a filter (2130706433, 0x7f000001, [::ffff:127.0.0.1]), or through gopher:// or dict://"),
    _t(1047, "crlf_injection", S.MEDIUM, A.RESET,
       "CRLF injection (HTTP response splitting): a line break in a request value followed by a header or "
       "a status line, which an application writing the value into a response header turns into a header "
       "of the attacker's (Set-Cookie, Location) or a second response"),
    _t(1048, "java_deserialization", S.CRITICAL, A.RESET,
       "Java deserialization: a serialized object, XMLDecoder markup or polymorphic JSON in a request that "
       "names a gadget chain's class (Commons Collections, TemplatesImpl, JdbcRowSetImpl, ProcessBuilder), "
       "which a server rebuilding it runs (ysoserial, marshalsec; CVE-2015-7501, CVE-2017-10271)"),
    _t(1049, "spring_rce", S.CRITICAL, A.RESET,
       "Spring remote code execution: a request parameter bound to the class loader (Spring4Shell, "
       "CVE-2022-22965: `class.module.classLoader…`) or a Spring Expression Language type reference to a "
       "class that runs code (`T(java.lang.Runtime)`: Spring Cloud Function's routing-expression header, "
       "CVE-2022-22963; Spring Cloud Gateway's routes, CVE-2022-22947)"),
    _t(1050, "php_object_injection", S.CRITICAL, A.RESET,
       "PHP object injection: a serialized PHP object in a request value or body (`O:8:\"stdClass\":1:{`, "
       "also base64-encoded as phpggc sends it), whose class's magic methods run a gadget chain when the "
       "application unserializes it, or a phar:// path, which makes a file function deserialize an "
       "archive's metadata"),
    _t(1051, "sensitive_file_access", S.MEDIUM, A.RESET,
       "A request for a file a web server must never serve, as scanners probe for them: version-control "
       "metadata (/.git/config), environment and credentials files (/.env, /.aws/credentials, "
       "/.ssh/id_rsa, /.htpasswd), server configuration (/web.config), shell history, editors' backups "
       "of source files (/wp-config.php.bak)"),
    _t(1052, "template_injection", S.CRITICAL, A.RESET,
       "Server-side template injection: a request value that a template engine would evaluate to run code "
       "or probe the engine: arithmetic, Python's dunder walk or a code-running call inside a template "
       "expression (`{{7*7}}`, `{{''.__class__.__mro__}}`, `<%= system('id') %>`), an engine's own gadget "
       "(Freemarker's Execute, Twig's _self.env, Smarty's {php}), a template statement block"),
    _t(1053, "prototype_pollution", S.HIGH, A.RESET,
       "Prototype pollution: a parameter name, JSON key or property path that walks from an object to "
       "Object.prototype (`__proto__[isAdmin]=true`, `{\"__proto__\": {…}}`, `constructor.prototype.x`), "
       "which a Node.js server's deep merge or path setter gives to every object of the process"),
    _t(1054, "insecure_deserialization", S.CRITICAL, A.RESET,
       "Insecure deserialization beyond Java and PHP: a Python pickle that imports os.system or its kin, "
       "a YAML tag that builds a class (!!python/object/apply:, SnakeYAML's Java tags, !ruby/object:), a "
       ".NET type that runs code named to a polymorphic serializer ($type, __type), in XAML or in a "
       "BinaryFormatter stream, a serialized Node.js function (_$$ND_FUNC$$_)"),
    _t(1055, "webshell_upload", S.CRITICAL, A.RESET,
       "A web shell uploaded: a multipart file part, or a body sent to a script's path (WebDAV PUT), holding "
       "server-side code that runs what a request sends it (PHP's system($_GET[…]), JSP's Runtime.exec("
       "request.getParameter(…)), ASP's eval(Request(…))), a script under a script's name (shell.php, "
       "shell.php.jpg) or an .htaccess that makes files run as scripts"),
    _t(1056, "jwt_forgery", S.HIGH, A.RESET,
       "A forged JSON Web Token: a token in a header, cookie or value whose header names no algorithm "
       "(alg none), names one but comes without a signature, carries a key id that injects (../, SQL, "
       "shell) or carries its own key (jwk, outside a DPoP proof)"),
    _t(1057, "scanner_detected", S.MEDIUM, A.ALERT,
       "A request from a known attack tool or vulnerability scanner, by its default User-Agent (nikto, "
       "sqlmap, nmap's scripts, nuclei, wpscan, gobuster, ffuf, hydra, Acunetix, Nessus, …) or a header of "
       "its own: the first request of a scan names its tool, before its probes are found"),
    _t(1058, "http2_rapid_reset", S.HIGH, A.RESET,
       "HTTP/2 rapid reset (CVE-2023-44487): a cleartext HTTP/2 client that opens streams and cancels them "
       "at once (100 RST_STREAM frames on one connection, at least half of the streams it opened), making "
       "the server start work it never finishes"),
    _t(1059, "http2_control_flood", S.HIGH, A.RESET,
       "HTTP/2 control-frame flood: a cleartext HTTP/2 client that sends PING, SETTINGS, PRIORITY or empty "
       "frames faster than any client needs (CVE-2019-9512, -9515, -9518), or spreads one header block over "
       "100 CONTINUATION frames (the 2024 CONTINUATION flood): the server answers or holds each",
       # a client sends a SETTINGS or two per connection and a PING every 10 s at most (gRPC's keep-alive)
       frames_per_window=1000, window=10.0),
)  # fmt: skip

BY_NAME: Mapping[str, Threat] = MappingProxyType({t.name: t for t in THREATS})
BY_ID: Mapping[int, Threat] = MappingProxyType({t.id: t for t in THREATS})


def validate_catalogue(threats: tuple[Threat, ...] = THREATS) -> None:
    """Raise ValueError if ids or names repeat, ids are not ascending, or a name is not lowercase."""
    seen_ids: set[int] = set()
    seen_names: set[str] = set()
    last = 0
    for t in threats:
        if t.id in seen_ids or t.name in seen_names:
            raise ValueError(f"threat {t.name!r} (id {t.id}) repeats an id or name")
        if t.id <= last:
            raise ValueError(f"threat {t.name!r}: ids must ascend (id {t.id} after {last})")
        if t.name != t.name.lower() or not t.name.replace("_", "").isalnum():
            raise ValueError(f"threat name {t.name!r} must be lowercase letters, digits and underscores")
        for key, value in t.thresholds.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"threat {t.name!r}: threshold {key!r} must be a non-negative number")
        seen_ids.add(t.id)
        seen_names.add(t.name)
        last = t.id


validate_catalogue()

# Names as constants, so a detector refers to `SYN_FLOOD` and a typo is an import error.
SYN_FLOOD = BY_NAME["syn_flood"]
ICMP_FLOOD = BY_NAME["icmp_flood"]
SOURCE_SESSION_FLOOD = BY_NAME["source_session_flood"]
BAD_PACKET = BY_NAME["bad_packet"]
IP_TEARDROP = BY_NAME["ip_teardrop"]
TCP_SYN_DATA = BY_NAME["tcp_syn_data"]
TCP_SPLIT_HANDSHAKE = BY_NAME["tcp_split_handshake"]
TCP_NO_DATA = BY_NAME["tcp_no_data"]
TCP_SMALL_WINDOW = BY_NAME["tcp_small_window"]
TCP_SMALL_MSS = BY_NAME["tcp_small_mss"]
PING_OF_DEATH = BY_NAME["ping_of_death"]
DNS_POINTER_LOOP = BY_NAME["dns_pointer_loop"]
SSH_V1 = BY_NAME["ssh_v1"]
HEARTBLEED = BY_NAME["heartbleed"]
SSL_CIPHER_OVERFLOW = BY_NAME["ssl_cipher_overflow"]
SSL_V2_V3 = BY_NAME["ssl_v2_v3"]
TLS_1_0 = BY_NAME["tls_1_0"]
TLS_1_1 = BY_NAME["tls_1_1"]
HTTP_NEGATIVE_LENGTH = BY_NAME["http_negative_length"]
HTTP_SMUGGLING = BY_NAME["http_smuggling"]
HTTP_SLOWLORIS = BY_NAME["http_slowloris"]
DNS_OVERFLOW = BY_NAME["dns_overflow"]
MYSQL_ACCESS_DENIED = BY_NAME["mysql_access_denied"]
DNS_ZONE_TRANSFER = BY_NAME["dns_zone_transfer"]
ICMP_TUNNELING = BY_NAME["icmp_tunneling"]
DNS_NULL_TYPE = BY_NAME["dns_null_type"]
SQL_INJECTION = BY_NAME["sql_injection"]
STRUTS_RCE = BY_NAME["struts_rce"]
DNS_TUNNELING = BY_NAME["dns_tunneling"]
K8S_EXTIP_MITM = BY_NAME["k8s_extip_mitm"]
XSS = BY_NAME["xss"]
PORT_SCAN = BY_NAME["port_scan"]
DLP_SENSOR = BY_NAME["dlp_sensor"]
SSH_BRUTE_FORCE = BY_NAME["ssh_brute_force"]
HTTP_BRUTE_FORCE = BY_NAME["http_brute_force"]
UDP_FLOOD = BY_NAME["udp_flood"]
DNS_FLOOD = BY_NAME["dns_flood"]
HTTP_SLOW_BODY = BY_NAME["http_slow_body"]
COMMAND_INJECTION = BY_NAME["command_injection"]
LDAP_INJECTION = BY_NAME["ldap_injection"]
HTTP_RANGE_DOS = BY_NAME["http_range_dos"]
TCP_SLOW_READ = BY_NAME["tcp_slow_read"]
LOG4SHELL = BY_NAME["log4shell"]
PATH_TRAVERSAL = BY_NAME["path_traversal"]
XXE = BY_NAME["xxe"]
SSRF = BY_NAME["ssrf"]
CRLF_INJECTION = BY_NAME["crlf_injection"]
JAVA_DESERIALIZATION = BY_NAME["java_deserialization"]
SPRING_RCE = BY_NAME["spring_rce"]
PHP_OBJECT_INJECTION = BY_NAME["php_object_injection"]
SENSITIVE_FILE_ACCESS = BY_NAME["sensitive_file_access"]
TEMPLATE_INJECTION = BY_NAME["template_injection"]
PROTOTYPE_POLLUTION = BY_NAME["prototype_pollution"]
INSECURE_DESERIALIZATION = BY_NAME["insecure_deserialization"]
WEBSHELL_UPLOAD = BY_NAME["webshell_upload"]
JWT_FORGERY = BY_NAME["jwt_forgery"]
SCANNER_DETECTED = BY_NAME["scanner_detected"]
HTTP2_RAPID_RESET = BY_NAME["http2_rapid_reset"]
HTTP2_CONTROL_FLOOD = BY_NAME["http2_control_flood"]


class Finding(NamedTuple):
    """One detection: what fired, on which flow, with what evidence. Immutable and cheap to build.

    `flow` is None for findings about a source or destination rather than one connection (a flood);
    then `src`/`dst` name the addresses. `excerpt` is a bounded slice of the offending bytes (the event
    builder bounds it again); `detail` is a short human-readable reason (no sensitive values).
    """

    threat: Threat
    flow: FlowKey | None
    direction: Direction | None
    src: bytes
    dst: bytes
    sport: int
    dport: int
    proto: int
    detail: str
    excerpt: bytes = b""
    sensor: str = ""  # for a DLP/WAF sensor finding: the sensor's name


# Bound on the excerpt a detector copies into a finding.
MAX_FINDING_EXCERPT = 128


class Hit(NamedTuple):
    """What an application detector returns for one value: the engine adds the flow to make a Finding."""

    threat: Threat
    detail: str
    excerpt: bytes = b""
    # DLP/WAF sensor hits name the sensor and rule and carry the sensor's own block/alert choice.
    sensor: str = ""
    rule: str = ""
    block: bool = False


def excerpt_of(value: str | bytes, limit: int = MAX_FINDING_EXCERPT) -> bytes:
    """A bounded excerpt of a value as bytes."""
    if isinstance(value, str):
        value = value[:limit].encode("utf-8", "replace")
    return bytes(value[:limit])
