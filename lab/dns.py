"""A small authoritative-style DNS responder for lab hosts: every well-formed query gets a NOERROR answer
(an address for A/AAAA, a short string for TXT, no records otherwise), so real DNS load tools (dnsperf,
dig) see a real server. The lab's UDP echo only mirrors a query back, which is not an answer.

  python -m lab.dns --port 5353 --seconds 120   prints "ready", answers until the time is up
"""

from __future__ import annotations

import argparse
import socket
import struct
import sys
import threading

MAX_SECONDS = 600.0  # the responder never outlives a test module by long
MAX_NAME_BYTES = 255  # RFC 1035's limit on an encoded name: anything longer is not a query we answer
TTL = 60
A_ANSWER = socket.inet_pton(socket.AF_INET, "198.18.2.100")
AAAA_ANSWER = socket.inet_pton(socket.AF_INET6, "fd00:198:18:2::100")
TXT_ANSWER = b"\x06v=lab1"
_HEADER = struct.Struct("!HHHHHH")
_QR, _RD, _RA = 0x8000, 0x0100, 0x0080
_RDATA = {1: A_ANSWER, 28: AAAA_ANSWER, 16: TXT_ANSWER}  # by query type


def _question_end(query: bytes) -> int | None:
    """Where the first question (name, type, class) ends, or None when it is not a plain question."""
    at = _HEADER.size
    while True:
        if at >= len(query) or at - _HEADER.size > MAX_NAME_BYTES:
            return None
        length = query[at]
        if length == 0:
            break
        if length & 0xC0:  # a pointer or reserved label type has no place in a query's question
            return None
        at += 1 + length
    end = at + 1 + 4
    return end if end <= len(query) else None


def answer(query: bytes) -> bytes | None:
    """The response to one UDP query; None for what is not a standard query with one question."""
    if len(query) < _HEADER.size:
        return None
    ident, flags, qdcount, _an, _ns, _ar = _HEADER.unpack_from(query)
    if flags & _QR or (flags >> 11) & 0xF or qdcount != 1:
        return None
    end = _question_end(query)
    if end is None:
        return None
    qtype, _qclass = struct.unpack_from("!HH", query, end - 4)
    rdata = _RDATA.get(qtype)
    header = _HEADER.pack(ident, _QR | (flags & _RD) | _RA, 1, 1 if rdata else 0, 0, 0)
    out = header + query[_HEADER.size : end]
    if rdata:
        # the owner is the question's name (a pointer to offset 12), class IN
        out += struct.pack("!HHHIH", 0xC00C, qtype, 1, TTL, len(rdata)) + rdata
    return out


def serve(port: int, seconds: float) -> int:
    sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    sock.bind(("::", port))
    sock.settimeout(0.5)
    stop = threading.Event()
    threading.Timer(min(seconds, MAX_SECONDS), stop.set).start()
    print("ready", flush=True)
    while not stop.is_set():
        try:
            query, peer = sock.recvfrom(4096)
        except TimeoutError:
            continue
        response = answer(query)
        if response is not None:
            sock.sendto(response, peer)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="lab.dns")
    p.add_argument("--port", type=int, default=53)
    p.add_argument("--seconds", type=float, default=120)
    a = p.parse_args(argv)
    return serve(a.port, a.seconds)


if __name__ == "__main__":
    sys.exit(main())
