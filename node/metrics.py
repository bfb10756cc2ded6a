"""Prometheus metrics and the health/readiness endpoint, served by the supervisor.

Children report their counters in heartbeats; this module only renders what the supervisor holds.
`/healthz` answers 200 while the supervisor's loop runs; `/readyz` answers 200 once the rules are
installed and every child is alive; `/metrics` is the Prometheus text format; `/status` is JSON.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol


class StatusSource(Protocol):
    def healthy(self) -> bool: ...

    def status(self) -> dict[str, Any]: ...


_UNSAFE = re.compile(r"[^a-zA-Z0-9_]")


def render(status: dict[str, Any]) -> str:
    lines = [
        "# HELP enforcer_ready 1 when the enforcer's rules are installed and it enforces",
        "# TYPE enforcer_ready gauge",
        f"enforcer_ready {1 if status.get('ready') else 0}",
        "# TYPE enforcer_child_restarts_total counter",
    ]
    children = status.get("children", [])
    for c in children:
        lines.append(f'enforcer_child_restarts_total{{child="{c["name"]}"}} {c["restarts"]}')
    lines.append("# TYPE enforcer_child_up gauge")
    for c in children:
        lines.append(f'enforcer_child_up{{child="{c["name"]}"}} {1 if c["alive"] else 0}')
    seen_types: set[str] = set()
    for c in children:
        role, _, index = c["name"].partition(" ")
        counters = c.get("counters", {})
        lines += _latency_histogram(role, index, counters, seen_types)
        for key, value in sorted(counters.items()):
            if key.startswith("latency_us_"):
                continue
            if key.startswith("rule."):
                name = "enforcer_rule_hits_total"
                label = f'{role}="{index}",rule="{key.removeprefix("rule.")}"'
            else:
                name = f"enforcer_{role}_{_UNSAFE.sub('_', key)}"
                label = f'{role}="{index}"'
            if name not in seen_types:
                kind = "gauge" if key in ("inflight", "flows.active") else "counter"
                lines.append(f"# TYPE {name} {kind}")
                seen_types.add(name)
            lines.append(f"{name}{{{label}}} {value}")
    return "\n".join(lines) + "\n"


def _latency_histogram(role: str, index: str, counters: dict[str, int], seen: set[str]) -> list[str]:
    """The worker round-trip histogram: children report per-bucket counts; Prometheus wants cumulative."""
    bins = sorted(
        ((float("inf") if k.endswith("_inf") else float(k.removeprefix("latency_us_le_")), v)
         for k, v in counters.items() if k.startswith("latency_us_le_")),
    )  # fmt: skip
    if not bins:
        return []
    name = "enforcer_worker_verdict_latency_us"
    lines = [] if name in seen else [f"# TYPE {name} histogram"]
    seen.add(name)
    total = 0
    for bound, count in bins:
        total += count
        le = "+Inf" if bound == float("inf") else f"{bound:g}"
        lines.append(f'{name}_bucket{{{role}="{index}",le="{le}"}} {total}')
    lines.append(f'{name}_sum{{{role}="{index}"}} {counters.get("latency_us_sum", 0)}')
    lines.append(f'{name}_count{{{role}="{index}"}} {total}')
    return lines


class MetricsServer:
    def __init__(self, listen: str, source: StatusSource) -> None:
        host, _, port = listen.rpartition(":")
        self.source = source
        handler = _handler(source)
        self.httpd = ThreadingHTTPServer((host.strip("[]"), int(port)), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="metrics", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _handler(source: StatusSource) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status = source.status()
            if self.path == "/healthz":
                ok = source.healthy()
                self._send(200 if ok else 503, "ok\n" if ok else "stalled\n", "text/plain")
            elif self.path == "/readyz":
                ready = bool(status["ready"]) and all(c["alive"] for c in status["children"])
                self._send(200 if ready else 503, "ready\n" if ready else "not ready\n", "text/plain")
            elif self.path == "/metrics":
                self._send(200, render(status), "text/plain; version=0.0.4")
            elif self.path == "/status":
                self._send(200, json.dumps(status), "application/json")
            else:
                self._send(404, "not found\n", "text/plain")

        def _send(self, code: int, body: str, ctype: str) -> None:
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # requests are not events worth a log line

    return Handler
