"""The reference controller drives the real enforcer in the lab (network namespaces, real NFQUEUE).

The controller (in the node namespace, CURVE) pushes the lab policy; traffic follows it; the policy
changes under traffic (denied → allowed → denied) and the traffic follows; the controller is killed,
the enforcer keeps enforcing and spools its events, the controller comes back and receives every one of
them once; a client with a key the controller does not know is refused and the refusal is stored.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.enforcer import LabController, LabEnforcer
from lab.topology import Lab
from tests.integration.conftest import tcp

pytestmark = pytest.mark.netns

# A client whose CURVE key the controller does not list: it must be refused.
INTRUDER = """
import sys, time, zmq, zmq.auth
ctx = zmq.Context()
s = ctx.socket(zmq.DEALER)
s.setsockopt(zmq.LINGER, 0)
s.curve_serverkey = zmq.auth.load_certificate(sys.argv[2])[0]
s.curve_publickey, s.curve_secretkey = zmq.curve_keypair()
s.connect(sys.argv[1])
s.send(b"hello?")
print("answered" if s.poll(2000) else "refused", flush=True)
"""


class FastController(LabController):
    """The lab's controller with a short directory check interval (the test times policy changes)."""

    def start(self) -> LabController:
        log = open(self.tmp / "controller.log", "ab")
        self.proc = self.lab.popen(
            "node", sys.executable, "-m", "node.cli", "controller",
            "--policy-dir", str(self.policy_dir), "--db", str(self.db),
            "--listen", f"tcp://127.0.0.1:{self.port}", "--watch", "0.2", "--heartbeat", "0.5",
            "--secret-key", str(self.keys / "controller.key_secret"), "--clients", str(self.clients),
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        return self

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab(f"pl{os.getpid() % 10000}") as lab:
        servers = []
        try:
            for name in ("s1", "s2"):
                cmd = [
                    sys.executable,
                    "-m",
                    "lab.traffic",
                    "serve",
                    "--seconds",
                    "300",
                    "--tcp",
                    "80",
                    "--tcp",
                    "22",
                ]
                proc = lab.popen(name, *cmd, stdout=subprocess.PIPE, text=True)
                assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
                servers.append(proc)
            yield lab
        finally:
            for proc in servers:
                proc.terminate()
                proc.wait(timeout=5)


def _until(cond, timeout: float, what: str) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return time.monotonic() - t0
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _replace(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_controller_drives_the_enforcer(lab: Lab) -> None:
    web = lab.host("s1").ipv4
    with FastController(lab, node="pl-node") as ctl:
        overrides = ctl.enforcer_overrides()
        overrides["controller"].update({"heartbeat_s": 1, "timeout_s": 3, "reconnect_max_s": 1})
        overrides["events"] = {"aggregate_window_ms": 200}
        with LabEnforcer(lab, overrides, policy=None) as enf:
            # the controller's policy arrives (until then the start-up policy, monitor, lets all by)
            _until(lambda: not tcp(lab, "c1", web, 22, nbytes=100, timeout=1)["ok"], 20, "controller policy")
            assert tcp(lab, "c1", web, 80, nbytes=10_000)["ok"]
            policy_file = ctl.policy_dir / "policy.yaml"
            original = policy_file.read_text()
            assert "action: deny, comment: no shell" in original

            # denied → allowed → denied, under traffic
            _replace(
                policy_file, original.replace("action: deny, comment: no shell", "action: allow, comment: ok")
            )
            opened = _until(lambda: tcp(lab, "c1", web, 22, nbytes=100, timeout=1)["ok"], 10, "allow")
            _replace(policy_file, original)
            closed = _until(lambda: not tcp(lab, "c1", web, 22, nbytes=100, timeout=1)["ok"], 10, "deny")
            print(f"policy change followed by traffic after {opened:.2f} s and {closed:.2f} s")
            assert opened < 2.0 and closed < 2.0  # includes starting a client process per attempt

            # everything reported so far reaches the controller: the count of rule 11 reports
            def reported() -> int:
                return sum(e["count"] for e in ctl.events("violation") if e.get("rule_id") == 11)

            time.sleep(1.5)
            before = reported()
            assert before >= 1

            # controller dies: enforcement goes on, events spool
            ctl.kill()
            attempts = 5
            for _ in range(attempts):
                assert not tcp(lab, "c1", web, 22, nbytes=100, timeout=1)["ok"]
            assert tcp(lab, "c2", web, 80, nbytes=10_000)["ok"]
            time.sleep(1.0)  # events reach the policy process and its spool

            # controller back (same database, keys, port): every spooled report delivered, exactly once
            ctl.start()
            _until(lambda: reported() >= before + attempts, 20, "spooled events delivered")
            time.sleep(1.5)  # a second delivery would show up now
            assert reported() == before + attempts
            events = ctl.events("violation")
            assert len({e["id"] for e in events}) == len(events)
            assert all(e["node"] == "pl-node" for e in events)

            # an unknown key is refused, and the refusal is stored
            out = lab.node_exec(sys.executable, "-c", INTRUDER, f"tcp://127.0.0.1:{ctl.port}",
                                str(ctl.keys / "controller.key"), check=False)  # fmt: skip
            assert out.stdout.strip() == "refused", out.stderr
            _until(
                lambda: any(e["what"] == "enforcer refused" for e in ctl.events("audit")),
                10,
                "refusal stored",
            )
            # the enforcer is still linked and enforcing
            assert not tcp(lab, "c1", web, 22, nbytes=100, timeout=1)["ok"]
            assert enf.proc is not None and enf.proc.poll() is None
