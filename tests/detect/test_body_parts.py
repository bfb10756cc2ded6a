"""The detectors on long HTTP bodies (default `max_event_bytes`): an injection or a sensor match in any
later body part acts as one in the head (reset in Protect with evidence, an alert in Monitor); benign
long bodies pass; the request stays pending for slow-HTTP until its last part."""

from __future__ import annotations

import json

import pytest

from core.packet import TCP_ACK, TCP_PSH
from core.verdict import WorkerVerdict
from workers.detect.bodypart import body_values, json_part_values
from workers.detect.injection import check_request

from .build import handshake, tcp4
from .test_engine import CLIENT, DB, WEB, Lab

FORM = b"application/x-www-form-urlencoded"
JSON = b"application/json"
SQLI_FORM = b"1%27+or+%271%27%3D%271"
SQLI_TEXT = b"1' or '1'='1"
XSS_TEXT = b"<script>alert(1)</script>"
HTML_PAGE = b"<html><body><script>document.title='a'</script><img src=x onerror=retry()></body></html>\n"
SQL_DUMP = b"INSERT INTO t VALUES (1, '' OR 1=1); DROP TABLE sessions; -- a backup\n"


def post(ctype: bytes, body: bytes, chunk: int = 0) -> bytes:
    if chunk:
        framed = b"".join(
            b"%x\r\n%s\r\n" % (len(body[i : i + chunk]), body[i : i + chunk])
            for i in range(0, len(body), chunk)
        )
        head = b"POST /f HTTP/1.1\r\nHost: web\r\nContent-Type: %s\r\nTransfer-Encoding: chunked\r\n\r\n"
        return head % ctype + framed + b"0\r\n\r\n"
    head = b"POST /f HTTP/1.1\r\nHost: web\r\nContent-Type: %s\r\nContent-Length: %d\r\n\r\n"
    return head % (ctype, len(body)) + body


def flow(request: bytes, cport: int, server: str = WEB, segment: int = 1448) -> list[bytes]:
    packets = list(handshake(CLIENT, cport, server, 80))
    for seq in range(0, len(request), segment):
        piece = request[seq : seq + segment]
        packets.append(
            tcp4(CLIENT, cport, server, 80, TCP_ACK | TCP_PSH, seq=1001 + seq, ack=5001, payload=piece)
        )
    return packets


def form_with(value: bytes, at: int, size: int = 65536) -> bytes:
    head = b"a=" + b"x" * at + b"&q=" + value + b"&b="
    return head + b"y" * (size - len(head))


def json_with(value: bytes, at: int) -> bytes:
    return b'{"a":"' + b"x" * at + b'","q":"' + value + b'","b":"' + b"y" * 30000 + b'"}'


MULTIPART = b"multipart/form-data; boundary=XyZ42"


def multipart_with(field: bytes, at: int, upload: bytes = b"\x89PNG" + bytes(range(256)) * 80) -> bytes:
    """A form with an upload, then a text field holding `field` after `at` bytes of padding."""
    return (
        b'--XyZ42\r\nContent-Disposition: form-data; name="pic"; filename="a.png"\r\n'
        b"Content-Type: image/png\r\n\r\n" + upload + b"\r\n"
        b'--XyZ42\r\nContent-Disposition: form-data; name="q"\r\n\r\n' + b"x" * at + b" " + field + b"\r\n"
        b'--XyZ42\r\nContent-Disposition: form-data; name="b"\r\n\r\n' + b"y" * 9000 + b"\r\n--XyZ42--\r\n"
    )


