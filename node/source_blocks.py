"""Sources cut off by a block-source action, dropped by the kernel until their time is up.

A reader that blocks a source drops that source's new connections itself; under a flood that still
costs the reader every packet, and a full queue with `failure.queue_full = "pass"` lets the excess
through unjudged. So the reader also asks the supervisor, the one owner of our iptables chains, to drop
the source before it is queued at all: one `-s ADDR -j DROP` rule per source in our block chain. The
supervisor keeps them here, merges requests from every reader, takes each rule out when its time is
up, and caps their number (`max_sources`; beyond it the readers' own drops still apply, counted as
`source_blocks.full`). Changes are batched: one iptables-restore per family per call to `apply`.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import Counter

from node.netfilter import Netfilter, NetfilterError

log = logging.getLogger(__name__)


class SourceBlocks:
    def __init__(self, netfilter: Netfilter, max_sources: int) -> None:
        self.netfilter = netfilter
        self.max_sources = max_sources
        self.until: dict[bytes, float] = {}  # raw address → monotonic time the block ends
        self._add: set[bytes] = set()
        self._remove: set[bytes] = set()
        self.counters: Counter[str] = Counter()

    def block(self, addr: bytes, seconds: float, now: float) -> None:
        """Block `addr` for `seconds` from `now` (a longer block already in place is kept)."""
        until = now + seconds
        if addr in self.until:
            self.until[addr] = max(self.until[addr], until)
            return
        if len(self.until) >= self.max_sources:
            self.counters["source_blocks.full"] += 1
            return
        self.until[addr] = until
        self._remove.discard(addr)
        self._add.add(addr)
        self.counters["source_blocks.added"] += 1

    def expire(self, now: float) -> None:
        for addr, until in list(self.until.items()):
            if until <= now:
                del self.until[addr]
                if addr in self._add:
                    self._add.discard(addr)  # never installed
                else:
                    self._remove.add(addr)
                self.counters["source_blocks.expired"] += 1

    def apply(self) -> None:
        """Carry the pending changes into the kernel (nothing to do costs nothing)."""
        if not self._add and not self._remove:
            return
        for family, size in ((4, 4), (6, 16)):
            add = [str(ipaddress.ip_address(a)) for a in self._add if len(a) == size]
            remove = [str(ipaddress.ip_address(a)) for a in self._remove if len(a) == size]
            # Separately: a rule that is already gone (our chains were reinstalled) must not keep the
            # new blocks out.
            for adding, removing in ((add, []), ([], remove)):
                try:
                    self.netfilter.update_blocks(family, adding, removing)
                except NetfilterError as exc:
                    # The readers still drop these sources' new connections: the kernel rule saves CPU.
                    self.counters["source_blocks.failed"] += 1
                    log.warning("%s", exc)
        self._add.clear()
        self._remove.clear()

    def __len__(self) -> int:
        return len(self.until)
