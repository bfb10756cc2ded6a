"""TCP reassembly for one direction of a flow (sans-io).

Overlap policy: **first seen wins**. Bytes once delivered to the parsers are never rewritten: a
retransmission is dropped whole, a segment overlapping delivered data is trimmed to its new part, and an
out-of-order segment overlapping one already held keeps the held bytes (the newcomer contributes only
what it adds). Overlaps whose bytes differ from what is held are counted as
`dpi.stream.overlap_mismatch` (the evasion shape); plain retransmissions as `dpi.stream.retransmission`.

Bounds: out-of-order bytes held per direction (`max_buffered_bytes`) and segments held
(`max_ooo_segments`). When either would be exceeded the stream skips to the earliest held segment (a
gap, `dpi.stream.gap`) and reports `dpi.stream.buffer_full`; the engine lets the configured fallback
decide the flow, since a parser cannot follow a stream with a hole in it.

Mid-stream pick-up: with no SYN seen the first segment's sequence number starts the stream.
"""

from __future__ import annotations

from core import anomalies as A

_NONE: list[str] = []  # shared "no anomaly" list, never appended to (keeps idle streams small)
_MOD = 1 << 32
_HALF = 1 << 31


def seq_diff(a: int, b: int) -> int:
    """a - b in 32-bit sequence space, as a signed number."""
    d = (a - b) % _MOD
    return d - _MOD if d >= _HALF else d


class TcpStream:
    """Reassembly state of one direction. `segment()` returns the newly contiguous bytes."""

    __slots__ = ("next_seq", "ooo", "ooo_bytes", "max_bytes", "max_segments", "anomalies")

    def __init__(self, max_bytes: int, max_segments: int) -> None:
        self.next_seq: int | None = None
        self.ooo: dict[int, bytes] | None = (
            None  # created on first out-of-order segment (keeps idle flows small)
        )
        self.ooo_bytes = 0
        self.max_bytes = max_bytes
        self.max_segments = max_segments
        self.anomalies: list[str] = _NONE  # anomalies seen by the last call (the caller reads and counts)

    def syn(self, seq: int) -> None:
        if self.next_seq is None:
            self.next_seq = (seq + 1) % _MOD

    def segment(self, seq: int, data: bytes) -> bytes:
        """Take one segment's payload; return the bytes that became contiguous (possibly b"")."""
        if self.anomalies:
            self.anomalies = _NONE
        if not data:
            return b""
        if self.next_seq is None:
            self.next_seq = seq
        rel = seq_diff(seq, self.next_seq)
        if rel > 0:
            self._hold(seq, data)
            if self.ooo_bytes > self.max_bytes or (
                self.ooo is not None and len(self.ooo) > self.max_segments
            ):
                self._note(A.DPI_STREAM_BUFFER_FULL)
                return self._skip_gap()
            return b""
        if rel < 0:
            if -rel >= len(data):
                self._note(A.DPI_STREAM_RETRANSMISSION)
                return b""
            self._note(A.DPI_STREAM_OVERLAP)
            data = data[-rel:]
        self.next_seq = (self.next_seq + len(data)) % _MOD
        if not self.ooo:
            return data
        return data + self._drain()

    def _note(self, name: str) -> None:
        if self.anomalies is _NONE:
            self.anomalies = []
        self.anomalies.append(name)

    def _hold(self, seq: int, data: bytes) -> None:
        if self.ooo is None:
            self.ooo = {}
        held = self.ooo.get(seq)
        if held is not None:
            common = min(len(held), len(data))
            if held[:common] != data[:common]:
                self._note(A.DPI_STREAM_OVERLAP_MISMATCH)
            else:
                self._note(A.DPI_STREAM_RETRANSMISSION)
            if len(data) <= len(held):
                return
            self.ooo_bytes += len(data) - len(held)
            self.ooo[seq] = held + data[len(held) :]  # first seen wins for the common part
            return
        self.ooo[seq] = data
        self.ooo_bytes += len(data)

    def _drain(self) -> bytes:
        assert self.ooo is not None and self.next_seq is not None
        out: list[bytes] = []
        progressed = True
        while progressed and self.ooo:
            progressed = False
            for seq in list(self.ooo):
                rel = seq_diff(seq, self.next_seq)
                if rel > 0:
                    continue
                data = self.ooo.pop(seq)
                self.ooo_bytes -= len(data)
                if -rel >= len(data):
                    continue  # wholly old
                if rel < 0:
                    data = data[-rel:]
                out.append(data)
                self.next_seq = (self.next_seq + len(data)) % _MOD
                progressed = True
        return b"".join(out)

    def _skip_gap(self) -> bytes:
        """Give up on the missing bytes: jump to the earliest held segment and deliver from there."""
        assert self.ooo is not None and self.next_seq is not None
        base = self.next_seq
        earliest = min(self.ooo, key=lambda s: seq_diff(s, base))
        self._note(A.DPI_STREAM_GAP)
        self.next_seq = earliest
        return self._drain()

    def buffered(self) -> int:
        return self.ooo_bytes
