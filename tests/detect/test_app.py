"""Application detectors on plain values: HTTP, DNS, TLS/SSH, MySQL. Each fires and stays quiet."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from threats import catalogue as C
from threats.settings import DEFAULT_SETTINGS, compile_threat_settings
from workers.detect.database import AccessDeniedTracker, check_query, mysql_error_code
from workers.detect.dns import DnsDetector, check_message, label_entropy
from workers.detect.http import SlowlorisTracker, check_headers, check_ognl, check_range, check_struts_body
from workers.detect.tls import check_records, check_ssh_banner, hello_version


def names(hits: list[C.Hit]) -> set[str]:
    return {h.threat.name for h in hits}


# -- HTTP -------------------------------------------------------------------------------------------------

BENIGN_HEADERS = [
    [(b"Host", b"a"), (b"Content-Length", b"12")],
    [(b"Host", b"a"), (b"Transfer-Encoding", b"chunked")],
    [(b"Transfer-Encoding", b"gzip, chunked")],
    [(b"Transfer-Encoding", b"Chunked")],
    [(b"Content-Length", b"0"), (b"content-length", b"0")],  # repeated, same value: allowed by RFC 9110
    [(b"Content-Length", b"5, 5")],
    [(b"Host", b"x"), (b"User-Agent", b"curl/8.5")],
]


@pytest.mark.parametrize("headers", BENIGN_HEADERS)
def test_benign_headers(headers: list[tuple[bytes, bytes]]) -> None:
    assert check_headers(headers) == []


@pytest.mark.parametrize(
    ("headers", "threat", "detail"),
    [
        ([(b"Content-Length", b"-1")], "http_negative_length", "negative"),
        ([(b"Content-Length", b"5"), (b"Content-Length", b"6")], "http_smuggling", "conflicting"),
        ([(b"Content-Length", b"5, 6")], "http_smuggling", "conflicting"),
        ([(b"Content-Length", b"5"), (b"Transfer-Encoding", b"chunked")], "http_smuggling", "with Transfer"),
        ([(b"Transfer-Encoding", b"xchunked")], "http_smuggling", "obfuscated"),
        ([(b"Transfer-Encoding", b"chunked, identity")], "http_smuggling", "obfuscated"),
        ([(b"Transfer-Encoding", b"\x0bchunked")], "http_smuggling", "obfuscated"),
        ([(b"Transfer-Encoding ", b"chunked")], "http_smuggling", "padded"),
        (
            [(b"Transfer-Encoding", b"chunked"), (b"Transfer-Encoding", b"identity")],
            "http_smuggling",
            "several",
        ),
        ([(b"Content-Length", b"0x10")], "http_smuggling", "not a number"),
    ],
)
def test_smuggling_and_negative_length(headers: list[tuple[bytes, bytes]], threat: str, detail: str) -> None:
    hits = check_headers(headers)
    assert threat in names(hits)
    assert any(detail in h.detail for h in hits if h.threat.name == threat)


STRUTS_BODY = b"".join(
    [
        b"<map>",
        b"<entry>",
        b"<jdk.nashorn.internal.objects.NativeString>",
        b"<flags>0</flags>",
        b'<value class="com.sun.xml.internal.bind.v2.runtime.unmarshaller.Base64Data">',
        b"<dataHandler>",
        b'<dataSource class="com.sun.xml.internal.ws.encoding.xml.XMLMessage$XmlDataSource">',
        b'<is class="javax.crypto.CipherInputStream">',
        b'<cipher class="javax.crypto.NullCipher">',
        b'<iterator class="javax.imageio.spi.FilterIterator">',
        b'<iter class="javax.imageio.spi.FilterIterator$1"/>',
        b'<filter class="javax.imageio.ImageIO$ContainsFilter">',
        b"<method>",
        b"<class>java.lang.ProcessBuilder</class>",
        b"<name>start</name>",
        b"</method>",
        b"</filter>",
        b"</iterator>",
        b"</cipher>",
        b"</is>",
        b"</dataSource>",
        b"</dataHandler>",
        b"</value>",
        b"</jdk.nashorn.internal.objects.NativeString>",
        b"</entry>",
        b"</map>",
    ]
)


def test_struts_rce_body() -> None:
    hit = check_struts_body(STRUTS_BODY, "application/xml")
    assert hit is not None and hit.threat is C.STRUTS_RCE
    assert (
        check_struts_body(b"<order><item>book</item><note>java.lang.ProcessBuilder docs</note></order>")
        is None
    )
    assert check_struts_body(b'{"map": "entry java.lang.ProcessBuilder"}', "application/json") is None


@pytest.mark.parametrize(
    "text",
    [
        # CVE-2017-5638's Content-Type, a scanner's probe of it (written here after its published shape)
        b"%{#context['com.opensymphony.xwork2.dispatcher.HttpServletResponse'].addHeader('X-T','1')}"
        b".multipart/form-data",
        b"%{(#_='multipart/form-data').(#dm=@ognl.OgnlContext@DEFAULT_MEMBER_ACCESS)}",
        b"${(#_memberAccess['allowStaticMethodAccess']=true).(@java.lang.Runtime@getRuntime().exec('id'))}",
        b"/app/${(#a=@java.lang.Runtime@getRuntime())}/actionChain1.action",  # S2-057, a namespace
        b"method:#_memberAccess=@ognl.OgnlContext@DEFAULT_MEMBER_ACCESS,#a=1",  # S2-032
        b"%{@java.lang.System@getProperty('user.dir')}",
    ],
)
def test_ognl_from_a_request_is_struts_rce(text: bytes) -> None:
    hit = check_ognl([b"/", text])
    assert hit is not None and hit.threat is C.STRUTS_RCE


@pytest.mark.parametrize(
    "text",
    [
        b"multipart/form-data; boundary=----x",
        b"Hello ${user.name}, you have %{count} items",  # templates: no `#` variable, no `@class@`
        b"mail me at a@example.com #42",
        b"${HOME}/bin and %{ENV:PATH}",
        b"color: #ff0000; @media print",
        b'for ((i=0; i<${#arr[@]}; i++)); do echo "${#name} ${arr[@]}"; done',  # bash lengths
    ],
)
def test_templates_mail_and_css_are_no_ognl(text: bytes) -> None:
    assert check_ognl([text]) is None


def apache_killer(ranges: int) -> bytes:
    """The Range header of slowhttptest -R (and of the 2011 Apache Killer): `bytes=0-,5-0,5-1,…`."""
    return b"bytes=0-," + b",".join(b"5-%d" % i for i in range(ranges - 1))


@pytest.mark.parametrize(
    "value",
    [
        b"bytes=0-",  # a media player, a resumed download
        b"bytes=1048576-2097151",
        b"bytes=-500",
        b"bytes=0-99, 200-299, 400-499",  # a PDF viewer's byte serving
        b",".join(b"%d-%d" % (i * 1000, i * 1000 + 99) for i in range(64)).join((b"bytes=", b"")),
        b"bytes=0-499, 400-999, -200",  # one overlap (a retried chunk), a suffix range
        b"items=0-1000,0-1000,0-1000",  # not bytes: not a byte range the server builds
    ],
)
def test_ordinary_range_requests_are_no_range_dos(value: bytes) -> None:
    assert check_range([(b"Host", b"a"), (b"Range", value)], DEFAULT_SETTINGS) is None


def test_range_requests_with_too_many_or_overlapping_ranges() -> None:
    hit = check_range([(b"range", apache_killer(1300))], DEFAULT_SETTINGS)
    assert hit is not None and hit.threat is C.HTTP_RANGE_DOS and hit.detail == "1300 ranges"
    hit = check_range([(b"Range", b"bytes=0-,5-0,5-1,5-2")], DEFAULT_SETTINGS)  # few, but overlapping
    assert hit is not None and hit.detail == "3 overlapping ranges of 4"
    many = b"bytes=" + b",".join(b"%d-%d" % (i * 10, i * 10 + 1) for i in range(65))
    assert check_range([(b"Range", many)], DEFAULT_SETTINGS) is not None  # 65 disjoint ranges
    hit = check_range([(b"Range", b"bytes=0-18446744073709551615")], DEFAULT_SETTINGS)  # MS15-034's probe
    assert hit is not None and "MS15-034" in hit.detail
    assert check_range([(b"Range", b"bytes=18-18446744073709551615")], DEFAULT_SETTINGS) is not None
    assert check_range([(b"Range", b"bytes=0-9223372036854775806")], DEFAULT_SETTINGS) is None  # 2^63 - 2
    tight = compile_threat_settings({"http_range_dos": {"max_ranges": 2}})
    assert check_range([(b"Range", b"bytes=0-9,20-29,40-49")], tight) is not None


def test_slowloris() -> None:
    tracker = SlowlorisTracker(capacity=4)
    tracker.headers_started("slow", 100.0)
    tracker.headers_started("fast", 100.0)
    assert tracker.check("slow", 110.0, DEFAULT_SETTINGS) is None
    tracker.headers_done("fast")
    hit = tracker.check("slow", 121.0, DEFAULT_SETTINGS)
    assert hit is not None and hit.threat is C.HTTP_SLOWLORIS
    assert tracker.check("slow", 122.0, DEFAULT_SETTINGS) is None  # once per request
    assert tracker.check("fast", 200.0, DEFAULT_SETTINGS) is None
    tracker.headers_started("silent", 200.0)
    swept = tracker.sweep(230.0, lambda key: DEFAULT_SETTINGS)
    assert [k for k, _ in swept] == ["silent"]
    tight = compile_threat_settings({"http_slowloris": {"header_seconds": 2}})
    tracker.headers_started("quick", 300.0)
    assert tracker.check("quick", 303.0, tight) is not None


def test_slowloris_tracker_is_bounded() -> None:
    tracker = SlowlorisTracker(capacity=4)
    for i in range(10):
        tracker.headers_started(i, 0.0)
    assert len(tracker) == 4


# -- DNS --------------------------------------------------------------------------------------------------


def qname(name: str) -> bytes:
    return b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p) + b"\x00"


def dns_query(name: str, qtype: int = 1, ident: int = 1) -> bytes:
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + qname(name) + struct.pack("!HH", qtype, 1)


def dns_response(name: str, answers: int, rdata: bytes = b"\x01\x02\x03\x04", edns: int = 0) -> bytes:
    head = struct.pack("!HHHHHH", 1, 0x8180, 1, answers, 0, 1 if edns else 0)
    body = qname(name) + struct.pack("!HH", 1, 1)
    for _ in range(answers):
        body += b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, len(rdata)) + rdata
    if edns:
        body += b"\x00" + struct.pack("!HHIH", 41, edns, 0, 0)
    return head + body


def test_benign_dns_messages() -> None:
    for name in (
        "www.example.com",
        "this-is-a-rather-long-but-legitimate-hostname.example.com",
        "internal-my-elb-1234567890.us-east-1.elb.amazonaws.com",
        "_sip._tcp.example.com",
        "1.0.168.192.in-addr.arpa",
        "d1a2b3c4d5e6f7.cloudfront.net",
        "e3b0c44298fc1c149afbf4c8996fb924.27ae41e4649b934ca495991b7852b855.example.com",
    ):
        assert check_message(dns_query(name), False, DEFAULT_SETTINGS) == [], name
    assert check_message(dns_response("www.example.com", 5), False, DEFAULT_SETTINGS) == []
    big_edns = dns_response("www.example.com", 60, edns=4096)
    assert len(big_edns) > 512 and check_message(big_edns, False, DEFAULT_SETTINGS) == []
    assert check_message(dns_query("example.com", 16), False, DEFAULT_SETTINGS) == []  # one TXT is fine


def test_dns_pointer_loop() -> None:
    head = struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 0)
    self_loop = head + b"\xc0\x0c" + b"\x00\x01\x00\x01"
    label_then_self = head + b"\x01a\xc0\x0e" + b"\x00\x01\x00\x01"  # label 'a', then a pointer to itself
    two_hop = head + b"\xc0\x0e\xc0\x0c" + b"\x00\x01\x00\x01"  # 12 -> 14 -> 12
    for msg in (self_loop, label_then_self, two_hop):
        assert names(check_message(msg, False, DEFAULT_SETTINGS)) == {"dns_pointer_loop"}


def test_dns_overflow() -> None:
    oversize = dns_response("www.example.com", 60)  # > 512 bytes over UDP without EDNS
    assert names(check_message(oversize, False, DEFAULT_SETTINGS)) == {"dns_overflow"}
    assert check_message(oversize, True, DEFAULT_SETTINGS) == []  # TCP may carry it
    long_label = struct.pack("!HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\x50" + b"a" * 80 + b"\x00\x00\x01\x00\x01"
    assert names(check_message(long_label, False, DEFAULT_SETTINGS)) == {"dns_overflow"}
    long_name = dns_query(".".join(["abcdefghij"] * 30))
    assert names(check_message(long_name, False, DEFAULT_SETTINGS)) == {"dns_overflow"}
    past_end = dns_response("a.example", 1)[:-2]
    assert names(check_message(past_end, False, DEFAULT_SETTINGS)) == {"dns_overflow"}


def test_dns_zone_transfer_and_null() -> None:
    assert [h.detail for h in check_message(dns_query("example.com", 252), True, DEFAULT_SETTINGS)] == [
        "AXFR"
    ]
    assert [h.detail for h in check_message(dns_query("example.com", 251), True, DEFAULT_SETTINGS)] == [
        "IXFR"
    ]
    assert names(check_message(dns_query("t.example.com", 10), False, DEFAULT_SETTINGS)) == {"dns_null_type"}


# Long legitimate names as clouds, CDNs, mail and Kubernetes make them (written for these tests).
LEGIT_LONG_NAMES = (
    "internal-k8s-default-myingres-2f8b1d3c6a-1234567890.us-west-2.elb.amazonaws.com",  # AWS ALB
    "dualstack.my-public-nlb-0a1b2c3d4e5f6a7b.elb.eu-central-1.amazonaws.com",  # AWS NLB
    "mydb-instance-1.c9akciq32xyz.us-east-1.rds.amazonaws.com",  # AWS RDS
    "ec2-54-213-17-102.us-west-2.compute.amazonaws.com",
    "myendpoint-a1b2c3d4e5f6g7h8.z01.azurefd.net",  # Azure Front Door
    "5c2a9f1e-3b7d-4e8a-9c6f-2d1b0a3e4f5c.cloudapp.azure.com",  # Azure by GUID
    "mystorageaccount2024prod.blob.core.windows.net",
    "orders-api-prod-westeurope-001.azurewebsites.net",
    "d111111abcdef8.cloudfront.net",  # CloudFront
    "e12345.dscx.akamaiedge.net",  # Akamai
    "www.shop.example.com.edgekey.net",
    "r3---sn-4g5e6nsz.googlevideo.com",
    "4yxkd6gqmb2cw7ixjmhvejs3wvfxemtd._domainkey.example.com",  # SES DKIM (TXT)
    "20230601._domainkey.gmail.com",
    "_acme-challenge.checkout.shop.example.com",  # ACME DNS-01 (TXT)
    "_xmpp-server._tcp.chat.example.org",  # SRV
    "e3b0c44298fc1c149afbf4c8996fb924.27ae41e4649b934ca495991b7852b855.example.com",
    "c93f1e400f26708f98cb19d936620da35eec8f72e57f9eec01c1afd6._openpgpkey.example.com",  # RFC 7929
    "payments-reconciliation-worker-headless.finance-production.svc.cluster.local",
    "web-0.nginx-headless.default.svc.cluster.local",
    "10-244-3-17.kube-system.pod.cluster.local",
    "a-rather-long-but-perfectly-legitimate-hostname-for-the-tests.example.com",
)
_B32 = "abcdefghijklmnopqrstuvwxyz012345"  # iodine's base32 alphabet


def iodine_name(rng: random.Random, domain: str = "t.example.com") -> str:
    """An iodine-style upstream query: a command letter, then base32 data in labels of up to 63."""
    data = "p" + "".join(rng.choice(_B32) for _ in range(rng.randint(100, 180)))
    return ".".join(data[i : i + 63] for i in range(0, len(data), 63)) + "." + domain


def dnscat2_name(rng: random.Random, chunk: int = 63, domain: str = "c2.example.net") -> str:
    """A dnscat2-style query: a hex-encoded packet (session id, sequence numbers, data) in labels."""
    data = rng.randbytes(rng.randint(24, 100)).hex()
    return ".".join(data[i : i + chunk] for i in range(0, len(data), chunk)) + "." + domain


def test_long_legitimate_names_are_not_tunneling() -> None:
    det = DnsDetector()
    for i, name in enumerate(LEGIT_LONG_NAMES):
        for qtype in (1, 28, 16, 33, 5):
            assert check_message(dns_query(name, qtype), False, DEFAULT_SETTINGS) == [], name
            assert det.inspect(dns_query(name, qtype), b"\xc6\x12\x01\x01", False, i, DEFAULT_SETTINGS) == []


def test_tunnel_names_are_tunneling() -> None:
    rng = random.Random(7)
    for _ in range(50):
        for name in (iodine_name(rng), dnscat2_name(rng), dnscat2_name(rng, chunk=20)):
            hits = check_message(dns_query(name, 16), False, DEFAULT_SETTINGS)
            assert names(hits) == {"dns_tunneling"}, name
            assert "characters of encoded data" in hits[0].detail
    b32 = "mfrggzdfmztwq2lk.nnwg23tpobyxe43u.ovrhk6dzpjqwe.ylfrggzdf.t.example.com"  # chunked small
    assert "in 4 labels" in check_message(dns_query(b32), False, DEFAULT_SETTINGS)[0].detail
    assert label_entropy(b"aaaa") == 0.0


def test_a_tunnel_hiding_behind_protocol_labels_meets_the_distinct_txt_names_check() -> None:
    det = DnsDetector()
    rng = random.Random(3)
    client, mail = b"\xc6\x12\x00\x09", b"\xc6\x12\x00\x0a"
    hits = [
        h
        for i in range(40)
        for h in det.inspect(
            dns_query(f"{rng.randbytes(12).hex()}._domainkey.evil.example", 16), client, False, i * 0.5,
            DEFAULT_SETTINGS,
        )
    ]  # fmt: skip
    assert len(hits) == 10 and "distinct TXT/NULL names under evil.example" in hits[0].detail
    # a mail server checks the same few DKIM keys all day
    selectors = ("google", "s1", "s2", "20230601", "4yxkd6gqmb2cw7ixjmhvejs3wvfxemtd")
    mail_hits = [
        h
        for i in range(500)
        for h in det.inspect(
            dns_query(f"{selectors[i % 5]}._domainkey.example.com", 16),
            mail,
            False,
            i * 0.1,
            DEFAULT_SETTINGS,
        )
    ]
    assert mail_hits == []


def test_dns_tunneling_volume_of_unusual_types_per_client() -> None:
    det = DnsDetector()
    settings_ = compile_threat_settings({"dns_tunneling": {"unusual_per_window": 5}})
    client, other = b"\xc6\x12\x00\x01", b"\xc6\x12\x00\x02"
    hits = [
        h
        for i in range(8)
        for h in det.inspect(dns_query(f"q{i}.example.com", 13), client, False, 1.0 + i, settings_)
    ]
    assert len(hits) == 3 and all(h.threat is C.DNS_TUNNELING for h in hits)
    assert det.inspect(dns_query("a.example.com", 13), other, False, 10.0, settings_) == []
    common = [
        h
        for i in range(50)
        for h in det.inspect(dns_query(f"w{i}.example.com", 28), other, False, 11.0, settings_)
    ]
    assert common == []


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.booleans())
def test_dns_check_is_total(msg: bytes, tcp: bool) -> None:
    for hit in check_message(msg, tcp, DEFAULT_SETTINGS):
        assert hit.threat.name.startswith("dns_")


# -- TLS / SSH ----------------------------------------------------------------------------------------------


def record(ctype: int, body: bytes, version: int = 0x0303) -> bytes:
    return struct.pack("!BHH", ctype, version, len(body)) + body


def hello(hs_type: int, version: int, supported: list[int] | None = None) -> bytes:
    body = struct.pack("!H", version) + b"r" * 32 + b"\x00"
    if hs_type == 1:
        body += b"\x00\x02\x13\x01" + b"\x01\x00"
    else:
        body += b"\x13\x01\x00"
    exts = b""
    if supported is not None:
        if hs_type == 1:
            data = bytes([2 * len(supported)]) + b"".join(struct.pack("!H", v) for v in supported)
        else:
            data = struct.pack("!H", supported[0])
        exts = struct.pack("!HH", 43, len(data)) + data
    body += struct.pack("!H", len(exts)) + exts
    return record(22, bytes([hs_type]) + len(body).to_bytes(3, "big") + body)


def test_tls_versions() -> None:
    assert check_records(hello(1, 0x0303, [0x0304, 0x0303, 0x1A1A])) == []
    assert check_records(hello(2, 0x0303, [0x0304])) == []
    assert check_records(hello(2, 0x0303)) == []
    assert names(check_records(hello(2, 0x0300))) == {"ssl_v2_v3"}
    assert names(check_records(hello(1, 0x0300))) == {"ssl_v2_v3"}
    assert names(check_records(hello(2, 0x0301))) == {"tls_1_0"}
    assert names(check_records(hello(2, 0x0302))) == {"tls_1_1"}
    assert check_records(hello(1, 0x0301)) == []  # a client offering 1.0 is judged by the server's answer
    assert hello_version(hello(1, 0x0303, [0x0304])[5:]) == (1, 0x0304)


def test_tls_1_0_is_off_by_default() -> None:
    assert not DEFAULT_SETTINGS.enabled(C.TLS_1_0) and not DEFAULT_SETTINGS.enabled(C.TLS_1_1)
    assert DEFAULT_SETTINGS.enabled(C.SSL_V2_V3)


def test_heartbleed() -> None:
    evil = record(24, b"\x01\x40\x00" + b"x" * 16, 0x0302)  # claims 16384 bytes
    assert names(check_records(evil)) == {"heartbleed"}
    fine = record(24, b"\x01\x00\x04" + b"ping" + b"p" * 16)
    assert check_records(fine) == []
    assert check_records(evil, encrypted=True) == []  # ciphertext cannot be judged


def sslv2_client_hello(version: int, ciphers: int, sid: int, chal: int, actual: int) -> bytes:
    body = b"\x01" + struct.pack("!HHHH", version, ciphers, sid, chal) + b"c" * actual
    return bytes([0x80 | (len(body) >> 8), len(body) & 0xFF]) + body


def test_sslv2_hello_and_overflow() -> None:
    assert names(check_records(sslv2_client_hello(0x0002, 3, 0, 16, 19))) == {"ssl_v2_v3"}
    over = check_records(sslv2_client_hello(0x0301, 300, 0, 16, 19))
    assert names(over) == {"ssl_cipher_overflow"}
    assert check_records(sslv2_client_hello(0x0301, 3, 0, 16, 19)) == []  # v2-format hello offering TLS 1.0
    master = b"\x02" + b"\x07\x00\xc0" + struct.pack("!HHH", 0, 8, 64) + b"k" * 72
    rec = bytes([0x80 | (len(master) >> 8), len(master) & 0xFF]) + master
    assert names(check_records(rec)) == {"ssl_cipher_overflow"}


def test_ssh_banner() -> None:
    assert check_ssh_banner(b"SSH-1.5-OpenSSH_1.2.3\r\n") is not None
    assert check_ssh_banner(b"SSH-1.99-OpenSSH_3.9\r\n") is None
    assert check_ssh_banner(b"SSH-2.0-OpenSSH_9.6\r\n") is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400), st.booleans())
def test_tls_check_is_total(data: bytes, encrypted: bool) -> None:
    for hit in check_records(data, encrypted):
        assert hit.threat in (C.HEARTBLEED, C.SSL_V2_V3, C.SSL_CIPHER_OVERFLOW, C.TLS_1_0, C.TLS_1_1), (
            hit.threat.name
        )
    banner = check_ssh_banner(data)
    # only a protocol-1 identification line is reported, whatever follows it
    assert (banner is not None) == (data.startswith(b"SSH-1.") and not data.startswith(b"SSH-1.99-"))


# -- MySQL ------------------------------------------------------------------------------------------------


def test_mysql_access_denied_burst() -> None:
    tracker = AccessDeniedTracker()
    err = b"\xff\x15\x04#28000Access denied for user 'root'@'198.18.0.1'"
    assert mysql_error_code(err) == 1045 and mysql_error_code(b"\x00\x00") == 0
    client = b"\xc6\x12\x00\x01"
    hits = [tracker.on_error(client, mysql_error_code(err), 100.0 + i, DEFAULT_SETTINGS) for i in range(12)]
    assert hits[:9] == [None] * 9 and all(
        h is not None and h.threat is C.MYSQL_ACCESS_DENIED for h in hits[9:]
    )
    slow = AccessDeniedTracker()
    assert all(slow.on_error(client, 1045, i * 61.0, DEFAULT_SETTINGS) is None for i in range(20))
    assert all(tracker.on_error(b"other", 1146, 100.0, DEFAULT_SETTINGS) is None for _ in range(20))


def test_database_query_check() -> None:
    hit = check_query("SELECT * FROM users WHERE id=1 OR 1=1")
    assert hit is not None and hit.threat is C.SQL_INJECTION
    assert check_query("SELECT * FROM users WHERE id = 1") is None


def test_dns_tunneling_many_distinct_names_under_one_domain() -> None:
    from workers.detect.dns import registered_domain

    det = DnsDetector()
    client = b"\xc6\x12\x00\x05"
    # dnscat2-style: short hex chunks in ever-new names, over an ordinary query type
    hits = [
        h
        for i in range(160)
        for h in det.inspect(
            dns_query(f"{i:08x}a1b2.{i % 7:02x}.tunnel.example.co.uk", 5),
            client,
            False,
            1.0 + i * 0.1,
            DEFAULT_SETTINGS,
        )
    ]
    assert len(hits) == 10 and "distinct names under example.co.uk" in hits[0].detail  # names 151..160
    browser = [
        h
        for i in range(120)
        for h in det.inspect(
            dns_query(f"host{i % 40}.cdn.example.com", 1), client, False, 1.0 + i * 0.1, DEFAULT_SETTINGS
        )
    ]
    assert browser == []
    assert registered_domain([b"a", b"b", b"example", b"com"]) == b"example.com"
    assert registered_domain([b"www", b"BBC", b"co", b"uk"]) == b"bbc.co.uk"


# -- the classes of issue 12: brute force, UDP and DNS floods, slow bodies, encrypted Heartbleed,
# -- desync forms, compression abuse ---------------------------------------------------------------------


class _Findings:
    """A `threats.attempts.Reporter` that keeps the names it is told (and drops when asked to)."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def report(self, threat: C.Threat, ctx: object, detail: str) -> bool:
        self.names.append(threat.name)
        return True

    def block_source(self, src: bytes, seconds: float, now: float) -> None:
        pass


