"""`enforcer demo`: the lab, the real enforcer with the lab policy, a mix of traffic, a live summary.

Everything happens inside namespaces the demo makes (prefix `demo`) and removes at the end, also on
Ctrl-C. The web group is in Protect mode (denied traffic is blocked), the api group in Monitor mode
(violations are allowed and reported).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from typing import Any

from lab.enforcer import LAB_POLICY, LabController, LabEnforcer
from lab.topology import Lab, require_root

# (label, client, server, family, kind, port, expected) — expected is what the lab policy should do.
TRAFFIC = [
    ("web  tcp/80   (allowed)", "c1", "s1", "ipv4", "tcp", 80, "arrives"),
    ("web  tcp/80   IPv6", "c2", "s1", "ipv6", "tcp", 80, "arrives"),
    ("web  udp/53   (allowed)", "c1", "s1", "ipv4", "udp", 53, "arrives"),
    ("web  ping     (allowed)", "c2", "s1", "ipv6", "ping", 0, "arrives"),
    ("web  tcp/22   (rule 11 denies)", "c1", "s1", "ipv4", "tcp", 22, "blocked"),
    ("web  tcp/22   IPv6 (denied)", "c2", "s1", "ipv6", "tcp", 22, "blocked"),
    ("web  tcp/5201 from external host", "x1", "s1", "ipv4", "tcp", 5201, "blocked"),
    ("api  tcp/80   (allowed)", "c1", "s2", "ipv4", "tcp", 80, "arrives"),
    ("api  tcp/22   (monitor: violation)", "c2", "s2", "ipv4", "tcp", 22, "arrives"),
    ("ext  tcp/80   clients to external", "c1", "x1", "ipv4", "tcp", 80, "arrives"),
]


def _attempt(lab: Lab, client: str, addr: str, kind: str, port: int) -> tuple[bool, str]:
    py = sys.executable
    if kind == "ping":
        ok = lab.exec(client, "ping", "-c1", "-W1", addr, check=False).returncode == 0
        return ok, "" if ok else "no reply"
    args = (
        ["tcp", addr, str(port), "--bytes", "20000", "--timeout", "2"]
        if kind == "tcp"
        else ["udp", addr, str(port), "--count", "3", "--dns"]
    )
    out = lab.exec(client, py, "-m", "lab.traffic", *args, check=False, timeout=15)
    result = json.loads(out.stdout or '{"ok": false, "error": "no output"}')
    return bool(result["ok"]), str(result.get("error", ""))


def _summary(e: LabEnforcer) -> str:
    totals: dict[str, int] = {}
    for child in e.status().get("children", []):
        if child["name"].startswith("reader"):
            for key, value in child["counters"].items():
                if key.startswith(("verdict.", "packets", "flow.new", "resets")) and not key.startswith(
                    "flow.new."
                ):
                    totals[key] = totals.get(key, 0) + value
    return "  ".join(f"{k}={v}" for k, v in sorted(totals.items()))


def run_demo(rounds: int) -> int:
    require_root()
    failures = 0
    with Lab("demo") as lab:
        servers = []
        try:
            for name in ("s1", "s2", "x1"):
                proc = lab.popen(
                    name,
                    sys.executable,
                    "-m",
                    "lab.traffic",
                    "serve",
                    "--tcp",
                    "80",
                    "--tcp",
                    "22",
                    "--tcp",
                    "5201",
                    "--udp",
                    "53",
                    "--seconds",
                    "300",
                    stdout=subprocess.PIPE,
                    text=True,
                )
                assert proc.stdout is not None
                proc.stdout.readline()
                servers.append(proc)
            print(
                f"lab up: clients 198.18.1.0/24, web 198.18.2.11 (protect), api 198.18.2.12 (monitor), "
                f"external 198.18.9.11; policy {LAB_POLICY.name}"
            )
            with (
                LabController(lab, node="demo-node") as ctl,
                LabEnforcer(
                    lab, {"workers": {"inspect": "new"}, **ctl.enforcer_overrides()}, policy=None
                ) as e,
            ):
                print("enforcer running in the node namespace:", e.rules().count("NFQUEUE"), "queue rules")
                print(
                    "reference controller on the node's loopback, CURVE-authenticated; waiting for its policy"
                )
                _wait_policy(lab)
                print("policy from the controller applied\n")
                for r in range(rounds):
                    print(f"-- round {r + 1}")
                    for label, client, server, family, kind, port, expected in TRAFFIC:
                        addr = getattr(lab.host(server), family)
                        ok, error = _attempt(lab, client, addr, kind, port)
                        got = "arrives" if ok else "blocked"
                        failures += got != expected
                        mark = "ok " if got == expected else "!! "
                        print(f"   {mark}{label:38s} {client}->{addr:18s} {got:8s} {error}")
                    time.sleep(0.6)
                    print("   verdicts:", _summary(e))
                time.sleep(2.5)  # events are aggregated for a second, then sent and stored
                _print_events(ctl.events())
        finally:
            for proc in servers:
                proc.terminate()
                proc.wait(timeout=5)
    print(
        "\nlab removed."
        + (
            f" {failures} outcomes differed from the policy!"
            if failures
            else " All outcomes as the policy says."
        )
    )
    return 1 if failures else 0


def _wait_policy(lab: Lab, timeout: float = 15.0) -> None:
    """Until the controller's policy is in force the start-up policy (monitor) lets everything by; the
    lab policy refuses web tcp/22, so that is the sign."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ok, error = _attempt(lab, "c1", lab.host("s1").ipv4, "tcp", 22)
        if not ok and error in ("refused", "reset"):
            return
        time.sleep(0.3)
    raise SystemExit("the controller's policy did not arrive in time")


def _print_events(events: list[dict[str, Any]]) -> None:
    print(f"\nevents stored by the controller ({len(events)}):")
    for ev in events[:20]:
        if ev["type"] == "audit":
            print(f"   audit      {ev.get('what', '')} {ev.get('detail', ev.get('reason', ''))}")
            continue
        flow = ev.get("flow", {})
        print(
            f"   {ev['type']:10s} {ev.get('action', ''):6s} rule={ev.get('rule_id', '-')!s:3s} "
            f"{ev.get('client_group', '')}->{ev.get('server_group', '')} "
            f"{flow.get('src', '')} -> {flow.get('dst', '')}:{flow.get('dport', '')} count={ev.get('count', 1)}"
        )


def _cmd_demo(args: argparse.Namespace) -> int:
    return run_demo(args.rounds)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo", help="run the built-in demo: a lab of namespaces, the enforcer, traffic"
    )
    p.add_argument("--rounds", type=int, default=2, help="rounds of the traffic mix (default 2)")
    p.set_defaults(func=_cmd_demo)
