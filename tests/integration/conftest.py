"""Integration fixtures: a lab of network namespaces with echo servers, and the real enforcer in it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from lab.enforcer import LabEnforcer
from lab.topology import Lab

SERVER_TCP = (80, 22, 5201, 8080)
SERVER_UDP = (53,)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    prefix = f"it{os.getpid() % 10000}"
    with Lab(prefix) as lab:
        servers = []
        try:
            for name in ("s1", "s2", "x1"):
                cmd = [sys.executable, "-m", "lab.traffic", "serve", "--seconds", "600"]
                cmd += [a for p in SERVER_TCP for a in ("--tcp", str(p))]
                cmd += [a for p in SERVER_UDP for a in ("--udp", str(p))]
                proc = lab.popen(name, *cmd, stdout=subprocess.PIPE, text=True)
                assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
                servers.append(proc)
            yield lab
        finally:
            for proc in servers:
                proc.terminate()
                proc.wait(timeout=5)


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
