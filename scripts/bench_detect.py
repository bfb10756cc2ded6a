"""Benchmark of the threat detectors: checks/s for SQLi, XSS, command and LDAP injection and DLP/WAF sensors, detection and
false-positive rates on the corpora, and worker throughput with every threat and 2,000 sensor patterns
(with Python's default garbage collector, then with a worker process's settings, `core.gctune`).

    python scripts/bench_detect.py [--quick] [--injection] [--against REF [--reps N]]

`--injection` prints only the injection rows (checks/s per class, corpus rates, requests checked/s with
every class on).
`--against REF` measures those rows for the detection code at git revision REF and for this tree in
the same run, alternating `--reps` times (same inputs: this tree's corpora), and prints the medians
side by side with their ratio (this tree / REF).

Figures are printed as `name: value`; rates are per second of the process's CPU time (one core).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

ROOT = Path(__file__).resolve().parent.parent
# `--tree DIR` (used by `--against`): import the code under test from another checkout
_TREE = sys.argv[sys.argv.index("--tree") + 1] if "--tree" in sys.argv[:-1] else str(ROOT)
sys.path.insert(0, _TREE)

from core.gctune import tune_for_packets  # noqa: E402
from core.lookup import Action, Decision, Mode, Report  # noqa: E402
from node.threats_replay import replay_threats  # noqa: E402
from tests.detect.build import icmp, ipv4  # noqa: E402
from tests.detect.pcaps.generate import (  # noqa: E402
    BENIGN_NAMES,
    T0,
    C,
    S,
    Tcp,
    client_hello,
    dns_query,
    http,
    server_hello,
    udp_pkt,
)
from workers.detect import injection as _injection  # noqa: E402
from workers.detect.engine import ThreatPolicy, compile_threat_policy  # noqa: E402
from workers.detect.injection import check_request, sqli_value, xss_value  # noqa: E402
from workers.detect.sensors import PREDEFINED, Context, compile_sensors  # noqa: E402

CORPUS = ROOT / "tests" / "detect" / "corpus"


def corpus(name: str) -> list[str]:
    lines = (CORPUS / name).read_text("utf-8").splitlines()
    return [line for line in lines if line.strip() and not line.startswith("#")]


def rate(fn: Callable[[Any], object], items: list[Any], seconds: float) -> float:
    """Calls per second of this process's CPU time (on a shared machine, time spent descheduled is not
    the code's cost)."""
    n = 0
    start = time.process_time()
    while True:
        for item in items:
            fn(item)
        n += len(items)
        elapsed = time.process_time() - start
        if elapsed >= seconds:
            return n / elapsed


def synthetic_sensors(count: int) -> list[dict]:
    rng = random.Random(7)
    rules = []
    for i in range(count):
        word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(6))
        kind = i % 4
        if kind == 0:
            pattern = f"{word}-[0-9]{{4}}-secret"
        elif kind == 1:
            pattern = f"(?:{word}|{word[::-1]})_token=[a-f0-9]{{16}}"
        elif kind == 2:
            pattern = f"X-{word.capitalize()}: [A-Z]{{3}}[0-9]+"
        else:
            pattern = f"{word}\\s+(?:drop|grant)\\s+{word[:3]}"
        rules.append({"name": f"r{i}", "pattern": pattern, "context": "packet" if i % 2 else "body"})
    sensors = [{"name": "bulk", "action": "alert", "groups": ["web"], "rules": rules}]
    sensors += [{"name": n, "predefined": n, "groups": ["web"]} for n in PREDEFINED]
    return sensors


class WebTables:
    """Every address in group `web`, monitor mode, everything allowed (the bench needs a group)."""

    def generation(self) -> int:
        return 1

    def decide(self, family: int, src: bytes, dst: bytes, proto: int, dport: int) -> Decision:
        return Decision(Action.ALLOW, False, 0, Mode.MONITOR, Report.NONE, "web", "web", 1)

    def decide_app(
        self, family: int, src: bytes, dst: bytes, proto: int, dport: int, app: str, *rest: object
    ) -> Decision:
        return self.decide(family, src, dst, proto, dport)._replace(final=True)


