"""Process events from the kernel: the netlink process connector, with a /proc scan at start and as fallback.

Three layers, thinnest I/O last:
- `decode_messages` turns the bytes of one netlink datagram into `ProcEvent`s (pure; fuzzed);
- `ProcessEventSource` owns the connector socket and a reader thread that decodes into a bounded queue
  (overflow counted), or, where the connector cannot be used, diffs /proc listings;
- `examine` enriches a PID from /proc (path, command line, user, parent); a process that is gone or
  unreadable before it is examined is counted, never guessed.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import enum
import errno
import os
import pwd
import socket
import struct
import threading
from collections.abc import Callable, MutableMapping
from typing import NamedTuple

from core import anomalies

NETLINK_CONNECTOR = 11
CN_IDX_PROC = 1
CN_VAL_PROC = 1
PROC_CN_MCAST_LISTEN = 1
PROC_CN_MCAST_IGNORE = 2
NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
SO_RCVBUFFORCE = 33

_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_CN_MSG = struct.Struct("=IIIIHH")  # idx, val, seq, ack, len, flags
_PROC_EVENT_HEAD = struct.Struct("=IIQ")  # what, cpu, timestamp_ns
_FORK = struct.Struct("=iiii")  # parent pid, parent tgid, child pid, child tgid
_EXEC = struct.Struct("=ii")  # pid, tgid
_ID = struct.Struct("=iiII")  # pid, tgid, real id, effective id
_EXIT = struct.Struct("=iiII")  # pid, tgid, exit code, exit signal (parent pid/tgid follow on new kernels)
_HEAD_LEN = _NLMSGHDR.size + _CN_MSG.size + _PROC_EVENT_HEAD.size

# Bytes read per datagram: one proc_event message is under 100 bytes; the kernel sends one per datagram.
RECV_BYTES = 4096
# Longest the reader thread blocks in recv(), so stop() is seen promptly.
# How often the reader thread looks at its stop flag when no event comes; long, because every idle wake-up
# preempts the node's workloads.
READER_TIMEOUT_S = 0.5


class Kind(enum.IntEnum):
    NONE = 0x0
    FORK = 0x1
    EXEC = 0x2
    UID = 0x4
    PTRACE = 0x100
    GID = 0x40
    SID = 0x80
    COMM = 0x200
    COREDUMP = 0x40000000
    EXIT = 0x80000000
    SCAN = 0x7FFF0000  # ours: a process found by a /proc scan (no kernel event announced it)


class ProcEvent(NamedTuple):
    kind: int  # a Kind value
    pid: int  # thread group id (the process)
    tid: int  # the thread the event is about
    ppid: int  # FORK: the parent's tgid; else 0
    ruid: int  # UID/GID: real id; EXIT: exit code
    euid: int  # UID/GID: effective id; EXIT: signal
    ts_ns: int  # kernel monotonic timestamp (0 for scans)


def subscribe_message(port_id: int, listen: bool = True) -> bytes:
    """The netlink datagram that subscribes (or unsubscribes) this socket to process events."""
    op = struct.pack("=I", PROC_CN_MCAST_LISTEN if listen else PROC_CN_MCAST_IGNORE)
    cn = _CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(op), 0)
    total = _NLMSGHDR.size + len(cn) + len(op)
    return _NLMSGHDR.pack(total, NLMSG_DONE, 0, 0, port_id) + cn + op


def decode_messages(buf: bytes | memoryview) -> tuple[list[ProcEvent], int]:
    """Decode the netlink messages of one datagram; returns (events, count of malformed messages).

    Thread events are folded away: a FORK that creates a thread (child pid ≠ tgid) and an EXIT of a
    non-leader thread say nothing about processes. Unknown event kinds are ignored, not malformed.
    """
    events: list[ProcEvent] = []
    malformed = 0
    view = memoryview(buf)
    off = 0
    n = len(view)
    while off + _NLMSGHDR.size <= n:
        length, mtype, _flags, _seq, _pid = _NLMSGHDR.unpack_from(view, off)
        if length < _NLMSGHDR.size or off + length > n:
            malformed += 1
            break
        if mtype in (NLMSG_NOOP, NLMSG_ERROR):
            off += (length + 3) & ~3
            continue
        if length < _HEAD_LEN:
            malformed += 1
            off += (length + 3) & ~3
            continue
        idx, val, _s, _a, cn_len, _f = _CN_MSG.unpack_from(view, off + _NLMSGHDR.size)
        body = off + _NLMSGHDR.size + _CN_MSG.size
        end = off + length
        if idx != CN_IDX_PROC or val != CN_VAL_PROC or body + cn_len > end:
            malformed += 1
            off += (length + 3) & ~3
            continue
        what, _cpu, ts = _PROC_EVENT_HEAD.unpack_from(view, body)
        data = body + _PROC_EVENT_HEAD.size
        avail = body + cn_len - data
        ev = _decode_event(view, what, ts, data, avail)
        if ev is None and what in _SIZES and avail < _SIZES[what]:
            malformed += 1
        elif ev is not None:
            events.append(ev)
        off += (length + 3) & ~3
    return events, malformed


_SIZES = {Kind.FORK: _FORK.size, Kind.EXEC: _EXEC.size, Kind.UID: _ID.size, Kind.EXIT: _EXIT.size}


def _decode_event(view: memoryview, what: int, ts: int, data: int, avail: int) -> ProcEvent | None:
    if what == Kind.FORK and avail >= _FORK.size:
        _ppid, ptgid, cpid, ctgid = _FORK.unpack_from(view, data)
        if cpid != ctgid:
            return None
        return ProcEvent(Kind.FORK, ctgid, cpid, ptgid, 0, 0, ts)
    if what == Kind.EXEC and avail >= _EXEC.size:
        pid, tgid = _EXEC.unpack_from(view, data)
        return ProcEvent(Kind.EXEC, tgid, pid, 0, 0, 0, ts)
    if what == Kind.UID and avail >= _ID.size:
        pid, tgid, ruid, euid = _ID.unpack_from(view, data)
        return ProcEvent(Kind.UID, tgid, pid, 0, ruid, euid, ts)
    if what == Kind.EXIT and avail >= _EXIT.size:
        pid, tgid, code, sig = _EXIT.unpack_from(view, data)
        if pid != tgid:
            return None
        return ProcEvent(Kind.EXIT, tgid, pid, 0, code, sig, ts)
    return None


def list_pids(proc: str = "/proc") -> set[int]:
    """The PIDs (thread group leaders) listed in /proc."""
    try:
        return {int(d) for d in os.listdir(proc) if d.isdigit()}
    except OSError:
        return set()


class ProcessEventSource:
    """Kernel process events into a bounded queue, from the connector or from /proc scans.

    `start()` opens the connector (falling back to scans when it cannot, counted); the reader thread
    decodes datagrams and appends to a deque bounded by `queue_max` (events beyond are dropped and
    counted). `scan()` lists /proc and returns SCAN/EXIT events for what the events missed; the caller
    runs it at start and every scan interval (always, so missed events are repaired).
    """

    def __init__(
        self,
        counters: MutableMapping[str, int],
        queue_max: int,
        rcvbuf_bytes: int,
        use_connector: bool = True,
        proc: str = "/proc",
    ) -> None:
        self._counters = counters
        self._queue_max = queue_max
        self._rcvbuf = rcvbuf_bytes
        self._use_connector = use_connector
        self._proc = proc
        self._queue: collections.deque[ProcEvent] = collections.deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._known: set[int] = set()
        self.received = 0  # events decoded from the connector

    @property
    def connected(self) -> bool:
        return self._sock is not None

    def _count(self, name: str, n: int = 1) -> None:
        self._counters[name] = self._counters.get(name, 0) + n

    def start(self) -> None:
        if self._use_connector:
            try:
                self._sock = self._open()
            except OSError:
                self._sock = None
        if self._sock is None:
            self._count(anomalies.RUNTIME_CONNECTOR_UNAVAILABLE)
            return
        self._thread = threading.Thread(target=self._reader, name="rt-connector", daemon=True)
        self._thread.start()

    def _open(self) -> socket.socket:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
        try:
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, self._rcvbuf)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self._rcvbuf)
            sock.bind((0, CN_IDX_PROC))
            sock.send(subscribe_message(sock.getsockname()[0]))
            sock.settimeout(READER_TIMEOUT_S)
        except OSError:
            sock.close()
            raise
        return sock

    def _reader(self) -> None:
        sock = self._sock
        assert sock is not None
        queue = self._queue
        while not self._stop.is_set():
            try:
                data = sock.recv(RECV_BYTES)
            except TimeoutError:
                continue
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    self._count(anomalies.RUNTIME_CONNECTOR_OVERRUN)
                    continue
                if self._stop.is_set():
                    return
                raise
            events, bad = decode_messages(data)
            if bad:
                self._count(anomalies.RUNTIME_CONNECTOR_MALFORMED, bad)
            self.received += len(events)
            for ev in events:
                if len(queue) >= self._queue_max:
                    self._count(anomalies.RUNTIME_EVENT_QUEUE_FULL)
                else:
                    queue.append(ev)
            self._wake.set()

    def wait(self, timeout: float) -> None:
        """Block until events are queued or `timeout` passes."""
        if not self._queue:
            self._wake.wait(timeout)
        self._wake.clear()

    def drain(self, max_events: int) -> list[ProcEvent]:
        out: list[ProcEvent] = []
        queue = self._queue
        while queue and len(out) < max_events:
            out.append(queue.popleft())
        return out

    def pending(self) -> int:
        return len(self._queue)

    def scan(self) -> list[ProcEvent]:
        """Diff /proc against what is known: SCAN for new PIDs, EXIT for vanished ones."""
        now = list_pids(self._proc)
        new = now - self._known
        gone = self._known - now
        self._known = now
        out = [ProcEvent(Kind.SCAN, pid, pid, 0, 0, 0, 0) for pid in sorted(new)]
        out.extend(ProcEvent(Kind.EXIT, pid, pid, 0, 0, 0, 0) for pid in sorted(gone))
        return out

    def note(self, ev: ProcEvent) -> None:
        """Keep the scan's view in step with the events (so a scan reports only what they missed)."""
        if ev.kind in (Kind.FORK, Kind.EXEC):
            self._known.add(ev.pid)
        elif ev.kind == Kind.EXIT:
            self._known.discard(ev.pid)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(READER_TIMEOUT_S * 5)
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.send(subscribe_message(self._sock.getsockname()[0], listen=False))
            self._sock.close()
            self._sock = None


