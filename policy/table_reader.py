"""Reader side of the shared policy tables: lock-free lookups (`core.lookup.PolicyTables`) and the
derived document of the generation in force.

A reader reads the generation, looks up, and re-reads the generation; if it moved (or the half's own
generation word disagrees), it retries, so a lookup never mixes two policies even when the writer had to
reuse a half. A reader acknowledges every generation it notices (its slot in the control page), which
lets the writer reuse a half without waiting; a reader without a slot (the runtime child, which only
reads the document now and then) relies on the re-check alone.
"""

from __future__ import annotations

import mmap
import os
import time
from array import array
from pathlib import Path
from typing import Final, NamedTuple

from core.apps import SERVER_APP_MASK
from core.lookup import Action, Decision, Mode, Report
from policy.document import MAX_DOCUMENT_BYTES
from policy.layout import (
    CONTROL_BYTES,
    FIB,
    H_DOC,
    H_DOC_DIGEST,
    H_DOC_LEN,
    H_ENTRIES,
    H_GEN,
    H_HOST_IDX,
    H_HOST_POOL,
    H_MODES,
    H_NAME_IDX,
    H_NAME_POOL,
    H_NGROUPS,
    H_NHOSTSETS,
    H_NV6,
    H_PAIR_BITS,
    H_PAIRS,
    H_USED,
    H_V4DIR,
    H_V6DIR,
    H_VERSION,
    HEADER_WORDS,
    L1,
    LAYOUT_VERSION,
    M64,
    MAGIC,
    MAX_READER_SLOTS,
    PTR,
    RETIRED,
    SLOT_BASE,
    W_GEN,
    W_HALF,
    W_LAYOUT,
    W_MAGIC,
    TablesError,
    tables_path,
)
from policy.model import PROTO_ANY, PROTO_ICMP
from policy.tables import EXTERNAL_INDEX, AppKey, app_key, host_matches

MAX_LOOKUP_RETRIES = 1000  # a lookup retries this often on a generation change, then gives a fallback
ADDRESS_CACHE_ENTRIES = 65536  # per reader: address → group, valid for one generation (cleared when full)
DECISION_CACHE_ENTRIES = 65536  # per reader: (groups, proto, port, app) → decision, for one generation

_new = tuple.__new__  # builds a Decision without the NamedTuple's Python-level __new__
_MODES: Final = tuple(Mode)
_REPORT_NONE, _REPORT_LEARNED, _REPORT_VIOLATION = Report.NONE, Report.LEARNED, Report.VIOLATION
_ALLOW, _DENY = Action.ALLOW, Action.DENY
_PROTECT, _DISCOVER = Mode.PROTECT, Mode.DISCOVER


class PublishedDocument(NamedTuple):
    """A generation and its derived document (`policy.document`), as published together."""

    generation: int
    digest: int
    data: bytes  # empty when only the digest was asked for


