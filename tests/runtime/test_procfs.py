"""What /proc tells about a process (runtime/procfs.py): on a fake /proc tree written here, and on this
process itself."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from runtime.proc_connector import ProcessInfo
from runtime.procfs import (
    ANCESTRY_DEPTH_MAX,
    children_of,
    descends_from,
    euid_of,
    exec_identity,
    read_ppid,
    readlink,
    root_id,
    root_relative,
)

GONE = 2**22 + 12345  # above the kernel's PID limit: never a live process


def _stat(proc: Path, pid: int, ppid: int, comm: str = "sh") -> None:
    (proc / str(pid)).mkdir(parents=True, exist_ok=True)
    (proc / str(pid) / "stat").write_text(f"{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 4194560\n")


def _info(pid: int, name: str, path: str, cmdline: tuple[str, ...]) -> ProcessInfo:
    return ProcessInfo(pid, 1, name, path, cmdline, 0, 0, "root", 0.0)


def test_read_ppid_past_a_command_name_with_spaces_and_parentheses(tmp_path: Path) -> None:
    _stat(tmp_path, 5, 3, comm="a (b) c")
    assert read_ppid(5, str(tmp_path)) == 3
    assert read_ppid(6, str(tmp_path)) is None  # gone
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "stat").write_text("7 (x)")  # cut short
    assert read_ppid(7, str(tmp_path)) is None


def test_descends_from_walks_up_and_stops_at_init_and_at_its_bound(tmp_path: Path) -> None:
    for pid, ppid in ((10, 9), (9, 8), (8, 1), (20, 21), (21, 20)):
        _stat(tmp_path, pid, ppid)
    proc = str(tmp_path)
    assert descends_from(10, frozenset({8}), proc)
    assert descends_from(8, frozenset({8}), proc)  # a PID counts as its own descendant
    assert not descends_from(10, frozenset({7}), proc)
    assert not descends_from(10, frozenset({1}), proc)  # everything descends from init: not an answer
    assert not descends_from(20, frozenset({7}), proc)  # a parent loop ends at the bound
    chain = [100 + i for i in range(ANCESTRY_DEPTH_MAX + 1)]
    for child, parent in zip(chain, chain[1:], strict=False):
        _stat(tmp_path, child, parent)
    assert descends_from(chain[0], frozenset({chain[ANCESTRY_DEPTH_MAX - 1]}), proc)
    assert not descends_from(chain[0], frozenset({chain[ANCESTRY_DEPTH_MAX]}), proc)


def test_children_of_every_thread(tmp_path: Path) -> None:
    for tid, children in ((5, "6 7"), (8, "9"), (10, "")):
        (tmp_path / "5" / "task" / str(tid)).mkdir(parents=True)
        (tmp_path / "5" / "task" / str(tid) / "children").write_text(children)
    assert sorted(children_of(5, str(tmp_path))) == [6, 7, 9]
    assert children_of(6, str(tmp_path)) == []


def test_children_of_this_process() -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert child.pid in children_of(os.getpid())
    finally:
        child.kill()
        child.wait()
    assert child.pid not in children_of(os.getpid())


def test_paths_as_the_workload_sees_them(tmp_path: Path) -> None:
    (tmp_path / "5").mkdir()
    os.symlink("/srv/rootfs", tmp_path / "5" / "root")
    os.symlink("/srv/rootfs/app", tmp_path / "5" / "cwd")
    proc = str(tmp_path)
    assert root_relative(5, "/srv/rootfs/bin/sh", proc) == "/bin/sh"
    assert root_relative(5, "/srv/rootfsx/bin/sh", proc) == "/srv/rootfsx/bin/sh"  # not under the root
    assert root_relative(6, "/srv/rootfs/bin/sh", proc) == "/srv/rootfs/bin/sh"  # gone: left as it is
    # A binary: its own path; a script run by its interpreter: the script's path, from the working directory.
    binary = _info(5, "sleep", "/srv/rootfs/bin/sleep", ("sleep", "1"))
    assert exec_identity(binary, proc) == ("sleep", "/bin/sleep")
    script = _info(5, "run.sh", "/srv/rootfs/bin/dash", ("/bin/sh", "./run.sh"))
    assert exec_identity(script, proc) == ("run.sh", "/app/run.sh")
    absolute = _info(5, "run.sh", "/srv/rootfs/bin/dash", ("/bin/sh", "/srv/rootfs/opt/run.sh"))
    assert exec_identity(absolute, proc) == ("run.sh", "/opt/run.sh")


def test_this_process_from_proc() -> None:
    me = os.getpid()
    assert read_ppid(me) == os.getppid()
    assert euid_of(me) == os.geteuid()
    root = os.stat("/")
    assert root_id(me) == (root.st_dev, root.st_ino)
    assert readlink(f"/proc/{me}/exe") == os.path.realpath(f"/proc/{me}/exe")
    assert euid_of(GONE) is None and root_id(GONE) is None and readlink(f"/proc/{GONE}/exe") == ""