def mixed_capture(flows: int) -> list[tuple[float, bytes]]:
    out: list[tuple[float, bytes]] = []
    t = T0
    queries = [b"/search?q=" + quote_plus(v).encode() + b"&page=2" for v in corpus("benign_values.txt")]
    for i in range(flows):
        cport = 20000 + i % 40000
        kind = i % 5
        t += 0.002
        if kind in (0, 1):
            conv = Tcp(out, t, C, cport, S, 80).handshake()
            conv.send(0, http(b"GET", queries[i % len(queries)], [b"User-Agent: bench/1"]))
            conv.send(
                1, b"HTTP/1.1 200 OK\r\nContent-Length: 1200\r\n\r\n" + bytes(range(256)) * 4 + b"x" * 176
            )
            conv.close()
        elif kind == 2:
            out.append(udp_pkt(t, C, cport, S, 53, dns_query(i & 0xFFFF, BENIGN_NAMES[i % 4], 1)))
        elif kind == 3:
            conv = Tcp(out, t, C, cport, S, 443).handshake()
            conv.send(0, client_hello()).send(1, server_hello(0x0303)).send(
                0, b"\x17\x03\x03\x05\xb4" + b"e" * 1460
            )
            conv.close()
        else:
            out.append((t, ipv4(C, S, 1, icmp(8, ident=i & 0xFFFF, seq=1, payload=bytes(range(56))))))
            out.append((t, ipv4(S, C, 1, icmp(0, ident=i & 0xFFFF, seq=1, payload=bytes(range(56))))))
    out.sort(key=lambda p: p[0])
    return out