class SharedTables:
    """Reader side: implements `core.lookup.PolicyTables` over the shared file, lock-free.

    Each reader keeps private caches (address → group, (groups, protocol, port, app) → decision), valid
    for one generation and dropped when it moves, so repeated lookups cost a dict probe.
    `slot` is this process's reader slot (0..MAX_READER_SLOTS-1, unique per process: the supervisor
    hands them out); None for a process that only reads the derived document now and then, so the
    writer never waits for it. `fallback_mode` decides what a lookup answers when no policy is published yet or
    a lookup could not complete (the answer is then not final, so the reader asks again).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        slot: int | None,
        fallback_mode: Mode = Mode.MONITOR,
        cache: bool = True,
    ) -> None:
        if slot is not None and not 0 <= slot < MAX_READER_SLOTS:
            raise TablesError(f"reader slot {slot} outside 0..{MAX_READER_SLOTS - 1}")
        self.path = Path(path)
        self.slot = slot
        self.cache = cache  # False: every lookup reads the shared tables (tests, benchmarks)
        self.fallback_mode = fallback_mode
        self.gave_up = 0  # lookups that exhausted their retries
        self.retries = 0  # lookups repeated because the generation moved underneath
        self._mm: mmap.mmap | None = None
        self._attach()

    def _attach(self) -> None:
        fd = os.open(self.path, os.O_RDWR | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0))
        try:
            size = os.fstat(fd).st_size
            if size < CONTROL_BYTES:
                raise TablesError(f"{self.path}: not a policy tables file (too small)")
            mm = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        q = memoryview(mm).cast("Q")
        if q[W_MAGIC] != MAGIC or q[W_LAYOUT] != LAYOUT_VERSION:
            q.release()
            mm.close()
            raise TablesError(f"{self.path}: not a policy tables file of layout {LAYOUT_VERSION}")
        half = int(q[W_HALF])
        if size != CONTROL_BYTES + 2 * half:
            q.release()
            mm.close()
            raise TablesError(f"{self.path}: size {size} does not match its half size {half}")
        self._mm = mm
        self._q = q
        self._i = memoryview(mm).cast("I")
        self._b = memoryview(mm)
        self._half = half
        self._slot_word = -1 if self.slot is None else SLOT_BASE + 2 * self.slot
        if self._slot_word >= 0:
            q[self._slot_word + 1] = 0
            q[self._slot_word] = os.getpid()
        self._acked = 0
        self._layout_gen = -1
        self._cache_gen = -1
        self._names: dict[int, str] = {}
        self._host_sets: dict[int, tuple[str, ...]] = {}
        self._addr_cache: dict[bytes, int] = {}
        self._decision_cache: dict[tuple[int, int, int, int, AppKey | None], Decision] = {}

    def close(self) -> None:
        if self._mm is None:
            return
        if self._slot_word >= 0:
            self._q[self._slot_word] = 0
        for view in (self._q, self._i, self._b):
            view.release()
        self._mm.close()
        self._mm = None

    def _reopen(self) -> bool:
        """Map the file now at our path (the writer replaced ours); False if it cannot be mapped."""
        old = (self._mm, self._q, self._i, self._b)
        slot_word = self._slot_word
        try:
            self._attach()
        except (OSError, TablesError):
            return False
        if slot_word >= 0:
            old[1][slot_word] = 0
        for view in old[1:]:
            view.release()
        if old[0] is not None:
            old[0].close()
        return True

    def generation(self) -> int:
        for _ in range(MAX_LOOKUP_RETRIES):
            g: int = self._q[W_GEN]
            if g == self._cache_gen:
                return g
            if not g & RETIRED:
                self._new_generation(g)
                return g
            if not self._reopen():
                return 0
        return 0

    def version(self) -> int:
        """The policy version of the published generation (0 when none)."""
        for _ in range(MAX_LOOKUP_RETRIES):
            g = self.generation()
            if g == 0:
                return 0
            base = (CONTROL_BYTES + (g & 1) * self._half) >> 3
            v = int(self._q[base + H_VERSION])
            if self._q[base + H_GEN] == g and self._q[W_GEN] == g:
                return v
        return 0

    def document_digest(self) -> tuple[int, int]:
        """(generation in force, digest of its derived document); (0, 0) before any is published or when
        no consistent read was possible (ask again later)."""
        published = self._read_document(with_data=False)
        return (published.generation, published.digest) if published is not None else (0, 0)

    def document(self) -> PublishedDocument | None:
        """The generation in force with its encoded derived document, read whole: never a half-written
        one, never another generation's. None before any is published or when no consistent read was
        possible (ask again later)."""
        return self._read_document(with_data=True)

    def _read_document(self, with_data: bool) -> PublishedDocument | None:
        for _ in range(MAX_LOOKUP_RETRIES):
            g = self.generation()
            if g == 0:
                return None
            q = self._q  # after generation(): it may have mapped a new file
            base = CONTROL_BYTES + (g & 1) * self._half
            w = base >> 3
            at, length, digest = int(q[w + H_DOC]), int(q[w + H_DOC_LEN]), int(q[w + H_DOC_DIGEST])
            fits = at + length <= self._half and length <= MAX_DOCUMENT_BYTES
            data = bytes(self._b[base + at : base + at + length]) if with_data and fits else b""
            if q[w + H_GEN] == g and q[W_GEN] == g:
                if not fits:
                    raise TablesError(f"{self.path}: derived document of generation {g} out of bounds")
                return PublishedDocument(g, digest, data)
            self.retries += 1
        self.gave_up += 1
        return None

    def _load_layout(self, g: int, base: int) -> None:
        """Decode the half's header into Python values (trusted only after the generation re-check)."""
        q = self._q
        words = [int(q[(base >> 3) + i]) for i in range(HEADER_WORDS)]
        if words[H_GEN] != g or words[H_USED] > self._half:
            raise IndexError("half not consistent with the generation")
        self._l1 = (base + words[H_V4DIR]) >> 2
        self._chunks = self._l1 + L1
        v6 = []
        d = (base + words[H_V6DIR]) >> 3
        for k in range(min(words[H_NV6], 129)):
            plen, off, bits = int(q[d + 3 * k]), int(q[d + 3 * k + 1]), int(q[d + 3 * k + 2])
            v6.append((128 - plen, (base + off) >> 3, 64 - bits, (1 << bits) - 1))
        self._v6 = tuple(v6)
        self._ngroups = words[H_NGROUPS]
        self._modes_at = base + words[H_MODES]
        self._name_idx = (base + words[H_NAME_IDX]) >> 3
        self._name_pool = base + words[H_NAME_POOL]
        pair_bits = words[H_PAIR_BITS]
        self._pairs = (base + words[H_PAIRS]) >> 3
        self._pair_shift = 64 - pair_bits
        self._pair_mask = (1 << pair_bits) - 1
        self._entries = (base + words[H_ENTRIES]) >> 3
        self._nhostsets = words[H_NHOSTSETS]
        self._host_idx = (base + words[H_HOST_IDX]) >> 3
        self._host_pool = base + words[H_HOST_POOL]
        self._names = {}
        self._host_sets = {}

    def _group4(self, value: int) -> int:
        ia = self._i
        e = ia[self._l1 + (value >> 16)]
        if e & PTR:
            e = ia[self._chunks + ((e & 0x7FFFFFFF) << 8) + ((value >> 8) & 255)]
            if e & PTR:
                e = ia[self._chunks + ((e & 0x7FFFFFFF) << 8) + (value & 255)]
        return e - 1 if e else EXTERNAL_INDEX

    def _group6(self, value: int) -> int:
        q = self._q
        for shift, at, hshift, mask in self._v6:
            key = value >> shift
            hi, lo = key >> 64, key & M64
            s = (((hi ^ lo) * FIB) & M64) >> hshift
            for _ in range(mask + 1):
                i = at + 3 * s
                v = q[i + 2]
                if not v:
                    break
                if q[i + 1] == lo and q[i] == hi:
                    return v - 1
                s = (s + 1) & mask
        return EXTERNAL_INDEX

    def _name(self, gidx: int) -> str:
        name = self._names.get(gidx)
        if name is None:
            idx = self._name_idx + gidx
            start, end = self._q[idx], self._q[idx + 1]
            if end < start or end - start > 1024:
                raise IndexError("bad name index")
            name = bytes(self._b[self._name_pool + start : self._name_pool + end]).decode()
            # Cached at once: if this attempt fails its generation re-check, the layout (and this cache)
            # is dropped and reloaded before the next attempt.
            self._names[gidx] = name
        return name

    def _host_set(self, k: int) -> tuple[str, ...]:
        patterns = self._host_sets.get(k)
        if patterns is None:
            if not 1 <= k <= self._nhostsets:
                raise IndexError("host set out of range")
            idx = self._host_idx + k - 1
            start, end = self._q[idx], self._q[idx + 1]
            if end < start or end - start > 300 * 256:
                raise IndexError("bad host set index")
            patterns = tuple(
                bytes(self._b[self._host_pool + start : self._host_pool + end]).decode().split("\n")
            )
            self._host_sets[k] = patterns  # dropped with the layout if the generation re-check fails
        return patterns

    def _lookup(self, g: int, sg: int, dg: int, proto: int, dport: int, app: AppKey | None) -> Decision:
        if sg >= self._ngroups or dg >= self._ngroups:
            raise IndexError("group index out of range")
        mode = _MODES[self._b[self._modes_at + (sg if dg == EXTERNAL_INDEX and sg != EXTERNAL_INDEX else dg)]]
        q = self._q
        key = (sg + 1) << 32 | (dg + 1)
        mask = self._pair_mask
        s = ((key * FIB) & M64) >> self._pair_shift
        first = count = 0
        for _ in range(mask + 1):
            k = q[self._pairs + 2 * s]
            if not k:
                break
            if k == key:
                v = q[self._pairs + 2 * s + 1]
                first, count = v >> 32, v & 0xFFFFFFFF
                break
            s = (s + 1) & mask
        at = self._entries + 3 * first
        for _ in range(count):
            w0 = q[at]
            p = (w0 >> 32) & 0xFF
            if p != PROTO_ANY:
                if p == PROTO_ICMP:
                    if proto != PROTO_ICMP and proto != 58:
                        at += 3
                        continue
                elif p != proto:
                    at += 3
                    continue
                else:
                    w1 = q[at + 1]
                    if not (w1 & 0xFFFF) <= dport <= (w1 >> 16):
                        at += 3
                        continue
            apps = q[at + 2]
            rule_id = w0 & 0xFFFFFFFF
            hosts = w0 >> 41
            if apps or hosts:
                if app is None or (app[2] and apps & SERVER_APP_MASK and not apps & app[0]):
                    return _new(
                        Decision,
                        (_ALLOW, False, rule_id, mode, _REPORT_NONE, self._name(sg), self._name(dg), g),
                    )
                if (apps and not apps & app[0]) or (
                    hosts and not host_matches(self._host_set(hosts), app[1])
                ):
                    at += 3
                    continue
            if (w0 >> 40) & 1:
                return _new(
                    Decision, (_ALLOW, True, rule_id, mode, _REPORT_NONE, self._name(sg), self._name(dg), g)
                )
            action = _DENY if mode == _PROTECT else _ALLOW
            return _new(
                Decision, (action, True, rule_id, mode, _REPORT_VIOLATION, self._name(sg), self._name(dg), g)
            )
        if mode == _DISCOVER:
            action, report = _ALLOW, _REPORT_LEARNED
        elif mode == _PROTECT:
            action, report = _DENY, _REPORT_VIOLATION
        else:
            action, report = _ALLOW, _REPORT_VIOLATION
        return _new(Decision, (action, True, 0, mode, report, self._name(sg), self._name(dg), g))

    def _new_generation(self, g: int) -> bool:
        """Switch the caches to generation g (acknowledging it); False if nothing is published."""
        q = self._q
        if g & RETIRED:
            if not self._reopen():
                raise TablesError(f"{self.path}: tables retired and no new file to map")
            return False
        self._addr_cache = {}
        self._decision_cache = {}
        self._cache_gen = g
        if g:
            if self._slot_word >= 0:
                q[self._slot_word + 1] = g
            self._acked = g
        return bool(g)

    def _decide(self, src: bytes, dst: bytes, proto: int, dport: int, app: AppKey | None) -> Decision:
        q = self._q
        g = q[W_GEN]
        if g == self._cache_gen and self.cache:
            # Fast path: everything cached was read and validated while g was published, and the half
            # of a published generation does not change, so no re-check is needed.
            addrs = self._addr_cache
            sg = addrs.get(src)
            dg = addrs.get(dst)
            if sg is not None and dg is not None:
                d = self._decision_cache.get((sg, dg, proto, dport, app))
                if d is not None:
                    return d
        for _ in range(MAX_LOOKUP_RETRIES):
            try:
                switched = g == self._cache_gen or self._new_generation(g)
            except TablesError:
                break
            if not switched:
                q = self._q  # the mapping may have been reopened
                g = q[W_GEN]
                continue
            if g == 0:
                break
            csg = cdg = 0
            try:
                if g != self._layout_gen:
                    self._layout_gen = -1
                    self._load_layout(g, CONTROL_BYTES + (g & 1) * self._half)
                n = len(src)
                csg = (
                    self._group4(int.from_bytes(src, "big"))
                    if n == 4
                    else self._group6(int.from_bytes(src, "big"))
                    if n == 16
                    else EXTERNAL_INDEX
                )
                n = len(dst)
                cdg = (
                    self._group4(int.from_bytes(dst, "big"))
                    if n == 4
                    else self._group6(int.from_bytes(dst, "big"))
                    if n == 16
                    else EXTERNAL_INDEX
                )
                decision: Decision | None = self._lookup(g, csg, cdg, proto, dport, app)
            except (IndexError, ValueError, UnicodeDecodeError):
                decision = None
            if decision is not None and q[W_GEN] == g:
                self._layout_gen = g
                if not self.cache:
                    return decision
                addrs = self._addr_cache
                cache = self._decision_cache
                if len(addrs) >= ADDRESS_CACHE_ENTRIES:
                    addrs.clear()
                if len(cache) >= DECISION_CACHE_ENTRIES:
                    cache.clear()
                addrs[src] = csg
                addrs[dst] = cdg
                cache[(csg, cdg, proto, dport, app)] = decision
                return decision
            self._layout_gen = -1
            self.retries += 1
            g = q[W_GEN]
        else:
            self.gave_up += 1
        return self._fallback()

    def _fallback(self) -> Decision:
        mode = self.fallback_mode
        action = _DENY if mode == _PROTECT else _ALLOW
        return Decision(action, False, 0, mode, _REPORT_NONE, "external", "external", 0)

    def decide(self, family: int, src: bytes, dst: bytes, proto: int, dport: int) -> Decision:
        if self._q[W_GEN] == self._cache_gen and self.cache:
            # `_decide`'s fast path, here: every new connection's first packet asks, one call less
            sg = self._addr_cache.get(src)
            dg = self._addr_cache.get(dst)
            if sg is not None and dg is not None:
                d = self._decision_cache.get((sg, dg, proto, dport, None))
                if d is not None:
                    return d
        return self._decide(src, dst, proto, dport, None)

    def decide_app(
        self,
        family: int,
        src: bytes,
        dst: bytes,
        proto: int,
        dport: int,
        app: str,
        host: str = "",
        server_app: str | None = "",
    ) -> Decision:
        return self._decide(src, dst, proto, dport, app_key(app, host, server_app))


