#!/usr/bin/env python3
"""One TCP connection between two network namespaces, checked end to end (standard library only).

    netns-tcp.py --server-ns NS --addr ADDR --port PORT --client-ns NS --expect arrive|blocked

A server in --server-ns listens on ADDR:PORT and echoes what it receives; a client in --client-ns
connects, sends a payload and reads the echo. `arrive`: the payload came back byte for byte.
`blocked`: the client could not connect (refused, reset or timed out) and the server received no
byte. Prints one line of JSON with what happened; exits 0 when the expectation held, 1 when it did
not, 2 on bad usage. Every wait is bounded by --timeout.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

MAX_PAYLOAD = 1 << 20  # bytes: the largest payload a check may send

SERVER = r"""
import socket, sys
addr, port, timeout, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
family = socket.AF_INET6 if ":" in addr else socket.AF_INET
s = socket.socket(family, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((addr, port)); s.listen(1); s.settimeout(timeout)
print("ready", flush=True)
got = b""
try:
    c, _ = s.accept()
    c.settimeout(timeout)
    while len(got) < limit:
        chunk = c.recv(65536)
        if not chunk:
            break
        got += chunk
    c.sendall(got)
    c.close()
except OSError as e:
    print("server-error", type(e).__name__, flush=True)
print("received", len(got), got.hex() if len(got) <= 64 else "", flush=True)
"""

CLIENT = r"""
import socket, sys
addr, port, timeout, payload = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), bytes.fromhex(sys.argv[4])
try:
    c = socket.create_connection((addr, port), timeout=timeout)
    c.sendall(payload)
    c.shutdown(socket.SHUT_WR)
    back = b""
    while len(back) < len(payload):
        chunk = c.recv(65536)
        if not chunk:
            break
        back += chunk
    print("echo", back.hex(), flush=True)
except OSError as e:
    print("client-error", type(e).__name__, flush=True)
"""


def _in_ns(ns: str, code: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", ns, sys.executable, "-c", code, *args]


def check(
    server_ns: str, client_ns: str, addr: str, port: int, payload: bytes, timeout: float
) -> dict[str, object]:
    """Run one connection; return what the client and the server saw."""
    server = subprocess.Popen(
        _in_ns(server_ns, SERVER, addr, str(port), str(timeout), str(len(payload))),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        ready = server.stdout.readline().strip()
        if ready != "ready":
            raise RuntimeError(
                f"server did not start: {ready!r} {server.stderr.read() if server.stderr else ''}"
            )
        t0 = time.monotonic()
        client = subprocess.run(
            _in_ns(client_ns, CLIENT, addr, str(port), str(timeout), payload.hex()),
            capture_output=True,
            text=True,
            timeout=timeout + 5,
        )
        elapsed = time.monotonic() - t0
        out, _ = server.communicate(timeout=timeout + 5)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    client_words = client.stdout.split()
    echoed = bytes.fromhex(client_words[1]) if client_words[:1] == ["echo"] and len(client_words) > 1 else b""
    received = 0
    for line in out.splitlines():
        words = line.split()
        if words[:1] == ["received"]:
            received = int(words[1])
    return {
        "client": client_words[0] if client_words else "no-output",
        "client_error": client_words[1] if client_words[:1] == ["client-error"] else None,
        "echo_matches": echoed == payload,
        "server_received": received,
        "seconds": round(elapsed, 3),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--server-ns", required=True)
    p.add_argument("--client-ns", required=True)
    p.add_argument("--addr", required=True, help="server address (IPv4 or IPv6)")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--expect", choices=("arrive", "blocked"), required=True)
    p.add_argument("--payload", default="enforcer-container-check", help="text sent and expected back")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds each side waits at most")
    args = p.parse_args(argv)
    payload = args.payload.encode()
    if not 0 < len(payload) <= MAX_PAYLOAD or not 0 < args.port < 65536 or not 0 < args.timeout <= 60:
        print("netns-tcp: payload, port or timeout out of range", file=sys.stderr)
        return 2
    result = check(args.server_ns, args.client_ns, args.addr, args.port, payload, args.timeout)
    if args.expect == "arrive":
        ok = result["echo_matches"] is True and result["server_received"] == len(payload)
    else:
        ok = result["client"] == "client-error" and result["server_received"] == 0
    result.update(expect=args.expect, ok=ok, addr=args.addr, port=args.port)
    print(json.dumps(result, sort_keys=True))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
