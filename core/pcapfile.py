"""Writing pcap files of raw IP packets (IPv4 and IPv6 alike: link type RAW), through dpkt's writer.

One writer for every capture the node produces: evidence snapshots (`enforcer replay --evidence`,
`enforcer capture --threat`) and on-demand captures (`enforcer capture --flow/--group`). A record keeps
the packet's original length beside the bytes kept, so a packet cut to a snapshot length says so.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from typing import BinaryIO

import dpkt

LINKTYPE_RAW = 101  # the packet starts with its IP header (version nibble says 4 or 6)
SNAPLEN = 65535

Record = tuple[float, int, bytes]  # (time in UNIX seconds, original length, bytes kept)


class PcapWriter(dpkt.pcap.Writer):
    """dpkt's pcap writer with the original length of each packet kept (dpkt writes the kept length)."""

    def __init__(self, fileobj: BinaryIO) -> None:
        super().__init__(fileobj, snaplen=SNAPLEN, linktype=LINKTYPE_RAW)
        self._out = fileobj

    def write_record(self, ts: float, orig_len: int, data: bytes) -> None:
        sec = int(ts)
        usec = min(999_999, round((ts - sec) * 1_000_000))
        self._out.write(self._pack_hdr(sec, usec, len(data), max(orig_len, len(data))) + data)


def write_pcap(fileobj: BinaryIO, records: Iterable[Record]) -> int:
    """Write a whole pcap file; returns the number of packets."""
    writer = PcapWriter(fileobj)
    count = 0
    for ts, orig_len, data in records:
        writer.write_record(ts, orig_len, data)
        count += 1
    return count


def pcap_bytes(records: Iterable[Record]) -> bytes:
    buf = io.BytesIO()
    write_pcap(buf, records)
    return buf.getvalue()
