"""Entry point of every child process: `python -m node.child ROLE INDEX --config-json FILE --seed N`.

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
from typing import TYPE_CHECKING

from core.gctune import tune_for_packets
from node.config import Config, config_from_dict
from node.logs import setup_logging

if TYPE_CHECKING:
    from policy.table_reader import SharedTables

ROLES = ("reader", "worker", "policy", "runtime")
PR_SET_NAME = 15


PR_SET_PDEATHSIG = 1


def die_with_parent(supervisor_pid: int) -> None:
    """Ask the kernel for SIGTERM when the supervisor dies, so no child outlives it (even on SIGKILL)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if supervisor_pid and os.getppid() != supervisor_pid:  # the supervisor died before we asked
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
    parser.add_argument("--supervisor-pid", type=int, default=0)
    args = parser.parse_args(argv)
    die_with_parent(args.supervisor_pid)
    with open(args.config_json) as fh:
        config = config_from_dict(json.load(fh), environ={})
    name = (
        f"reader q{config.queue_numbers[args.index]}"
        if args.role == "reader"
        else f"{args.role} {args.index}"
    )
    setup_logging(config.log, name)
    set_process_name(f"enf:{args.role[:6]}:{args.index}")
    if os.environ.get("ENFORCER_MEMTRACE"):  # opt-in allocation tracing; off, not even imported
        from node.memtrace import start_from_environment

        start_from_environment(config.paths.run_dir, name)
    node = config.node.name or socket.gethostname()
    if args.role == "policy":
        from node.policy_document import derive_document, document_problem
        from policy.service import run_policy_process

        return run_policy_process(config, node, validate=document_problem, derive=derive_document)
    if args.role == "runtime":
        from node.runtime_child import run_runtime_child

        return run_runtime_child(config, node)
    from node.policy_updates import PublishedCompiler

    tables = open_tables(config, args.role, args.index)
    tune_for_packets()
    # Threat settings and sensors come with the tables: the derived document of the generation in force.
    if args.role == "reader":
        from pipeline.reader import run_reader
        from workers.detect.engine import threat_settings_from_document

        return run_reader(
            config.reader(),
            args.index,
            tables,
            args.seed,
            node,
            lambda counters: PublishedCompiler(tables, threat_settings_from_document, counters, "guard"),
        )
    from workers.detect.engine import threat_policy_from_document
    from workers.worker import run_worker

    return run_worker(
        config.worker(),
        args.index,
        tables,
        node,
        lambda counters: PublishedCompiler(tables, threat_policy_from_document, counters, "threats"),
    )


def open_tables(config: Config, role: str, index: int) -> SharedTables:
    """Map the policy process's shared tables (it publishes before anything binds a queue)."""
    from policy.model import parse_mode
    from policy.table_reader import open_shared_tables, table_slot

    slot = table_slot(role, index, config.queues.readers, config.workers.count)
    return open_shared_tables(config.paths.run_dir, slot, parse_mode(config.policy.startup))


if __name__ == "__main__":
    sys.exit(main())
