"""Run the real enforcer inside a lab's node namespace (for the demo, the tests and the load test)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from lab.topology import Lab, LabError

LAB_POLICY = Path(__file__).resolve().parent / "policy.yaml"


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> None:
    lines = []
    for section, keys in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {_toml(v)}" for k, v in keys.items()]
        lines.append("")
    path.write_text("\n".join(lines))


class LabEnforcer:
    """`enforcer run` in the lab's node namespace with a private run/state directory."""

    def __init__(
        self, lab: Lab, overrides: dict[str, dict[str, Any]] | None = None, policy: Path | None = LAB_POLICY
    ):
        self.lab = lab
        self.tmp = Path(tempfile.mkdtemp(prefix="enforcer-lab-"))
        sections: dict[str, dict[str, Any]] = {
            "paths": {"run_dir": str(self.tmp / "run"), "state_dir": str(self.tmp / "state")},
            "policy": {"file": str(policy) if policy else ""},
            "supervisor": {"shutdown_grace_ms": 1000},
            # pod identity from no container runtime unless a test gives it one: a runtime of the
            # machine itself is none of the lab's business
            "cri": {"socket": ""},
        }
        for section, keys in (overrides or {}).items():
            sections.setdefault(section, {}).update(keys)
        self.config_path = self.tmp / "enforcer.toml"
        write_config(self.config_path, sections)
        self.log_path = self.tmp / "enforcer.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait: bool = True, env: dict[str, str] | None = None) -> LabEnforcer:
        log = open(self.log_path, "ab")
        self.proc = self.lab.popen(
            "node", sys.executable, "-m", "node.cli", "run", "--config", str(self.config_path),
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
        )  # fmt: skip
        if wait:
            self.wait_enforcing()
        return self

    def wait_enforcing(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise LabError(f"enforcer exited with {self.proc.returncode}:\n{self.log()}")
            if "NFQUEUE" in self.rules():
                return
            time.sleep(0.1)
        raise LabError(f"enforcer not enforcing after {timeout}s:\n{self.log()}")

    def rules(self) -> str:
        v4 = self.lab.node_exec("iptables", "-S", check=False).stdout
        v6 = self.lab.node_exec("ip6tables", "-S", check=False).stdout
        return v4 + v6

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def events(self) -> list[dict[str, Any]]:
        path = self.tmp / "state" / "events.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def status(self) -> dict[str, Any]:
        out = self.lab.node_exec(
            sys.executable, "-c",
            "import urllib.request,sys;sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:9464/status',"
            "timeout=2).read().decode())",
            check=False,
        )  # fmt: skip
        return json.loads(out.stdout) if out.returncode == 0 and out.stdout else {}

    def child_pids(self) -> dict[str, int]:
        return {c["name"]: c["pid"] for c in self.status().get("children", []) if c["alive"]}

    def child_startup(self, name: str, pid: int) -> float | None:
        """Seconds this machine took to start child `name` as `pid`: from the supervisor's "started NAME
        (pid PID" to the child's own "bound" (reader) or "ready" (worker) line; None before it is up. Tests
        derive restart margins from it instead of assuming how fast a loaded machine starts a process."""
        fmt = "%Y-%m-%d %H:%M:%S,%f"
        started = None
        for line in self.log_path.read_text(errors="replace").splitlines():
            if started is None and f"started {name} (pid {pid}," in line:
                started = datetime.strptime(line[:23], fmt)
            elif started is not None and f"[{name}] " in line and line.endswith((" bound", " ready")):
                return round((datetime.strptime(line[:23], fmt) - started).total_seconds(), 3)
        return None

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        return self.proc.returncode

    def cleanup(self) -> None:
        """Stop, and remove the private directory (kept when ENFORCER_LAB_KEEP is set, for a post-mortem)."""
        self.stop()
        if not os.environ.get("ENFORCER_LAB_KEEP"):
            shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> LabEnforcer:
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


class LabController:
    """The reference controller (`enforcer controller`) on the node namespace's loopback, with CURVE keys
    for itself and for one enforcer, serving the lab policy."""

    def __init__(
        self, lab: Lab, node: str = "lab-node", port: int = 18400, policy: Path = LAB_POLICY
    ) -> None:
        from policy.keys import generate_keypair

        self.lab, self.node, self.port = lab, node, port
        self.tmp = Path(tempfile.mkdtemp(prefix="enforcer-ctl-"))
        keys = self.tmp / "keys"
        generate_keypair(keys, "controller")
        generate_keypair(keys, node)
        clients = self.tmp / "clients"
        clients.mkdir(mode=0o700)
        (clients / f"{node}.key").write_bytes((keys / f"{node}.key").read_bytes())
        self.policy_dir = self.tmp / "policies"
        self.policy_dir.mkdir(mode=0o700)
        shutil.copy(policy, self.policy_dir / policy.name)
        self.db = self.tmp / "controller.db"
        self.keys, self.clients = keys, clients
        self.proc: subprocess.Popen[bytes] | None = None

    def enforcer_overrides(self) -> dict[str, dict[str, Any]]:
        """Configuration for a LabEnforcer that joins this controller."""
        return {
            "node": {"name": self.node},
            "controller": {
                "join_addr": f"127.0.0.1:{self.port}",
                "server_key": str(self.keys / "controller.key"),
                "client_key": str(self.keys / f"{self.node}.key_secret"),
            },
        }

    def start(self) -> LabController:
        log = open(self.tmp / "controller.log", "ab")
        self.proc = self.lab.popen(
            "node", sys.executable, "-m", "node.cli", "controller",
            "--policy-dir", str(self.policy_dir), "--db", str(self.db),
            "--listen", f"tcp://127.0.0.1:{self.port}",
            "--secret-key", str(self.keys / "controller.key_secret"), "--clients", str(self.clients),
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        return self

    def events(self, type_: str | None = None) -> list[dict[str, Any]]:
        cmd = [sys.executable, "-m", "node.cli", "controller", "events", "--db", str(self.db)]
        if type_:
            cmd += ["--type", type_]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def __enter__(self) -> LabController:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if not os.environ.get("ENFORCER_LAB_KEEP"):
            shutil.rmtree(self.tmp, ignore_errors=True)