@pytest.mark.parametrize(
    ("name", "request_bytes", "threat"),
    [
        ("form at 30 KiB", post(FORM, form_with(SQLI_FORM, 30000)), "sql_injection"),
        ("chunked form at 30 KiB", post(FORM, form_with(SQLI_FORM, 30000), chunk=1000), "sql_injection"),
        ("json at 20 KiB", post(JSON, json_with(SQLI_TEXT, 20000)), "sql_injection"),
        ("json xss at 50 KiB", post(JSON, json_with(XSS_TEXT, 50000)), "xss"),
        (
            "json sent as text/plain at 20 KiB",
            post(b"text/plain", json_with(SQLI_TEXT, 20000)),
            "sql_injection",
        ),
        ("multipart field at 30 KiB", post(MULTIPART, multipart_with(SQLI_TEXT, 10000)), "sql_injection"),
        ("chunked multipart", post(MULTIPART, multipart_with(XSS_TEXT, 6000), chunk=1000), "xss"),
    ],
)
def test_an_injection_deep_in_a_body_resets_the_flow_in_protect(
    name: str, request_bytes: bytes, threat: str
) -> None:
    lab = Lab()
    packets = flow(request_bytes, 41000)
    verdicts = lab.send(packets)
    assert verdicts[-1] is WorkerVerdict.RESET_FLOW, name
    # reset at the packet that completes the part holding the injection: after its bytes, within a part
    first = verdicts.index(WorkerVerdict.RESET_FLOW)
    reached = sum(len(p) - 40 for p in packets[3 : first + 1])  # payload bytes sent through that packet
    ends = (b"&b=", b'","b"', b'name="b"')
    injection_end = next(request_bytes.find(end) for end in ends if end in request_bytes)
    assert injection_end < reached <= injection_end + 2 * 4096 + 1448, (reached, injection_end)
    [event] = lab.threats(threat)
    assert event["action"] == "reset" and event["group"] == "web" and event["evidence"]
    stats = lab.engine.stats()
    assert stats["dpi.http.body_parts"] >= 4 and stats["dpi.http.body_part_bytes"] > 16000


def test_an_injection_deep_in_a_body_only_alerts_in_monitor() -> None:
    lab = Lab()
    verdicts = lab.send(flow(post(FORM, form_with(SQLI_FORM, 40000)), 41001, server=DB))
    assert WorkerVerdict.RESET_FLOW not in verdicts
    [event] = lab.threats("sql_injection")
    assert event["action"] == "alert" and event["group"] == "db"


@pytest.mark.parametrize("at", range(3000, 3200, 7))
def test_an_injection_straddling_the_first_cut_is_seen(at: int) -> None:
    lab = Lab()
    lab.send(flow(post(FORM, form_with(SQLI_FORM, at, size=9000)), 41002))
    assert [e["name"] for e in lab.threats()] == ["sql_injection"]


def test_long_benign_bodies_raise_nothing() -> None:
    lab = Lab()
    items = [{"id": i, "name": f"O'Brien item {i}", "note": "50% off; see <b>terms</b>"} for i in range(700)]
    bodies = [
        post(FORM, form_with(b"blue+shoes", 30000)),
        post(FORM, b"&".join(b"f%d=O%%27Brien+%d+street" % (i, i) for i in range(3000)), chunk=999),
        post(JSON, json.dumps({"items": items}).encode()),
        post(b"text/plain;charset=UTF-8", json.dumps({"items": items}).encode()),  # (a beacon's body)
        post(b"application/octet-stream", bytes(range(256)) * 256),
        # an upload of markup and SQL, and a long field of prose after it
        post(
            MULTIPART, multipart_with(b"O'Brien; see <b>terms</b>", 20000, upload=(HTML_PAGE + SQL_DUMP) * 40)
        ),
    ]
    for i, body in enumerate(bodies):
        verdicts = lab.send(flow(body, 41010 + i))
        assert WorkerVerdict.RESET_FLOW not in verdicts
    assert lab.threats() == []
    assert lab.engine.stats()["dpi.http.body_parts"] > 40


def test_a_sensor_match_in_a_late_part_blocks() -> None:
    sensors = [{"name": "cards", "predefined": "credit_card", "action": "block", "groups": ["web"]}]
    lab = Lab(sensors=sensors)
    verdicts = lab.send(flow(post(FORM, form_with(b"4111+1111+1111+1111", 45000)), 41020))
    assert verdicts[-1] is WorkerVerdict.RESET_FLOW
    [event] = lab.threats("dlp_sensor")
    assert event["sensor"] == "cards"


