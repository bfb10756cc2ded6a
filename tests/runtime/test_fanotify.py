from __future__ import annotations

import os
import struct

from hypothesis import given
from hypothesis import strategies as st

from runtime.fanotify import (
    FAN_CLASS_NOTIF,
    FAN_CLOSE_WRITE,
    FAN_MODIFY,
    FANOTIFY_METADATA_VERSION,
    IN_CLOSE_WRITE,
    FanEvent,
    Fanotify,
    Inotify,
    InotifyEvent,
    exec_permission_supported,
    fd_path,
    parse_fanotify_events,
    parse_inotify_events,
    response,
)


def _meta(mask: int, fd: int, pid: int, vers: int = FANOTIFY_METADATA_VERSION, length: int = 24) -> bytes:
    return struct.pack("=IBBHQii", length, vers, 0, 24, mask, fd, pid)


def test_parse_fanotify_records() -> None:
    buf = _meta(FAN_MODIFY, 5, 100) + _meta(FAN_CLOSE_WRITE, 6, 101)
    assert parse_fanotify_events(buf) == (
        [FanEvent(FAN_MODIFY, 5, 100), FanEvent(FAN_CLOSE_WRITE, 6, 101)],
        0,
    )
    # A record of another version or an impossible length ends the parse, counted.
    assert parse_fanotify_events(_meta(1, 5, 1) + _meta(1, 6, 2, vers=9)) == ([FanEvent(1, 5, 1)], 1)
    assert parse_fanotify_events(_meta(1, 5, 1, length=8)) == ([], 1)
    assert parse_fanotify_events(_meta(1, 5, 1)[:20]) == ([], 1)


def test_parse_inotify_records() -> None:
    name = b"passwd\0\0"
    buf = struct.pack("=iIII", 3, IN_CLOSE_WRITE, 0, len(name)) + name + struct.pack("=iIII", 4, 2, 0, 0)
    assert parse_inotify_events(buf) == (
        [InotifyEvent(3, IN_CLOSE_WRITE, "passwd"), InotifyEvent(4, 2, "")],
        0,
    )
    assert parse_inotify_events(buf[:20]) == ([], 1)


def test_response_layout() -> None:
    assert struct.unpack("=iI", response(7, True)) == (7, 1)
    assert struct.unpack("=iI", response(7, False)) == (7, 2)


@given(st.binary(max_size=200))
def test_parsers_never_raise(data: bytes) -> None:
    fan, fan_bad = parse_fanotify_events(data)
    assert fan_bad in (0, 1) and len(fan) <= len(data) // 24  # a metadata record is 24 bytes
    ino, ino_bad = parse_inotify_events(data)
    assert ino_bad in (0, 1) and len(ino) <= len(data) // 16  # an inotify record is at least 16 bytes


def test_real_groups_on_this_kernel(tmp_path) -> None:
    assert exec_permission_supported()  # this kernel has FAN_OPEN_EXEC_PERM (≥ 5.0)
    path = os.path.join(str(tmp_path), "f")
    open(path, "w").close()
    fan = Fanotify(FAN_CLASS_NOTIF)
    ino = Inotify()
    try:
        fan.mark(path, FAN_MODIFY | FAN_CLOSE_WRITE)
        ino.add_watch(path, IN_CLOSE_WRITE)
        with open(path, "a") as f:
            f.write("x")
        events, bad = parse_fanotify_events(fan.read(4096))
        assert not bad and events and events[0].pid == os.getpid()
        assert fd_path(events[0].fd) == path
        for ev in events:
            os.close(ev.fd)
        ievents, _ = parse_inotify_events(ino.read(4096))
        assert ievents and ievents[0].mask & IN_CLOSE_WRITE
    finally:
        fan.close()
        ino.close()
