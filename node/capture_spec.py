"""What `enforcer capture` is asked for, parsed from the command line: an evidence id, a flow, a group.

Bad input raises `SpecError` with a message naming what is wrong; nothing here touches the enforcer.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass

from core.capture import CaptureFilter

# A live worker's evidence id: w<worker>-<start token>-ev<n> (workers.detect.evidence).
EVIDENCE_ID = re.compile(r"w(\d{1,4})-([0-9a-f]{6})-ev(\d{1,12})")
PROTOCOLS = {"any": 0, "icmp": socket.IPPROTO_ICMP, "tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP,
             "icmpv6": socket.IPPROTO_ICMPV6, "sctp": 132}  # fmt: skip
GROUP_NAME = re.compile(r"[A-Za-z0-9_.:/-]{1,256}")
FLOW_HELP = "PROTO SRC[:PORT] DST[:PORT], e.g. 'tcp 198.18.1.11:* 198.18.2.11:80' or 'udp [fd00::1]:53 *'"


class SpecError(ValueError):
    """The command line asks for something malformed."""


@dataclass(frozen=True, slots=True)
class EvidenceRef:
    evidence_id: str
    worker: int


def parse_evidence_id(text: str) -> EvidenceRef:
    m = EVIDENCE_ID.fullmatch(text.strip())
    if m is None:
        raise SpecError(
            f"--threat {text!r}: not the evidence id of a live node's threat event (the event's `evidence` "
            "field, like w0-3fa9c2-ev7)"
        )
    return EvidenceRef(m.group(0), int(m.group(1)))


def parse_flow(text: str) -> CaptureFilter:
    """`PROTO A[:PORT] B[:PORT]` (separated by spaces or commas; `*` or no port: any; either direction)."""
    parts = text.replace(",", " ").split()
    if len(parts) != 3:
        raise SpecError(f"--flow {text!r}: expected {FLOW_HELP}")
    proto_text, a, b = parts
    proto = _protocol(proto_text, text)
    a_addr, a_port = _endpoint(a, text)
    b_addr, b_port = _endpoint(b, text)
    if a_addr and b_addr and len(a_addr) != len(b_addr):
        raise SpecError(f"--flow {text!r}: one IPv4 and one IPv6 address")
    filt = CaptureFilter(proto, a_addr, a_port, b_addr, b_port)
    if not (a_addr or b_addr):
        raise SpecError(f"--flow {text!r}: name at least one address (use --group for a group)")
    return filt


def parse_group(text: str) -> CaptureFilter:
    if not GROUP_NAME.fullmatch(text):
        raise SpecError(f"--group {text!r}: not a group name")
    return CaptureFilter(group=text)


def _protocol(text: str, whole: str) -> int:
    if text.lower() in PROTOCOLS:
        return PROTOCOLS[text.lower()]
    if text.isdigit() and 0 < int(text) < 256:
        return int(text)
    raise SpecError(f"--flow {whole!r}: unknown protocol {text!r} (tcp, udp, icmp, icmpv6, any or a number)")


def _endpoint(text: str, whole: str) -> tuple[bytes, int]:
    """(raw address or b"" for any, port or 0 for any) from `ADDR`, `ADDR:PORT`, `[V6]:PORT` or `*`."""
    port_text = "*"
    if text.startswith("["):
        addr_text, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise SpecError(f"--flow {whole!r}: bad endpoint {text!r}")
        port_text = rest[1:] or "*"
    elif text.count(":") == 1:
        addr_text, port_text = text.split(":")
    else:
        addr_text = text  # IPv4 without a port, a bare IPv6 address, or `*`
    addr = b""
    if addr_text != "*":
        try:
            addr = ipaddress.ip_address(addr_text).packed
        except ValueError:
            raise SpecError(f"--flow {whole!r}: {addr_text!r} is not an IP address") from None
    port = 0
    if port_text != "*":
        if not port_text.isdigit() or not 0 < int(port_text) <= 65535:
            raise SpecError(f"--flow {whole!r}: bad port {port_text!r}")
        port = int(port_text)
    return addr, port
