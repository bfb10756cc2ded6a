from __future__ import annotations

import shutil
import struct

from hypothesis import given
from hypothesis import strategies as st

from runtime.elf import HEAD_BYTES, INTERP_MAX, interpreter


def test_interpreter_of_a_real_dynamic_executable() -> None:
    with open(shutil.which("true") or "/bin/true", "rb") as f:
        head = f.read(HEAD_BYTES)
    interp = interpreter(head)
    assert interp is not None and interp.startswith("/") and "ld" in interp


def test_interpreter_of_scripts() -> None:
    assert interpreter(b"#!/bin/sh -e\necho\n") == "/bin/sh"
    assert interpreter(b"#! /usr/bin/env python3\n") == "/usr/bin/env"
    assert interpreter(b"#!\n") is None


def _elf64(interp: bytes, phnum: int = 1, truncate: int = 0) -> bytes:
    ehdr = bytearray(64)
    ehdr[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", ehdr, 32, 64)  # e_phoff
    struct.pack_into("<HH", ehdr, 54, 56, phnum)  # e_phentsize, e_phnum
    off = 64 + 56 * phnum
    phdrs = b"".join(
        struct.pack("<IIQQQQQQ", 3 if i == phnum - 1 else 1, 0, off, 0, 0, len(interp), 0, 1)
        for i in range(phnum)
    )
    data = bytes(ehdr) + phdrs + interp
    return data[: len(data) - truncate] if truncate else data


def test_interpreter_of_crafted_elf() -> None:
    assert interpreter(_elf64(b"/lib/ld.so\0", phnum=3)) == "/lib/ld.so"
    assert interpreter(_elf64(b"/lib/ld.so\0", truncate=4)) is None  # interpreter cut off
    static = bytearray(_elf64(b"/lib/ld.so\0"))
    struct.pack_into("<I", static, 64, 1)  # PT_LOAD instead of PT_INTERP: a static executable
    assert interpreter(bytes(static)) is None
    assert interpreter(b"\x7fELF" + b"\x09" * 60) is None  # bad class


@given(st.binary(max_size=300))
def test_interpreter_never_raises(data: bytes) -> None:
    if not data.startswith((b"#!", b"\x7fELF")):
        assert interpreter(data) is None  # neither a script nor an ELF file
    for head in (data, b"\x7fELF\x02\x01" + data, b"\x7fELF\x01\x02" + data):
        found = interpreter(head)
        assert found is None or (0 < len(found) <= INTERP_MAX)