def _first_packets(bufs: list[tuple[float, bytes]], settings_doc: dict | None = None) -> list[str]:
    from threats.attempts import ConnectionAttempts
    from threats.context import PacketContext

    from .build import packet

    settings_ = compile_threat_settings(settings_doc) if settings_doc else DEFAULT_SETTINGS
    attempts, out = ConnectionAttempts(), _Findings()
    for now, buf in bufs:
        meta, raw, key, _direction = packet(buf)
        attempts.first_packet(PacketContext(meta, raw, key, None, now, settings_), out)
    return out.names


def test_ssh_brute_force_counts_new_connections_to_the_ssh_port() -> None:
    from core.packet import TCP_SYN

    from .build import CLIENT, SERVER, tcp4

    guesser = [(100.0 + i, tcp4(CLIENT, 40000 + i, SERVER, 22, TCP_SYN)) for i in range(35)]
    assert _first_packets(guesser) == ["ssh_brute_force"] * 5  # connections 31..35 within 60 s
    # the same pace to a web port is no brute force, and an operator's few sessions a minute neither
    web = [(100.0 + i, tcp4(CLIENT, 40000 + i, SERVER, 443, TCP_SYN)) for i in range(35)]
    operator = [(100.0 + i * 10, tcp4(CLIENT, 41000 + i, SERVER, 22, TCP_SYN)) for i in range(35)]
    assert _first_packets(web) == [] and _first_packets(operator) == []
    # the port is a threshold: sshd on 2222
    moved = [(100.0 + i, tcp4(CLIENT, 40000 + i, SERVER, 2222, TCP_SYN)) for i in range(35)]
    assert _first_packets(moved, {"ssh_brute_force": {"port": 2222}}) == ["ssh_brute_force"] * 5