def test_a_slow_long_body_stays_pending_until_its_last_part() -> None:
    lab = Lab()
    request = post(FORM, form_with(b"blue", 100, size=20000))
    packets = flow(request, 41030)
    lab.send(packets[:6])  # the head and a few parts: more than one part, the body not complete
    lab.now += 100  # over 30 s for a body at under 100 bytes/s
    verdicts = lab.send(packets[6:7])
    assert verdicts == [WorkerVerdict.RESET_FLOW]
    assert [e["name"] for e in lab.threats()] == ["http_slow_body"]


def test_json_part_values_take_strings_on_both_sides_of_an_unknown_first_quote() -> None:
    # cut inside a string: the first piece is a string's tail, the quotes after it pair up again
    part = b'ail of a value", "q": "1\' or \'1\'=\'1", "n": 12, "u": "\\u003cscript\\u003e", "t": tr'
    values = json_part_values(part)
    assert "ail of a value" in values and "1' or '1'='1" in values and "<script>" in values
    assert not any(v.strip(' :,"') in ("", "12", "tr") for v in values)  # structure dropped
    assert check_request("", body_values(part, "application/json"), "application/json")
    assert body_values(b"a=1&b=2", "application/x-www-form-urlencoded") == b"a=1&b=2"


def test_an_injection_in_an_http2_data_frame_resets_the_flow() -> None:
    from tests.dpi.test_body_parts import h2_request

    body = json_with(SQLI_TEXT, 12000)
    frames = [(1, body[i : i + 16384], i + 16384 >= len(body)) for i in range(0, len(body), 16384)]
    lab = Lab()
    verdicts = lab.send(flow(h2_request("/api", "application/json", frames), 41040))
    assert WorkerVerdict.RESET_FLOW in verdicts
    [event] = lab.threats("sql_injection")
    assert event["action"] == "reset"
    benign = json_with(b"blue shoes", 12000)
    frames = [(1, benign[i : i + 16384], i + 16384 >= len(benign)) for i in range(0, len(benign), 16384)]
    verdicts = lab.send(flow(h2_request("/api", "application/json", frames), 41041))
    assert WorkerVerdict.RESET_FLOW not in verdicts and len(lab.threats()) == 1


@pytest.mark.parametrize(
    "part",
    [
        b'x", "q": "1\' or \'1\'=\'1", "w": "say \\"hi\\"", "z": "ab',  # an escaped quote: the careful split
        b'x", "q": "1\' or \'1\'=\'1", "z": "cut in an escape \\u00',  # no document: piece by piece
        b'"q": "1\' or \'1\'=\'1", "k": 1, "q2": "1\' or \'1\'=\'1"',  # repeated values checked once
    ],
)
def test_json_parts_are_judged_by_their_string_values_whatever_the_cut(part: bytes) -> None:
    values = json.loads(body_values(part, "application/json"))
    assert values.count("1' or '1'='1") == 1
    [hit] = check_request("", body_values(part, "application/json"), "application/json")
    assert hit.threat.name == "sql_injection"


def test_a_multipart_field_deep_in_http2_data_frames_resets_the_flow() -> None:
    from tests.dpi.test_body_parts import h2_request

    def frames(body: bytes) -> list[tuple[int, bytes, bool]]:
        return [(1, body[i : i + 5000], i + 5000 >= len(body)) for i in range(0, len(body), 5000)]

    lab = Lab()
    ctype = MULTIPART.decode()
    benign = multipart_with(b"blue shoes", 12000, upload=HTML_PAGE * 200)
    verdicts = lab.send(flow(h2_request("/up", ctype, frames(benign)), 41050))
    assert WorkerVerdict.RESET_FLOW not in verdicts and lab.threats() == []
    verdicts = lab.send(flow(h2_request("/up", ctype, frames(multipart_with(SQLI_TEXT, 12000))), 41051))
    assert WorkerVerdict.RESET_FLOW in verdicts
    [event] = lab.threats("sql_injection")
    assert event["action"] == "reset"
