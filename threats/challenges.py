"""SYNs refused at a flooded destination, remembered in fixed memory for the retransmission check.

A real client retransmits a refused SYN after a pause (same ports, same sequence number); a flood tool
does not. A least-recently-used table of refused SYNs fails exactly when it matters: at N forged SYNs a
second, a table of C entries forgets a real client's SYN C/N seconds later, and if that comes before the
client's retransmission (Linux: after 1 s, then 2 s, 4 s …) the client is refused again, each time.

Here a refused SYN's hash picks one slot of a direct-mapped table; the slot keeps the rest of the hash
(to tell that SYN from others landing there) and the time. A flood overwrites slots at random rather
than in order, so a real client's SYN survives t seconds of N refused SYNs a second with probability
exp(-N·t/slots): with 2**20 slots and 100,000 refused SYNs a second, 91 % after one second; a miss costs
the client one more retransmission, not all of them. Memory: 8 bytes a slot, allocated at the first
refusal, so a reader that never sees a flood pays nothing. The hash is Python's, seeded per process
through the addresses' hash, so which slot a SYN takes cannot be known from outside.
"""

from __future__ import annotations

from array import array
from collections.abc import Hashable

TICKS_PER_S = 100  # times kept in hundredths of a second since the table was allocated
_MAX_TICK = 0xFFFFFFFF  # an unsigned 32-bit time: 497 days, then the table starts afresh
_MAX_SLOTS = 1 << 28


class RefusedSyns:
    """Refused SYNs (any hashable key naming the SYN, sequence number included) and when."""

    __slots__ = ("slots", "_mask", "_tags", "_ticks", "_base", "in_use", "overwritten")

    def __init__(self, slots: int) -> None:
        if not 1 <= slots <= _MAX_SLOTS:
            raise ValueError(f"slots must be between 1 and {_MAX_SLOTS}")
        self.slots = 1 << (slots - 1).bit_length()  # a power of two, so a slot is the hash's low bits
        self._mask = self.slots - 1
        self._tags = array("I")
        self._ticks = array("I")  # 0: an empty slot
        self._base = 0.0
        self.in_use = 0  # slots holding a SYN
        self.overwritten = 0  # SYNs forgotten because another took their slot

    def remember(self, syn: Hashable, now: float) -> None:
        """`syn` was refused at `now` (again: its pause starts afresh)."""
        if not self._ticks:
            self._allocate(now)
        tick = int((now - self._base) * TICKS_PER_S) + 1
        if tick > _MAX_TICK:
            self._allocate(now)
            tick = 1
        h = hash(syn)
        i, tag = h & self._mask, (h >> 32) & 0xFFFFFFFF
        if not self._ticks[i]:
            self.in_use += 1
        elif self._tags[i] != tag:
            self.overwritten += 1
        self._tags[i] = tag
        self._ticks[i] = tick

    def take(self, syn: Hashable) -> float | None:
        """When `syn` was last refused, if it is still remembered; it is forgotten either way."""
        if not self._ticks:
            return None
        h = hash(syn)
        i = h & self._mask
        tick = self._ticks[i]
        if not tick or self._tags[i] != (h >> 32) & 0xFFFFFFFF:
            return None
        self._ticks[i] = 0
        self.in_use -= 1
        return self._base + (tick - 1) / TICKS_PER_S

    def _allocate(self, now: float) -> None:
        self._tags = array("I", bytes(4 * self.slots))
        self._ticks = array("I", bytes(4 * self.slots))
        self._base = now
        self.in_use = 0

    def __len__(self) -> int:
        return self.in_use