def test_udp_flood_counts_new_flows_per_source_and_destination() -> None:
    from .build import CLIENT, SERVER, ipv4, udp

    # hping3 --udp: the source port counts up, so every datagram opens a flow; 2500 in half a second
    flood = [(100.0 + i * 0.0002, ipv4(CLIENT, SERVER, 17, udp(1024 + i, 9, b"x" * 8))) for i in range(2500)]
    assert _first_packets(flood) == ["udp_flood"] * 500
    # many sources, one destination (forged sources): the destination's count
    forged = [
        (100.0 + i * 0.0002, ipv4(f"198.18.{i % 200}.{i // 200 + 1}", SERVER, 17, udp(5000, 9, b"x")))
        for i in range(2100)
    ]
    assert _first_packets(forged) == ["udp_flood"] * 100
    # a resolver's clients at a few hundred new ports a second
    lookups = [(100.0 + i * 0.003, ipv4(CLIENT, SERVER, 17, udp(20000 + i, 53, b"q"))) for i in range(3000)]
    assert _first_packets(lookups) == []


def _nxdomain(name: str, ident: int = 1) -> bytes:
    return struct.pack("!HHHHHH", ident, 0x8183, 1, 0, 0, 0) + qname(name) + struct.pack("!HH", 1, 1)


