#!/usr/bin/env python3
"""Chaos drills under load, measured: the real enforcer in a lab, joined to the reference controller.

While compiled generators load the node (rrgen: a new connection per request; iperf3: a bulk stream) and
two probe clients alternate a denied and an allowed connection (one client per NFQUEUE, so every reader
is probed), the drills
  kill      SIGKILL each child type (readers, workers, the policy process, the runtime child), `--rounds`
            times each, and wait for the supervisor's restart;
  queue     stop every reader (SIGSTOP) while a UDP flood of new flows holds the queues full, then let
            them go (SIGCONT);
  controller stop and restart the controller `--restarts` times under a steady event load;
  spool     keep the controller away while more events arrive than `events.spool_max_bytes` holds;
  disk      fill the state directory's file system (a small tmpfs made for the drill) under event load;
  rundir    fill the run directory's file system (a tmpfs too), then change the policy and kill the
            policy process and a reader.
Each row reports the time until the probes show enforcement again (a denied connection refused, an
allowed one served; target <= 2 s), the packets left in a queue without a verdict (0), events lost or
delivered twice once the controller is back (0: every event-load connection has its own source port,
so each is one violation, counted in the controller's store), and the RSS of every child after the
round. A table is printed (`--json` for machines); the exit status is 1 when a target is missed.

Run as root: `scripts/chaos.py` (a few minutes), `scripts/chaos.py --short` (the CI variant, ~1 min).
Only lab namespaces carry traffic; the two tmpfs mounts are made under a private temporary directory and
removed on every exit.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lab.attacks import queue_states, udp_flood  # noqa: E402
from lab.enforcer import LabController, LabEnforcer  # noqa: E402
from lab.topology import Lab, LabError, require_root  # noqa: E402

TARGET_ENFORCING_S = 2.0  # a drill's time until a denied connection is refused and an allowed one served
MAX_DRILL_WAIT_S = 20.0  # no drill waits longer than this for anything
PROBE_TRAILING = 6  # correct probe results in a row (3 rounds of denied + allowed) that prove enforcement
RUN_FS_BYTES = 8 << 20  # the run directory's tmpfs: the 2 MiB tables file, sockets, config
STATE_FS_BYTES = 4 << 20  # the state directory's tmpfs: last-known-good policy and the 1 MiB event spool
TABLE_BYTES = 1 << 20  # per half of the shared tables (the lab policy needs a few KiB)
SPOOL_BYTES = 1 << 20  # events.spool_max_bytes: its smallest allowed value
LOAD_PORT = 5201  # rrgen's echo server on the api host, iperf3's on the web host (both allowed)
EVENT_PORT = 22  # denied to the clients on the web host (rule 11): each refused connection is one event
SPOOL_PORTS = 10000  # the spool drill's event load: ports from here (denied: web is in Protect)
DISK_PORTS = 30000  # the state-dir drill's
DISK_EVENTS = 500
# The probes and the event load are refused by the web group hundreds of times a minute, from one source
# each: by the detectors' definitions a port scan (resets) and an SSH brute force. Here those threats only
# alert, so no block-source takes a probe client off the network and the drills measure the rules.
DRILL_THREATS = (
    "threats: {port_scan: {action: alert}, ssh_brute_force: {action: alert},"
    " source_session_flood: {action: alert}}\n"
)


def drill_policy(directory: Path) -> Path:
    from lab.enforcer import LAB_POLICY

    path = directory / "policy.yaml"
    path.write_text(LAB_POLICY.read_text().rstrip("\n") + "\n" + DRILL_THREATS)
    return path


# ---- processes of the lab ------------------------------------------------------------------------


def rrgen_binary() -> str:
    built = Path(sys.executable).parent / "rrgen"
    if built.exists():
        return str(built)
    out = Path(tempfile.mkdtemp(prefix="rrgen-")) / "rrgen"
    subprocess.run(["gcc", "-O2", "-o", str(out), str(ROOT / "lab" / "rrgen.c")], check=True)
    return str(out)


class Processes:
    """Processes this script starts in the lab; each is ended by its own pid, never by name."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[Any]] = []

    def start(self, lab: Lab, host: str, *cmd: str, **kwargs: Any) -> subprocess.Popen[Any]:
        """`cmd` in a lab host's namespace, leading a process group of its own."""
        proc = lab.popen(host, *cmd, start_new_session=True, cwd=ROOT, **kwargs)
        self.procs.append(proc)
        return proc

    def end(self, proc: subprocess.Popen[Any], timeout: float = 5.0) -> None:
        """SIGTERM to the process group the process leads (rrgen forks its clients), then SIGKILL."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=timeout)
                return
            except subprocess.TimeoutExpired:
                continue

    def end_all(self) -> None:
        for proc in reversed(self.procs):
            self.end(proc)


class Probe:
    """`lab.traffic probe` in one client: its results (wall-clock start and end, correct or not) kept as
    they come."""

    def __init__(self, lab: Lab, procs: Processes, client: str, target: str, seconds: float) -> None:
        self.client, self.target = client, target
        self.records: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.proc = procs.start(
            lab, client, sys.executable, "-m", "lab.traffic", "probe", target, "--seconds", str(seconds),
            "--interval", "0.02", "--timeout", "1", stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if "kind" in record:
                with self._lock:
                    self.records.append(record)

    def since(self, t: float) -> list[dict[str, Any]]:
        with self._lock:
            return [r for r in self.records if r["end"] >= t]


def enforcing_again(records: list[dict[str, Any]], since: float) -> float | None:
    """Seconds from `since` until the probes proved enforcement for good: the end of the first correct
    result after the last wrong one, followed by at least PROBE_TRAILING correct results in all."""
    last_wrong = max((i for i, r in enumerate(records) if not r["correct"]), default=-1)
    trailing = records[last_wrong + 1 :]
    if len(trailing) < PROBE_TRAILING:
        return None
    return max(0.0, trailing[0]["end"] - since)


# ---- measurements ----------------------------------------------------------------------------------


def child_rss_mib(e: LabEnforcer) -> dict[str, float]:
    out = {}
    for name, pid in sorted(e.child_pids().items()):
        with suppress(psutil.Error):
            out[name] = round(psutil.Process(pid).memory_info().rss / 2**20, 1)
    return out


def unanswered(lab: Lab, load: list[subprocess.Popen[Any]], seconds: float = 2.0) -> int:
    """Packets waiting in the node's queues for a verdict that is not coming. The load generators are
    paused meanwhile (SIGSTOP to the process groups we started), so the packets in flight get their
    verdicts and leave: the smallest total seen over `seconds` is what nobody will answer."""
    for proc in load:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGSTOP)
    try:
        low = None
        deadline = time.monotonic() + seconds
        while True:
            total = sum(q.waiting for q in queue_states(lab).values())
            low = total if low is None else min(low, total)
            if low == 0 or time.monotonic() >= deadline:
                return low
            time.sleep(0.05)
    finally:
        for proc in load:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGCONT)


def wait_until(
    cond: Callable[[], bool], timeout: float = MAX_DRILL_WAIT_S, step: float = 0.05
) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return time.monotonic() - t0
        time.sleep(step)
    return None


class Store:
    """Read-only view of the controller's event store (SQLite, WAL: readable while it writes)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def rows(self, where: str = "", args: tuple[Any, ...] = ()) -> list[tuple[str, dict[str, Any]]]:
        if not self.path.exists():
            return []
        db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10)
        try:
            cur = db.execute(f"SELECT event_id, body FROM events {where} ORDER BY seq", args)
            return [(eid, json.loads(body)) for eid, body in cur]
        except sqlite3.OperationalError:
            return []  # the controller has not created its tables yet
        finally:
            db.close()

    def denials_from(self, source: str, ports: range, since: float) -> list[dict[str, Any]]:
        """Violations of connections from `source` to `ports` made since `since`."""
        out = []
        for _, e in self.rows("WHERE type = 'violation' AND time >= ?", (since - 1.0,)):
            flow = e.get("flow") or {}
            if flow.get("src") == source and flow.get("dport") in ports and float(e["time"]) >= since:
                out.append(e)
        return out

    def dropped_reported(self, after: float) -> int:
        return sum(
            int(e.get("count", 0))
            for _, e in self.rows("WHERE type = 'audit'")
            if e.get("what") == "events dropped" and float(e.get("time", 0)) >= after
        )


