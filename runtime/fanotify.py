"""fanotify and inotify through ctypes: the system calls, the event layouts and the permission answers.

Only the pure `parse_*` functions know the byte layouts; `Fanotify`/`Inotify` are thin owners of a
descriptor. Kernel support is probed, never assumed: `exec_permission_supported()` tries to place a
FAN_OPEN_EXEC_PERM mark (kernel ≥ 5.0) on a throw-away group.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import select
import struct
import threading
from collections.abc import Callable
from typing import NamedTuple

# How often a thread reading a fanotify descriptor looks at its stop flag when no event comes; long,
# because every idle wake-up preempts the node's workloads.
STOP_CHECK_MS = 500

FAN_CLOEXEC = 0x1
FAN_NONBLOCK = 0x2
FAN_CLASS_NOTIF = 0x0
FAN_CLASS_CONTENT = 0x4

FAN_MARK_ADD = 0x1
FAN_MARK_REMOVE = 0x2
FAN_MARK_MOUNT = 0x10
FAN_MARK_FLUSH = 0x80
FAN_MARK_FILESYSTEM = 0x100

FAN_ACCESS = 0x1
FAN_MODIFY = 0x2
FAN_CLOSE_WRITE = 0x8
FAN_OPEN = 0x20
FAN_OPEN_EXEC = 0x1000
FAN_Q_OVERFLOW = 0x4000
FAN_OPEN_PERM = 0x10000
FAN_OPEN_EXEC_PERM = 0x40000
FAN_EVENT_ON_CHILD = 0x08000000
FAN_ONDIR = 0x40000000

FAN_ALLOW = 0x1
FAN_DENY = 0x2
FAN_NOFD = -1
FANOTIFY_METADATA_VERSION = 3
AT_FDCWD = -100

IN_MODIFY = 0x2
IN_ATTRIB = 0x4
IN_CLOSE_WRITE = 0x8
IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_CREATE = 0x100
IN_DELETE = 0x200
IN_DELETE_SELF = 0x400
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000

_META = struct.Struct("=IBBHQii")  # event_len, vers, reserved, metadata_len, mask, fd, pid
_RESPONSE = struct.Struct("=iI")  # fd, response
_INOTIFY = struct.Struct("=iIII")  # wd, mask, cookie, len

_libc = ctypes.CDLL(None, use_errno=True)
_libc.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
_libc.fanotify_init.restype = ctypes.c_int
_libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
_libc.fanotify_mark.restype = ctypes.c_int
_libc.inotify_init1.argtypes = [ctypes.c_int]
_libc.inotify_init1.restype = ctypes.c_int
_libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
_libc.inotify_add_watch.restype = ctypes.c_int


class FanEvent(NamedTuple):
    mask: int
    fd: int  # an open descriptor of the file (the reader must close it), or FAN_NOFD
    pid: int


class InotifyEvent(NamedTuple):
    wd: int
    mask: int
    name: str


def parse_fanotify_events(buf: bytes | memoryview) -> tuple[list[FanEvent], int]:
    """Events in a read() of a fanotify descriptor; returns (events, malformed count).

    A record whose version differs or whose length is impossible ends the parse (counted): the
    descriptors in what follows cannot be trusted and are not ours to guess.
    """
    out: list[FanEvent] = []
    view = memoryview(buf)
    off = 0
    while off + _META.size <= len(view):
        length, vers, _r, meta_len, mask, fd, pid = _META.unpack_from(view, off)
        if vers != FANOTIFY_METADATA_VERSION or length < _META.size or meta_len < _META.size:
            return out, 1
        if off + length > len(view):
            return out, 1
        out.append(FanEvent(mask, fd, pid))
        off += length
    return out, 0 if off == len(view) else 1


def parse_inotify_events(buf: bytes | memoryview) -> tuple[list[InotifyEvent], int]:
    out: list[InotifyEvent] = []
    view = memoryview(buf)
    off = 0
    while off + _INOTIFY.size <= len(view):
        wd, mask, _cookie, name_len = _INOTIFY.unpack_from(view, off)
        end = off + _INOTIFY.size + name_len
        if end > len(view):
            return out, 1
        name = bytes(view[off + _INOTIFY.size : end]).rstrip(b"\0").decode("utf-8", "replace")
        out.append(InotifyEvent(wd, mask, name))
        off = end
    return out, 0 if off == len(view) else 1


def response(fd: int, allow: bool) -> bytes:
    return _RESPONSE.pack(fd, FAN_ALLOW if allow else FAN_DENY)


def _check(rc: int, what: str) -> int:
    if rc < 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")
    return rc


class Fanotify:
    """One fanotify group. `klass` FAN_CLASS_NOTIF for notifications, FAN_CLASS_CONTENT for permissions."""

    def __init__(self, klass: int, nonblock: bool = True) -> None:
        flags = klass | FAN_CLOEXEC | (FAN_NONBLOCK if nonblock else 0)
        event_flags = os.O_RDONLY | os.O_LARGEFILE | os.O_CLOEXEC
        self.fd = _check(_libc.fanotify_init(flags, event_flags), "fanotify_init")

    def mark(
        self, path: str, mask: int, mount: bool = False, remove: bool = False, filesystem: bool = False
    ) -> None:
        """Mark an inode (default), the mount of `path` or its whole filesystem (every mount of it, in
        every mount namespace: what container runtimes and `ip netns exec` create)."""
        flags = (FAN_MARK_REMOVE if remove else FAN_MARK_ADD) | (FAN_MARK_MOUNT if mount else 0)
        flags |= FAN_MARK_FILESYSTEM if filesystem else 0
        rc = _libc.fanotify_mark(self.fd, flags, mask, AT_FDCWD, os.fsencode(path))
        _check(rc, f"fanotify_mark {path}")

    def read(self, size: int) -> bytes:
        try:
            return os.read(self.fd, size)
        except BlockingIOError:
            return b""

    def respond(self, event_fd: int, allow: bool) -> None:
        os.write(self.fd, response(event_fd, allow))

    def answer_permissions(
        self,
        stop: threading.Event,
        read_bytes: int,
        decide: Callable[[FanEvent], bool],
        on_error: Callable[[], None],
    ) -> None:
        """Answer permission events until `stop` is set: `decide(event)` says allow or deny. The kernel
        holds the opening (or executing) process until it is answered, so every event gets an answer and
        its descriptor closed, and a bug in `decide` allows (`on_error` counts it) rather than freezing
        every process that touches the path."""
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        while not stop.is_set():
            if not poller.poll(STOP_CHECK_MS):
                continue
            events, _bad = parse_fanotify_events(self.read(read_bytes))
            for ev in events:
                if ev.fd < 0:
                    continue
                allow = True
                try:
                    allow = decide(ev)
                except Exception:
                    on_error()
                    allow = True
                finally:
                    with contextlib.suppress(OSError):
                        self.respond(ev.fd, allow)
                    os.close(ev.fd)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Inotify:
    def __init__(self) -> None:
        self.fd = _check(_libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC), "inotify_init1")

    def add_watch(self, path: str, mask: int) -> int:
        return _check(_libc.inotify_add_watch(self.fd, os.fsencode(path), mask), f"inotify_add_watch {path}")

    def read(self, size: int) -> bytes:
        try:
            return os.read(self.fd, size)
        except BlockingIOError:
            return b""

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def fd_path(fd: int) -> str:
    """The path of an event's descriptor ("" if it cannot be read)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


def exec_permission_supported(probe_path: str = "/") -> bool:
    """Whether this kernel accepts FAN_OPEN_EXEC_PERM marks (and we may create a content-class group)."""
    try:
        fan = Fanotify(FAN_CLASS_CONTENT)
    except OSError:
        return False
    try:
        # An inode mark on a directory: nothing ever executes it, so no exec on the node waits on us.
        fan.mark(probe_path, FAN_OPEN_EXEC_PERM)
        fan.mark(probe_path, FAN_OPEN_EXEC_PERM, remove=True)
        return True
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.EPERM, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
        return False
    finally:
        fan.close()