def test_dns_flood_by_rate_and_by_nxdomain_share() -> None:
    det = DnsDetector()
    client, server = b"\xc6\x12\x00\x05", b"\xc6\x12\x01\x01"
    rate = [
        h.detail
        for i in range(1200)
        for h in det.inspect(
            dns_query(f"www{i % 5}.example.com"), client, False, 10.0 + i * 0.0005, DEFAULT_SETTINGS, server
        )  # fmt: skip
    ]
    assert len(rate) == 200 and "queries from one client" in rate[0]
    # a random-subdomain storm at a modest rate: most answers are NXDOMAIN
    storm = DnsDetector()
    found = []
    for i in range(150):
        name = f"{i * 7919 % 100000:05x}q.victim.example"
        t = 10.0 + i * 0.05
        assert storm.inspect(dns_query(name), client, False, t, DEFAULT_SETTINGS, server) == []
        found += storm.inspect(_nxdomain(name), client, False, t + 0.001, DEFAULT_SETTINGS, server)
    assert len(found) == 51 and all(h.threat is C.DNS_FLOOD for h in found)  # NXDOMAIN 100..150
    assert "names answered NXDOMAIN of" in found[0].detail
    # a client with typos: a few NXDOMAIN among many good answers
    quiet = DnsDetector()
    hits = []
    for i in range(400):
        name = f"host{i}.example.com"
        hits += quiet.inspect(dns_query(name), client, False, 10.0 + i * 0.02, DEFAULT_SETTINGS, server)
        answer = _nxdomain(name) if i % 10 == 0 else dns_response(name, 1)
        hits += quiet.inspect(answer, client, False, 10.0 + i * 0.02, DEFAULT_SETTINGS, server)
    assert [h for h in hits if h.threat is C.DNS_FLOOD] == []


