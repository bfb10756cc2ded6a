"""The `enforcer` command. Subcommands of other packages register themselves through `SUBCOMMANDS`."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from core import __version__
from node.config import ConfigError, describe, load_config
from node.logs import setup_logging

# Modules that add subcommands with a `register(subparsers)` function, in the order of `--help`.
SUBCOMMANDS: tuple[str, ...] = (
    "node.status",
    "node.capture",
    "node.workloads_cli",
    "node.replay",
    "node.threats_cli",
    "runtime.cli",
    "node.policy_cli",
    "controller.cli",
    "lab.demo",
)


def _cmd_run(args: argparse.Namespace) -> int:
    from node.supervisor import Supervisor

    config = load_config(args.config)
    setup_logging(config.log, "supervisor")
    return Supervisor(config).run()


def _cmd_config_check(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    sys.stdout.write(describe(config))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="enforcer", description="Per-node container security enforcer")
    parser.add_argument("--version", action="version", version=f"enforcer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("run", help="run the enforcer on this node (the DaemonSet main)")
    run.add_argument("--config", help="TOML file (default: $ENFORCER_CONFIG or the packaged default)")
    run.set_defaults(func=_cmd_run)
    cfg = sub.add_parser("config", help="configuration tools")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = cfg_sub.add_parser("check", help="validate and print the effective configuration")
    check.add_argument("--config", help="TOML file (default: $ENFORCER_CONFIG or the packaged default)")
    check.set_defaults(func=_cmd_config_check)
    for module in SUBCOMMANDS:
        importlib.import_module(module).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"enforcer: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        logging.shutdown()


if __name__ == "__main__":
    sys.exit(main())
