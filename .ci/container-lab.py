#!/usr/bin/env python3
"""The enforcer's image, run like the DaemonSet runs it, enforcing the lab policy on real traffic.

    PYTHONPATH=REPO container-lab.py --image IMAGE --cap NET_ADMIN --cap ... [--prefix ci]

Brings the lab up (lab/topology.py: client and server pods, a node namespace routing between them),
starts echo servers in the server pods, then runs the image with podman in the lab's node namespace
(`--network ns:/run/netns/NODE`) and the host's PID namespace (as hostPID), with only the given
capabilities, a read-only root, the deploy/ ConfigMap's TOML as its configuration, the DaemonSet's
environment overrides, and the lab policy (lab/policy.yaml: rule 11 denies clients -> web tcp/22;
web is in protect mode, api in monitor).

Checks, each printed as one line; exit 0 only when all hold:
  - the container installs its NFQUEUE rules in the node namespace; /readyz and /healthz answer 200;
  - allowed: c1 → web tcp/80 (IPv4 and IPv6) arrives byte for byte;
  - denied: c1 → web tcp/22 gets no byte through (refused or reset);
  - monitor mode: c1 → api tcp/22 arrives, and the denied and monitored flows are reported as
    violation events in the state directory;
  - `podman stop` (SIGTERM) → the container exits 0 and no rule or chain of ours is left.
The lab, the container and the temporary directory are removed on any exit. Uses the standard
library and the lab package only (no third-party module on the host).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from lab.topology import Lab, LabError

REPO = Path(__file__).resolve().parents[1]
CONFIGMAP = REPO / "deploy" / "configmap.yaml"
LAB_POLICY = REPO / "lab" / "policy.yaml"
SERVER_PORTS = (80, 22)
WAIT_ENFORCING_S = 30.0
STOP_TIMEOUT_S = 15


class CheckFailed(Exception):
    pass


def configmap_toml(path: Path = CONFIGMAP) -> str:
    """The `enforcer.toml: |` block of the ConfigMap, without its indentation (no YAML parser on the host)."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "enforcer.toml: |")
    key_indent = len(lines[start]) - len(lines[start].lstrip())
    block: list[str] = []
    indent: int | None = None
    for line in lines[start + 1 :]:
        if line.strip() and len(line) - len(line.lstrip()) <= key_indent:
            break
        if indent is None and line.strip():
            indent = len(line) - len(line.lstrip())
        block.append(line[indent or 0 :] if line.strip() else "")
    while block and not block[-1]:
        block.pop()
    return "\n".join(block) + "\n"


def _say(ok: bool, what: str, detail: Any = "") -> None:
    print(f"{'PASS' if ok else 'FAIL'} {what}{'  ' + json.dumps(detail) if detail != '' else ''}", flush=True)
    if not ok:
        raise CheckFailed(what)


def _podman(*args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise CheckFailed(f"podman {' '.join(args[:2])}: {result.stderr.strip()[-2000:]}")
    return result


def _tcp(lab: Lab, client: str, addr: str, port: int, nbytes: int = 20000) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "lab.traffic",
        "tcp",
        addr,
        str(port),
        "--bytes",
        str(nbytes),
        "--timeout",
        "3",
    ]
    out = lab.exec(client, *cmd, check=False, timeout=15)
    try:
        result = json.loads(out.stdout)
    except ValueError:
        return {"ok": False, "error": f"no result: {out.stderr.strip()[-300:]}"}
    assert isinstance(result, dict)
    return result


def _node_rules(lab: Lab) -> str:
    return "".join(lab.node_exec(tool, "-w", "-S", check=False).stdout for tool in ("iptables", "ip6tables"))


def _probe(lab: Lab, path: str) -> int:
    """HTTP status of the health endpoint at `path`, asked from the node namespace (0: no answer)."""
    code = (
        "import urllib.request,sys\n"
        "try:\n"
        f"    print(urllib.request.urlopen('http://127.0.0.1:9464{path}', timeout=2).status)\n"
        "except Exception as e:\n"
        "    print(getattr(e, 'code', 0))\n"
    )
    out = lab.node_exec(sys.executable, "-c", code, check=False, timeout=10).stdout.strip()
    return int(out) if out.isdigit() else 0


def _running(name: str) -> bool:
    out = _podman("inspect", "--format", "{{.State.Running}}", name, check=False)
    return out.stdout.strip() == "true"


