"""Entry point of every child process: `python -m pipeline.child ROLE INDEX --config-json FILE --seed N`.

The supervisor writes the effective configuration (file and environment already merged) into its
0700 runtime directory; children load it from there, so every process runs on the same values.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import socket
import sys
import time
from collections import Counter
from typing import Any

from pipeline.config import Config, config_from_dict
from pipeline.logs import setup_logging

ROLES = ("reader", "worker", "policy")
PR_SET_NAME = 15


PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask the kernel for SIGTERM when the supervisor dies, so no child outlives it (even on SIGKILL)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:  # the supervisor died before we asked
        sys.exit(1)


def set_process_name(name: str) -> None:
    """Name the process as `ps -o comm`/top show it (the kernel keeps 15 bytes)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)
    except (OSError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="enforcer-child")
    parser.add_argument("role", choices=ROLES)
    parser.add_argument("index", type=int)
    parser.add_argument("--config-json", required=True)
    parser.add_argument("--seed", type=int, required=True)
    args = parser.parse_args(argv)
    die_with_parent()
    with open(args.config_json) as fh:
        config = config_from_dict(json.load(fh), environ={})
    name = (
        f"reader q{config.queue_numbers[args.index]}"
        if args.role == "reader"
        else f"{args.role} {args.index}"
    )
    setup_logging(config.log, name)
    set_process_name(f"enf:{args.role[:6]}:{args.index}")
    node = config.node.name or socket.gethostname()
    if args.role == "reader":
        from pipeline.policy_link import open_tables
        from pipeline.reader import run_reader

        return run_reader(config, args.index, open_tables(config), args.seed, node)
    if args.role == "worker":
        from pipeline.policy_link import open_tables
        from workers.worker import run_worker

        return run_worker(config, args.index, open_tables(config), node)
    return run_event_sink(config)


# Events kept in the local event log before it is rotated (one previous file is kept).
EVENT_LOG_MAX_BYTES = 16 << 20


def run_event_sink(config: Config) -> int:
    """Policy-process role, local form: receive events and append them as JSON lines to the state
    directory's event log (bounded by rotation)."""
    import zmq

    from pipeline import messages as M

    running = [True]
    signal.signal(signal.SIGTERM, lambda *_: running.__setitem__(0, False))
    signal.signal(signal.SIGINT, lambda *_: running.__setitem__(0, False))
    os.makedirs(config.paths.state_dir, mode=0o700, exist_ok=True)
    path = os.path.join(config.paths.state_dir, "events.jsonl")
    ctx = zmq.Context(1)
    inbox = ctx.socket(zmq.PULL)
    inbox.setsockopt(zmq.LINGER, 0)
    inbox.bind(M.events_endpoint(config.paths.run_dir))
    supervisor = ctx.socket(zmq.PUSH)
    supervisor.setsockopt(zmq.LINGER, 0)
    supervisor.setsockopt(zmq.SNDHWM, 8)
    supervisor.connect(M.supervisor_endpoint(config.paths.run_dir))
    counters: Counter[str] = Counter()
    hb_period = config.supervisor.heartbeat_interval_ms / 1000.0
    next_hb = 0.0
    out = open(path, "a", buffering=1)
    try:
        while running[0]:
            if inbox.poll(50):
                while True:
                    try:
                        frame = inbox.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    try:
                        msg = M.decode(frame)
                    except M.MessageError as exc:
                        counters[exc.anomaly] += 1
                        continue
                    if isinstance(msg, M.Events):
                        for event in msg.events:
                            out.write(json.dumps(event, default=_jsonable) + "\n")
                            counters[f"events.{event.get('type', 'unknown')}"] += 1
                if out.tell() > EVENT_LOG_MAX_BYTES:
                    out.close()
                    os.replace(path, path + ".1")
                    out = open(path, "a", buffering=1)
                    counters["events.rotated"] += 1
            now = time.monotonic()
            if now >= next_hb:
                next_hb = now + hb_period
                hb = M.Heartbeat("policy", 0, os.getpid(), dict(counters))
                try:
                    supervisor.send(M.encode(hb), zmq.NOBLOCK)
                except zmq.Again:
                    pass
    finally:
        out.close()
        ctx.destroy(linger=0)
    return 0


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
