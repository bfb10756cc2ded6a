"""Cost of the header selection in `AppThreats._http_request`: requests/s per CPU second on a browser
navigation and on an API client's request (JWT, trace headers), with fresh cookies, request and trace
ids per request so the detectors' value cache does not flatter, under the previous rule (User-Agent,
Referer, X-Forwarded-For only: the baseline) and the current one (`injectable_header_values`),
alternated in one process; medians.

    python scripts/bench_headers.py [--reps 7] [--requests 3000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import types
import uuid
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.detect.test_headers import API_CLIENT, CHROME
from threats import catalogue as C
from workers.detect import hooks

Rule = Callable[..., list[str]]
_PREVIOUS = frozenset({b"user-agent", b"referer", b"x-forwarded-for"})


def previous_rule(headers: list[tuple[bytes, bytes]]) -> list[str]:
    return [v.decode("latin-1") for n, v in headers if n.lower() in _PREVIOUS]


def fresh(name: str, value: str, i: int) -> str:
    """A value as it differs from one request to the next."""
    if name == "Cookie":
        return f"sessionid={uuid.uuid4().hex}; csrftoken={uuid.uuid4().hex[:12]}; theme=dark"
    if name == "X-Request-Id":
        return str(uuid.uuid4())
    if name == "traceparent":
        return f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"
    if name == "X-Amzn-Trace-Id":
        return (
            f"Root=1-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:24]};Parent={uuid.uuid4().hex[:16]};Sampled=1"
        )
    if name == "Referer":
        return f"https://shop.example.com/search?q=red+shoes&page={i}"
    return value


def requests(n: int, base: list[tuple[str, str]]) -> list[tuple[bytes, list[tuple[bytes, bytes]]]]:
    return [
        (f"/products/{i}?color=red&size={i % 50}".encode(),
         [(name.encode(), fresh(name, value, i).encode()) for name, value in base])
        for i in range(n)
    ]  # fmt: skip


def rate(reqs: list[tuple[bytes, list[tuple[bytes, bytes]]]]) -> float:
    """Requests/s through `_http_request` (no sensors: only the injection, struts and header checks)."""
    sensors = types.SimpleNamespace(applies=lambda group: False)
    fake = types.SimpleNamespace(owner=types.SimpleNamespace(policy=types.SimpleNamespace(sensors=sensors)))
    state = types.SimpleNamespace(group="web")
    on = frozenset({C.SQL_INJECTION.id, C.XSS.id, C.STRUTS_RCE.id})
    start = time.process_time()
    for uri, headers in reqs:
        hooks.AppThreats._http_request(fake, uri, headers, b"", state, on)  # type: ignore[arg-type]
    return len(reqs) / (time.process_time() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    current: Rule = hooks.injectable_header_values
    for label, base in (
        ("browser (Chrome navigation)", CHROME),
        ("API client (JWT, trace headers)", API_CLIENT),
    ):
        rates: dict[str, list[float]] = {"previous": [], "current": []}
        for _ in range(args.reps):
            for name, rule in (("previous", previous_rule), ("current", current)):
                hooks.injectable_header_values = rule  # type: ignore[assignment]
                rates[name].append(rate(requests(args.requests, base)))
        hooks.injectable_header_values = current
        before, after = statistics.median(rates["previous"]), statistics.median(rates["current"])
        print(f"{label}: previous {before:,.0f} requests/s, current {after:,.0f} requests/s, "
              f"ratio {after / before:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
