"""Load generators for `scripts/loadtest.py`, run inside lab namespaces. Each client prints one JSON line.

Every loop is bounded by a duration (and the server by a lifetime), so nothing runs on by itself.
  serve     TCP: port 5201 counts the bytes of each connection and answers the count when the client
            closes its side; port 80 echoes small requests (connection rate, request/response).
  udp-sink  counts datagrams on a port for a bounded time.
  bulk / udp-flood / connrate / rr: the clients.
  http-serve / mixed: the soak's HTTP/1.1 server (keep-alive) and its mixed client (keep-alive and new
            HTTP connections, DNS queries and a SQL injection now and then, at a bounded rate).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_SECONDS = 120.0
CHUNK = 256 * 1024


def serve(seconds: float) -> int:
    stop = threading.Event()
    socks = []
    for port, handler in ((5201, _bulk_conn), (80, _echo_conn)):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
        s.listen(4096)
        socks.append(s)
        threading.Thread(target=_accept, args=(s, handler, stop), daemon=True).start()
    print("ready", flush=True)
    stop.wait(min(seconds, MAX_SECONDS * 10))
    return 0


def _accept(sock: socket.socket, handler: object, stop: threading.Event) -> None:
    sock.settimeout(0.5)
    while not stop.is_set():
        try:
            conn, _ = sock.accept()
        except TimeoutError:
            continue
        except OSError:
            continue
        threading.Thread(target=handler, args=(conn,), daemon=True).start()  # type: ignore[arg-type]


def _bulk_conn(conn: socket.socket) -> None:
    total = 0
    buf = bytearray(CHUNK)
    try:
        while n := conn.recv_into(buf):
            total += n
        conn.sendall(struct.pack("!Q", total))
    except OSError:
        pass
    finally:
        conn.close()


def _echo_conn(conn: socket.socket) -> None:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while data := conn.recv(4096):
            conn.sendall(data)
    except OSError:
        pass
    finally:
        conn.close()


def udp_sink(port: int, seconds: float) -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    s.bind(("0.0.0.0", port))
    s.settimeout(0.2)
    print("ready", flush=True)
    count = 0
    first = last = 0.0
    end = time.monotonic() + min(seconds, MAX_SECONDS)
    while time.monotonic() < end:
        try:
            s.recv(2048)
        except TimeoutError:
            continue
        count += 1
        last = time.monotonic()
        if count == 1:
            first = last
    print(json.dumps({"received": count, "seconds": round(last - first, 4)}), flush=True)
    return 0


def bulk(host: str, streams: int, seconds: float) -> dict[str, object]:
    results: list[int] = []
    lock = threading.Lock()

    def one() -> None:
        s = socket.create_connection((host, 5201), timeout=10)
        data = b"\0" * CHUNK
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        got = s.recv(8)
        s.close()
        with lock:
            results.append(struct.unpack("!Q", got)[0] if len(got) == 8 else 0)

    started = time.monotonic()
    threads = [threading.Thread(target=one) for _ in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 30)
    elapsed = time.monotonic() - started
    delivered = sum(results)
    return {
        "gbit_s": round(delivered * 8 / elapsed / 1e9, 3),
        "bytes": delivered,
        "seconds": round(elapsed, 3),
    }


def udp_flood(host: str, port: int, size: int, seconds: float) -> dict[str, object]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect((host, port))
    payload = os.urandom(size)
    sent = 0
    end = time.monotonic() + seconds
    send = s.send
    while time.monotonic() < end:
        for _ in range(256):
            try:
                send(payload)
                sent += 1
            except OSError:
                pass
    return {"sent": sent, "seconds": seconds}


def _percentiles(samples: list[float]) -> tuple[float, float]:
    if not samples:
        return 0.0, 0.0
    samples.sort()
    return samples[len(samples) // 2] * 1e6, samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1e6


def connrate(host: str, seconds: float) -> dict[str, object]:
    """A new connection per request: connect, send 32 bytes, read them back, close."""
    lat: list[float] = []
    errors = 0
    req = b"x" * 32
    end = time.monotonic() + seconds
    started = time.monotonic()
    while time.monotonic() < end:
        t0 = time.perf_counter()
        try:
            s = socket.create_connection((host, 80), timeout=2)
            s.sendall(req)
            got = b""
            while len(got) < len(req):
                chunk = s.recv(64)
                if not chunk:
                    break
                got += chunk
            s.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )  # RST: no TIME_WAIT pile-up
            s.close()
            if got == req:
                lat.append(time.perf_counter() - t0)
            else:
                errors += 1
        except OSError:
            errors += 1
    elapsed = time.monotonic() - started
    p50, p99 = _percentiles(lat)
    return {
        "conn_s": round(len(lat) / elapsed, 1),
        "p50_us": round(p50, 1),
        "p99_us": round(p99, 1),
        "errors": errors,
        "connections": len(lat),
    }


def rr(host: str, seconds: float) -> dict[str, object]:
    """Request/response on one established connection: 64 bytes each way, one at a time."""
    s = socket.create_connection((host, 80), timeout=2)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    req = b"r" * 64
    lat: list[float] = []
    end = time.monotonic() + seconds
    started = time.monotonic()
    while time.monotonic() < end:
        t0 = time.perf_counter()
        s.sendall(req)
        got = 0
        while got < len(req):
            got += len(s.recv(128))
        lat.append(time.perf_counter() - t0)
    s.close()
    elapsed = time.monotonic() - started
    p50, p99 = _percentiles(lat)
    return {"rr_s": round(len(lat) / elapsed, 1), "p50_us": round(p50, 1), "p99_us": round(p99, 1)}


class _KeepAliveHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 with a length on every answer, so a client may keep its connection for many requests."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # the name http.server calls
        body = b"ok " + self.path.encode()[:200] + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # nothing per request


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client reset (the enforcer resetting an attack) is expected here, not a server fault


def http_serve(port: int, seconds: float) -> int:
    server = _QuietServer(("0.0.0.0", port), _KeepAliveHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print("ready", flush=True)
    time.sleep(min(seconds, MAX_SECONDS * 30))
    server.shutdown()
    return 0


SQL_INJECTION = "/item?id=1%27%20OR%20%271%27%3D%271"  # ' OR '1'='1: detected as sql_injection


def mixed(
    keepalive: str, fresh: str, dns: str, rate: float, attack_every: int, seconds: float
) -> dict[str, object]:
    """Round robin at `rate` operations a second: a request on a kept-alive connection to `keepalive`, a
    request on a new connection to `fresh`, a DNS query to `dns`; every `attack_every`-th operation a SQL
    injection on a new connection to `fresh` instead. Counts outcomes per kind; ends after `seconds` or
    on SIGTERM."""
    import http.client

    from lab.traffic import dns_query

    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    counts: dict[str, int] = {}
    kept: http.client.HTTPConnection | None = None
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.settimeout(1.0)

    def count(key: str) -> None:
        counts[key] = counts.get(key, 0) + 1

    def get(conn: http.client.HTTPConnection, path: str) -> bool:
        conn.request("GET", path)
        answer = conn.getresponse()
        answer.read()
        return answer.status == 200

    started = time.monotonic()
    end = started + min(seconds, MAX_SECONDS * 30)
    i = 0
    while time.monotonic() < end and not stopping.is_set():
        wait = started + i / rate - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        kind = (
            "attack"
            if attack_every and i % attack_every == attack_every - 1
            else ("keepalive", "new", "dns")[i % 3]
        )
        i += 1
        try:
            if kind == "keepalive":
                if kept is None:
                    kept = http.client.HTTPConnection(keepalive, 80, timeout=2)
                ok = get(kept, f"/k/{i}")
            elif kind in ("new", "attack"):
                conn = http.client.HTTPConnection(fresh, 80, timeout=2)
                try:
                    ok = get(conn, SQL_INJECTION if kind == "attack" else f"/n/{i}")
                finally:
                    conn.close()
            else:
                query = dns_query(i & 0xFFFF)
                udp.sendto(query, (dns, 53))
                ok = udp.recv(2048) == query
        except (OSError, http.client.HTTPException):
            ok = False
            if kind == "keepalive" and kept is not None:
                kept.close()
                kept = None
        count(f"{kind}.{'ok' if ok else 'failed'}")
    return {"operations": i, "seconds": round(time.monotonic() - started, 1), **counts}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="lab.load")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("serve").add_argument("--seconds", type=float, default=600)
    u = sub.add_parser("udp-sink")
    u.add_argument("--port", type=int, default=53)
    u.add_argument("--seconds", type=float, default=10)
    h = sub.add_parser("http-serve")
    h.add_argument("--port", type=int, default=80)
    h.add_argument("--seconds", type=float, default=600)
    m = sub.add_parser("mixed")
    m.add_argument("--keepalive", required=True)
    m.add_argument("--fresh", required=True)
    m.add_argument("--dns", required=True)
    m.add_argument("--rate", type=float, default=60)
    m.add_argument("--attack-every", type=int, default=200)
    m.add_argument("--seconds", type=float, default=60)
    for name in ("bulk", "udp-flood", "connrate", "rr"):
        c = sub.add_parser(name)
        c.add_argument("host")
        c.add_argument("--seconds", type=float, default=3)
        c.add_argument("--streams", type=int, default=1)
        c.add_argument("--port", type=int, default=53)
        c.add_argument("--size", type=int, default=64)
    a = p.parse_args(argv)
    seconds = min(getattr(a, "seconds", 3), MAX_SECONDS)
    if a.cmd == "serve":
        return serve(a.seconds)
    if a.cmd == "http-serve":
        return http_serve(a.port, a.seconds)
    if a.cmd == "mixed":
        print(json.dumps(mixed(a.keepalive, a.fresh, a.dns, a.rate, a.attack_every, a.seconds)), flush=True)
        return 0
    if a.cmd == "udp-sink":
        return udp_sink(a.port, seconds)
    if a.cmd == "bulk":
        result = bulk(a.host, a.streams, seconds)
    elif a.cmd == "udp-flood":
        result = udp_flood(a.host, a.port, a.size, seconds)
    elif a.cmd == "connrate":
        result = connrate(a.host, seconds)
    else:
        result = rr(a.host, seconds)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