def test_a_storm_whose_answers_trail_its_queries_is_found() -> None:
    # 600 random names asked before the first answer comes back (a slow server): the distinct names past
    # the first 100 are estimated from their share (all of them), so the storm's share holds
    det = DnsDetector()
    client, server = b"\xc6\x12\x00\x07", b"\xc6\x12\x01\x01"
    names = [f"{i * 7919 % 100000:05x}r.victim.example" for i in range(600)]
    for i, name in enumerate(names):  # (the queries alone are dns_tunneling's many names, not a flood)
        hits = det.inspect(dns_query(name), client, False, 10.0 + i * 0.005, DEFAULT_SETTINGS, server)
        assert all(h.threat is C.DNS_TUNNELING for h in hits)
    found = [
        h for n in names for h in det.inspect(_nxdomain(n), client, False, 14.0, DEFAULT_SETTINGS, server)
    ]
    assert found and found[0].detail == "300 names answered NXDOMAIN of 600 queries"


def test_a_search_path_answered_nxdomain_is_no_storm() -> None:
    """Kubernetes' resolver configuration (ndots:5, three search domains) makes a pod ask three expansions
    of each external name first, A and AAAA, all NXDOMAIN: six of every eight answers. A pod calling
    out often, or a crawler resolving many hosts, is no random-subdomain storm: the same few names
    come back NXDOMAIN, or a few per host looked up."""
    client, server = b"\xc6\x12\x00\x06", b"\xc6\x12\x01\x01"
    suffixes = ("default.svc.cluster.local", "svc.cluster.local", "cluster.local")

    def lookups(det: DnsDetector, hosts: list[str], t0: float) -> list[str]:
        found = []
        for i, host in enumerate(hosts):
            for qtype in (1, 28):
                exchanges = [(dns_query(f"{host}.{x}", qtype), _nxdomain(f"{host}.{x}")) for x in suffixes]
                for msg in (
                    m for pair in [*exchanges, (dns_query(host, qtype), dns_response(host, 1))] for m in pair
                ):
                    found += [
                        h.detail
                        for h in det.inspect(msg, client, False, t0 + i * 0.05, DEFAULT_SETTINGS, server)
                    ]
        return found

    # a pod calling one API 150 times in 7.5 s: 900 NXDOMAIN answers, three names
    assert lookups(DnsDetector(), ["api.example.com"] * 150, 10.0) == []
    # a crawler resolving 150 hosts: 450 names answered NXDOMAIN, of 1,200 queries
    assert lookups(DnsDetector(), [f"www.site{i}.example" for i in range(150)], 10.0) == []


