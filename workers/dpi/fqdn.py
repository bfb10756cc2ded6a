"""Address → names cache fed by DNS answers seen on the node (TTL-bounded, capped).

A name learnt from an answer lives for its TTL clamped to [min_fqdn_ttl, max_fqdn_ttl]; the cache
holds at most `max_fqdn_entries` addresses (the least recently refreshed is evicted, counted as
`dpi.fqdn.evicted`) and `max_names_per_address` names per address. Time is passed in.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable

from core import anomalies as A
from workers.dpi.events import DnsMessage
from workers.dpi.parsers.dns import TYPE_A, TYPE_AAAA, TYPE_CNAME
from workers.dpi.settings import DpiSettings

MAX_CNAME_CHAIN = 8  # CNAME hops followed back to the name asked


class FqdnCache:
    def __init__(self, settings: DpiSettings, count: Callable[[str], None] | None = None) -> None:
        self.s = settings
        self.count = count or (lambda _name: None)
        self.entries: OrderedDict[bytes, dict[str, float]] = OrderedDict()  # addr → {name: expiry}

    def __len__(self) -> int:
        return len(self.entries)

    def add(self, addr: bytes, name: str, ttl: float, now: float) -> None:
        ttl = min(max(ttl, self.s.min_fqdn_ttl), self.s.max_fqdn_ttl)
        names = self.entries.pop(addr, None)
        if names is None:
            if len(self.entries) >= self.s.max_fqdn_entries:
                self.entries.popitem(last=False)
                self.count(A.DPI_FQDN_EVICTED)
            names = {}
        names[name] = now + ttl
        if len(names) > self.s.max_names_per_address:
            oldest = min(names, key=names.__getitem__)
            del names[oldest]
        self.entries[addr] = names

    def names(self, addr: bytes, now: float) -> tuple[str, ...]:
        names = self.entries.get(addr)
        if not names:
            return ()
        live = tuple(sorted(n for n, exp in names.items() if exp > now))
        if not live:
            del self.entries[addr]
        return live

    def learn(self, msg: DnsMessage, now: float) -> list[tuple[str, bytes, float]]:
        """Record the A/AAAA answers of a response under their owner name and the names that led to it
        through CNAMEs (so `www.example.com` → CNAME → address maps to both). Returns what was learnt as
        (name, address, ttl) triples, for the policy process's FQDN groups."""
        if not msg.qr or msg.rcode != 0:
            return []
        aliases: dict[str, str] = {}
        for ans in msg.answers:
            if ans.rtype == TYPE_CNAME and ans.target:
                aliases[ans.target] = ans.name
        added: list[tuple[str, bytes, float]] = []
        for ans in msg.answers:
            if (ans.rtype == TYPE_A and len(ans.data) == 4) or (
                ans.rtype == TYPE_AAAA and len(ans.data) == 16
            ):
                name = ans.name
                for _ in range(MAX_CNAME_CHAIN + 1):
                    self.add(ans.data, name, float(ans.ttl), now)
                    added.append((name, ans.data, float(ans.ttl)))
                    nxt = aliases.get(name)
                    if nxt is None or nxt == name:
                        break
                    name = nxt
        return added

    def expire(self, now: float, budget: int = 1024) -> None:
        """Drop up to `budget` wholly expired addresses, oldest first."""
        for addr in list(itertools.islice(self.entries, budget)):
            names = self.entries[addr]
            if all(exp <= now for exp in names.values()):
                del self.entries[addr]
