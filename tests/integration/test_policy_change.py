"""A new policy reaches connections the kernel was already handling on its own."""

from __future__ import annotations

import shutil
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from lab.enforcer import LAB_POLICY, LabEnforcer
from lab.topology import Lab
from tests.integration.conftest import counter_total

pytestmark = pytest.mark.netns

# A long-lived connection to web:80: a round trip every 100 ms; prints how it ended.
CLIENT = """
import socket, sys, time
s = socket.create_connection((sys.argv[1], 80), timeout=2)
print("connected", flush=True)
end = time.time() + float(sys.argv[2])
n = 0
try:
    while time.time() < end:
        s.sendall(b"ping"); assert s.recv(16) == b"ping"; n += 1
        time.sleep(0.1)
    print("alive", n, flush=True)
except ConnectionResetError:
    print("reset", n, flush=True)
except OSError as exc:
    print("error", exc, n, flush=True)
"""


def test_established_connection_is_cut_when_the_policy_denies_it(lab: Lab, tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    shutil.copy(LAB_POLICY, policy)
    # the L3/L4 path (inspect = app): the connection is offloaded, so the new policy must reach the kernel
    overrides = {"policy": {"watch_interval_ms": 100}, "workers": {"inspect": "app"}}
    with LabEnforcer(lab, overrides, policy=policy) as e:
        proc = lab.popen(
            "c1",
            sys.executable,
            "-c",
            CLIENT,
            lab.host("s1").ipv4,
            "6",
            stdout=__import__("subprocess").PIPE,
            text=True,
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "connected"
        time.sleep(1.0)
        # Offloaded: only its first packet was judged; now web tcp/80 becomes denied (version 2).
        text = (
            policy.read_text()
            .replace("version: 1", "version: 2")
            .replace(
                "ports: [tcp/80, tcp/5201, udp/53, icmp], action: allow}\n  - {id: 11",
                "ports: [tcp/5201, udp/53, icmp], action: allow}\n  - {id: 11",
                1,
            )
        )
        assert text != policy.read_text()
        policy.write_text(text)
        changed = time.monotonic()
        written = datetime.now()
        out, _ = proc.communicate(timeout=20)
        cut_after = time.monotonic() - changed
        assert out.split()[0] == "reset", (out, e.log())
        # Within 3 s, or, where this machine's policy process took longer to notice and apply the file
        # (its log says when), within a second of that: the readers' part is what is tested here.
        applied = [line for line in e.log().splitlines() if "policy version 2 from file" in line]
        assert applied, e.log()
        apply_s = (datetime.strptime(applied[0][:23], "%Y-%m-%d %H:%M:%S,%f") - written).total_seconds()
        assert cut_after < max(3.0, apply_s + 1.0), (cut_after, apply_s)
        assert counter_total(e, "reader", "conntrack.cleared") == 1
        # And a new connection to the same port is refused under the new policy.
        from tests.integration.conftest import tcp

        assert tcp(lab, "c1", lab.host("s1").ipv4, 80)["error"] in ("refused", "reset")