def test_dns_compression_abuse_and_overlong_names() -> None:
    head = struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0)
    forward = head + b"\xc0\x12\x00\x01\x00\x01" + b"\x03www\x00"  # a pointer to bytes after it
    assert names(check_message(forward, False, DEFAULT_SETTINGS)) == {"dns_pointer_loop"}
    # two names pointing at each other: a loop, refused at its first forward step
    loop = head + b"\x01a\xc0\x10\x01b\xc0\x0c" + b"\x00\x01\x00\x01"
    assert names(check_message(loop, False, DEFAULT_SETTINGS)) == {"dns_pointer_loop"}
    # a backward chain: question k names question k-1 by a pointer; the 17th takes 17 jumps (over 16)
    chain = struct.pack("!HHHHHH", 7, 0x0100, 18, 0, 0, 0) + b"\x01a\x00\x00\x01\x00\x01"
    for k in range(1, 18):
        chain += struct.pack("!H", 0xC000 | (12 if k == 1 else 19 + 6 * (k - 2))) + b"\x00\x01\x00\x01"
    hits = check_message(chain, False, DEFAULT_SETTINGS)
    assert names(hits) == {"dns_pointer_loop"} and "chain of more than 16" in hits[0].detail
    assert check_message(chain[:-6].replace(b"\x00\x12", b"\x00\x11", 1), False, DEFAULT_SETTINGS) == []
    # many answers whose names each take one pointer: fine under 512, abuse over it
    resp = struct.pack("!HHHHHH", 8, 0x8180, 1, 255, 0, 0) + qname("a.example") + struct.pack("!HH", 1, 1)
    resp += (b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 0)) * 255
    assert check_message(resp, True, DEFAULT_SETTINGS) == []
    strict = compile_threat_settings({"dns_pointer_loop": {"max_pointers": 100}})
    assert "too many" in check_message(resp, True, strict)[0].detail
    # a label of 64 bytes, and a name of 256 octets (four labels of 63 plus three bytes)
    long_label = head + b"\x40" + b"a" * 64 + b"\x00\x00\x01\x00\x01"
    assert "over 63" in check_message(long_label, False, DEFAULT_SETTINGS)[0].detail
    long_name = head + (b"\x3f" + b"b" * 63) * 4 + b"\x02cc\x00\x00\x01\x00\x01"
    assert "longer than 255" in check_message(long_name, False, DEFAULT_SETTINGS)[0].detail
    fits = head + (b"\x3f" + b"b" * 63) * 3 + b"\x3d" + b"c" * 61 + b"\x00\x00\x01\x00\x01"  # 255 octets
    assert names(check_message(fits, False, DEFAULT_SETTINGS)) <= {"dns_tunneling"}