@dataclasses.dataclass(frozen=True, slots=True)
class ProcessInfo:
    """A process as examined, with its parent chain (nearest first) as (pid, name) pairs."""

    pid: int
    ppid: int
    name: str
    path: str
    cmdline: tuple[str, ...]
    ruid: int
    euid: int
    user: str
    start_time: float
    parents: tuple[tuple[int, str], ...] = ()

    def chain(self) -> list[dict[str, object]]:
        return [{"pid": pid, "name": name} for pid, name in self.parents]


_user_cache: dict[int, str] = {}
# Bound on the uid → user name cache.
USER_CACHE_MAX = 1024


def user_name(uid: int) -> str:
    name = _user_cache.get(uid)
    if name is None:
        try:
            name = pwd.getpwuid(uid).pw_name
        except KeyError:
            name = str(uid)
        if len(_user_cache) >= USER_CACHE_MAX:
            _user_cache.clear()
        _user_cache[uid] = name
    return name


# Bytes of a command line kept (the kernel's own page of arguments is larger; events need the start).
CMDLINE_MAX = 4096
_boot_time: list[float] = []


def boot_time(proc: str = "/proc") -> float:
    """The node's boot time (UNIX seconds), read once from /proc/stat."""
    if not _boot_time:
        value = 0.0
        try:
            with open(f"{proc}/stat", "rb") as f:
                for line in f:
                    if line.startswith(b"btime "):
                        value = float(line.split()[1])
                        break
        except OSError:
            pass
        _boot_time.append(value)
    return _boot_time[0]