def wait_for_tables(path: str | os.PathLike[str], timeout: float) -> bool:
    """Wait until the tables file exists and has a published generation (start-up ordering)."""
    deadline = time.monotonic() + timeout
    p = Path(path)
    while time.monotonic() < deadline:
        try:
            with p.open("rb") as f:
                head = f.read(3 * 8)
            if len(head) == 24:
                words = array("Q", head)
                if words[W_MAGIC] == MAGIC and words[W_GEN] and not words[W_GEN] & RETIRED:
                    return True
        except OSError:
            pass
        time.sleep(0.005)
    return False


def table_slot(role: str, index: int, readers: int, workers: int) -> int:
    """The reader slot of a process in the shared tables: readers first, then workers, then runtime."""
    if role == "reader":
        return index
    if role == "worker":
        return readers + index
    return readers + workers + index


def open_shared_tables(
    run_dir: str, slot: int | None, startup_mode: Mode = Mode.MONITOR, timeout: float = 10.0
) -> SharedTables:
    """For readers and workers: wait (bounded) for the policy process's tables, then map them.

    The policy process publishes before it binds anything, so the wait is short; if the file is there
    but nothing is published yet, lookups answer non-final decisions in `startup_mode`.
    """
    path = tables_path(run_dir)
    deadline = time.monotonic() + timeout
    wait_for_tables(path, timeout)
    while True:
        try:
            return SharedTables(path, slot, fallback_mode=startup_mode)
        except FileNotFoundError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.01)