def test_encrypted_heartbeat_judged_by_record_lengths() -> None:
    from workers.detect.tls import check_encrypted_heartbeat

    assert check_encrypted_heartbeat(61, 0) is None  # an ordinary request (AES-GCM overhead included)
    assert check_encrypted_heartbeat(61, 61) is None  # its echo
    assert check_encrypted_heartbeat(77, 61) is None  # a CBC answer one block longer
    short = check_encrypted_heartbeat(8, 0)
    assert short is not None and short.threat is C.HEARTBLEED
    bled = check_encrypted_heartbeat(16408, 61)
    assert bled is not None and "16408 bytes to a 61-byte request" in bled.detail


@pytest.mark.parametrize(
    "headers",
    [
        [(b"Content-Length", b"6"), (b"Transfer-Encoding", b"chunked")],  # CL.TE
        [(b"Transfer-Encoding", b"chunked"), (b"Content-Length", b"4")],  # TE.CL
        [(b"Transfer-Encoding", b"xchunked")],
        [(b"Transfer-Encoding", b"chunked\t")],  # a trailing tab is whitespace: fine alone …
        [(b"Transfer-Encoding\t", b"chunked")],  # … but not in the name
        [(b"Transfer-Encoding", b"chunked"), (b"Transfer-encoding", b"chunked")],  # duplicate TE
        [(b"Transfer-Encoding", b"chunked, chunked")],
        [(b" Transfer-Encoding", b"chunked")],
        [(b"Content-Length", b"4"), (b"Content-Length", b"40")],  # duplicate, different
        [(b"Content-Length", b"-1")],
        [(b"Content-Length", b"+4")],
    ],
)
def test_every_desync_form_in_headers(headers: list[tuple[bytes, bytes]]) -> None:
    found = names(check_headers(headers))
    if headers == [(b"Transfer-Encoding", b"chunked\t")]:
        assert found == set()
    else:
        assert found & {"http_smuggling", "http_negative_length"}


