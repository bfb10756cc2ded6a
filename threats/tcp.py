"""TCP header checks that need no flow state: illegal flag combinations, a land attack, option lengths,
and what a connection-opening SYN may not carry (payload, a tiny MSS).

Pure functions over one packet; the reader's guard runs them on a connection's first packet and the
workers' packet detector on the packets after it, so each check is written once.
"""

from __future__ import annotations

import struct

from core.packet import TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, PacketMeta
from threats import catalogue as C
from threats.catalogue import Threat
from threats.settings import ThreatSettings

_TCPOPT_EOL, _TCPOPT_NOP, _TCPOPT_MSS, _TCPOPT_WSCALE, _TCPOPT_SACK_OK, _TCPOPT_TS, _TCPOPT_FASTOPEN = (
    0, 1, 2, 3, 4, 8, 34,
)  # fmt: skip
# Fixed lengths of the options whose length is defined by their RFC.
_TCPOPT_LENGTH = {_TCPOPT_MSS: 4, _TCPOPT_WSCALE: 3, _TCPOPT_SACK_OK: 2, _TCPOPT_TS: 10}
_TCP_HEADER = 20  # bytes before the options
# The usual options of a data segment (NOP NOP timestamps): no walk needed.
_NOP_NOP_TS = bytes((_TCPOPT_NOP, _TCPOPT_NOP, _TCPOPT_TS, 10))
LAND = "land: source equals destination"
BAD_OPTION_LENGTH = "bad TCP option length"


# The options of a Linux SYN, in its order: MSS, SACK permitted, timestamps, NOP, window scale (the kinds
# and lengths checked, the timestamps skipped). Most SYNs a reader judges look so: read in one unpack.
_LINUX_SYN_OPTIONS = struct.Struct("!HHI8xHBB")
_MSS_HEAD, _SACK_OK_TS_HEAD, _NOP_WSCALE_HEAD = 0x0204, 0x0402080A, 0x0103


class TcpOptions:
    """What the detectors need from a TCP header's options."""

    __slots__ = ("ok", "mss", "wscale", "fast_open")

    def __init__(self) -> None:
        self.ok = True
        self.mss = -1
        self.wscale = -1
        self.fast_open = False


def parse_tcp_options(opts: bytes) -> TcpOptions:
    """Walk TCP options; `ok` is False for a length that is illegal or runs past the header."""
    if len(opts) == 20:
        mss_head, mss, sack_ts, nop_ws, ws_len, wscale = _LINUX_SYN_OPTIONS.unpack(opts)
        if (
            mss_head == _MSS_HEAD
            and sack_ts == _SACK_OK_TS_HEAD
            and nop_ws == _NOP_WSCALE_HEAD
            and ws_len == 3
        ):
            res = TcpOptions()
            res.mss, res.wscale = mss, wscale
            return res
    return walk_tcp_options(opts)


def walk_tcp_options(opts: bytes) -> TcpOptions:
    """`parse_tcp_options` without the fast path for the usual SYN layout: every option, one by one."""
    res = TcpOptions()
    i, n = 0, len(opts)
    while i < n:
        kind = opts[i]
        if kind == _TCPOPT_EOL:
            break
        if kind == _TCPOPT_NOP:
            i += 1
            continue
        if i + 1 >= n:
            res.ok = False
            break
        length = opts[i + 1]
        if length < 2 or i + length > n or _TCPOPT_LENGTH.get(kind, length) != length:
            res.ok = False
            break
        if kind == _TCPOPT_MSS:
            res.mss = (opts[i + 2] << 8) | opts[i + 3]
        elif kind == _TCPOPT_WSCALE:
            res.wscale = opts[i + 2]
        elif kind == _TCPOPT_FASTOPEN:
            res.fast_open = True
        i += length
    return res


def illegal_tcp_flags(flags: int) -> str:
    """A reason if `flags` is a combination no TCP stack sends, else ""."""
    if flags & TCP_SYN and flags & TCP_FIN:
        return "SYN+FIN"
    if flags & TCP_SYN and flags & TCP_RST:
        return "SYN+RST"
    if flags & TCP_FIN and flags & TCP_RST:
        return "FIN+RST"
    if flags & 0x3F == 0:
        return "no flags"
    if not flags & (TCP_ACK | TCP_SYN | TCP_RST):
        return "FIN/PSH/URG without ACK"
    return ""


ILLEGAL_TCP_FLAGS = tuple(illegal_tcp_flags(f) for f in range(64))  # reason by the low six flag bits


def tcp_header(meta: PacketMeta, packet: bytes) -> tuple[str, TcpOptions | None]:
    """Why this TCP header is malformed ("" if it is not: illegal flags, land, option lengths), and its
    options when it has any worth walking (a SYN's always; a data segment's unless the usual timestamps)."""
    flags = meta.tcp_flags
    bad = ILLEGAL_TCP_FLAGS[flags & 0x3F]
    if not bad and meta.src == meta.dst and meta.sport == meta.dport:
        bad = LAND
    opts: TcpOptions | None = None
    if meta.payload_offset - meta.l4_offset > _TCP_HEADER:
        raw = bytes(packet[meta.l4_offset + _TCP_HEADER : meta.payload_offset])
        if flags & TCP_SYN or raw[:4] != _NOP_NOP_TS or len(raw) != 12:
            opts = parse_tcp_options(raw)
            if not opts.ok and not bad:
                bad = BAD_OPTION_LENGTH
    return bad, opts


def syn_problems(
    meta: PacketMeta, opts: TcpOptions | None, settings: ThreatSettings
) -> list[tuple[Threat, str]]:
    """What a SYN (or SYN-ACK) carries that no stack sends: payload on a client's SYN (TCP Fast Open
    aside, when allowed) and an MSS below the group's minimum; only the threats that are on."""
    on = settings.on
    out: list[tuple[Threat, str]] = []
    payload_len = meta.ip_len - meta.payload_offset
    if payload_len > 0 and not meta.tcp_flags & TCP_ACK and C.TCP_SYN_DATA.id in on:
        fast_open = (
            opts is not None and opts.fast_open and settings.threshold(C.TCP_SYN_DATA, "allow_fast_open")
        )
        if not fast_open:
            out.append((C.TCP_SYN_DATA, f"{payload_len} bytes"))
    if opts is not None and opts.mss >= 0 and C.TCP_SMALL_MSS.id in on:
        if opts.mss < settings.threshold(C.TCP_SMALL_MSS, "min_mss"):
            out.append((C.TCP_SMALL_MSS, f"MSS {opts.mss}"))
    return out