def parse_process(pid: int, stat: bytes, status: bytes, cmdline: bytes, exe: str) -> ProcessInfo | None:
    """A ProcessInfo from the text of /proc/PID/{stat,status,cmdline} and the exe link (pure).

    None for a zombie or unparsable input. The name is the kernel's `comm`, lengthened from the command
    line when the kernel truncated it (15 characters), as psutil does.
    """
    left, right = stat.find(b"("), stat.rfind(b")")
    fields = stat[right + 2 :].split()
    if left < 0 or right < left or len(fields) < 20 or fields[0] == b"Z":
        return None
    comm = stat[left + 1 : right].decode("utf-8", "replace")
    try:
        ppid = int(fields[1])
        start_ticks = int(fields[19])
    except ValueError:
        return None
    ruid = euid = -1
    for line in status.splitlines():
        if line.startswith(b"Uid:"):
            ids = line.split()
            if len(ids) >= 3 and ids[1].isdigit() and ids[2].isdigit():
                ruid, euid = int(ids[1]), int(ids[2])
            break
    if ruid < 0:
        return None
    args = tuple(a.decode("utf-8", "replace") for a in cmdline.split(b"\0"))
    if args and args[-1] == "":
        args = args[:-1]
    name = comm
    if len(comm) >= 15 and args:
        base = os.path.basename(args[0])
        if base.startswith(comm):
            name = base
    if exe.endswith(" (deleted)"):
        exe = exe[: -len(" (deleted)")]
    start = boot_time() + start_ticks / _CLK_TCK
    return ProcessInfo(pid, ppid, name, exe, args, ruid, euid, user_name(ruid), start)


