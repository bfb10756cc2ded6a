"""memcached (text and binary protocols) and Couchbase (the binary protocol with its own opcodes).

Two registry entries share this module: `Memcached` finalizes on a text command line or a binary
request with a classic opcode; `Couchbase` on a binary request with a Couchbase-only opcode (HELLO,
SASL, select bucket, cluster config …). Each gives up on the other's evidence.
"""

from __future__ import annotations

import struct

from workers.dpi.events import MemcachedCommand, ParserEvent
from workers.dpi.parsers.base import FeedResult, Outcome, Side
from workers.dpi.settings import DpiSettings

REQ_MAGIC, RES_MAGIC = 0x80, 0x81
COUCHBASE_OPCODES = frozenset((0x1F, 0x20, 0x21, 0x22, 0x89, 0xB5, 0xFE, 0x3D, 0x3E))  # HELLO, SASL …
MEMCACHED_OPCODES = frozenset(range(0x00, 0x1F)) | frozenset((0x81, 0x82, 0x83, 0x84, 0x85, 0x86))
TEXT_COMMANDS = frozenset(
    (b"get", b"gets", b"gat", b"gats", b"set", b"add", b"replace", b"append", b"prepend", b"cas", b"delete",
     b"incr", b"decr", b"touch", b"stats", b"version", b"flush_all", b"verbosity", b"quit", b"mg", b"ms",
     b"md", b"mn", b"ma")
)  # fmt: skip
MAX_BODY = 20 * 1024 * 1024  # item size limits are far below this
MAX_LINE = 2048  # a text command line (key ≤ 250 bytes)
_HEAD = struct.Struct("!BBHBBHI")


def _binary(data: bytes) -> tuple[int, int, int, int] | None:
    """(opcode, key length, extras length, body length) of a binary request header, or None."""
    if len(data) < 24:
        return None
    magic, opcode, key_len, extras, dtype, _vb, body = _HEAD.unpack_from(data)
    if magic != REQ_MAGIC or dtype > 7 or extras + key_len > body or body > MAX_BODY:
        return None
    return opcode, key_len, extras, body


def probe_memcached(side: Side, head: bytes) -> bool:
    if side is Side.SERVER:
        return True
    if head[:1] == bytes((REQ_MAGIC,)):
        return True
    word = head.split(b" ", 1)[0].split(b"\r", 1)[0]
    return any(c.startswith(word) for c in TEXT_COMMANDS) if len(word) < 10 else False


def probe_couchbase(side: Side, head: bytes) -> bool:
    return side is Side.SERVER or head[:1] == bytes((REQ_MAGIC,)) or not head


class MemcachedParser:
    __slots__ = ("s", "couchbase", "identified", "skip")

    def __init__(self, settings: DpiSettings, couchbase: bool = False) -> None:
        self.s = settings
        self.couchbase = couchbase
        self.identified = False
        self.skip = 0

    def feed(self, side: Side, data: bytes) -> FeedResult:
        if side is Side.SERVER:
            return FeedResult(len(data), 0, [], Outcome.KEEP)
        events: list[ParserEvent] = []
        pos = 0
        n = len(data)
        newly = False
        while pos < n:
            if self.skip:
                take = min(self.skip, n - pos)
                self.skip -= take
                pos += take
                continue
            if data[pos] == REQ_MAGIC:
                if n - pos < 24:
                    return FeedResult(pos, 24 - (n - pos), events, self._out(newly))
                h = _binary(data[pos : pos + 24])
                if h is None:
                    return self._bad(pos, events, newly)
                opcode, key_len, extras, body = h
                is_cb = opcode in COUCHBASE_OPCODES
                if not self.identified and (
                    is_cb != self.couchbase or (not is_cb and opcode not in MEMCACHED_OPCODES)
                ):
                    return FeedResult(pos, 0, events, Outcome.GIVE_UP)
                if n - pos < 24 + extras + key_len:
                    return FeedResult(pos, 24 + extras + key_len - (n - pos), events, self._out(newly))
                key = data[pos + 24 + extras : pos + 24 + extras + key_len]
                events.append(MemcachedCommand(True, opcode, b"", key[:250]))
                self.skip = body - extras - key_len
                pos += 24 + extras + key_len
            else:
                if self.couchbase and not self.identified:
                    return FeedResult(pos, 0, events, Outcome.GIVE_UP)
                nl = data.find(b"\r\n", pos, pos + MAX_LINE)
                if nl < 0:
                    if n - pos >= MAX_LINE:
                        return self._bad(pos, events, newly)
                    return FeedResult(pos, 0, events, self._out(newly))
                parts = data[pos:nl].split(b" ")
                cmd = parts[0]
                if cmd not in TEXT_COMMANDS:
                    return self._bad(pos, events, newly)
                key = parts[1] if len(parts) > 1 else b""
                events.append(MemcachedCommand(False, -1, cmd, key[:250]))
                pos = nl + 2
                if cmd in (b"set", b"add", b"replace", b"append", b"prepend", b"cas") and len(parts) >= 5:
                    size = parts[4]
                    if not size.isdigit() or int(size) > MAX_BODY:
                        return self._bad(pos, events, newly)
                    self.skip = int(size) + 2
            if not self.identified:
                self.identified = newly = True
        return FeedResult(pos, 0, events, self._out(newly))

    def _out(self, newly: bool) -> Outcome:
        return Outcome.FINAL if newly else Outcome.KEEP

    def _bad(self, pos: int, events: list[ParserEvent], newly: bool) -> FeedResult:
        if self.identified:
            return FeedResult(pos, 0, events, Outcome.FINAL if newly else Outcome.GIVE_UP)
        return FeedResult(pos, 0, events, Outcome.GIVE_UP)
