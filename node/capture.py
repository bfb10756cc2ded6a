"""`enforcer capture`: evidence packets and bounded on-demand captures from the running enforcer.

  enforcer capture --threat ID -o FILE.pcap            the packets a worker kept for a threat event
  enforcer capture --flow 'tcp A:* B:80' [--seconds N] -o FILE.pcap
  enforcer capture --group G [--seconds N] -o FILE.pcap

The file is pcap (raw IP, IPv4 and IPv6), created new with mode 0600 (never overwritten, never through a
symbolic link). Exit status: 0 written; 1 the enforcer is not running, did not answer, does not hold the
evidence or the capture is incomplete; 2 bad arguments or an existing output file.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from typing import Any

from core import messages as M
from core.capture import MAX_CAPTURE_BYTES, MAX_CAPTURE_SECONDS
from node.capture_client import (
    CaptureError,
    OutputExists,
    Recorded,
    fetch_evidence,
    open_output,
    record,
    write_output,
)
from node.capture_spec import FLOW_HELP, SpecError, parse_evidence_id, parse_flow, parse_group
from node.config import load_config

DEFAULT_SECONDS = 10.0
DEFAULT_MAX_BYTES = 8 << 20
EVIDENCE_TIMEOUT_S = 5.0


def _cmd_capture(args: argparse.Namespace) -> int:
    try:
        return _capture(args)
    except (SpecError, OutputExists) as exc:
        print(f"enforcer capture: {exc}", file=sys.stderr)
        return 2
    except CaptureError as exc:
        print(f"enforcer capture: {exc}", file=sys.stderr)
        return 1


def _capture(args: argparse.Namespace) -> int:
    if not 0 < args.seconds <= MAX_CAPTURE_SECONDS:
        raise SpecError(f"--seconds {args.seconds:g}: between 0 and {MAX_CAPTURE_SECONDS:g}")
    if not 0 < args.max_bytes <= MAX_CAPTURE_BYTES:
        raise SpecError(f"--max-bytes {args.max_bytes}: between 1 and {MAX_CAPTURE_BYTES}")
    config = load_config(args.config)
    run_dir = config.paths.run_dir
    if args.threat is not None:
        ref = parse_evidence_id(args.threat)
        if ref.worker >= config.workers.count:
            raise SpecError(f"--threat {ref.evidence_id}: this node has no worker {ref.worker}")
        if os.path.lexists(args.output):  # before asking; open_output decides for good
            raise OutputExists(f"{args.output} exists; refusing to overwrite it")
        records = fetch_evidence(run_dir, ref.worker, ref.evidence_id, EVIDENCE_TIMEOUT_S)
        count = write_output(open_output(args.output), records)
        print(f"{count} packets of evidence {ref.evidence_id} written to {args.output}", file=sys.stderr)
        return 0
    filt = parse_flow(args.flow) if args.flow is not None else parse_group(args.group)
    start = M.CaptureStart("0" * 16, filt.proto, filt.a_addr, filt.a_port, filt.b_addr, filt.b_port,
                           filt.group, float(args.seconds), args.max_bytes)  # fmt: skip
    fd = open_output(args.output)  # created first: a conflict shows before the wait, not after it
    try:
        got = record(run_dir, config.queues.readers, start, lambda _: None)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(args.output)  # ours (O_EXCL) and empty
        raise
    count = write_output(fd, got.records)
    print(_summary(got, count, args.output), file=sys.stderr)
    if not count:
        print("no packet matched: is the flow or group right (a group of the policy in force), and does "
              "its traffic reach the enforcer's queue?", file=sys.stderr)  # fmt: skip
    return 1 if got.notes else 0


def _summary(got: Recorded, count: int, output: str) -> str:
    lines = [f"{count} packets ({got.bytes} bytes) written to {output}"]
    if got.over_budget:
        lines.append(f"{got.over_budget} matching packets left out: --max-bytes reached")
    lines += [f"incomplete: {note}" for note in got.notes]
    return "\n".join(lines)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "capture",
        help="evidence packets of a threat event, or a bounded capture of a flow or group (pcap)",
        description="Write the packets a worker kept for a threat event (--threat), or copy for a while the "
        "packets of a flow or a group as the running enforcer sees them (--flow, --group). Only packets that "
        "reach the enforcer's queue are seen: once a connection is decided and offloaded to the kernel (or "
        "blocked there), its later packets are not; traffic our chain does not cover (other hooks, "
        "interfaces left out, loopback) is never seen. The output is a new pcap file, mode 0600.",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--threat", metavar="ID", help="a threat event's evidence id (its `evidence` field)")
    what.add_argument("--flow", metavar="5-TUPLE", help=f"{FLOW_HELP}; both directions")
    what.add_argument("--group", metavar="G", help="packets from or to members of the policy group G")
    p.add_argument("-o", "--output", required=True, metavar="FILE.pcap", help="new file (never overwritten)")
    p.add_argument("--seconds", type=float, default=DEFAULT_SECONDS,
                   help=f"how long --flow/--group copy packets (default {DEFAULT_SECONDS:g}, at most "
                        f"{MAX_CAPTURE_SECONDS:g})")  # fmt: skip
    p.add_argument("--max-bytes", type=int, default=DEFAULT_MAX_BYTES,
                   help=f"most bytes of packets kept (default {DEFAULT_MAX_BYTES}, at most {MAX_CAPTURE_BYTES})")  # fmt: skip
    p.add_argument("--config", help="TOML file (default: $ENFORCER_CONFIG or the packaged default)")
    p.set_defaults(func=_cmd_capture)
