"""Compiled policy tables in shared memory: one writer (the policy process), lock-free readers.

The tables live in a file mapped by every process (in the 0700 runtime directory, ideally on tmpfs):

    control page (4 KiB, 64-bit words)      half 0 (table_bytes)      half 1 (table_bytes)
      0 magic  1 layout  2 generation  3 half size  4 writer pid  5 forced reuses  6 reader slots
      16 + 2*i: reader slot i (pid, acknowledged generation)

Generation G (G >= 1) lives in half G % 2; generation 0 means nothing published yet. The writer
compiles generation G+1 into the other half, in one copy, and then stores the generation word: that
store publishes it. Before it overwrites a half it waits (bounded by `reuse_wait`) until every live
reader has acknowledged a generation newer than the one the half held; a reader acknowledges whenever
it notices a new generation (in `decide` and `generation`). Correctness does not rest on the
acknowledgements alone: a reader reads the generation, looks up, and re-reads the generation; if it
moved (or the half's own generation word disagrees), it retries. So a lookup never mixes two policies
even when the writer has to reuse a half after the wait runs out (counted in "forced reuses").

Word stores and loads are single aligned 64-bit moves, and x86 keeps stores in order; on weakly
ordered CPUs this scheme would need barriers that pure Python cannot issue.

The file is created, resized and unlinked only by the writer. It is a plain file (not
`multiprocessing.shared_memory`), so Python's resource tracker never sees it and cannot unlink it
behind our back; readers hold nothing but a mapping. A writer restarted by the supervisor reattaches
to the existing file and continues its generation count, so readers keep their tables across restarts.
When the writer must replace the file (another size), it marks the old one retired (a bit in the
generation word) and readers reopen the path.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import time
from array import array
from pathlib import Path
from typing import Final

from core.apps import SERVER_APP_MASK
from core.lookup import Action, Decision, Mode, Report
from policy.model import PROTO_ANY, PROTO_ICMP
from policy.tables import EXTERNAL_INDEX, AppKey, CompiledPolicy, app_key, host_matches

MAGIC: Final = 0x454E46504F4C5442  # "ENFPOLTB"
LAYOUT_VERSION: Final = 3
CONTROL_BYTES: Final = 4096
RETIRED: Final = 1 << 62  # set in the generation word of a file the writer has replaced

# Control words.
_W_MAGIC, _W_LAYOUT, _W_GEN, _W_HALF, _W_WRITER, _W_FORCED, _W_SLOTS = range(7)
_SLOT_BASE: Final = 16

# Named bounds (overridable by the callers from the config).
DEFAULT_TABLE_BYTES = 8 * 1024 * 1024  # per half: 10,000 rules and 5,000 groups need well under 1 MiB
MAX_READER_SLOTS = 128  # readers, workers and others mapping the tables (2 words each in the control page)
DEFAULT_REUSE_WAIT = 0.010  # seconds the writer waits for readers to leave a half before reusing it
MAX_LOOKUP_RETRIES = 1000  # a lookup retries this often on a generation change, then gives a fallback
ADDRESS_CACHE_ENTRIES = 65536  # per reader: address → group, valid for one generation (cleared when full)
DECISION_CACHE_ENTRIES = 65536  # per reader: (groups, proto, port, app) → decision, for one generation

# Half header words.
HEADER_WORDS: Final = 24
(
    _H_GEN,
    _H_VERSION,
    _H_NGROUPS,
    _H_MODES,
    _H_NAME_IDX,
    _H_NAME_POOL,
    _H_NV4,
    _H_V4DIR,
    _H_NV6,
    _H_V6DIR,
    _H_PAIRS,
    _H_PAIR_BITS,
    _H_ENTRIES,
    _H_NENTRIES,
    _H_USED,
    _H_NHOSTSETS,
    _H_HOST_IDX,
    _H_HOST_POOL,
) = range(18)

_new = tuple.__new__  # builds a Decision without the NamedTuple's Python-level __new__
_FIB: Final = 0x9E3779B97F4A7C15
_M64: Final = (1 << 64) - 1
_MODES: Final = tuple(Mode)
_REPORT_NONE, _REPORT_LEARNED, _REPORT_VIOLATION = Report.NONE, Report.LEARNED, Report.VIOLATION
_ALLOW, _DENY = Action.ALLOW, Action.DENY
_PROTECT, _DISCOVER = Mode.PROTECT, Mode.DISCOVER


class TablesError(RuntimeError):
    """The shared tables cannot be created, opened or written (the message says which and why)."""


class TablesFull(TablesError):
    """A compiled policy does not fit in one half of the region (raise `table_bytes`)."""


def _table_bits(n: int) -> int:
    """log2 of an open-addressing table size holding n keys at load factor <= 1/2."""
    bits = 1
    while (1 << bits) < 2 * n:
        bits += 1
    return bits


def _slot(key: int, bits: int) -> int:
    return ((key * _FIB) & _M64) >> (64 - bits)


_PTR: Final = 0x80000000
_L1: Final = 1 << 16


def _v4_trie(v4: dict[int, dict[int, int]]) -> tuple[array[int], int]:
    """Build the v4 trie: prefixes painted shortest first, so longer ones overwrite what they cover."""
    table = array("I", bytes(4 * _L1))
    nchunks = 0

    def child(at: int) -> int:
        """The chunk below entry `at`, created (inheriting the entry's group) if it has none."""
        nonlocal nchunks
        e = table[at]
        if e & _PTR:
            return _L1 + ((e & ~_PTR) << 8)
        table.extend(array("I", [e]) * 256)
        table[at] = _PTR | nchunks
        nchunks += 1
        return _L1 + ((nchunks - 1) << 8)

    for plen in sorted(v4):
        for key, gidx in v4[plen].items():
            leaf = gidx + 1
            addr = key << (32 - plen) if plen else 0
            if plen <= 16:
                start, n = addr >> 16, 1 << (16 - plen)
                table[start : start + n] = array("I", [leaf]) * n
                continue
            level2 = child(addr >> 16)
            if plen <= 24:
                start, n = level2 + ((addr >> 8) & 255), 1 << (24 - plen)
                table[start : start + n] = array("I", [leaf]) * n
                continue
            level3 = child(level2 + ((addr >> 8) & 255))
            start, n = level3 + (addr & 255), 1 << (32 - plen)
            table[start : start + n] = array("I", [leaf]) * n
    return table, nchunks


def _align8(n: int) -> int:
    return (n + 7) & ~7


def serialize(compiled: CompiledPolicy, generation: int) -> bytes:
    """Lay a compiled policy out as one half (offsets relative to the half's start)."""
    n = len(compiled.names)
    parts: list[bytes] = []
    offset = HEADER_WORDS * 8
    header = [0] * HEADER_WORDS

    def add(blob: bytes) -> int:
        nonlocal offset
        at = offset
        padded = blob + b"\0" * (_align8(len(blob)) - len(blob))
        parts.append(padded)
        offset += len(padded)
        return at

    header[_H_GEN] = generation
    header[_H_VERSION] = compiled.version
    header[_H_NGROUPS] = n
    header[_H_MODES] = add(bytes(int(m) for m in compiled.modes))
    encoded = [name.encode() for name in compiled.names]
    index = array("Q", [0])
    for e in encoded:
        index.append(index[-1] + len(e))
    header[_H_NAME_IDX] = add(index.tobytes())
    header[_H_NAME_POOL] = add(b"".join(encoded))

    # v4: a 16-8-8 multibit trie of uint32 words: 65,536 first-level entries, then 256-entry chunks.
    # An entry is 0 (no group), group + 1, or _PTR | chunk number (look at the next 8 bits there).
    trie, chunks = _v4_trie(compiled.v4)
    header[_H_NV4] = chunks
    header[_H_V4DIR] = add(trie.tobytes())

    # v6: uint64 slots of three words (key high, key low, group + 1).
    v6dir = array("Q")
    for plen, members in compiled.v6.items():
        bits = _table_bits(len(members))
        size = 1 << bits
        mask = size - 1
        table = array("Q", bytes(24 * size))
        for key, gidx in members.items():
            hi, lo = key >> 64, key & _M64
            s = _slot(hi ^ lo, bits)
            while table[3 * s + 2]:
                s = (s + 1) & mask
            table[3 * s] = hi
            table[3 * s + 1] = lo
            table[3 * s + 2] = gidx + 1
        v6dir.extend((plen, add(table.tobytes()), bits))
    header[_H_NV6] = len(compiled.v6)
    header[_H_V6DIR] = add(v6dir.tobytes())

    # Rule entries, three words each: id | proto << 32 | allow << 40 | host set << 41; low | high << 16;
    # app mask. Host set k (1-based; 0 = any host) is pool[index[k-1]:index[k]], patterns joined by "\n".
    # Pairs: uint64 slots of two words ((src + 1) << 32 | (dst + 1), first entry << 32 | count).
    host_sets: dict[tuple[str, ...], int] = {}
    for rule_entries in compiled.pairs.values():
        for re_ in rule_entries:
            if re_.hosts:
                host_sets.setdefault(re_.hosts, len(host_sets) + 1)
    host_pool = [("\n".join(hosts)).encode() for hosts in host_sets]
    host_index = array("Q", [0])
    for blob in host_pool:
        host_index.append(host_index[-1] + len(blob))
    header[_H_NHOSTSETS] = len(host_sets)
    header[_H_HOST_IDX] = add(host_index.tobytes())
    header[_H_HOST_POOL] = add(b"".join(host_pool))
    entries = array("Q")
    pair_bits = _table_bits(len(compiled.pairs))
    pair_mask = (1 << pair_bits) - 1
    pairs = array("Q", bytes(16 * (1 << pair_bits)))
    for (sg, dg), rule_entries in compiled.pairs.items():
        first = len(entries) // 3
        for re_ in rule_entries:
            hosts = host_sets[re_.hosts] if re_.hosts else 0
            entries.extend(
                (
                    re_.rule_id | re_.proto << 32 | int(re_.allow) << 40 | hosts << 41,
                    re_.low | re_.high << 16,
                    re_.app_mask,
                )
            )
        key = (sg + 1) << 32 | (dg + 1)
        s = _slot(key, pair_bits)
        while pairs[2 * s]:
            s = (s + 1) & pair_mask
        pairs[2 * s] = key
        pairs[2 * s + 1] = first << 32 | len(rule_entries)
    header[_H_PAIRS] = add(pairs.tobytes())
    header[_H_PAIR_BITS] = pair_bits
    header[_H_NENTRIES] = len(entries) // 3
    header[_H_ENTRIES] = add(entries.tobytes())
    header[_H_USED] = offset
    return array("Q", header).tobytes() + b"".join(parts)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class TablesWriter:
    """The single writer: owns the tables file, publishes compiled policies by generation."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        table_bytes: int = DEFAULT_TABLE_BYTES,
        reuse_wait: float = DEFAULT_REUSE_WAIT,
    ) -> None:
        self.path = Path(path)
        self.table_bytes = _align8(table_bytes)
        self.reuse_wait = reuse_wait
        self.size = CONTROL_BYTES + 2 * self.table_bytes
        self._fd = -1
        self._open()

    def _open(self) -> None:
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(self.path, flags, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise TablesError(f"{self.path}: another policy process is writing these tables") from None
        st = os.fstat(fd)
        reuse = st.st_size == self.size
        if reuse:
            with mmap.mmap(fd, CONTROL_BYTES) as probe:
                words = memoryview(probe).cast("Q")
                reuse = (
                    words[_W_MAGIC] == MAGIC
                    and words[_W_LAYOUT] == LAYOUT_VERSION
                    and words[_W_HALF] == self.table_bytes
                    and not words[_W_GEN] & RETIRED
                )
                words.release()
        if not reuse and st.st_size:
            # Someone may still map the old file: retire it and start a fresh inode at the same path.
            self._retire_fd(fd)
            os.close(fd)
            tmp = self.path.with_name(self.path.name + ".new")
            tmp.unlink(missing_ok=True)
            fd = os.open(tmp, flags | os.O_EXCL, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.ftruncate(fd, self.size)
            os.replace(tmp, self.path)
        elif not reuse:
            os.ftruncate(fd, self.size)
        self._fd = fd
        self._mm = mmap.mmap(fd, self.size)
        self._q = memoryview(self._mm).cast("Q")
        if not reuse:
            self._q[_W_LAYOUT] = LAYOUT_VERSION
            self._q[_W_HALF] = self.table_bytes
            self._q[_W_SLOTS] = MAX_READER_SLOTS
            self._q[_W_GEN] = 0
            self._q[_W_MAGIC] = MAGIC
        self._q[_W_WRITER] = os.getpid()

    @staticmethod
    def _retire_fd(fd: int) -> None:
        size = os.fstat(fd).st_size
        if size < CONTROL_BYTES:
            return
        with mmap.mmap(fd, CONTROL_BYTES) as old:
            words = memoryview(old).cast("Q")
            if words[_W_MAGIC] == MAGIC:
                words[_W_GEN] = words[_W_GEN] | RETIRED
            words.release()

    def generation(self) -> int:
        return int(self._q[_W_GEN])

    def forced_reuses(self) -> int:
        return int(self._q[_W_FORCED])

    def readers(self) -> list[tuple[int, int, int]]:
        """(slot, pid, acknowledged generation) of every registered reader."""
        out = []
        for i in range(MAX_READER_SLOTS):
            pid = self._q[_SLOT_BASE + 2 * i]
            if pid:
                out.append((i, int(pid), int(self._q[_SLOT_BASE + 2 * i + 1])))
        return out

    def _wait_for_readers(self, need: int) -> bool:
        """Wait until every live reader acknowledged generation >= need; False if the wait ran out."""
        deadline = time.monotonic() + self.reuse_wait
        q = self._q
        while True:
            lagging = False
            for i in range(MAX_READER_SLOTS):
                pid = q[_SLOT_BASE + 2 * i]
                if pid and q[_SLOT_BASE + 2 * i + 1] < need:
                    if not _pid_alive(int(pid)):
                        q[_SLOT_BASE + 2 * i] = 0
                        continue
                    lagging = True
                    break
            if not lagging:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.0002)

    def publish(self, compiled: CompiledPolicy) -> int:
        """Write `compiled` into the inactive half and publish it; returns the new generation."""
        current = int(self._q[_W_GEN])
        new = current + 1
        blob = serialize(compiled, new)
        if len(blob) > self.table_bytes:
            raise TablesFull(
                f"compiled policy needs {len(blob)} bytes, table_bytes is {self.table_bytes} per half"
            )
        # The half we overwrite held generation current - 1: readers must have moved past it.
        if current >= 1 and not self._wait_for_readers(current):
            self._q[_W_FORCED] += 1
        start = CONTROL_BYTES + (new & 1) * self.table_bytes
        self._mm[start : start + len(blob)] = blob
        self._q[_W_GEN] = new
        return new

    def close(self, unlink: bool = False) -> None:
        if self._fd < 0:
            return
        if unlink:
            self._q[_W_GEN] = self._q[_W_GEN] | RETIRED
        self._q[_W_WRITER] = 0
        self._q.release()
        self._mm.close()
        if unlink:
            self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = -1


class SharedTables:
    """Reader side: implements `core.lookup.PolicyTables` over the shared file, lock-free.

    Each reader keeps private caches (address → group, (groups, protocol, port, app) → decision), valid
    for one generation and dropped when it moves, so repeated lookups cost a dict probe.
    `slot` is this process's reader slot (0..MAX_READER_SLOTS-1, unique per process: the supervisor
    hands them out). `fallback_mode` decides what a lookup answers when no policy is published yet or
    a lookup could not complete (the answer is then not final, so the reader asks again).
    """

    def __init__(
        self, path: str | os.PathLike[str], slot: int, fallback_mode: Mode = Mode.MONITOR, cache: bool = True
    ) -> None:
        if not 0 <= slot < MAX_READER_SLOTS:
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
        if q[_W_MAGIC] != MAGIC or q[_W_LAYOUT] != LAYOUT_VERSION:
            q.release()
            mm.close()
            raise TablesError(f"{self.path}: not a policy tables file of layout {LAYOUT_VERSION}")
        half = int(q[_W_HALF])
        if size != CONTROL_BYTES + 2 * half:
            q.release()
            mm.close()
            raise TablesError(f"{self.path}: size {size} does not match its half size {half}")
        self._mm = mm
        self._q = q
        self._i = memoryview(mm).cast("I")
        self._b = memoryview(mm)
        self._half = half
        self._slot_word = _SLOT_BASE + 2 * self.slot
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
        old[1][slot_word] = 0
        for view in old[1:]:
            view.release()
        if old[0] is not None:
            old[0].close()
        return True

    def generation(self) -> int:
        for _ in range(MAX_LOOKUP_RETRIES):
            g = int(self._q[_W_GEN])
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
            v = int(self._q[base + _H_VERSION])
            if self._q[base + _H_GEN] == g and self._q[_W_GEN] == g:
                return v
        return 0

    def _load_layout(self, g: int, base: int) -> None:
        """Decode the half's header into Python values (trusted only after the generation re-check)."""
        q = self._q
        words = [int(q[(base >> 3) + i]) for i in range(HEADER_WORDS)]
        if words[_H_GEN] != g or words[_H_USED] > self._half:
            raise IndexError("half not consistent with the generation")
        self._l1 = (base + words[_H_V4DIR]) >> 2
        self._chunks = self._l1 + _L1
        v6 = []
        d = (base + words[_H_V6DIR]) >> 3
        for k in range(min(words[_H_NV6], 129)):
            plen, off, bits = int(q[d + 3 * k]), int(q[d + 3 * k + 1]), int(q[d + 3 * k + 2])
            v6.append((128 - plen, (base + off) >> 3, 64 - bits, (1 << bits) - 1))
        self._v6 = tuple(v6)
        self._ngroups = words[_H_NGROUPS]
        self._modes_at = base + words[_H_MODES]
        self._name_idx = (base + words[_H_NAME_IDX]) >> 3
        self._name_pool = base + words[_H_NAME_POOL]
        pair_bits = words[_H_PAIR_BITS]
        self._pairs = (base + words[_H_PAIRS]) >> 3
        self._pair_shift = 64 - pair_bits
        self._pair_mask = (1 << pair_bits) - 1
        self._entries = (base + words[_H_ENTRIES]) >> 3
        self._nhostsets = words[_H_NHOSTSETS]
        self._host_idx = (base + words[_H_HOST_IDX]) >> 3
        self._host_pool = base + words[_H_HOST_POOL]
        self._names = {}
        self._host_sets = {}

    def _group4(self, value: int) -> int:
        ia = self._i
        e = ia[self._l1 + (value >> 16)]
        if e & _PTR:
            e = ia[self._chunks + ((e & 0x7FFFFFFF) << 8) + ((value >> 8) & 255)]
            if e & _PTR:
                e = ia[self._chunks + ((e & 0x7FFFFFFF) << 8) + (value & 255)]
        return e - 1 if e else EXTERNAL_INDEX

    def _group6(self, value: int) -> int:
        q = self._q
        for shift, at, hshift, mask in self._v6:
            key = value >> shift
            hi, lo = key >> 64, key & _M64
            s = (((hi ^ lo) * _FIB) & _M64) >> hshift
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
        s = ((key * _FIB) & _M64) >> self._pair_shift
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
            q[self._slot_word + 1] = g
            self._acked = g
        return bool(g)

    def _decide(self, src: bytes, dst: bytes, proto: int, dport: int, app: AppKey | None) -> Decision:
        q = self._q
        g = q[_W_GEN]
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
                g = q[_W_GEN]
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
            if decision is not None and q[_W_GEN] == g:
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
            g = q[_W_GEN]
        else:
            self.gave_up += 1
        return self._fallback()

    def _fallback(self) -> Decision:
        mode = self.fallback_mode
        action = _DENY if mode == _PROTECT else _ALLOW
        return Decision(action, False, 0, mode, _REPORT_NONE, "external", "external", 0)

    def decide(self, family: int, src: bytes, dst: bytes, proto: int, dport: int) -> Decision:
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


def open_reader_tables(
    path: str | os.PathLike[str], slot: int, fallback_mode: Mode = Mode.MONITOR
) -> SharedTables:
    """What a reader or worker process calls at start (after the policy process created the file)."""
    return SharedTables(path, slot, fallback_mode)


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
                if words[_W_MAGIC] == MAGIC and words[_W_GEN] and not words[_W_GEN] & RETIRED:
                    return True
        except OSError:
            pass
        time.sleep(0.005)
    return False
