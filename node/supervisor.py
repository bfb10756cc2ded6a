"""`enforcer run`: start, pin, watch and restart the enforcer's processes; own the netfilter rules.

A boring supervisor on purpose: named children (policy, workers, readers), each pinned to its CPU,
each sending a heartbeat; a child that exits or falls silent is restarted within a budget. Rules are
installed only once every reader is bound, and removed first when stopping, so that no packet is ever
queued with nobody to answer it (with bypass the kernel lets it by; without it, fail-closed drops it).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import psutil
import zmq

from core import anomalies as A
from core import messages as M
from node.config import PASS, Config, config_to_dict
from node.metrics import MetricsServer
from node.netfilter import ChainSpec, JumpWatch, Netfilter, NetfilterError
from node.netfilter_bridges import find_bridges, load_br_netfilter
from node.source_blocks import SourceBlocks
from workers.detect.shared_counts import COUNTS_FILE

log = logging.getLogger(__name__)

# Longest wait for a child's message before the children and the source blocks are checked. Every wake-up
# of an idle enforcer costs the node's workloads more than its CPU time (it preempts them, and the
# scheduler may move them between CPUs): bulk TCP through the node lost a fifth to a few hundred idle
# wake-ups per second (`scripts/loadtest.py`), so idle loops wait as long as their duties allow.
POLL_MS = 250
# A child whose heartbeat is late but that has used CPU since its last one is busy (a long burst) or
# starved on a loaded node, not hung: it gets up to this many heartbeat timeouts before it is restarted.
# One that has used none (deadlocked, blocked) or is stopped is restarted at the timeout as before.
# Restarting a busy worker would only lose its flows' inspection state and add a start-up to the load.
BUSY_GRACE_TIMEOUTS = 3.0
# Added to the start-up timeout when waiting for children at start (their restarts count meanwhile).
STARTUP_SLACK_S = 5.0


@dataclass
class Child:
    role: str
    index: int
    cpu: int
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    last_heartbeat: float = 0.0
    heartbeats: int = 0
    restarts: int = 0
    counters: dict[str, int] = field(default_factory=dict)
    cpu_at_heartbeat: float = -1.0  # CPU seconds the process had used when its last heartbeat arrived

    @property
    def name(self) -> str:
        return f"reader q{self.index}" if self.role == "reader" else f"{self.role} {self.index}"


class BudgetSpent(RuntimeError):
    pass


class Supervisor:
    def __init__(self, config: Config, config_path: str | None = None) -> None:
        self.config = config
        self.seed = secrets.randbits(32)
        self.run_dir = config.paths.run_dir
        self.netfilter = Netfilter(ChainSpec.from_config(config))
        self.source_blocks = SourceBlocks(self.netfilter, config.guard.kernel_blocks)
        check_s = config.netfilter.jump_check_ms / 1000.0
        self.jump_watch = JumpWatch(self.netfilter, check_s, self._check_bridges)
        self.bridge_warning = ""  # bridged traffic that skips our FORWARD jump ("" when none)
        self._br_netfilter_tried = False
        self.children: list[Child] = [Child("policy", 0, config.worker_cpu(0))]
        self.children += [Child("worker", i, config.worker_cpu(i)) for i in range(config.workers.count)]
        self.children += [Child("reader", i, config.reader_cpu(i)) for i in range(config.queues.readers)]
        if config.supervisor.runtime_monitor:
            self.children.append(Child("runtime", 0, config.worker_cpu(0)))
        self.restart_times: collections.deque[float] = collections.deque()
        self.stopping = threading.Event()
        self.ready = False
        self.started_at = time.time()
        self.last_loop = time.monotonic()
        self.audit: list[str] = []

    # ---- children ------------------------------------------------------------------------------

    def _prepare_run_dir(self) -> str:
        os.makedirs(self.run_dir, mode=0o700, exist_ok=True)
        os.chmod(self.run_dir, 0o700)  # sockets inside are reachable only by root
        for name in os.listdir(self.run_dir):
            # (the workers' counts of a previous run, perhaps with another worker count, are not this one's)
            if name.endswith(".sock") or name == COUNTS_FILE:
                os.unlink(os.path.join(self.run_dir, name))
        path = os.path.join(self.run_dir, "config.json")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(config_to_dict(self.config), fh)
        return path

    def _spawn(self, child: Child) -> None:
        cmd = [
            sys.executable, "-m", "node.child", child.role, str(child.index),
            "--config-json", self.config_json, "--seed", str(self.seed), "--supervisor-pid", str(os.getpid()),
        ]  # fmt: skip
        # A session of its own: Ctrl-C reaches the supervisor only, which stops the children in order.
        child.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, start_new_session=True)
        child.started = time.monotonic()
        child.last_heartbeat = child.started
        child.heartbeats = 0
        child.cpu_at_heartbeat = -1.0
        try:
            proc = psutil.Process(child.proc.pid)
            proc.cpu_affinity([child.cpu])
            if child.role in ("reader", "worker"):
                # Inline packet processing: be scheduled promptly when packets wake us, ahead of workloads.
                proc.nice(self.config.supervisor.packet_nice)
        except (psutil.Error, OSError) as exc:
            log.warning("%s: cannot pin to CPU %d or set its priority: %s", child.name, child.cpu, exc)
        log.info("started %s (pid %d, cpu %d)", child.name, child.proc.pid, child.cpu)

    def _restart(self, child: Child, why: str) -> None:
        now = time.monotonic()
        window = self.config.supervisor.restart_window_s
        while self.restart_times and now - self.restart_times[0] > window:
            self.restart_times.popleft()
        if len(self.restart_times) >= self.config.supervisor.restart_budget:
            budget = self.config.supervisor.restart_budget
            raise BudgetSpent(f"{child.name} {why}; restart budget of {budget} in {window}s is spent")
        self.restart_times.append(now)
        child.restarts += 1
        self.audit.append(f"{child.name} {why}: restarted")
        log.error("%s %s; restarting (restart %d)", child.name, why, child.restarts)
        if child.proc is not None and child.proc.poll() is None:
            child.proc.kill()
            child.proc.wait(timeout=5)
        self._spawn(child)

    def _check_children(self, now: float) -> None:
        timeout = self.config.supervisor.heartbeat_timeout_ms / 1000.0
        startup = self.config.supervisor.startup_timeout_ms / 1000.0
        for child in self.children:
            if self.stopping.is_set():
                return
            if child.proc is None:
                continue  # not started yet
            code = child.proc.poll()
            silent = now - child.last_heartbeat
            if code is not None:
                self._restart(child, f"exited with status {code}")
            elif silent > (timeout if child.heartbeats else startup):
                if (
                    child.heartbeats
                    and silent <= timeout * BUSY_GRACE_TIMEOUTS
                    and self._ran_since_heartbeat(child)
                ):
                    continue  # late, not hung: it has run since its last heartbeat (bounded grace)
                self._restart(child, f"sent no heartbeat for {silent:.1f}s")

    @staticmethod
    def _cpu_seconds(child: Child) -> float:
        try:
            times = psutil.Process(child.proc.pid).cpu_times() if child.proc else None
        except psutil.Error:
            return -1.0
        return times.user + times.system if times else -1.0

    def _ran_since_heartbeat(self, child: Child) -> bool:
        """Has the child run since its last heartbeat? A stopped one (SIGSTOP, a debugger) has not, even
        if it ran between that heartbeat and the stop."""
        try:
            status = psutil.Process(child.proc.pid).status() if child.proc else psutil.STATUS_DEAD
        except psutil.Error:
            return False
        if status in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP, psutil.STATUS_ZOMBIE):
            return False
        return 0.0 <= child.cpu_at_heartbeat < self._cpu_seconds(child)

    def _receive_heartbeats(self, sock: zmq.Socket[bytes]) -> None:
        by_key = {(c.role, c.index): c for c in self.children}
        while True:
            try:
                frame = sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                msg = M.decode(frame)
            except M.MessageError as exc:
                log.warning("bad message on the supervisor socket: %s", exc)
                continue
            if isinstance(msg, M.BlockSources):
                now = time.monotonic()
                for addr, seconds in msg.items:
                    self.source_blocks.block(addr, seconds, now)
                continue
            if not isinstance(msg, M.Heartbeat):
                continue
            child = by_key.get((msg.role, msg.index))
            if child is None or child.proc is None or child.proc.pid != msg.pid:
                continue  # a heartbeat from a process we already replaced
            child.last_heartbeat = time.monotonic()
            child.heartbeats += 1
            child.counters = msg.counters
            child.cpu_at_heartbeat = self._cpu_seconds(child)

    # ---- main ----------------------------------------------------------------------------------

    def run(self) -> int:
        self.config_json = self._prepare_run_dir()
        ctx = zmq.Context(1)
        sock = ctx.socket(zmq.PULL)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(M.supervisor_endpoint(self.run_dir))
        metrics = None
        if self.config.metrics.listen:
            metrics = MetricsServer(self.config.metrics.listen, self)
            metrics.start()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopping.set())
        status = 0
        try:
            # The policy process first: its tables must hold the policy in force (last-known-good, the
            # local file, or the start-up policy) before any reader binds a queue.
            self._spawn(self.children[0])
            self._wait_started(sock, [self.children[0]], "the policy process did not start")
            for child in self.children[1:]:
                self._spawn(child)
            self._wait_started(sock, [c for c in self.children if c.role == "reader"],
                               "readers did not bind their queues")  # fmt: skip
            if not self.stopping.is_set():
                self._check_bridges()
                self.netfilter.install()
                self.jump_watch.start()
                self.ready = True
                log.info(
                    "enforcing: %d readers, %d workers", self.config.queues.readers, self.config.workers.count
                )
            while not self.stopping.is_set():
                self.last_loop = time.monotonic()
                if sock.poll(POLL_MS):
                    self._receive_heartbeats(sock)
                self.source_blocks.expire(time.monotonic())
                self.source_blocks.apply()
                self._check_children(time.monotonic())
        except BudgetSpent as exc:
            self.jump_watch.stop()  # the fail-closed rule goes in next: no repair in between
            status = self._give_up(str(exc))
        except NetfilterError as exc:
            log.error("%s", exc)
            status = 1
        finally:
            self.ready = False
            self.jump_watch.stop()  # before our rules go: it would put the jumps back
            if status == 0 or self.config.failure.budget_spent == PASS:
                self.netfilter.remove()
            self._stop_children()
            if metrics is not None:
                metrics.stop()
            ctx.destroy(linger=0)
        return status

    def _wait_started(self, sock: zmq.Socket[bytes], children: list[Child], failure: str) -> None:
        """Until each of `children` has sent a heartbeat (bounded by the start-up timeout)."""
        timeout = self.config.supervisor.startup_timeout_ms / 1000.0 + STARTUP_SLACK_S
        deadline = time.monotonic() + timeout
        while not self.stopping.is_set() and not all(c.heartbeats for c in children):
            if time.monotonic() > deadline:
                raise BudgetSpent(f"{failure} within {timeout:.0f}s")
            if sock.poll(POLL_MS):
                self._receive_heartbeats(sock)
            self._check_children(time.monotonic())

    def _give_up(self, why: str) -> int:
        action = self.config.failure.budget_spent
        if action == PASS:
            log.critical(
                "%s: giving up; removing our rules, traffic flows unenforced (failure.budget_spent=pass)", why
            )
        else:
            log.critical("%s: giving up; leaving the queue rule without bypass, traffic is dropped "
                         "(failure.budget_spent=drop)", why)  # fmt: skip
            try:
                Netfilter(dataclasses.replace(self.netfilter.spec, bypass=False)).install()
            except NetfilterError as exc:
                log.error("cannot leave the fail-closed rule in place: %s", exc)
        print(f"enforcer: {why}; exiting (failure.budget_spent={action})", file=sys.stderr)
        return 1

    def _stop_children(self) -> None:
        grace = self.config.supervisor.shutdown_grace_ms / 1000.0
        # Readers first: they answer what is still queued or out at workers, then the rest.
        for roles in (("reader",), ("worker", "policy")):
            group = [c for c in self.children if c.role in roles and c.proc and c.proc.poll() is None]
            for child in group:
                assert child.proc is not None
                child.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + grace + 1.0
            for child in group:
                assert child.proc is not None
                try:
                    child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    log.warning("%s did not stop in time; killing it", child.name)
                    child.proc.kill()
                    child.proc.wait(timeout=5)

    # ---- coexisting with CNIs ------------------------------------------------------------------

    def _check_bridges(self) -> None:
        """Bridges whose traffic skips FORWARD (a bridge CNI without br_netfilter): logged when the finding
        changes (a CNI creates its bridge with the first pod); br_netfilter loaded once if configured."""
        if "FORWARD" not in self.netfilter.spec.hooks:
            return
        finding = find_bridges(families=self.netfilter.spec.families)
        if finding.unfiltered and self.config.netfilter.load_br_netfilter and not self._br_netfilter_tried:
            self._br_netfilter_tried = True
            error = load_br_netfilter(finding.unfiltered)
            if error:
                log.error("cannot load br_netfilter (netfilter.load_br_netfilter): %s", error)
            else:
                log.info("br_netfilter loaded, bridged traffic sent through iptables")
                finding = find_bridges(families=self.netfilter.spec.families)
        text = finding.describe()
        if text != self.bridge_warning:
            if text:
                log.warning("%s (%s)", text, A.NETFILTER_BRIDGE_UNFILTERED)
            else:
                log.info("bridged traffic crosses the FORWARD hook again")
            self.bridge_warning = text

    # ---- status for the metrics endpoint -------------------------------------------------------

    def healthy(self) -> bool:
        return time.monotonic() - self.last_loop < 5.0

    def status(self) -> dict[str, object]:
        counters = dict(self.jump_watch.counters)
        counters[A.NETFILTER_BRIDGE_UNFILTERED] = 1 if self.bridge_warning else 0
        return {
            "ready": self.ready,
            "uptime_s": round(time.time() - self.started_at, 1),
            "netfilter": {
                "jump_check_s": self.jump_watch.interval,
                "last_jump_repair": self.jump_watch.last_repair,
                "bridges_unfiltered": self.bridge_warning,
            },
            "counters": counters,  # the supervisor's own (metrics: enforcer_supervisor_*)
            "children": [
                {
                    "name": c.name,
                    "pid": c.proc.pid if c.proc else None,
                    "cpu": c.cpu,
                    "restarts": c.restarts,
                    "heartbeats": c.heartbeats,  # of the current process: tells a fresh counter reading
                    "alive": bool(c.proc and c.proc.poll() is None),
                    "counters": c.counters,
                }
                for c in self.children
            ],
        }