@dataclass
class Row:
    drill: str
    enforcing_s: float | None = None  # until a denied connection is refused and an allowed one served
    unanswered: int | None = None  # packets left in a queue without a verdict
    flushed: int | None = None  # packets the kernel held for a killed reader (it drops them with the queue)
    lost: int | None = None  # events neither stored nor reported dropped
    duplicated: int | None = None  # events stored more than once
    note: str = ""
    startup_s: float | None = None  # the restarted child's own start (spawn to bound/ready), from its log
    target_s: float = TARGET_ENFORCING_S
    rss_mib: dict[str, float] = field(default_factory=dict)
    missed: list[str] = field(default_factory=list)

    def judge(self) -> Row:
        if self.enforcing_s is None or self.enforcing_s > self.target_s:
            self.missed.append(f"enforcing again after {self.enforcing_s} s (target <= {self.target_s:.2f})")
        if self.unanswered:
            self.missed.append(f"{self.unanswered} packets left without a verdict")
        if self.lost:
            self.missed.append(f"{self.lost} events lost")
        if self.duplicated:
            self.missed.append(f"{self.duplicated} events duplicated")
        return self


def reconcile(
    store: Store, source: str, ports: range, since: float, denied: int, dropped: int = 0
) -> tuple[int, int, int]:
    """(stored, lost, duplicated) of `denied` refused event-load connections. The enforcer reports each
    refused connection once, merging repeats of one client, server and port into an event with a count;
    the store keeps each event id once. So the counts stored must add up to `denied` exactly: fewer, and
    those not covered by a reported drop are lost; more, and something was delivered twice."""
    stored = sum(int(e.get("count", 1)) for e in store.denials_from(source, ports, since))
    return stored, max(0, denied - stored - dropped), max(0, stored - denied)


