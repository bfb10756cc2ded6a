"""Traffic for the lab: echo servers and clients that check every byte that comes back.

Run inside a lab namespace: `python -m lab.traffic serve --tcp 80 --udp 53`, `python -m lab.traffic tcp
198.18.2.11 80 --bytes 100000`. Clients print one JSON line ({"ok": …, "error": …}) and exit 0 only when
everything sent came back intact. Every loop is bounded in count and time.

Two long-running clients serve the reliability drills (`scripts/chaos.py`, `scripts/soak.py`):
  probe     alternates a connection the policy denies and one it allows, one JSON line per attempt with
            its wall-clock start and end, so a drill can tell when enforcement held and when it did not;
  denials   denied connections at a steady rate: a countable event load (one violation per refused
            attempt); prints what it did when it ends.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import signal
import socket
import sys
import threading
import time
from types import FrameType

MAX_SERVE_SECONDS = 4 * 3600  # the soak runs up to 240 minutes against these servers
MAX_CLIENT_SECONDS = 3600  # the drills' long-running clients (probe, denials) end by then at the latest
MAX_DENIALS = 1_000_000  # connections one denials client makes at most


def _pattern(n: int) -> bytes:
    block = hashlib.sha256(b"enforcer-lab").digest() * 64  # 2 KiB, not compressible into a pattern
    return (block * (n // len(block) + 1))[:n]


def serve(tcp_ports: list[int], udp_ports: list[int], seconds: float) -> int:
    stop = threading.Event()
    threads = []
    for port in tcp_ports:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", port))
        sock.listen(1024)
        threads.append(threading.Thread(target=_tcp_accept, args=(sock, stop), daemon=True))
    for port in udp_ports:
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(("::", port))
        threads.append(threading.Thread(target=_udp_echo, args=(sock, stop), daemon=True))
    for t in threads:
        t.start()
    print("ready", flush=True)
    stop.wait(min(seconds, MAX_SERVE_SECONDS))
    stop.set()
    return 0


def _tcp_accept(sock: socket.socket, stop: threading.Event) -> None:
    sock.settimeout(0.5)
    while not stop.is_set():
        try:
            conn, _ = sock.accept()
        except TimeoutError:
            continue
        threading.Thread(target=_tcp_echo, args=(conn,), daemon=True).start()


def _tcp_echo(conn: socket.socket) -> None:
    conn.settimeout(30)
    try:
        while data := conn.recv(65536):
            conn.sendall(data)
    except OSError:
        pass
    finally:
        conn.close()


def _udp_echo(sock: socket.socket, stop: threading.Event) -> None:
    sock.settimeout(0.5)
    while not stop.is_set():
        try:
            data, peer = sock.recvfrom(65536)
        except TimeoutError:
            continue
        sock.sendto(data, peer)


def tcp_client(host: str, port: int, nbytes: int, timeout: float) -> dict[str, object]:
    payload = _pattern(nbytes)
    started = time.monotonic()
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except ConnectionRefusedError:
        return {"ok": False, "error": "refused"}
    except ConnectionResetError:
        return {"ok": False, "error": "reset"}
    except TimeoutError:
        return {"ok": False, "error": "timeout"}
    except OSError as exc:
        return {"ok": False, "error": f"os:{exc.errno}"}
    received = bytearray()
    result: dict[str, object]
    try:
        reader = threading.Thread(target=_drain, args=(sock, received, nbytes), daemon=True)
        reader.start()
        sock.sendall(payload)
        reader.join(timeout)
        if reader.is_alive():
            result = {"ok": False, "error": "timeout", "received": len(received)}
        else:
            ok = bytes(received) == payload
            result = {"ok": ok, "error": "" if ok else "mismatch", "received": len(received)}
    except ConnectionResetError:
        result = {"ok": False, "error": "reset", "received": len(received)}
    except (TimeoutError, BrokenPipeError, OSError) as exc:
        result = {"ok": False, "error": type(exc).__name__, "received": len(received)}
    finally:
        sock.close()
    result["seconds"] = round(time.monotonic() - started, 4)
    return result


def _drain(sock: socket.socket, into: bytearray, nbytes: int) -> None:
    try:
        while len(into) < nbytes:
            data = sock.recv(65536)
            if not data:
                return
            into.extend(data)
    except OSError:
        return


def dns_query(ident: int, name: str = "web.lab") -> bytes:
    """A well-formed DNS query (A, IN, recursion desired): what port 53 should carry."""
    qname = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
    return (
        ident.to_bytes(2, "big") + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + qname + b"\x00\x01\x00\x01"
    )


def udp_client(
    host: str, port: int, count: int, size: int, timeout: float, dns: bool = False
) -> dict[str, object]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.settimeout(timeout)
    got = 0
    for i in range(count):
        payload = dns_query(i) if dns else i.to_bytes(4, "big") + _pattern(max(0, size - 4))
        sock.sendto(payload, (host, port))
        try:
            data, _ = sock.recvfrom(65536)
        except TimeoutError:
            continue
        got += data == payload
    sock.close()
    return {"ok": got == count, "sent": count, "received": got, "error": "" if got == count else "lost"}


def _connect_outcome(host: str, port: int, timeout: float, payload: bytes = b"") -> str:
    """ "ok" (connected, and `payload` echoed whole), else why not: refused, reset, timeout, os:N."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except ConnectionRefusedError:
        return "refused"
    except ConnectionResetError:
        return "reset"
    except TimeoutError:
        return "timeout"
    except OSError as exc:
        return f"os:{exc.errno}"
    try:
        if payload:
            sock.sendall(payload)
            got = b""
            while len(got) < len(payload):
                chunk = sock.recv(len(payload) - len(got))
                if not chunk:
                    return "closed"
                got += chunk
            if got != payload:
                return "mismatch"
        return "ok"
    except ConnectionResetError:
        return "reset"
    except TimeoutError:
        return "timeout"
    except OSError as exc:
        return f"os:{exc.errno}"
    finally:
        sock.close()


