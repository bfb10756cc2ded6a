"""The layout of the shared policy tables file: one writer (the policy process), lock-free readers.

The tables live in a file mapped by every process (in the 0700 runtime directory, ideally on tmpfs):

    control page (4 KiB, 64-bit words)      half 0 (table_bytes)      half 1 (table_bytes)
      0 magic  1 layout  2 generation  3 half size  4 writer pid  5 forced reuses  6 reader slots
      16 + 2*i: reader slot i (pid, acknowledged generation)

Generation G (G >= 1) lives in half G % 2; generation 0 means nothing published yet. A half holds the
compiled L3/L4 tables and, beside them, the policy's derived document (threat settings, sensors, process
profiles, file rules: msgpack, `policy.document`) with its digest, so whoever sees generation G in the
tables gets exactly G's document. `policy.table_writer` writes a half and publishes it by storing the
generation word; `policy.table_reader` reads generation → half → generation again.

Word stores and loads are single aligned 64-bit moves, and x86 keeps stores in order; on weakly
ordered CPUs this scheme would need barriers that pure Python cannot issue.
"""

from __future__ import annotations

from array import array
from pathlib import Path
from typing import Final

from policy.document import document_digest
from policy.tables import CompiledPolicy

TABLES_FILE = "policy.tables"
MAGIC: Final = 0x454E46504F4C5442  # "ENFPOLTB"
LAYOUT_VERSION: Final = 4  # 4: the derived document beside the tables in each half
CONTROL_BYTES: Final = 4096
RETIRED: Final = 1 << 62  # set in the generation word of a file the writer has replaced

# Control words.
W_MAGIC, W_LAYOUT, W_GEN, W_HALF, W_WRITER, W_FORCED, W_SLOTS = range(7)
SLOT_BASE: Final = 16

# Named bounds (overridable by the callers from the config).
DEFAULT_TABLE_BYTES = 8 * 1024 * 1024  # per half: 10,000 rules and 5,000 groups need well under 1 MiB
MAX_READER_SLOTS = 128  # readers, workers and others mapping the tables (2 words each in the control page)
DEFAULT_REUSE_WAIT = 0.010  # seconds the writer waits for readers to leave a half before reusing it

# Half header words.
HEADER_WORDS: Final = 24
(
    H_GEN,
    H_VERSION,
    H_NGROUPS,
    H_MODES,
    H_NAME_IDX,
    H_NAME_POOL,
    H_NV4,
    H_V4DIR,
    H_NV6,
    H_V6DIR,
    H_PAIRS,
    H_PAIR_BITS,
    H_ENTRIES,
    H_NENTRIES,
    H_USED,
    H_NHOSTSETS,
    H_HOST_IDX,
    H_HOST_POOL,
    H_DOC,  # offset of the derived document
    H_DOC_LEN,  # its length in bytes
    H_DOC_DIGEST,  # its 64-bit digest: consumers compare it to know whether the document changed
) = range(21)

FIB: Final = 0x9E3779B97F4A7C15
M64: Final = (1 << 64) - 1


def tables_path(run_dir: str) -> Path:
    return Path(run_dir) / TABLES_FILE

class TablesError(RuntimeError):
    """The shared tables cannot be created, opened or written (the message says which and why)."""


class TablesFull(TablesError):
    """A compiled policy does not fit in one half of the region (raise `table_bytes`)."""


def table_bits(n: int) -> int:
    """log2 of an open-addressing table size holding n keys at load factor <= 1/2."""
    bits = 1
    while (1 << bits) < 2 * n:
        bits += 1
    return bits


def hash_slot(key: int, bits: int) -> int:
    return ((key * FIB) & M64) >> (64 - bits)


PTR: Final = 0x80000000
L1: Final = 1 << 16


def v4_trie(v4: dict[int, dict[int, int]]) -> tuple[array[int], int]:
    """Build the v4 trie: prefixes painted shortest first, so longer ones overwrite what they cover."""
    table = array("I", bytes(4 * L1))
    nchunks = 0

    def child(at: int) -> int:
        """The chunk below entry `at`, created (inheriting the entry's group) if it has none."""
        nonlocal nchunks
        e = table[at]
        if e & PTR:
            return L1 + ((e & ~PTR) << 8)
        table.extend(array("I", [e]) * 256)
        table[at] = PTR | nchunks
        nchunks += 1
        return L1 + ((nchunks - 1) << 8)

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


def align8(n: int) -> int:
    return (n + 7) & ~7


def serialize(compiled: CompiledPolicy, generation: int, document: bytes = b"") -> bytes:
    """Lay a compiled policy and its encoded derived document out as one half (offsets relative to the
    half's start)."""
    n = len(compiled.names)
    parts: list[bytes] = []
    offset = HEADER_WORDS * 8
    header = [0] * HEADER_WORDS

    def add(blob: bytes) -> int:
        nonlocal offset
        at = offset
        padded = blob + b"\0" * (align8(len(blob)) - len(blob))
        parts.append(padded)
        offset += len(padded)
        return at

    header[H_GEN] = generation
    header[H_VERSION] = compiled.version
    header[H_NGROUPS] = n
    header[H_MODES] = add(bytes(int(m) for m in compiled.modes))
    encoded = [name.encode() for name in compiled.names]
    index = array("Q", [0])
    for e in encoded:
        index.append(index[-1] + len(e))
    header[H_NAME_IDX] = add(index.tobytes())
    header[H_NAME_POOL] = add(b"".join(encoded))

    # v4: a 16-8-8 multibit trie of uint32 words: 65,536 first-level entries, then 256-entry chunks.
    # An entry is 0 (no group), group + 1, or PTR | chunk number (look at the next 8 bits there).
    trie, chunks = v4_trie(compiled.v4)
    header[H_NV4] = chunks
    header[H_V4DIR] = add(trie.tobytes())

    # v6: uint64 slots of three words (key high, key low, group + 1).
    v6dir = array("Q")
    for plen, members in compiled.v6.items():
        bits = table_bits(len(members))
        size = 1 << bits
        mask = size - 1
        table = array("Q", bytes(24 * size))
        for key, gidx in members.items():
            hi, lo = key >> 64, key & M64
            s = hash_slot(hi ^ lo, bits)
            while table[3 * s + 2]:
                s = (s + 1) & mask
            table[3 * s] = hi
            table[3 * s + 1] = lo
            table[3 * s + 2] = gidx + 1
        v6dir.extend((plen, add(table.tobytes()), bits))
    header[H_NV6] = len(compiled.v6)
    header[H_V6DIR] = add(v6dir.tobytes())

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
    header[H_NHOSTSETS] = len(host_sets)
    header[H_HOST_IDX] = add(host_index.tobytes())
    header[H_HOST_POOL] = add(b"".join(host_pool))
    entries = array("Q")
    pair_bits = table_bits(len(compiled.pairs))
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
        s = hash_slot(key, pair_bits)
        while pairs[2 * s]:
            s = (s + 1) & pair_mask
        pairs[2 * s] = key
        pairs[2 * s + 1] = first << 32 | len(rule_entries)
    header[H_PAIRS] = add(pairs.tobytes())
    header[H_PAIR_BITS] = pair_bits
    header[H_NENTRIES] = len(entries) // 3
    header[H_ENTRIES] = add(entries.tobytes())
    header[H_DOC] = add(document)
    header[H_DOC_LEN] = len(document)
    header[H_DOC_DIGEST] = document_digest(document)
    header[H_USED] = offset
    return array("Q", header).tobytes() + b"".join(parts)