_CLK_TCK = os.sysconf("SC_CLK_TCK")


def examine(pid: int, proc: str = "/proc") -> ProcessInfo | None:
    """Enrich `pid` from /proc (name, path, command line, ids, user, parent), or None when it is gone
    or unreadable (the caller counts it). Four reads: about a fifth of what psutil takes for the same."""
    base = f"{proc}/{pid}"
    try:
        with open(f"{base}/stat", "rb") as f:
            stat = f.read(4096)
        with open(f"{base}/status", "rb") as f:
            status = f.read(8192)
        with open(f"{base}/cmdline", "rb") as f:
            cmdline = f.read(CMDLINE_MAX)
    except OSError:
        return None
    try:
        exe = os.readlink(f"{base}/exe")
    except OSError:
        exe = ""
    return parse_process(pid, stat, status, cmdline, exe)


def read_stat_link(pid: int, proc: str = "/proc") -> tuple[int, str] | None:
    """(parent PID, command name) of `pid` from /proc/PID/stat: the cheap read a parent chain needs."""
    try:
        with open(f"{proc}/{pid}/stat", "rb") as f:
            data = f.read(4096)
    except OSError:
        return None
    left, right = data.find(b"("), data.rfind(b")")
    fields = data[right + 2 :].split()
    if left < 0 or right < left or len(fields) < 2:
        return None
    try:
        return int(fields[1]), data[left + 1 : right].decode("utf-8", "replace")
    except ValueError:
        return None


def with_parents(
    info: ProcessInfo, link: Callable[[int], tuple[int, str] | None], max_depth: int
) -> ProcessInfo:
    """`info` with its parent chain; `link(pid)` gives (parent PID, name), or None if unknown."""
    chain: list[tuple[int, str]] = []
    ppid = info.ppid
    seen = {info.pid}
    while ppid > 0 and len(chain) < max_depth and ppid not in seen:
        seen.add(ppid)
        up = link(ppid)
        if up is None:
            chain.append((ppid, "?"))
            break
        chain.append((ppid, up[1]))
        ppid = up[0]
    return dataclasses.replace(info, parents=tuple(chain))
