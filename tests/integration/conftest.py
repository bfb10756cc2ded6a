"""Integration fixtures: a lab of network namespaces with echo servers, and the real enforcer in it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from lab.enforcer import LabEnforcer
from lab.topology import Lab

SERVER_TCP = (80, 22, 5201, 8080)
SERVER_UDP = (53,)


@contextmanager
def serving(lab: Lab, *commands: tuple[str, ...]) -> Iterator[None]:
    """Each `(host, program, arg, ...)` started in its host's namespace, up once it printed "ready";
    stopped (by its PID) on exit, even when one failed to start."""
    procs: list[subprocess.Popen[Any]] = []
    try:
        for host, *argv in commands:
            proc = lab.popen(host, *argv, stdout=subprocess.PIPE, text=True)
            procs.append(proc)
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready", argv
        yield
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=5)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    prefix = f"it{os.getpid() % 10000}"
    with Lab(prefix) as lab:
        cmd = [sys.executable, "-m", "lab.traffic", "serve", "--seconds", "600"]
        cmd += [a for p in SERVER_TCP for a in ("--tcp", str(p))]
        cmd += [a for p in SERVER_UDP for a in ("--udp", str(p))]
        with serving(lab, *((name, *cmd) for name in ("s1", "s2", "x1"))):
            yield lab


def tcp(
    lab: Lab, client: str, addr: str, port: int, nbytes: int = 20000, timeout: float = 3
) -> dict[str, object]:
    import json

    out = lab.exec(
        client,
        sys.executable,
        "-m",
        "lab.traffic",
        "tcp",
        addr,
        str(port),
        "--bytes",
        str(nbytes),
        "--timeout",
        str(timeout),
        check=False,
        timeout=timeout + 10,
    )
    return json.loads(out.stdout)


def udp(lab: Lab, client: str, addr: str, port: int, count: int = 5, timeout: float = 1) -> dict[str, object]:
    import json

    out = lab.exec(
        client,
        sys.executable,
        "-m",
        "lab.traffic",
        "udp",
        addr,
        str(port),
        "--count",
        str(count),
        "--timeout",
        str(timeout),
        check=False,
        timeout=count * timeout + 10,
    )
    return json.loads(out.stdout)


def ping(lab: Lab, client: str, addr: str, count: int = 2) -> bool:
    return (
        lab.exec(client, "ping", "-c", str(count), "-i", "0.2", "-W", "1", addr, check=False).returncode == 0
    )


@pytest.fixture
def enforcer(lab: Lab) -> Iterator[LabEnforcer]:
    e = LabEnforcer(lab)
    try:
        yield e.start()
    finally:
        e.cleanup()


def counter_total(e: LabEnforcer, role: str, key: str, at_least: int = 1, timeout: float = 3.0) -> int:
    """The sum of a counter over the children of a role, waiting (bounded) until it reaches `at_least`:
    counters travel with heartbeats, a fraction of a second behind the events that moved them."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        total = sum(
            c["counters"].get(key, 0) for c in e.status().get("children", []) if c["name"].startswith(role)
        )
        if total >= at_least or time.monotonic() > deadline:
            return total
        time.sleep(0.1)


def settled_counters(
    e: LabEnforcer, role: str, heartbeats: int = 2, timeout: float = 10.0
) -> dict[str, dict[str, int]]:
    """The counters of the children of `role` once each has sent `heartbeats` more heartbeats than when
    called (a restarted child: any): counters travel with heartbeats, so these readings include what was
    counted before the call, however slowly this machine delivers them; two, so that a heartbeat already
    on its way at the call does not count. Instead of a fixed sleep; bounded by `timeout`."""
    import time

    def children() -> list[dict]:
        return [c for c in e.status().get("children", []) if c["name"].startswith(role)]

    start = {c["name"]: (c["pid"], c.get("heartbeats", 0)) for c in children()}
    deadline = time.monotonic() + timeout
    while True:
        now = children()
        fresh = all(
            c["pid"] != start.get(c["name"], (None, 0))[0]
            or c.get("heartbeats", 0) >= start[c["name"]][1] + heartbeats
            for c in now
        )
        if (now and fresh) or time.monotonic() > deadline:
            return {c["name"]: c["counters"] for c in now}
        time.sleep(0.05)


@contextmanager
def vulnapps(lab: Lab, hosts: tuple[str, ...], port: int) -> Iterator[None]:
    """`lab.vulnapp` on each of `hosts`, bound to its lab address only; stopped after."""
    app = (sys.executable, "-m", "lab.vulnapp")
    with serving(lab, *((h, *app, lab.host(h).ipv4, str(port), "--seconds", "300") for h in hosts)):
        yield


def threat_events(
    e: LabEnforcer, name: str, at_least: int = 1, timeout: float = 8.0, dst: str = ""
) -> list[dict[str, Any]]:
    """The enforcer's `name` threat events (against `dst` when given), waited for until there are
    `at_least` (bounded by `timeout`: then what there is)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [
            ev for ev in e.events()
            if ev["type"] == "threat" and ev.get("name") == name
            and (not dst or (ev.get("flow") or {}).get("dst") == dst)
        ]  # fmt: skip
        if len(found) >= at_least or time.monotonic() > deadline:
            return found
        time.sleep(0.3)
