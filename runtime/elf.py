"""What an executable asks the kernel to load with it: the ELF program interpreter or a script's
interpreter. The exec permission check uses it to recognise the follow-up FAN_OPEN_EXEC_PERM requests
of one execve (the dynamic loader, a script's shell) as part of the program already allowed."""

from __future__ import annotations

import struct

PT_INTERP = 3
# Longest interpreter path read (PATH_MAX).
INTERP_MAX = 4096
# Program headers examined (a real executable has a dozen).
PHDRS_MAX = 256
# Bytes read from the start of an executable: its ELF and program headers, or a script's first line.
HEAD_BYTES = 4096
# Bytes of a script's first line examined (the kernel's BINPRM_BUF_SIZE is 256).
SHEBANG_MAX = 256


def interpreter(head: bytes) -> str | None:
    """The interpreter an executable names, from its first bytes.

    `head` must hold the ELF header and program headers (the first 4 KiB suffice for real binaries)
    or a script's first line. Returns None for anything else, or for malformed input.
    """
    if head.startswith(b"#!"):
        line = head[2:SHEBANG_MAX].split(b"\n", 1)[0].strip()
        if not line:
            return None
        return line.split()[0].decode("utf-8", "replace")
    if len(head) < 52 or head[:4] != b"\x7fELF":
        return None
    cls, data = head[4], head[5]
    if cls not in (1, 2) or data not in (1, 2):
        return None
    end = "<" if data == 1 else ">"
    try:
        if cls == 2:
            (phoff,) = struct.unpack_from(end + "Q", head, 32)
            phentsize, phnum = struct.unpack_from(end + "HH", head, 54)
            fmt, size = end + "IIQQQQQQ", 56
        else:
            (phoff,) = struct.unpack_from(end + "I", head, 28)
            phentsize, phnum = struct.unpack_from(end + "HH", head, 42)
            fmt, size = end + "IIIIIIII", 32
        if phentsize < size:
            return None
        for i in range(min(phnum, PHDRS_MAX)):
            off = phoff + i * phentsize
            if off + size > len(head):
                return None
            fields = struct.unpack_from(fmt, head, off)
            p_type = fields[0]
            if p_type != PT_INTERP:
                continue
            if cls == 2:
                p_offset, p_filesz = fields[2], fields[5]
            else:
                p_offset, p_filesz = fields[1], fields[4]
            if p_filesz == 0 or p_filesz > INTERP_MAX or p_offset + p_filesz > len(head):
                return None
            return head[p_offset : p_offset + p_filesz].rstrip(b"\0").decode("utf-8", "replace") or None
    except struct.error:
        return None
    return None