def test_oversized_and_malformed_chunk_sizes_are_parser_anomalies() -> None:
    from core import anomalies as A
    from workers.dpi import events as E
    from workers.dpi.parsers import http as parser
    from workers.dpi.parsers.base import Side
    from workers.dpi.settings import DpiSettings

    def anomalies(size: bytes) -> list[str]:
        req = (
            b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + size
            + b"\r\nab\r\n0\r\n\r\n"
        )
        res = parser.HttpParser(DpiSettings()).feed(Side.CLIENT, req)
        return [
            e.detail for e in res.events if isinstance(e, E.ParseAnomaly) and e.name == A.DPI_HTTP_BAD_CHUNK
        ]

    assert anomalies(b"2") == []
    assert anomalies(b"fffffffff0")[0].startswith("oversized")
    assert anomalies(b"zz") != []


def test_slow_body_and_login_failures() -> None:
    from workers.detect.http import LoginFailures, check_slow_body, login_failed

    assert check_slow_body(100.0, 3, 129.0, DEFAULT_SETTINGS) is None  # within 30 s
    slow = check_slow_body(100.0, 3, 131.0, DEFAULT_SETTINGS)
    assert slow is not None and slow.threat is C.HTTP_SLOW_BODY
    assert check_slow_body(100.0, 50_000, 131.0, DEFAULT_SETTINGS) is None  # an upload at 1.6 kB/s
    assert login_failed(b"POST", False, 401, b"") and login_failed(b"POST", False, 403, b"")
    assert login_failed(b"POST", False, 200, b"<p>Login failed</p>")
    assert login_failed(b"POST", False, 200, b"Invalid username or password")
    assert login_failed(b"GET", True, 401, b"") and not login_failed(b"GET", False, 401, b"")
    assert not login_failed(b"POST", False, 200, b"<p>Welcome back</p>")
    assert not login_failed(b"GET", False, 200, b"Login failed")  # only answers to a POST
    tracker = LoginFailures()
    hits = [tracker.on_failure(b"c", b"s", b"/login", 10.0 + i, DEFAULT_SETTINGS) for i in range(25)]
    assert hits[:20] == [None] * 20 and all(
        h is not None and h.threat is C.HTTP_BRUTE_FORCE for h in hits[20:]
    )
    other = [tracker.on_failure(b"c", b"s", f"/p{i}".encode(), 10.0, DEFAULT_SETTINGS) for i in range(25)]
    assert other == [None] * 25
