"""The lab's DNS responder and the readers of the benign load tools' summaries (wrk, dnsperf): what the
live benign-load test relies on to tell an answered request from a lost one."""

from __future__ import annotations

import struct

from lab.benign import parse_dnsperf, parse_wrk
from lab.dns import A_ANSWER, TXT_ANSWER, answer
from lab.traffic import dns_query

WRK_CLEAN = """Running 5s test @ http://198.18.2.11:8000/
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    45.37ms    6.93ms  64.04ms   84.09%
    Req/Sec    43.90      7.06    60.00     90.00%
  1649 requests in 5.00s, 238.37KB read
Requests/sec:    329.80
Transfer/sec:     47.67KB
"""
WRK_ERRORS = WRK_CLEAN.replace(
    "Requests/sec:",
    "  Socket errors: connect 1, read 2, write 0, timeout 3\n  Non-2xx or 3xx responses: 7\nRequests/sec:",
)
DNSPERF = """Statistics:

  Queries sent:         1500
  Queries completed:    1497 (99.80%)
  Queries lost:         3 (0.20%)

  Response codes:       NOERROR 1490 (99.53%), NXDOMAIN 7 (0.47%)
  Average packet size:  request 37, response 48
"""


def _query(name: str, qtype: int) -> bytes:
    plain = dns_query(0x1234, name)
    return plain[:-4] + struct.pack("!HH", qtype, 1)


def test_an_a_query_gets_a_noerror_answer_with_an_address() -> None:
    query = _query("internal-k8s-default-myingres-2f8b1d3c6a-1234567890.us-west-2.elb.amazonaws.com", 1)
    response = answer(query)
    assert response is not None
    ident, flags, qd, an, _ns, _ar = struct.unpack_from("!HHHHHH", response)
    assert (ident, qd, an) == (0x1234, 1, 1)
    assert flags & 0x8000 and flags & 0x0100 and flags & 0xF == 0  # a response, RD kept, NOERROR
    assert response[12 : len(query)] == query[12:]  # the question echoed
    assert response.endswith(A_ANSWER)


def test_txt_answers_and_other_types_get_no_records() -> None:
    txt = answer(_query("_acme-challenge.checkout.shop.example.com", 16))
    mx = answer(_query("mail.example.org", 15))
    assert txt is not None and txt.endswith(TXT_ANSWER)
    assert mx is not None and struct.unpack_from("!H", mx, 6)[0] == 0


def test_what_is_not_a_plain_query_gets_no_answer() -> None:
    query = _query("web.lab", 1)
    response = answer(query)
    assert response is not None
    assert answer(response) is None  # a response is not answered
    assert answer(query[:14]) is None  # truncated question
    assert answer(query[:12] + b"\xc0\x0c" + query[-4:]) is None  # a pointer in a question
    assert answer(b"\x00" * 5) is None


def test_wrk_summary_without_errors_is_clean() -> None:
    r = parse_wrk(WRK_CLEAN)
    assert (r.requests, r.socket_errors, r.non_2xx_3xx, r.clean) == (1649, 0, 0, True)


def test_wrk_socket_errors_and_bad_statuses_are_counted() -> None:
    r = parse_wrk(WRK_ERRORS)
    assert (r.requests, r.socket_errors, r.non_2xx_3xx, r.clean) == (1649, 6, 7, False)
    refused = parse_wrk("unable to connect to 198.18.2.11:8000 Connection refused\n")
    assert refused.requests == 0 and not refused.clean


def test_dnsperf_lost_queries_and_other_codes_are_not_clean() -> None:
    r = parse_dnsperf(DNSPERF)
    assert (r.sent, r.completed, r.lost, r.noerror, r.clean) == (1500, 1497, 3, 1490, False)
    whole = DNSPERF.replace("1497 (99.80%)", "1500 (100.00%)").replace(
        "Queries lost:         3", "Queries lost:         0"
    )
    whole = whole.replace("NOERROR 1490 (99.53%), NXDOMAIN 7 (0.47%)", "NOERROR 1500 (100.00%)")
    assert parse_dnsperf(whole).clean
