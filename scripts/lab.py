#!/usr/bin/env python3
"""Build or remove the lab by hand: `scripts/lab.py up [--prefix enf]`, `scripts/lab.py down`.

`up` leaves the namespaces in place (enforcer-node, enf-c1 …) for experiments, e.g.
`ip netns exec enf-node .venv/bin/enforcer run --config …`; `down` removes them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lab.topology import Lab, require_root


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("action", choices=["up", "down"])
    ap.add_argument("--prefix", default="enf")
    args = ap.parse_args()
    require_root()
    lab = Lab(args.prefix)
    if args.action == "down":
        lab.down()
        return 0
    lab.up()
    for host in lab.hosts.values():
        print(f"{host.netns:12s} {host.subnet:9s} {host.ipv4:14s} {host.ipv6}")
    print(f"{lab.node:12s} routes between them (run the enforcer here)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