def compare(ref: str, reps: int, quick: bool) -> int:
    """The SQLi/XSS rows of revision `ref` and of this tree, measured alternately in one run."""
    import statistics
    import subprocess
    import tarfile
    import tempfile

    rows: dict[str, dict[str, list[float]]] = {"ref": {}, "this": {}}
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", ref], check=True, capture_output=True
        ).stdout
        with tarfile.open(fileobj=__import__("io").BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        for rep in range(reps):
            for side, tree in (("ref", tmp), ("this", str(ROOT))):
                cmd = [sys.executable, __file__, "--injection", "--json", "--tree", tree] + (
                    ["--quick"] if quick else []
                )
                out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
                for name, value in out.items():
                    if isinstance(value, (int, float)):
                        rows[side].setdefault(name, []).append(float(value))
                    elif rep == 0:
                        print(f"{side} {name}: {value}")
    print(f"{'row (median of ' + str(reps) + ')':44} {ref[:12]:>12} {'this tree':>12} {'ratio':>7}")
    for name in dict.fromkeys([*rows["ref"], *rows["this"]]):
        if name not in rows["ref"] or name not in rows["this"]:
            only = rows["this"].get(name) or rows["ref"][name]
            ref_text, this_text = (
                ("-", f"{statistics.median(only):.0f}")
                if name in rows["this"]
                else (f"{statistics.median(only):.0f}", "-")
            )
            print(f"{name:44} {ref_text:>12} {this_text:>12} {'-':>7}")
            continue
        base, now = statistics.median(rows["ref"][name]), statistics.median(rows["this"][name])
        print(f"{name:44} {base:12.0f} {now:12.0f} {now / base:7.2f}")
    return 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter runs (for a smoke test)")
    parser.add_argument("--injection", action="store_true", help="only the SQL injection and XSS rows")
    parser.add_argument("--against", metavar="REF", help="compare the SQLi/XSS rows with git revision REF")
    parser.add_argument("--reps", type=int, default=3, help="alternations for --against")
    parser.add_argument("--tree", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.against:
        return compare(args.against, args.reps, args.quick)
    secs = 0.3 if args.quick else 2.0
    results: dict[str, object] = {}

    attacks = corpus("sqli.txt")
    benign = corpus("benign_values.txt")
    values = attacks + benign
    results["sqli_checks_per_s"] = round(rate(sqli_value, values, secs))
    results["xss_checks_per_s"] = round(rate(xss_value, values, secs))
    # the classes a revision may not have yet (`--against` an older one prints "-" for it)
    for name in ("command_value", "ldap_value"):
        check = getattr(_injection, name, None)
        if check is not None:
            results[f"{name.split('_')[0]}_checks_per_s"] = round(rate(check, values, secs))

    def as_query(p: str) -> str:
        return quote_plus(p, safe="%&#;") if "%" in p or "&#" in p else quote_plus(p)

    detected = sum(
        any(h.threat.name == "sql_injection" for h in check_request("/s?q=" + as_query(p))) for p in attacks
    )
    requests = []
    for v in benign:
        requests.append(("/search?q=" + quote_plus(v) + "&page=2", b"", ""))
        requests.append(("/api", json.dumps({"query": v}).encode(), "application/json"))
        requests.append(("/form", f"name={quote_plus(v)}".encode(), "application/x-www-form-urlencoded"))
        requests.append(("/wiki/" + quote(v, safe=""), b"", ""))
    flagged = sum(bool(check_request(*r)) for r in requests)
    realistic = corpus("benign_requests.txt")
    results["realistic_uri_false_positives"] = (
        f"{sum(bool(check_request(u)) for u in realistic)}/{len(realistic)}"
    )
    results["sqli_detection_rate"] = f"{detected}/{len(attacks)} = {detected / len(attacks):.1%}"
    results["benign_false_positive_rate"] = f"{flagged}/{len(requests)} = {flagged / len(requests):.2%}"
    results["http_requests_checked_per_s"] = round(rate(lambda r: check_request(*r), requests, secs))
    clear = _injection._value_hits.cache_clear

    def uncached(r: tuple[str, bytes, str]) -> object:
        clear()
        return check_request(*r)

    results["http_requests_checked_uncached_per_s"] = round(rate(uncached, requests, secs))
    if args.json:
        print(json.dumps(results))
        return 0
    if args.injection:
        for name, value in results.items():
            print(f"{name}: {value}")
        return 0

    sensor_doc = synthetic_sensors(2000)
    started = time.perf_counter()
    sensors = compile_sensors(sensor_doc)
    results["sensor_compile_s_2000_patterns"] = round(time.perf_counter() - started, 3)
    packet = bytes(random.Random(1).getrandbits(8) for _ in range(1460))
    results["sensor_block_scans_per_s_1460B_2000_patterns"] = round(
        rate(lambda p: sensors.scan(Context.BODY, p, "web"), [packet], secs)
    )
    stream = sensors.open_stream(Context.PACKET, "web")
    results["sensor_stream_scans_per_s_1460B_2000_patterns"] = round(rate(stream.scan, [packet], secs))
    stream.close()
    fallback = compile_sensors(sensor_doc[:1] and [{**sensor_doc[0], "rules": sensor_doc[0]["rules"][:200]}],
                               use_hyperscan=False)  # fmt: skip
    results["sensor_re_fallback_scans_per_s_1460B_200_patterns"] = round(
        rate(lambda p: fallback.scan(Context.BODY, p, "web"), [packet], secs / 2)
    )

    # SYN flood at 50k SYNs/s (capture time) against a protect-mode server: when is it detected, how fast
    # does the packet path run, and do a known client's new connections still pass?
    from core.flow import flow_key as _flow_key
    from core.packet import TCP_SYN
    from core.packet import decode as _decode
    from core.verdict import WorkerVerdict
    from tests.detect.build import handshake, tcp4
    from workers.detect.engine import ThreatEngine

    class ProtectTables(WebTables):
        def decide(self, family: int, src: bytes, dst: bytes, proto: int, dport: int) -> Decision:
            return Decision(Action.ALLOW, False, 0, Mode.PROTECT, Report.NONE, "clients", "web", 1)

    flood_events: list[dict] = []
    engine = ThreatEngine("bench", flood_events.append, compile_threat_policy(1), ProtectTables())
    n = 20_000 if args.quick else 100_000
    flood = [tcp4(f"203.0.{(i >> 8) & 255}.{i & 255}", 1024 + i % 60000, S, 443, TCP_SYN) for i in range(n)]
    legit = handshake("198.18.9.9", 50000, S, 443)
    t0 = T0
    for i, buf in enumerate(legit):
        meta = _decode(buf)
        key, d = _flow_key(meta)
        engine.inspect_packet(buf, meta, key, d, t0 + i * 0.001)
    decoded = []
    for buf in flood:
        meta = _decode(buf)
        decoded.append((buf, meta, *_flow_key(meta)))
    first_drop = None
    dropped = 0
    started = time.perf_counter()
    for i, (buf, meta, key, d) in enumerate(decoded):
        now = t0 + 0.01 + i / 50_000
        verdict = engine.inspect_packet(buf, meta, key, d, now)
        if verdict is WorkerVerdict.DROP:
            dropped += 1
            if first_drop is None:
                first_drop = now - (t0 + 0.01)
    elapsed = time.perf_counter() - started
    probe = tcp4("198.18.9.9", 50001, S, 443, TCP_SYN)
    meta = _decode(probe)
    key, d = _flow_key(meta)
    legit_verdict = engine.inspect_packet(probe, meta, key, d, t0 + 0.01 + n / 50_000)
    results["synflood_packet_path_packets_per_s"] = round(n / elapsed)
    results["synflood_detected_after_capture_s"] = round(first_drop or -1, 4)
    results["synflood_dropped"] = f"{dropped}/{n}"
    results["synflood_known_client_new_connection"] = (
        "passed" if legit_verdict is None else legit_verdict.name
    )
    results["synflood_events"] = sum(1 for e in flood_events if e.get("name") == "syn_flood")

    capture = mixed_capture(600 if args.quick else 3000)
    all_threats = compile_threat_policy(1, {"default": {"tls_1_0": {"enabled": True}}})
    with_sensors = compile_threat_policy(1, None, sensor_doc)
    runs: list[tuple[str, Any]] = [
        ("dpi_only", None),
        ("dpi_with_noop_hooks", "noop"),
        ("all_threats", all_threats),
        ("all_threats_2000_sensor_patterns", with_sensors),
        # the same with the garbage-collector settings of a worker process (core.gctune)
        ("all_threats_worker_gc", all_threats),
        ("all_threats_2000_sensor_patterns_worker_gc", with_sensors),
    ]
    for label, policy in runs:
        if label.endswith("_worker_gc"):
            tune_for_packets()
        started = time.perf_counter()
        if not isinstance(policy, ThreatPolicy):
            from core.flow import flow_key
            from core.packet import decode
            from workers.dpi.context import Detector
            from workers.dpi.engine import DpiEngine
            from workers.dpi.settings import DpiSettings

            # with a detector attached the DPI engine keeps parsing identified flows (as it must for
            # the threat hooks): the fair baseline for the threat engine's own cost
            hooks = (
                [Detector("noop", on_packet=lambda *a: [], on_event=lambda *a: [])]
                if policy == "noop"
                else []
            )
            dpi = DpiEngine(DpiSettings(), WebTables(), lambda e: None, "bench", detectors=hooks)
            for now, ip in capture:
                meta = decode(ip)
                key, direction = flow_key(meta)
                dpi.on_packet(ip, meta, key, direction, now)
            events: list = []
        else:
            events, _, _ = replay_threats(capture, policy, WebTables())
        elapsed = time.perf_counter() - started
        threats = sum(1 for e in events if e.get("type") == "threat")
        results[f"replay_{label}_packets_per_s"] = round(len(capture) / elapsed)
        results[f"replay_{label}_threat_events"] = threats
    results["replay_capture_packets"] = len(capture)

    for name, value in results.items():
        print(f"{name}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