# ---- the lab -------------------------------------------------------------------------------------------


@contextmanager
def tmpfs(path: Path, size: int) -> Iterator[Path]:
    """A small tmpfs at `path` (a directory of our own temporary tree), unmounted on every exit."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> Path:
    """Fill the file system of `directory` to the last block with a file (returned, to remove it)."""
    filler = directory / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True, check=False)
    return filler


class ChaosController(LabController):
    """The lab controller with short intervals, so a drill sees its restarts within a second."""

    def start(self) -> LabController:
        log = open(self.tmp / "controller.log", "ab")
        self.proc = self.lab.popen(
            "node", sys.executable, "-m", "node.cli", "controller",
            "--policy-dir", str(self.policy_dir), "--db", str(self.db),
            "--listen", f"tcp://127.0.0.1:{self.port}", "--watch", "0.2", "--heartbeat", "0.5",
            "--secret-key", str(self.keys / "controller.key_secret"), "--clients", str(self.clients),
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
        )  # fmt: skip
        return self


@dataclass
class Settings:
    rounds: int
    restarts: int
    down_s: float
    hold_s: float
    event_rate: float
    spool_events: int
    drills: list[str]
    auto_target: bool


class Drills:
    def __init__(
        self, lab: Lab, e: LabEnforcer, ctl: LabController, procs: Processes, s: Settings,
        config: dict[str, dict[str, Any]], run_dir: Path, state_dir: Path,
    ) -> None:  # fmt: skip
        self.lab, self.e, self.ctl, self.procs, self.s = lab, e, ctl, procs, s
        self.e_config, self.run_dir, self.state_dir = config, run_dir, state_dir
        self.store = Store(ctl.db)
        self.rows: list[Row] = []
        self.probes: list[Probe] = []
        self.web = lab.host("s1").ipv4
        self.event_client = lab.host("c4")
        self.load: list[subprocess.Popen[Any]] = []  # the load generators (paused while queues are read)
        self.probe_round_s = 0.1  # a denied and an allowed probe and the pause between: measured at start

    # -- helpers --

    def map_probes(self, seconds: float) -> None:
        """One probe client per queue: a connection from each candidate (client, address family) shows
        which queue the kernel hashes its address pair to (ports do not count)."""
        wanted = set(queue_states(self.lab))
        chosen: dict[int, tuple[str, str]] = {}
        for client in ("c1", "c2", "c5", "c6", "c3"):
            for family in ("ipv4", "ipv6"):
                if set(chosen) >= wanted:
                    break
                target = getattr(self.lab.host("s1"), family)
                before = {n: q.handed for n, q in queue_states(self.lab).items()}
                self.lab.exec(client, sys.executable, "-m", "lab.traffic", "tcp", target, "80", "--bytes", "64",
                              check=False)  # fmt: skip
                after = queue_states(self.lab)
                moved = [n for n, q in after.items() if q.handed != before.get(n, 0)]
                if len(moved) == 1 and moved[0] not in chosen:
                    chosen[moved[0]] = (client, target)
        if set(chosen) < wanted:
            raise LabError(f"no probe client found for queues {sorted(wanted - set(chosen))}")
        self.queue_of_probe = {}
        for queue, (client, target) in sorted(chosen.items()):
            self.probes.append(Probe(self.lab, self.procs, client, target, seconds))
            self.queue_of_probe[client] = queue

    def records(self, since: float) -> list[list[dict[str, Any]]]:
        """Probe results of attempts begun at `since` or later (one begun before a fault that then waits
        for a retransmission tells of the packet the fault cost: the `flushed` column counts those)."""
        return [[r for r in p.since(since) if r["start"] >= since] for p in self.probes]

    def observe(self, since: float, ready: Callable[[], bool] = lambda: True) -> float | None:
        """Until `ready()` and every probe shows enforcement after `since` (bounded); the slowest."""

        def done() -> bool:
            return ready() and all(enforcing_again(r, since) is not None for r in self.records(since))

        wait_until(done, MAX_DRILL_WAIT_S, 0.1)
        times = [enforcing_again(r, since) for r in self.records(since)]
        if any(t is None for t in times):
            for probe, records in zip(self.probes, self.records(since), strict=True):
                wrong = [r["kind"] + ":" + r["outcome"] for r in records if not r["correct"]]
                print(f"  probe {probe.client} -> {probe.target}: {len(records)} results, wrong {wrong[-6:]}, "
                      f"exit {probe.proc.poll()}", flush=True)  # fmt: skip
            return None
        return max(t for t in times if t is not None)

    def denials(
        self, rate: float, count: int, seconds: float, port: int = EVENT_PORT, span: int = 1
    ) -> tuple[subprocess.Popen[str], range]:
        """The event load: `lab.traffic denials` from c4 to the web host's `port`..`port + span - 1`."""
        proc = self.procs.start(
            self.lab, "c4", sys.executable, "-m", "lab.traffic", "denials", self.web, str(port),
            "--span", str(span), "--rate", str(rate), "--count", str(count), "--seconds", str(seconds),
            "--timeout", "2", stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        return proc, range(port, port + span)

    @staticmethod
    def finish(proc: subprocess.Popen[str], timeout: float = 60) -> dict[str, Any]:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=timeout)
        lines = [line for line in out.splitlines() if line.startswith("{")]
        return json.loads(lines[-1]) if lines else {"attempts": 0, "denied": 0}

    def add(self, row: Row) -> Row:
        row.rss_mib = child_rss_mib(self.e)
        self.rows.append(row.judge())
        print(format_row(row), flush=True)
        return row

    def restarts(self) -> dict[str, int]:
        return {c["name"]: c["restarts"] for c in self.e.status().get("children", [])}

    # -- drills --

    def kill(self) -> None:
        roles = sorted(self.e.child_pids())
        for round_ in range(1, self.s.rounds + 1):
            for role in roles:
                pids = self.e.child_pids()
                old = pids.get(role)
                if old is None:
                    self.add(Row(f"kill {role} #{round_}", note="child not running before the kill"))
                    continue
                flushed = None
                if role.startswith("reader q"):
                    queue = queue_states(self.lab).get(int(role.removeprefix("reader q")))
                    flushed = queue.waiting if queue else 0
                since = time.time()
                os.kill(old, signal.SIGKILL)

                def restarted(role: str = role, old: int = old) -> bool:
                    return self.e.child_pids().get(role) not in (None, old)

                back = wait_until(restarted)
                t = self.observe(since, restarted)
                note = f"restarted in {back:.2f} s" if back is not None else "not restarted"
                self.add(
                    Row(f"kill {role} #{round_}", t, unanswered(self.lab, self.load), flushed, note=note)
                )

    def queue(self) -> None:
        for round_ in range(1, self.s.rounds + 1):
            readers = [pid for name, pid in self.e.child_pids().items() if name.startswith("reader")]
            max_len = self.e_config["queues"]["max_len"]
            peak: dict[int, int] = {}
            flood = threading.Thread(
                target=lambda: udp_flood(self.lab, "c3", self.lab.host("s2").ipv4, 53, self.s.hold_s),
                daemon=True,
            )
            for pid in readers:
                os.kill(pid, signal.SIGSTOP)
            try:
                flood.start()
                end = time.monotonic() + self.s.hold_s
                while time.monotonic() < end:
                    for n, q in queue_states(self.lab).items():
                        peak[n] = max(peak.get(n, 0), q.waiting)
                    time.sleep(0.02)
            finally:
                for pid in readers:
                    with suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGCONT)
            since = time.time()
            flood.join(30)
            t = self.observe(since)
            full = sorted(n for n, v in peak.items() if v >= max_len)
            note = f"held full: queues {full} at {max_len}" if full else f"queues never full (peak {peak})"
            row = Row(f"queue full #{round_}", t, unanswered(self.lab, self.load), note=note)
            if not full:
                row.missed.append("the flood did not fill a queue")
            self.add(row)

    def controller(self) -> None:
        total_s = self.s.restarts * (self.s.down_s + 3.0) + 10
        count = int(self.s.event_rate * total_s) + 10
        started = time.time()
        gen, ports = self.denials(self.s.event_rate, count, total_s)
        for i in range(1, self.s.restarts + 1):
            self.ctl.stop()
            down = time.time()
            time.sleep(self.s.down_s)
            self.ctl.start()
            up = time.time()

            def flowing(up: float = up) -> bool:  # an event made after the controller came back is stored
                return bool(self.store.denials_from(self.event_client.ipv4, ports, up))

            back = wait_until(flowing)
            t = self.observe(down)
            note = f"down {up - down:.1f} s; events flowing {back:.2f} s after its start" if back is not None \
                else "events not flowing again"  # fmt: skip
            row = Row(f"controller restart #{i}", t, unanswered(self.lab, self.load, 0.5), note=note)
            if back is None:
                row.missed.append("events did not flow again")
            self.add(row)
        result = self.finish(gen)
        denied = int(result.get("denied", 0))
        # Every refused connection is one violation: wait (bounded) until the store holds them all.
        src = self.event_client.ipv4
        wait_until(lambda: reconcile(self.store, src, ports, started, denied)[0] >= denied, 30, 0.2)
        time.sleep(1.0)  # a second delivery of something would show up now
        stored, lost, dup = reconcile(self.store, src, ports, started, denied)
        dropped = self.store.dropped_reported(started)
        note = f"{denied} refused over {self.s.restarts} restarts: {stored} in the store, {dropped} reported dropped"
        self.add(Row(f"controller x{self.s.restarts}: events", 0.0, unanswered(self.lab, self.load), lost=lost,
                     duplicated=dup, note=note))  # fmt: skip

    def spool(self) -> None:
        started = time.time()
        self.ctl.stop()
        # Each attempt to another port of the web host: an event of its own, to fill the spool.
        gen, ports = self.denials(0, self.s.spool_events, 120, SPOOL_PORTS, self.s.spool_events)
        result = self.finish_when_done(gen)
        denied = int(result.get("denied", 0))
        time.sleep(1.0)  # the last aggregation window reaches the spool
        down = time.time()
        self.ctl.start()
        t = self.observe(down)

        stored, lost, dup, dropped = self.settle(ports, started, denied)
        note = f"{denied} events into a {SPOOL_BYTES >> 20} MiB spool: {stored} stored, {dropped} reported dropped"
        row = Row("spool full", t, unanswered(self.lab, self.load), lost=lost, duplicated=dup, note=note)
        if not dropped:
            row.missed.append("the spool never filled (raise --spool-events)")
        self.add(row)

    def settle(self, ports: range, started: float, denied: int) -> tuple[int, int, int, int]:
        """Once the store holds (or drop reports cover) every refused connection, bounded: (stored, lost,
        duplicated, reported dropped)."""
        src = self.event_client.ipv4

        def settled() -> bool:
            stored = reconcile(self.store, src, ports, started, denied)[0]
            return stored + self.store.dropped_reported(started) >= denied

        wait_until(settled, 30, 0.2)
        time.sleep(1.0)  # a second delivery of something would show up now
        dropped = self.store.dropped_reported(started)
        stored, lost, dup = reconcile(self.store, src, ports, started, denied, dropped)
        return stored, lost, dup, dropped

    def finish_when_done(self, proc: subprocess.Popen[str]) -> dict[str, Any]:
        with suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=150)
        return self.finish(proc)

    def disk(self) -> None:
        """The state directory's file system is full: spool and last-known-good cannot be written."""
        started = time.time()
        before = self.restarts()
        self.ctl.stop()
        filler = fill(self.state_dir)
        try:
            gen, ports = self.denials(0, DISK_EVENTS, 60, DISK_PORTS, DISK_EVENTS)
            denied = int(self.finish_when_done(gen).get("denied", 0))
            time.sleep(1.0)
            self.ctl.start()  # a new policy arrives while the last-known-good cannot be written
            version, applied = self.change_policy(61)
            self.ctl.stop()
        finally:
            filler.unlink(missing_ok=True)
        down = time.time()
        self.ctl.start()
        t = self.observe(down)

        stored, lost, dup, dropped = self.settle(ports, started, denied)
        after = self.restarts()
        crashed = {n: after.get(n, 0) - v for n, v in before.items() if after.get(n, 0) != v}
        note = (f"{denied} events while full: {stored} stored, {dropped} reported dropped; policy v{version + 1} "
                + (f"applied in {applied:.2f} s" if applied is not None else "NOT applied")
                + f"; restarts {crashed or 'none'}")  # fmt: skip
        row = Row("state dir full", t, unanswered(self.lab, self.load), lost=lost, duplicated=dup, note=note)
        if applied is None:
            row.missed.append("a new policy was not applied while the state directory was full")
        if crashed:
            row.missed.append(f"children restarted: {crashed}")
        self.add(row)

    def rundir(self) -> None:
        """The run directory's file system is full: a new policy, then the policy process and a reader
        killed, must still come through."""
        before = self.restarts()
        filler = fill(self.run_dir)
        try:
            version, applied = self.change_policy(60)
            since = time.time()
            for role in ("policy 0", "reader q0"):
                old = self.e.child_pids().get(role)
                if old:
                    os.kill(old, signal.SIGKILL)

                    def replaced(role: str = role, old: int = old) -> bool:
                        return self.e.child_pids().get(role) not in (None, old)

                    wait_until(replaced)
            t = self.observe(since)
            in_force = self.status_counter("policy 0", "policy.version")
        finally:
            filler.unlink(missing_ok=True)
        after = self.restarts()
        extra = {
            n: after.get(n, 0) - v
            for n, v in before.items()
            if after.get(n, 0) - v > (1 if n in ("policy 0", "reader q0") else 0)
        }
        note = (f"policy v{version + 1} applied in {applied:.2f} s" if applied is not None else "new policy not applied") + \
            f"; v{in_force} in force after the kills; extra restarts {extra or 'none'}"  # fmt: skip
        row = Row("run dir full", t, unanswered(self.lab, self.load), note=note)
        if applied is None or in_force <= version:
            row.missed.append("the new policy did not stay in force")
        if extra:
            row.missed.append(f"children restarted beyond the kills: {extra}")
        self.add(row)

    def change_policy(self, rule_id: int) -> tuple[int, float | None]:
        """A new policy version through the controller (one more allowed port); (the version before it,
        seconds until the policy process reports the new one in force)."""
        policy = self.ctl.policy_dir / "policy.yaml"
        version = self.status_counter("policy 0", "policy.version")
        text = policy.read_text().replace(f"version: {version}\n", f"version: {version + 1}\n")
        port = 8000 + rule_id
        rule = f"  - {{id: {rule_id}, from: clients, to: web, ports: [tcp/{port}], action: allow}}\n"
        tmp = policy.with_suffix(".tmp")
        tmp.write_text(text.replace("rules:\n", "rules:\n" + rule))
        os.replace(tmp, policy)
        return version, wait_until(lambda: self.status_counter("policy 0", "policy.version") > version)

    def target(self, startup: float | None) -> float:
        """The time-to-enforcing target of a drill. Fixed (2 s) unless `--target auto`: then a restarted
        child's own start-up on this machine, measured in the enforcer's log, plus two probe rounds (the
        resolution of the measurement), where that is longer than 2 s: a loaded machine's slow start is
        not the enforcer's regression, a recovery slower than the start-up is."""
        if not self.s.auto_target or startup is None:
            return TARGET_ENFORCING_S
        return round(max(TARGET_ENFORCING_S, startup + 2 * self.probe_round_s), 3)

    def status_counter(self, child: str, key: str) -> int:
        for c in self.e.status().get("children", []):
            if c["name"] == child:
                return int(c["counters"].get(key, 0))
        return 0


