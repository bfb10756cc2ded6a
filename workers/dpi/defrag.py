"""IPv4 and IPv6 fragment reassembly (sans-io; time passed in).

A datagram is keyed by (family, src, dst, proto, id). Fragments are held until the one without
"more fragments" has arrived and no hole is left; then the datagram is rebuilt as one unfragmented IP
packet (IPv4: the first fragment's header with length and fragment fields fixed; IPv6: the
unfragmentable part with the Fragment header removed) and handed back for decoding as if it had arrived
whole. Overlap policy: first seen wins (`dpi.frag.overlap` counted; the newcomer adds only what it
covers beyond held bytes). Bounds: datagrams held (`max_frag_datagrams`, oldest dropped), bytes per
datagram (`max_frag_bytes`), fragments per datagram (`max_frags_per_datagram`), and `frag_timeout`.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Callable

from core import anomalies as A
from core.packet import PacketMeta
from workers.dpi.settings import DpiSettings

_IPV6_EXT = frozenset((0, 43, 60, 135, 139, 140))
_MAX_EXT = 8

FragKey = tuple[int, bytes, bytes, int, int]


class _Datagram:
    __slots__ = ("header", "pieces", "total", "size", "first_seen", "next_hdr_at")

    def __init__(self, now: float) -> None:
        self.header = b""  # IPv4 header / IPv6 unfragmentable part, from the offset-0 fragment
        self.next_hdr_at = -1  # IPv6: index in header of the next-header byte that pointed at Fragment
        self.pieces: dict[int, bytes] = {}
        self.total = -1  # payload length, known when the last fragment has arrived
        self.size = 0
        self.first_seen = now


def _ipv6_fragment_header(buf: bytes) -> tuple[int, int, int, int, int] | None:
    """(offset of the fragment header, index of the next-header byte pointing at it, next header,
    fragment offset in bytes, more flag) or None."""
    nxt = buf[6]
    at = 6
    off = 40
    for _ in range(_MAX_EXT):
        if nxt == 44:
            if len(buf) < off + 8:
                return None
            om = (buf[off + 2] << 8) | buf[off + 3]
            return off, at, buf[off], om & 0xFFF8, om & 1
        if nxt in _IPV6_EXT or nxt == 51:
            if len(buf) < off + 2:
                return None
            at = off
            length = (buf[off + 1] + 2) * 4 if nxt == 51 else (buf[off + 1] + 1) * 8
            nxt = buf[off]
            off += length
        else:
            return None
    return None


class Defragmenter:
    def __init__(self, settings: DpiSettings, count: Callable[[str], None]) -> None:
        self.s = settings
        self.count = count
        self.table: OrderedDict[FragKey, _Datagram] = OrderedDict()

    def __len__(self) -> int:
        return len(self.table)

    def add(self, packet: bytes, meta: PacketMeta, now: float) -> bytes | None:
        """Take one fragment; return the rebuilt packet when the datagram is complete, else None."""
        if meta.family == 4:
            if len(packet) < 20:
                self.count(A.DPI_FRAG_MALFORMED)
                return None
            ihl = (packet[0] & 0x0F) * 4
            flags_off = (packet[6] << 8) | packet[7]
            more = bool(flags_off & 0x2000)
            offset = (flags_off & 0x1FFF) * 8
            head_len = ihl
            ident = meta.frag_id
            proto = packet[9]
            nh_at = -1
        else:
            found = _ipv6_fragment_header(packet)
            if found is None:
                self.count(A.DPI_FRAG_MALFORMED)
                return None
            frag_at, nh_at, proto, offset, more_bit = found
            more = bool(more_bit)
            head_len = frag_at + 8
            ident = meta.frag_id
        end_ip = min(meta.ip_len, len(packet))
        data = packet[head_len:end_ip]
        if meta.family == 6:
            head = packet[:frag_at]
        else:
            head = packet[:ihl]
        key: FragKey = (meta.family, meta.src, meta.dst, proto, ident)
        dg = self.table.get(key)
        if dg is None:
            if len(self.table) >= self.s.max_frag_datagrams:
                self.table.popitem(last=False)
                self.count(A.DPI_FRAG_TABLE_FULL)
            dg = _Datagram(now)
            self.table[key] = dg
        if len(dg.pieces) >= self.s.max_frags_per_datagram:
            self.count(A.DPI_FRAG_TOO_MANY)
            del self.table[key]
            return None
        if offset + len(data) > self.s.max_frag_bytes:
            self.count(A.DPI_FRAG_TOO_BIG)
            del self.table[key]
            return None
        if offset == 0:
            dg.header = head
            dg.next_hdr_at = nh_at
        if not more:
            dg.total = offset + len(data)
        offset, data = self._trim_overlap(dg, offset, data)
        if data:
            dg.pieces[offset] = data
            dg.size += len(data)
        if dg.total < 0 or not dg.header or dg.size < dg.total:
            return None
        payload = self._assemble(dg)
        if payload is None:
            return None
        del self.table[key]
        return self._rebuild(meta.family, dg, proto, payload)

    def _trim_overlap(self, dg: _Datagram, offset: int, data: bytes) -> tuple[int, bytes]:
        """First seen wins: cut the new fragment down to its leading run of bytes that no held fragment
        covers (what non-hostile senders produce); return its (possibly moved) offset and bytes."""
        changed = True
        while changed and data:
            changed = False
            end = offset + len(data)
            for off, held in dg.pieces.items():
                hend = off + len(held)
                if hend <= offset or off >= end:
                    continue
                self.count(A.DPI_FRAG_OVERLAP)
                if off <= offset:
                    data = data[hend - offset :] if hend < end else b""
                    offset = hend
                else:
                    data = data[: off - offset]
                changed = True
                break
        return offset, data

    @staticmethod
    def _assemble(dg: _Datagram) -> bytes | None:
        out = bytearray()
        for off in sorted(dg.pieces):
            if off > len(out):
                return None  # hole
            piece = dg.pieces[off]
            out += piece[len(out) - off :]
        if len(out) < dg.total:
            return None
        return bytes(out[: dg.total])

    @staticmethod
    def _rebuild(family: int, dg: _Datagram, proto: int, payload: bytes) -> bytes:
        if family == 4:
            hdr = bytearray(dg.header)
            struct.pack_into("!H", hdr, 2, len(hdr) + len(payload))
            struct.pack_into("!H", hdr, 6, 0)
            return bytes(hdr) + payload
        hdr = bytearray(dg.header)
        hdr[dg.next_hdr_at] = proto
        struct.pack_into("!H", hdr, 4, len(hdr) - 40 + len(payload))
        return bytes(hdr) + payload

    def expire(self, now: float) -> None:
        while self.table:
            key, dg = next(iter(self.table.items()))
            if now - dg.first_seen < self.s.frag_timeout:
                break
            del self.table[key]
            self.count(A.DPI_FRAG_TIMEOUT)
