"""Real HTTP servers and a real HTTP client in the lab: `python -m http.server` on lab hosts, curl on a
client. For tests and demos that need an application in front of the enforcer."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from lab.topology import Lab

START_TIMEOUT_S = 10.0  # longest a server takes to answer its first request


def http_status(
    lab: Lab, client: str, addr: str, port: int, path: str, data: str = "", local_port: int = 0
) -> str:
    """The HTTP status `client` got from curl ("000": no response, e.g. the connection was reset).
    `data` is sent URL-encoded in the query string; `local_port` pins the client's port."""
    cmd = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "5"]
    if local_port:
        cmd += ["--local-port", str(local_port)]
    if data:
        cmd += ["-G", "--data-urlencode", data]
    host = f"[{addr}]" if ":" in addr else addr
    cmd.append(f"http://{host}:{port}{path}")
    return lab.exec(client, *cmd, check=False, timeout=15).stdout.strip()


@contextlib.contextmanager
def http_servers(
    lab: Lab, hosts: Sequence[str], port: int, client: str = "c1", bind: str = "::", index: str | None = None
) -> Iterator[Path]:
    """`python -m http.server` on each host (one temporary document root, with `index` as index.html
    when given), up once `client` gets an answer from the first; stopped and removed on exit. Yields the
    document root."""
    docroot = tempfile.TemporaryDirectory(prefix="lab-www-")
    if index is not None:
        (Path(docroot.name) / "index.html").write_text(index)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for host in hosts:
            procs.append(
                lab.popen(host, sys.executable, "-m", "http.server", str(port), "--bind", bind,
                          "--directory", docroot.name, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            )  # fmt: skip
        first = lab.host(hosts[0]).ipv4
        deadline = time.monotonic() + START_TIMEOUT_S
        while http_status(lab, client, first, port, "/") not in ("200", "404"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the HTTP server on {hosts[0]} did not come up")
            time.sleep(0.2)
        yield Path(docroot.name)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=5)
        docroot.cleanup()
