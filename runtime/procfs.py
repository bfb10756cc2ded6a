"""What /proc tells about one process, for the process monitor and the exec guard: its parent, its
children, whether it descends from given PIDs, its effective uid, its root directory, and the paths it
executes as it sees them (inside its chroot or container root)."""

from __future__ import annotations

import os

from runtime.proc_connector import ProcessInfo

# Depth of the /proc parent walk that decides whether a process descends from the enforcer.
ANCESTRY_DEPTH_MAX = 64


def read_ppid(pid: int, proc: str = "/proc") -> int | None:
    """The parent PID from /proc/PID/stat (field 4, after the parenthesised command name)."""
    try:
        with open(f"{proc}/{pid}/stat", "rb") as f:
            data = f.read(4096)
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2 :].split()
    try:
        return int(fields[1])
    except (IndexError, ValueError):
        return None


def descends_from(pid: int, ancestors: frozenset[int], proc: str = "/proc") -> bool:
    """Whether `pid` is one of `ancestors` or below one of them (walked up at most ANCESTRY_DEPTH_MAX)."""
    cur: int | None = pid
    for _ in range(ANCESTRY_DEPTH_MAX):
        if cur is None or cur <= 1:
            return False
        if cur in ancestors:
            return True
        cur = read_ppid(cur, proc)
    return False


def children_of(pid: int, proc: str = "/proc") -> list[int]:
    """The direct children of every thread of `pid`; empty once it is gone."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"{proc}/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        try:
            with open(f"{proc}/{pid}/task/{tid}/children") as f:
                out.extend(int(x) for x in f.read().split())
        except (OSError, ValueError):
            continue
    return out


def root_relative(pid: int, path: str, proc: str = "/proc") -> str:
    """`path` as the process sees it: without the prefix of its root directory (a chroot seen from us)."""
    try:
        root = os.readlink(f"{proc}/{pid}/root")
    except OSError:
        return path
    if root not in ("/", "") and path.startswith(root.rstrip("/") + "/"):
        return path[len(root.rstrip("/")) :]
    return path


def exec_identity(info: ProcessInfo, proc: str = "/proc") -> tuple[str, str]:
    """(name, path) a profile matches, as the workload sees it; for a script the script's path, not its
    interpreter's."""
    path = info.path
    if os.path.basename(path) != info.name:
        for arg in info.cmdline[:2]:
            if arg != path and os.path.basename(arg) == info.name and "/" in arg:
                if not arg.startswith("/"):
                    try:
                        arg = os.path.normpath(os.path.join(os.readlink(f"{proc}/{info.pid}/cwd"), arg))
                    except OSError:
                        break
                return info.name, root_relative(info.pid, arg, proc)
    return info.name, root_relative(info.pid, path, proc)


def euid_of(pid: int) -> int | None:
    """The effective uid from /proc/PID/status, or None if it is gone or unreadable."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return int(line.split()[2])
    except (OSError, ValueError, IndexError):
        return None
    return None


def readlink(path: str) -> str:
    """The link's target, or "" (a process may exit while we look)."""
    try:
        return os.readlink(path)
    except OSError:
        return ""


def root_id(pid: int) -> tuple[int, int] | None:
    """(device, inode) of the process's root directory: tells a container's filesystem from the node's."""
    try:
        st = os.stat(f"/proc/{pid}/root")
    except OSError:
        return None
    return st.st_dev, st.st_ino
