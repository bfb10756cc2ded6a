"""`enforcer runtime`: the runtime monitor on its own, with a policy file, printing events as JSON lines.

For trying process profiles and file rules on a node before the controller distributes them, and for
debugging. The policy file (YAML or JSON, the shape `runtime.profiles.policy_from_dict` reads) is
re-read when it changes; a change that does not parse keeps the previous policy (reported on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from typing import Any

import yaml

from runtime.monitor import run_runtime_monitor
from runtime.profiles import RuntimePolicy, policy_from_dict
from runtime.settings import RuntimeSettings

# Largest policy file read (a profile per group: a few hundred KiB at most).
POLICY_FILE_MAX = 8 * 1024 * 1024


class PolicyFileError(ValueError):
    pass


def load_policy(path: str) -> RuntimePolicy:
    """Read and validate a policy file; PolicyFileError names the file and the problem."""
    try:
        with open(path, "rb") as f:
            raw = f.read(POLICY_FILE_MAX + 1)
    except OSError as e:
        raise PolicyFileError(f"{path}: {e.strerror}") from None
    if len(raw) > POLICY_FILE_MAX:
        raise PolicyFileError(f"{path}: larger than {POLICY_FILE_MAX} bytes")
    try:
        data = yaml.safe_load(raw) or {}
    except yaml.YAMLError as e:
        raise PolicyFileError(f"{path}: not YAML/JSON: {e}") from None
    if not isinstance(data, dict):
        raise PolicyFileError(f"{path}: the top level must be a mapping")
    try:
        return policy_from_dict(data)
    except ValueError as e:
        raise PolicyFileError(f"{path}: {e}") from None


class _PolicyFile:
    """get_profiles() over a file: re-read when its mtime changes, previous policy kept on error."""

    def __init__(self, path: str, policy: RuntimePolicy) -> None:
        self.path = path
        self.policy = policy
        self.mtime = os.stat(path).st_mtime_ns

    def __call__(self) -> RuntimePolicy:
        try:
            mtime = os.stat(self.path).st_mtime_ns
        except OSError:
            return self.policy
        if mtime != self.mtime:
            self.mtime = mtime
            try:
                self.policy = load_policy(self.path)
            except PolicyFileError as e:
                print(f"enforcer runtime: policy kept: {e}", file=sys.stderr)
        return self.policy


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "runtime",
        help="run the runtime monitor alone with a policy file, printing events as JSON lines",
        description=__doc__,
    )
    p.add_argument("--policy", required=True, help="runtime policy file (YAML or JSON)")
    p.add_argument("--node", default=os.uname().nodename, help="node name in events")
    p.add_argument("--exec-mount", action="append", default=[], help="mount whose executables are checked")
    p.add_argument("--no-exec-permission", action="store_true", help="enforce by kill only")
    p.add_argument("--no-file-monitor", action="store_true", help="do not watch files")
    p.add_argument(
        "--duration", type=float, default=0.0, help="stop after this many seconds (0: run until signalled)"
    )
    p.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    try:
        policy = load_policy(args.policy)
    except PolicyFileError as e:
        print(f"enforcer runtime: {e}", file=sys.stderr)
        return 2
    if args.duration < 0:
        print("enforcer runtime: --duration must not be negative", file=sys.stderr)
        return 2
    settings = RuntimeSettings(
        node=args.node,
        use_exec_permission=not args.no_exec_permission,
        exec_permission_mounts=tuple(args.exec_mount),
        file_monitor=not args.no_file_monitor,
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if args.duration:
        timer = threading.Timer(args.duration, stop.set)
        timer.daemon = True
        timer.start()

    def emit(event: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(event, default=str) + "\n")
        sys.stdout.flush()

    return run_runtime_monitor(settings, _PolicyFile(args.policy, policy), emit, stop)
