"""Built-in runtime detections, applied to every workload process whatever its profile.

Each detector is a pure function over what was examined (name, command line, ids, descriptor links,
the text of /proc/net/tcp*) returning a finding or None; the table `DETECTIONS` names them with their
severity. The monitor gathers the inputs and turns findings into `threat` events.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping

SUSPICIOUS_PROCESS = "runtime.suspicious_process"
REVERSE_SHELL = "runtime.reverse_shell"
PRIVILEGE_ESCALATION = "runtime.privilege_escalation"
PACKAGE_MANAGER = "runtime.package_manager"


@dataclasses.dataclass(frozen=True, slots=True)
class Detection:
    name: str
    severity: str
    description: str


DETECTIONS: tuple[Detection, ...] = (
    Detection(SUSPICIOUS_PROCESS, "high", "a tool used for reconnaissance, tunnelling or listening shells"),
    Detection(REVERSE_SHELL, "critical", "a shell whose standard input or output is a TCP connection"),
    Detection(PRIVILEGE_ESCALATION, "critical", "uid 0 gained from a non-root identity outside sudo/su/…"),
    Detection(PACKAGE_MANAGER, "medium", "a package manager run inside a running container"),
)
SEVERITY: Mapping[str, str] = {d.name: d.severity for d in DETECTIONS}

TCP_ESTABLISHED = 0x01
_SOCKET_LINK = re.compile(r"^socket:\[(\d+)\]$")


@dataclasses.dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    flags: tuple[str, ...]  # empty: the name alone is suspicious


def compile_tools(entries: Iterable[str]) -> dict[str, ToolSpec]:
    """`name` or `name:-l,-e,--listen` (suspicious only with one of those flags) → name → spec."""
    out: dict[str, ToolSpec] = {}
    for entry in entries:
        name, _, flags = entry.partition(":")
        name = name.strip()
        if name:
            out[name] = ToolSpec(name, tuple(f.strip() for f in flags.split(",") if f.strip()))
    return out


def _has_flag(args: Iterable[str], flag: str) -> bool:
    for arg in args:
        if flag.startswith("--"):
            if arg == flag or arg.startswith(flag + "="):
                return True
        elif arg.startswith("-") and not arg.startswith("--") and len(flag) == 2 and flag[1] in arg[1:]:
            return True
    return False


def suspicious_tool(name: str, cmdline: tuple[str, ...], tools: Mapping[str, ToolSpec]) -> str | None:
    """The matched tool's name if `name` is suspicious with these arguments."""
    spec = tools.get(name)
    if spec is None:
        return None
    if not spec.flags:
        return spec.name
    args = cmdline[1:]
    return spec.name if any(_has_flag(args, f) for f in spec.flags) else None


def package_manager(name: str, managers: Iterable[str]) -> bool:
    return name in managers


def privilege_escalation(
    name: str, euid: int, previous_euid: int | None, chain_names: Iterable[str], sanctioned: Iterable[str]
) -> bool:
    """uid 0 gained from a non-root identity: the effective uid is 0 now and was not before (the
    process's own earlier identity, or its parent's for a process first seen), unless the process or
    one of its ancestors is a sanctioned path (sudo, su, …)."""
    if euid != 0 or previous_euid is None or previous_euid == 0:
        return False
    allowed = set(sanctioned)
    return name not in allowed and not any(n in allowed for n in chain_names)


def parse_net_tcp(text: str, max_lines: int) -> tuple[dict[int, tuple[int, str]], bool]:
    """inode → (state, remote "addr:port" in the kernel's hex) from /proc/net/tcp or tcp6.

    Returns the map and whether the text was longer than `max_lines` (the rest is not read).
    """
    out: dict[int, tuple[int, str]] = {}
    lines = text.splitlines()
    truncated = len(lines) > max_lines + 1
    for line in lines[1 : max_lines + 1]:
        parts = line.split()
        if len(parts) < 10:
            continue
        try:
            state = int(parts[3], 16)
            inode = int(parts[9])
        except ValueError:
            continue
        if inode:
            out[inode] = (state, parts[2])
    return out, truncated


def socket_inode(link: str) -> int | None:
    m = _SOCKET_LINK.match(link)
    return int(m.group(1)) if m else None


def reverse_shell(
    name: str, fd_links: Mapping[int, str], tcp: Mapping[int, tuple[int, str]], shells: Iterable[str]
) -> str | None:
    """The remote end (kernel hex) if `name` is a shell whose stdin or stdout is an established TCP socket."""
    if name not in shells:
        return None
    for fd in (0, 1):
        inode = socket_inode(fd_links.get(fd, ""))
        if inode is not None and inode in tcp and tcp[inode][0] == TCP_ESTABLISHED:
            return tcp[inode][1]
    return None


def remote_text(hex_addr: str) -> str:
    """`0100007F:1F90` → `127.0.0.1:8080`; IPv6 groups are 32-bit words in host (little-endian) order."""
    import ipaddress

    addr, _, port = hex_addr.partition(":")
    try:
        raw = bytes.fromhex(addr)
        p = int(port, 16)
    except ValueError:
        return hex_addr
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    try:
        ip = ipaddress.ip_address(words)
    except ValueError:
        return hex_addr
    return f"[{ip}]:{p}" if ip.version == 6 else f"{ip}:{p}"