# ---- report ------------------------------------------------------------------------------------------


def _fmt(v: object) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


HEADER = f"{'drill':<30} {'enforcing s':>11} {'no verdict':>10} {'flushed':>7} {'lost':>5} {'dup':>4}  {'max child RSS MiB':>17}  note"


def format_row(r: Row) -> str:
    rss = max(r.rss_mib.values(), default=0.0)
    mark = "" if not r.missed else "  MISSED: " + "; ".join(r.missed)
    return (f"{r.drill:<30} {_fmt(r.enforcing_s):>11} {_fmt(r.unanswered):>10} {_fmt(r.flushed):>7} "
            f"{_fmt(r.lost):>5} {_fmt(r.duplicated):>4}  {rss:>17.1f}  {r.note}{mark}")  # fmt: skip


def rss_table(rows: list[Row]) -> str:
    names = sorted({n for r in rows for n in r.rss_mib})
    lines = ["RSS MiB per child after each drill:", f"{'drill':<30} " + " ".join(f"{n:>10}" for n in names)]
    for r in rows:
        lines.append(f"{r.drill:<30} " + " ".join(f"{_fmt(r.rss_mib.get(n)):>10}" for n in names))
    return "\n".join(lines)


# ---- main --------------------------------------------------------------------------------------------

ALL_DRILLS = ["kill", "queue", "controller", "spool", "disk", "rundir"]


