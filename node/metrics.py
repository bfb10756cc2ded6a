"""Prometheus metrics and the health/readiness endpoint, served by the supervisor.

Children report their counters in heartbeats; a custom collector turns what the supervisor holds into
metric families of one `prometheus_client` registry, one family per name with every child's sample in
it (labelled `child`), so the exposition is one contiguous block per family as Prometheus' parser
demands. `/healthz` answers 200 while the supervisor's loop runs; `/readyz` answers 200 once the rules
are installed and every child is alive; `/metrics` is the Prometheus text format; `/status` is JSON.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector


class StatusSource(Protocol):
    def healthy(self) -> bool: ...

    def status(self) -> dict[str, Any]: ...


_UNSAFE = re.compile(r"[^a-zA-Z0-9_]")
# Heartbeat values that are levels, not running totals; every other value only grows while a child lives.
GAUGES = frozenset({"inflight", "flows.active", "policy.version", "policy.generation", "spool.batches",
                    "netfilter.bridge_unfiltered"})  # fmt: skip
# Histograms children report as per-bucket counts in µs (`<key>_le_<bound>`, `<key>_le_inf`) and a sum
# (`<key>_sum`): key → (family name after `enforcer_<role>_`, help).
HISTOGRAMS = {
    "inspect_latency_us": (
        "inspect_latency_seconds",
        "time from a reader taking an inspected packet from its queue to issuing its worker's verdict",
    ),
}
RULE_PREFIX = "rule."


def _role(child_name: str) -> str:
    return child_name.partition(" ")[0]


def family_name(role: str, key: str) -> str:
    """`enforcer_<role>_<key>`; a counter's `_total` is added by the exposition, not kept here."""
    return f"enforcer_{role}_{_UNSAFE.sub('_', key)}".removesuffix("_total")


class ChildCounters(Collector):
    """Gathers the children's heartbeat counters (via the supervisor's status) into metric families."""

    def __init__(self, source: StatusSource) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        status = self.source.status()
        children = status.get("children", [])
        ready = GaugeMetricFamily(
            "enforcer_ready", "1 when the enforcer's rules are installed and it enforces",
            value=1 if status.get("ready") else 0,
        )  # fmt: skip
        up = GaugeMetricFamily("enforcer_child_up", "1 while the child process runs", labels=["child"])
        restarts = CounterMetricFamily(
            "enforcer_child_restarts", "restarts of the child by the supervisor", labels=["child"]
        )
        for c in children:
            up.add_metric([c["name"]], 1 if c["alive"] else 0)
            restarts.add_metric([c["name"]], c["restarts"])
        yield ready
        yield up
        yield restarts
        supervisor = {"name": "supervisor", "counters": status.get("counters", {})}
        yield from families([*children, supervisor])


def families(children: Iterable[dict[str, Any]]) -> list[Metric]:
    """Every child's counters, one family per name across children (the order is the first seen)."""
    by_name: dict[str, Metric] = {}
    seen: set[tuple[str, str, tuple[str, ...]]] = set()

    def add(family: Metric, child: str, labels: tuple[str, ...], value: float) -> None:
        family = by_name.setdefault(family.name, family)
        if (family.name, child, labels) in seen:
            return  # two keys that sanitise to one name: the first one reported stands
        seen.add((family.name, child, labels))
        family.add_metric([child, *labels], value)  # type: ignore[attr-defined]

    for c in children:
        name, counters = c["name"], c.get("counters", {})
        for key in HISTOGRAMS:
            histogram = _histogram(name, key, counters)
            if histogram is None:
                continue
            if histogram.name in by_name:
                by_name[histogram.name].samples += histogram.samples
            else:
                by_name[histogram.name] = histogram
        for key, value in sorted(counters.items()):
            if key.partition("_le_")[0] in HISTOGRAMS or key.removesuffix("_sum") in HISTOGRAMS:
                continue
            if key.startswith(RULE_PREFIX):
                rule = CounterMetricFamily("enforcer_rule_hits", "packets decided by a policy rule",
                                           labels=["child", "rule"])  # fmt: skip
                add(rule, name, (key.removeprefix(RULE_PREFIX),), value)
                continue
            fname = family_name(_role(name), key)
            help_text = f"{key} reported by each {_role(name)}"
            if key in GAUGES:
                add(GaugeMetricFamily(fname, help_text, labels=["child"]), name, (), value)
            else:
                add(CounterMetricFamily(fname, help_text, labels=["child"]), name, (), value)
    return list(by_name.values())


def _histogram(child: str, key: str, counters: dict[str, int]) -> HistogramMetricFamily | None:
    """One of a child's histograms (`HISTOGRAMS`): reported as per-bucket counts in µs; Prometheus wants
    cumulative buckets in seconds."""
    prefix = f"{key}_le_"
    bins = sorted(
        (float("inf") if k.endswith("_inf") else float(k.removeprefix(prefix)), v)
        for k, v in counters.items() if k.startswith(prefix)
    )  # fmt: skip
    if not bins:
        return None
    buckets: list[tuple[str, float]] = []
    total = 0
    for bound, count in bins:
        total += count
        buckets.append(("+Inf" if bound == float("inf") else f"{bound / 1e6:g}", total))
    if buckets[-1][0] != "+Inf":
        buckets.append(("+Inf", total))
    suffix, help_text = HISTOGRAMS[key]
    family = HistogramMetricFamily(family_name(_role(child), suffix), help_text, labels=["child"])
    family.add_metric([child], buckets, sum_value=counters.get(f"{key}_sum", 0) / 1e6)
    return family


def registry_for(source: StatusSource) -> CollectorRegistry:
    """The one registry of the endpoint: the children's counters and the supervisor's own process."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ChildCounters(source))
    ProcessCollector(namespace="enforcer_supervisor", registry=registry)
    return registry


def render(source: StatusSource) -> str:
    return generate_latest(registry_for(source)).decode()


class MetricsServer:
    def __init__(self, listen: str, source: StatusSource) -> None:
        host, _, port = listen.rpartition(":")
        self.source = source
        handler = _handler(source, registry_for(source))
        self.httpd = ThreadingHTTPServer((host.strip("[]"), int(port)), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="metrics", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _handler(source: StatusSource, registry: CollectorRegistry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/healthz":
                ok = source.healthy()
                self._send(200 if ok else 503, "ok\n" if ok else "stalled\n", "text/plain")
            elif self.path == "/readyz":
                status = source.status()
                ready = bool(status["ready"]) and all(c["alive"] for c in status["children"])
                self._send(200 if ready else 503, "ready\n" if ready else "not ready\n", "text/plain")
            elif self.path == "/metrics":
                self._send(200, generate_latest(registry).decode(), CONTENT_TYPE_LATEST)
            elif self.path == "/status":
                self._send(200, json.dumps(source.status()), "application/json")
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
