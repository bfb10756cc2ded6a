"""Benchmark of the runtime monitor on this node: exec throughput, time to deny/kill, idle CPU.

    python -m runtime.bench [--seconds 5] [--generators 3]

Creates a lab pod (network namespace `rt-bench-…`, removed at the end), runs the monitor in a child
process as the supervisor would, and prints one line per figure. The node is shared: figures include
whatever else runs on it (the connector reports every exec on the node, not only the lab's).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from core import anomalies
from core.lookup import Mode
from runtime.identity import GroupSelector
from runtime.monitor import run_runtime_monitor
from runtime.proc_connector import Kind, ProcEvent, list_pids
from runtime.process_monitor import STAT_EXAMINED, STAT_EXEC, STAT_EXEC_WORKLOAD, ProcessMonitor
from runtime.profiles import ProcessEntry, ProcessProfile, RuntimePolicy
from runtime.settings import RuntimeSettings

# Bound on the events a benchmark run keeps.
EVENTS_MAX = 200_000

_GENERATOR = """
import os, sys, time
target, seconds = sys.argv[1], float(sys.argv[2])
n = 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    pid = os.posix_spawn(target, [target], {})
    os.waitpid(pid, 0)
    n += 1
print(n)
"""


class _Child:
    """The monitor in a forked child; events and counters come back as JSON lines."""

    def __init__(self, settings: RuntimeSettings, policy: RuntimePolicy) -> None:
        self.events: list[dict[str, Any]] = []
        self.counters: dict[str, int] = {}
        r, w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:
            os.close(r)
            code = 1
            try:
                code = self._run(settings, policy, w)
            finally:
                os._exit(code)
        os.close(w)
        self._reader = threading.Thread(target=self._read, args=(r,), daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 30
        while (
            not any(e.get("what") == "runtime.started" for e in self.events) and time.monotonic() < deadline
        ):
            time.sleep(0.05)

    @staticmethod
    def _run(settings: RuntimeSettings, policy: RuntimePolicy, w: int) -> int:
        out = os.fdopen(w, "w", buffering=1)
        lock = threading.Lock()
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        counters: dict[str, int] = {}

        def send(msg: dict[str, Any]) -> None:
            with lock:
                out.write(json.dumps(msg, default=str) + "\n")

        def report() -> None:
            while not stop.wait(0.2):
                send({"counters": dict(counters)})

        threading.Thread(target=report, daemon=True).start()
        rc = run_runtime_monitor(
            settings, lambda: policy, lambda e: send({"event": e}), stop, counters=counters
        )
        send({"counters": dict(counters)})
        return rc

    def _read(self, fd: int) -> None:
        with os.fdopen(fd) as f:
            for line in f:
                msg = json.loads(line)
                if "counters" in msg:
                    self.counters = msg["counters"]
                elif len(self.events) < EVENTS_MAX:
                    self.events.append(msg["event"])

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        os.kill(self.pid, signal.SIGTERM)
        os.waitpid(self.pid, 0)
        self._reader.join(5)


def _pod(netns: str, *argv: str, **kw: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(["ip", "netns", "exec", netns, *argv], text=True, **kw)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m runtime.bench", description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="duration of the exec burst (default 5)")
    ap.add_argument("--generators", type=int, default=3, help="parallel exec generators (default 3)")
    ap.add_argument("--idle", type=float, default=10.0, help="seconds of the idle CPU measurement")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("runtime.bench needs root (netlink connector, fanotify, network namespaces)", file=sys.stderr)
        return 2
    netns = f"rt-bench-{secrets.token_hex(3)}"
    workdir = tempfile.mkdtemp(prefix="rt-bench-")
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        return _bench(netns, workdir, args)
    finally:
        subprocess.run(["ip", "netns", "delete", netns], check=False)
        subprocess.run(["umount", "-l", os.path.join(workdir, "exec")], check=False, capture_output=True)
        shutil.rmtree(workdir, ignore_errors=True)


def _bench(netns: str, workdir: str, args: argparse.Namespace) -> int:
    true_bin = shutil.which("true") or "/bin/true"
    sleep_bin = shutil.which("sleep") or "/bin/sleep"
    group = (GroupSelector("bench", labels={"netns": netns}),)
    anything = RuntimePolicy(group, {"bench": ProcessProfile("bench", Mode.MONITOR, (ProcessEntry("*"),))})

    # 1. Exec throughput: generators in the pod exec /bin/true as fast as they can.
    child = _Child(RuntimeSettings(node="bench", file_monitor=False, use_exec_permission=False), anything)
    time.sleep(1.0)
    base = dict(child.counters)
    gens = [
        _pod(netns, sys.executable, "-c", _GENERATOR, true_bin, str(args.seconds), stdout=subprocess.PIPE)
        for _ in range(args.generators)
    ]
    generated = sum(int((g.communicate(timeout=args.seconds + 30)[0] or "0").strip()) for g in gens)
    time.sleep(1.5)
    c = child.counters
    child.stop()

    def delta(name: str) -> int:
        return c.get(name, 0) - base.get(name, 0)

    lost = delta(anomalies.RUNTIME_CONNECTOR_OVERRUN) + delta(anomalies.RUNTIME_EVENT_QUEUE_FULL)
    print(
        f"exec burst: generated {generated} execs in the pod in {args.seconds:.1f}s "
        f"({generated / args.seconds:.0f}/s); exec events handled {delta(STAT_EXEC)} "
        f"({delta(STAT_EXEC) / args.seconds:.0f}/s, node-wide); in workloads {delta(STAT_EXEC_WORKLOAD)}, "
        f"examined {delta(STAT_EXAMINED)}, "
        f"gone before examined {delta(anomalies.RUNTIME_PROCESS_UNEXAMINED)}; "
        f"lost (kernel overrun + queue full) {lost}"
    )

    # 1b. Handling capacity of the main loop, apart from what this VM can generate: exec events of
    # node processes (identity only) and of workload processes (examined, group, profile decision).
    sleepers = [_pod(netns, sleep_bin, "30") for _ in range(50)]
    time.sleep(0.5)
    mon = ProcessMonitor(RuntimeSettings(node="bench"), {})
    mon.set_policy(anything)
    node_pids = sorted(list_pids())[:200]
    for label, pids in (("node", node_pids), ("workload", [p.pid for p in sleepers])):
        n, t0 = 0, time.monotonic()
        while time.monotonic() - t0 < 1.0:
            for pid in pids:
                mon.handle(ProcEvent(Kind.EXEC, pid, pid, 0, 0, 0, 0), time.monotonic())
            n += len(pids)
        print(f"handling capacity: {n / (time.monotonic() - t0):.0f} exec events/s of {label} processes")
    for p in sleepers:
        p.kill()
        p.wait()

    # 2. Time to kill (connector path): a forbidden program started 200 times.
    protect = RuntimePolicy(
        group, {"bench": ProcessProfile("bench", Mode.PROTECT, (ProcessEntry("ip"), ProcessEntry("sh")))}
    )
    forbidden = os.path.join(workdir, "forbidden")
    shutil.copy(sleep_bin, forbidden)
    child = _Child(RuntimeSettings(node="bench", file_monitor=False, use_exec_permission=False), protect)
    loop = f"i=0; while [ $i -lt 200 ]; do {forbidden} 5; i=$((i+1)); done"
    _pod(netns, "sh", "-c", loop, stderr=subprocess.DEVNULL).wait(120)
    time.sleep(1.0)
    lat = sorted(
        float(e["latency_ms"]) for e in child.events if e.get("action") == "killed" and "latency_ms" in e
    )
    child.stop()
    if lat:
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))]
        print(
            f"exec→kill (connector path): n={len(lat)} p50 {statistics.median(lat):.2f} ms "
            f"p99 {p99:.2f} ms max {lat[-1]:.2f} ms"
        )

    # 3. Denied before it runs (exec permission path): client-side cost of a denied exec vs an allowed one.
    mount = os.path.join(workdir, "exec")
    os.mkdir(mount)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m,mode=755", "rt-bench", mount], check=True)
    allowed, denied = os.path.join(mount, "allowed"), os.path.join(mount, "denied")
    shutil.copy(true_bin, allowed)
    shutil.copy(true_bin, denied)
    perm_policy = RuntimePolicy(
        group,
        {
            "bench": ProcessProfile(
                "bench", Mode.PROTECT, (ProcessEntry("ip"), ProcessEntry("python*"), ProcessEntry("allowed"))
            )
        },
    )
    settings = RuntimeSettings(
        node="bench", file_monitor=False, use_exec_permission=True, exec_permission_mounts=(mount,)
    )
    timer = (
        "import os, sys, time\n"
        "def t(path):\n"
        "    xs = []\n"
        "    for _ in range(300):\n"
        "        s = time.perf_counter_ns()\n"
        "        try:\n"
        "            os.waitpid(os.posix_spawn(path, [path], {}), 0)\n"
        "        except PermissionError:\n"
        "            pass\n"
        "        xs.append((time.perf_counter_ns() - s) / 1e6)\n"
        "    xs.sort(); return xs[len(xs) // 2], xs[int(len(xs) * 0.99)]\n"
        "print(*t(sys.argv[1]), *t(sys.argv[2]))\n"
    )

    def timed() -> list[float]:
        cmd = (sys.executable, "-c", timer, allowed, denied)
        out = _pod(netns, *cmd, stdout=subprocess.PIPE).communicate(timeout=120)[0]
        return [float(x) for x in out.split()]

    b50, b99, _, _ = timed()  # no monitor: the same exec unchecked
    child = _Child(settings, perm_policy)
    a50, a99, d50, d99 = timed()
    child.stop()
    print(
        f"exec permission: unchecked exec p50 {b50:.2f} ms p99 {b99:.2f} ms; checked and allowed "
        f"p50 {a50:.2f} ms p99 {a99:.2f} ms (runs); denied p50 {d50:.2f} ms p99 {d99:.2f} ms (never runs)"
    )

    # 4. Idle CPU of the monitor process (the node's own activity still reaches the connector).
    child = _Child(RuntimeSettings(node="bench", use_exec_permission=False), anything)
    time.sleep(1.0)
    c0, t0, e0 = child.cpu_seconds(), time.monotonic(), dict(child.counters)
    time.sleep(args.idle)
    c1, t1, e1 = child.cpu_seconds(), time.monotonic(), dict(child.counters)
    child.stop()
    node_execs = e1.get(STAT_EXEC, 0) - e0.get(STAT_EXEC, 0)
    wl_execs = e1.get(STAT_EXEC_WORKLOAD, 0) - e0.get(STAT_EXEC_WORKLOAD, 0)
    print(
        f"idle CPU: {100 * (c1 - c0) / (t1 - t0):.2f}% of one core over {t1 - t0:.1f}s, while the node ran "
        f"{node_execs} execs ({wl_execs} in workloads: other pods on this node); "
        f"{1000 * (c1 - c0) / max(node_execs, 1):.2f} ms CPU per exec event"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