def run(args: argparse.Namespace) -> tuple[list[Row], dict[str, Any]]:
    s = Settings(
        args.rounds, args.restarts, args.down, args.hold, args.event_rate, args.spool_events, args.drills,
        args.target == "auto",
    )  # fmt: skip
    procs = Processes()
    rrgen = rrgen_binary()
    base = Path(tempfile.mkdtemp(prefix="enforcer-chaos-"))
    os.chmod(base, 0o700)
    budget = args.rounds * 6 + 10  # every kill is a restart (6 children a round), and the run-dir drill's
    config: dict[str, dict[str, Any]] = {
        "queues": {"readers": 2, "max_len": 1024},
        "workers": {"count": 2, "inspect": "new"},
        "events": {"aggregate_window_ms": 200, "spool_max_bytes": SPOOL_BYTES},
        "policy": {"table_bytes": TABLE_BYTES},
        "supervisor": {"restart_budget": budget},
    }
    meta: dict[str, Any] = {"restart_budget": budget}
    prefix = f"ch{os.getpid() % 10000}"
    try:
        with (
            tmpfs(base / "run", RUN_FS_BYTES) as run_dir,
            tmpfs(base / "state", STATE_FS_BYTES) as state_dir,
            Lab(prefix, clients=6, servers=2, external=1) as lab,
        ):
            seconds = str(int(args.max_seconds))
            ready = [
                procs.start(lab, "s1", sys.executable, "-m", "lab.traffic", "serve", "--seconds", seconds,
                            "--tcp", "80", "--tcp", "22", stdout=subprocess.PIPE, text=True),
                procs.start(lab, "s2", rrgen, "serve", str(LOAD_PORT), seconds, stdout=subprocess.PIPE, text=True),
            ]  # fmt: skip
            procs.start(lab, "s1", "iperf3", "-s", "-p", str(LOAD_PORT), stdout=subprocess.DEVNULL)
            for proc in ready:
                assert proc.stdout is not None
                proc.stdout.readline()
            with ChaosController(lab, node="chaos-node", policy=drill_policy(base)) as ctl:
                overrides = ctl.enforcer_overrides()
                overrides["controller"].update({"heartbeat_s": 1, "timeout_s": 3, "reconnect_max_s": 1})
                for section, keys in config.items():
                    overrides.setdefault(section, {}).update(keys)
                overrides["paths"] = {"run_dir": str(run_dir), "state_dir": str(state_dir)}
                e = LabEnforcer(lab, overrides, policy=None)
                try:
                    e.start()
                    # The controller's policy is in force once the policy process reports its version.
                    d = Drills(lab, e, ctl, procs, s, config, run_dir, state_dir)
                    if (
                        wait_until(lambda: d.status_counter("policy 0", "policy.version") >= 1, 30, 0.2)
                        is None
                    ):
                        raise LabError(f"the controller's policy never arrived:\n{e.log()}")
                    d.map_probes(args.max_seconds)
                    load_s = str(int(args.max_seconds))
                    d.load = [procs.start(lab, "c3", rrgen, "crr", lab.host("s2").ipv4, str(LOAD_PORT), load_s, "1",
                                stdout=subprocess.DEVNULL),
                    procs.start(lab, "c3", "iperf3", "-c", lab.host("s1").ipv4, "-p", str(LOAD_PORT), "-t",
                                load_s, "-b", args.bulk_rate, stdout=subprocess.DEVNULL)]  # fmt: skip
                    time.sleep(1.0)
                    print(HEADER, flush=True)
                    baseline_since = time.time()
                    d.add(
                        Row("baseline (load, no fault)", d.observe(baseline_since), unanswered(lab, d.load))
                    )
                    rounds = [r["end"] - r["start"] for p in d.records(baseline_since) for r in p]
                    d.probe_round_s = 2 * statistics.median(rounds) + 0.02 if rounds else 0.1
                    deadline = time.monotonic() + args.max_seconds
                    for name in s.drills:
                        if time.monotonic() > deadline:
                            print(f"chaos: time limit reached before drill {name}", flush=True)
                            break
                        getattr(d, name)()
                    meta["enforcer_restarts"] = d.restarts()
                    meta["enforcer_alive"] = e.proc is not None and e.proc.poll() is None
                    if not meta["enforcer_alive"]:
                        d.rows.append(Row("enforcer", missed=["the enforcer exited"], note=e.log()[-500:]))
                    return d.rows, meta
                finally:
                    procs.end_all()
                    e.cleanup()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--short", action="store_true", help="the CI variant: one round, three controller restarts"
    )
    p.add_argument("--rounds", type=int, default=3, help="kills of each child type, queue holds")
    p.add_argument("--restarts", type=int, default=10, help="controller stops and restarts")
    p.add_argument("--down", type=float, default=1.0, help="seconds the controller stays away each time")
    p.add_argument("--hold", type=float, default=0.8, help="seconds the readers are stopped with full queues")
    p.add_argument("--event-rate", type=float, default=40, help="event-load connections per second")
    p.add_argument("--spool-events", type=int, default=8000, help="events made while the spool fills")
    p.add_argument("--bulk-rate", default="100M", help="iperf3's bit rate during the drills")
    p.add_argument(
        "--drills", default=",".join(ALL_DRILLS), help=f"comma-separated, of {','.join(ALL_DRILLS)}"
    )
    p.add_argument("--max-seconds", type=float, default=900, help="upper bound of the whole run")
    p.add_argument("--json", action="store_true", help="also print the rows as one JSON document")
    p.add_argument("--target", default="2", choices=["2", "auto"],
                   help="time-to-enforcing target: 2 s, or auto: at least a restarted child's measured start-up")  # fmt: skip
    args = p.parse_args(argv)
    if args.short:
        args.rounds, args.restarts, args.spool_events = 1, 2, 6000
    args.rounds = max(1, min(args.rounds, 20))
    args.restarts = max(1, min(args.restarts, 50))
    args.max_seconds = min(args.max_seconds, 3600)
    args.drills = [d for d in args.drills.split(",") if d]
    unknown = set(args.drills) - set(ALL_DRILLS)
    if unknown:
        p.error(f"unknown drills: {', '.join(sorted(unknown))}")
    require_root()
    rows, meta = run(args)
    print()
    print(rss_table(rows))
    missed = [r for r in rows if r.missed]
    print(
        f"\nchaos: {len(rows)} rows, {len(missed)} missed a target; restarts {meta.get('enforcer_restarts')}"
    )
    if args.json:
        print(json.dumps({"rows": [asdict(r) for r in rows], **meta}))
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