class _Stop:
    """Set by SIGTERM/SIGINT: the long-running clients finish their attempt and report."""

    def __init__(self) -> None:
        self.set = False
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handler)

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.set = True


def probe(
    host: str, allowed: int, denied: int, seconds: float, interval: float, timeout: float
) -> dict[str, object]:
    """Until `seconds` pass (or SIGTERM): a denied attempt, then an allowed one (64 bytes echoed), each
    reported at once as {"kind", "start", "end", "correct", "outcome"} with wall-clock times."""
    stop = _Stop()
    payload = _pattern(64)
    end = time.monotonic() + min(seconds, MAX_CLIENT_SECONDS)
    rounds = 0
    while time.monotonic() < end and not stop.set:
        for kind, port in (("denied", denied), ("allowed", allowed)):
            start = time.time()
            outcome = _connect_outcome(host, port, timeout, payload if kind == "allowed" else b"")
            correct = outcome == "ok" if kind == "allowed" else outcome in ("refused", "reset")
            line = {"kind": kind, "start": start, "end": time.time(), "correct": correct, "outcome": outcome}
            print(json.dumps(line), flush=True)
        rounds += 1
        time.sleep(interval)
    return {"ok": True, "rounds": rounds}


def denials(
    host: str, port: int, span: int, rate: float, count: int, seconds: float, timeout: float
) -> dict[str, object]:
    """Up to `count` connections the policy denies, to ports `port`..`port + span - 1` in turn, at most
    `rate` a second, until `seconds` pass (or SIGTERM). The enforcer reports one violation per refused
    attempt (merged with a count when client, server and port repeat), so the events are countable;
    with a span of distinct ports each is an event of its own."""
    stop = _Stop()
    outcomes: dict[str, int] = {}
    started = time.monotonic()
    end = started + min(seconds, MAX_CLIENT_SECONDS)
    attempts = 0
    for i in range(min(count, MAX_DENIALS)):
        if stop.set or time.monotonic() >= end:
            break
        if rate > 0:
            wait = started + i / rate - time.monotonic()
            if wait > 0:
                time.sleep(wait)
        outcome = _connect_outcome(host, port + i % max(1, span), timeout)
        attempts += 1
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    denied = outcomes.get("refused", 0) + outcomes.get("reset", 0)
    return {
        "ok": True,
        "attempts": attempts,
        "denied": denied,
        "outcomes": outcomes,
        "seconds": round(time.monotonic() - started, 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lab.traffic")
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--tcp", type=int, action="append", default=[])
    s.add_argument("--udp", type=int, action="append", default=[])
    s.add_argument("--seconds", type=float, default=120)
    t = sub.add_parser("tcp")
    t.add_argument("host")
    t.add_argument("port", type=int)
    t.add_argument("--bytes", type=int, default=10000)
    t.add_argument("--timeout", type=float, default=3)
    u = sub.add_parser("udp")
    u.add_argument("host")
    u.add_argument("port", type=int)
    u.add_argument("--count", type=int, default=5)
    u.add_argument("--size", type=int, default=64)
    u.add_argument("--timeout", type=float, default=1)
    u.add_argument("--dns", action="store_true", help="send DNS queries instead of pattern bytes")
    pr = sub.add_parser("probe", help="alternate a denied and an allowed connection, a JSON line each")
    pr.add_argument("host")
    pr.add_argument("--allowed", type=int, default=80)
    pr.add_argument("--denied", type=int, default=22)
    pr.add_argument("--seconds", type=float, default=60)
    pr.add_argument("--interval", type=float, default=0.05)
    pr.add_argument("--timeout", type=float, default=1)
    d = sub.add_parser("denials", help="denied connections at a steady rate (a countable event load)")
    d.add_argument("host")
    d.add_argument("port", type=int)
    d.add_argument("--span", type=int, default=1, help="ports port..port+span-1 in turn")
    d.add_argument("--rate", type=float, default=50, help="attempts per second (0: as fast as possible)")
    d.add_argument("--count", type=int, default=MAX_DENIALS)
    d.add_argument("--seconds", type=float, default=60)
    d.add_argument("--timeout", type=float, default=2)
    args = parser.parse_args(argv)
    if args.cmd == "serve":
        return serve(args.tcp, args.udp, args.seconds)
    if args.cmd == "probe":
        result = probe(args.host, args.allowed, args.denied, args.seconds, args.interval, args.timeout)
    elif args.cmd == "denials":
        result = denials(args.host, args.port, args.span, args.rate, args.count, args.seconds, args.timeout)
    elif args.cmd == "tcp":
        result = tcp_client(args.host, args.port, args.bytes, args.timeout)
    else:
        result = udp_client(args.host, args.port, args.count, args.size, args.timeout, args.dns)
    print(json.dumps(result), flush=True)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