def run(image: str, caps: list[str], prefix: str, pid: str = "host") -> None:
    tmp = Path(tempfile.mkdtemp(prefix="enforcer-container-lab-"))
    name = f"{prefix}-enforcer"
    servers: list[subprocess.Popen[str]] = []
    passed = False
    try:
        (tmp / "enforcer.toml").write_text(configmap_toml())
        shutil.copy(LAB_POLICY, tmp / "policy.yaml")
        state = tmp / "state"
        state.mkdir(mode=0o700)
        with Lab(prefix) as lab:
            for server in ("s1", "s2"):
                cmd = [sys.executable, "-m", "lab.traffic", "serve", "--seconds", "120"]
                cmd += [a for p in SERVER_PORTS for a in ("--tcp", str(p))]
                proc = lab.popen(server, *cmd, stdout=subprocess.PIPE, text=True, cwd=REPO)
                servers.append(proc)
                if proc.stdout is None or proc.stdout.readline().strip() != "ready":
                    raise CheckFailed(f"echo server in {server} did not start")
            # Before the enforcer: the path to web tcp/22 is open (so a later block is the enforcer's).
            before = _tcp(lab, "c1", lab.host("s1").ipv4, 22)
            _say(before.get("ok") is True, "without the enforcer c1 -> web tcp/22 arrives", before)

            cap_args = [a for c in caps for a in ("--cap-add", c)]
            _podman(
                "run", "-d", "--name", name, "--network", f"ns:/run/netns/{lab.node}", "--pid", pid,
                "--cap-drop", "all", *cap_args, "--read-only",
                "--tmpfs", "/run/enforcer:mode=0700", "--tmpfs", "/tmp",
                "-v", f"{tmp / 'enforcer.toml'}:/etc/enforcer/enforcer.toml:ro",
                "-v", f"{tmp / 'policy.yaml'}:/etc/enforcer/policy.yaml:ro",
                "-v", f"{state}:/var/lib/enforcer",
                "-v", "/sys/fs/cgroup:/host/sys/fs/cgroup:ro", "-v", "/proc:/host/proc:ro",
                "-e", "ENFORCER_CONFIG=/etc/enforcer/enforcer.toml",
                "-e", "ENFORCER_READERS=1", "-e", "ENFORCER_WORKERS=1",
                "-e", "CLUSTER_JOIN_ADDR=", "-e", f"ENFORCER_NODE={lab.node}",
                "-e", "ENFORCER_POLICY_FILE=/etc/enforcer/policy.yaml",
                "-e", "ENFORCER_METRICS_LISTEN=127.0.0.1:9464",
                image,
            )  # fmt: skip
            t0 = time.monotonic()
            deadline = t0 + WAIT_ENFORCING_S
            ready = 0
            while time.monotonic() < deadline:
                if not _running(name):
                    logs = _podman("logs", name, check=False).stdout[-4000:]
                    raise CheckFailed(f"the container exited before enforcing:\n{logs}")
                ready = _probe(lab, "/readyz")
                if ready == 200 and "NFQUEUE" in _node_rules(lab):
                    break
                time.sleep(0.2)
            rules = _node_rules(lab)
            healthy = _probe(lab, "/healthz")
            _say(
                ready == 200 and healthy == 200 and "NFQUEUE" in rules,
                "container enforcing in the node namespace, /readyz and /healthz 200",
                {"seconds": round(time.monotonic() - t0, 1), "readyz": ready, "healthz": healthy},
            )

            for family in ("ipv4", "ipv6"):
                web = getattr(lab.host("s1"), family)
                allowed = _tcp(lab, "c1", web, 80, nbytes=200_000)
                _say(allowed.get("ok") is True and allowed.get("received") == 200_000,
                     f"allowed c1 -> web tcp/80 ({family}) arrives byte for byte", allowed)  # fmt: skip
                denied = _tcp(lab, "c1", web, 22)
                _say(denied.get("ok") is False and denied.get("error") in ("refused", "reset"),
                     f"denied c1 -> web tcp/22 ({family}) gets nothing through", denied)  # fmt: skip
            monitored = _tcp(lab, "c1", lab.host("s2").ipv4, 22)
            _say(monitored.get("ok") is True, "monitor mode: c1 -> api tcp/22 arrives", monitored)

            events: list[dict[str, Any]] = []
            wanted = {("web", "deny", 11), ("api", "allow", 0)}
            seen: set[tuple[Any, Any, Any]] = set()
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and not wanted <= seen:
                path = state / "events.jsonl"
                if path.exists():
                    events = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
                seen = {
                    (e.get("server_group"), e.get("action"), e.get("rule_id"))
                    for e in events
                    if e.get("type") == "violation"
                }
                time.sleep(0.2)
            _say(
                wanted <= seen, "violations reported (web deny rule 11, api monitor)", sorted(map(str, seen))
            )

            stats = _podman("stats", "--no-stream", "--format", "{{.MemUsage}} {{.PIDs}}", name, check=False)
            print(f"INFO container memory / pids: {stats.stdout.strip() or stats.stderr.strip()[-200:]}")

            _podman("stop", "-t", str(STOP_TIMEOUT_S), name, timeout=STOP_TIMEOUT_S + 10)
            exit_code = _podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
            left = [line for line in _node_rules(lab).splitlines() if "ENFORCER" in line or "NFQUEUE" in line]
            _say(exit_code == "0" and not left, "SIGTERM: exit 0, no rule or chain left",
                 {"exit": exit_code, "left": left})  # fmt: skip
            passed = True
    finally:
        if not passed:
            log = _podman("logs", name, check=False, timeout=20)
            print("--- container log (last lines) ---", file=sys.stderr)
            print((log.stdout + log.stderr)[-3000:], file=sys.stderr)
        _podman("rm", "-f", "-t", "2", name, check=False, timeout=30)
        for proc in servers:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--image", required=True)
    p.add_argument("--cap", action="append", default=[], help="capability to grant (repeat)")
    p.add_argument("--prefix", default="ctrlab", help="lab namespace prefix (at most 6 letters or digits)")
    p.add_argument(
        "--pid",
        choices=("host", "private"),
        default="host",
        help="host: the host's PID namespace, as the DaemonSet's hostPID; private: the enforcer is PID 1",
    )
    args = p.parse_args(argv)
    if not args.cap:
        print("container-lab: no --cap given", file=sys.stderr)
        return 2
    try:
        run(args.image, args.cap, args.prefix, args.pid)
    except (CheckFailed, LabError) as exc:
        print(f"container-lab: FAILED: {exc}", file=sys.stderr)
        return 1
    print("container-lab: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
