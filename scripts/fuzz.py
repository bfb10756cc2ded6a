#!/usr/bin/env python3
"""Coverage-guided fuzzing (atheris, libFuzzer) of every parser and decoder the enforcer exposes to
untrusted bytes: the DPI protocol parsers (via the registry), the packet decoder, the node-internal
message decoders and the controller protocol. Targets: `tests/fuzz/targets.py`.

    python scripts/fuzz.py list
    python scripts/fuzz.py TARGET|all [--runs N] [--seconds S] [--rss-mb M] [--artifacts DIR] [--corpus DIR]

Nightly-style: `all --runs 1000000`. Each target runs in a process of its own (libFuzzer runs once per
process) with an RSS limit; a crash (an exception other than the target's documented error), a hang
(over 10 s on one input) or a run over the RSS limit fails it, and the crashing input is written to
the artifacts directory, to become a byte-literal regression test in `tests/fuzz/test_regressions.py`.
Prints one line per target: inputs run, seconds, peak RSS, outcome; exit status 1 when any failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RSS_MB = 1024  # a decoder that needs more than this for one input is a defect
INPUT_TIMEOUT_S = 10  # one input taking longer is a hang
MAX_INPUT_BYTES = 8192  # larger inputs add no structure the parsers have not seen in smaller ones
INSTRUMENTED = ["core", "workers", "tests.fuzz"]


@dataclass
class Outcome:
    target: str
    runs: int
    seconds: float
    peak_rss_mb: int
    ok: bool
    detail: str


def _fuzz_one(name: str, args: argparse.Namespace) -> None:
    """In this process: instrument our packages, then hand the target to libFuzzer (never returns)."""
    import atheris

    sys.path.insert(0, str(ROOT))
    with atheris.instrument_imports(include=INSTRUMENTED):
        from tests.fuzz.targets import all_targets, seeds
    target = all_targets()[name]
    # The seeds (real sessions and messages) go into the corpus directory libFuzzer starts from.
    corpus = Path(args.corpus or args.artifacts) / (name if args.corpus else f"corpus-{name}")
    corpus.mkdir(parents=True, exist_ok=True)
    for i, seed in enumerate(seeds(name)):
        (corpus / f"seed-{i}").write_bytes(seed)
    libfuzzer = [
        sys.argv[0],
        f"-runs={args.runs}",
        f"-max_total_time={int(args.seconds)}",
        f"-rss_limit_mb={args.rss_mb}",
        f"-timeout={INPUT_TIMEOUT_S}",
        f"-max_len={MAX_INPUT_BYTES}",
        f"-artifact_prefix={args.artifacts.rstrip('/')}/{name}-",
        "-print_final_stats=1",
    ]
    libfuzzer.append(str(corpus))
    atheris.Setup(libfuzzer, target.run)
    atheris.Fuzz()


def _run_child(name: str, args: argparse.Namespace) -> Outcome:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name,
           "--runs", str(args.runs), "--seconds", str(args.seconds), "--rss-mb", str(args.rss_mb),
           "--artifacts", args.artifacts]  # fmt: skip
    if args.corpus:
        cmd += ["--corpus", args.corpus]
    start = time.monotonic()
    # A hang is libFuzzer's to report; this bound only catches a child that cannot even start.
    limit = (args.seconds or 3600) + 120
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, cwd=ROOT)
    elapsed = time.monotonic() - start
    err = proc.stderr
    runs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", err) or re.findall(r"Done (\d+) runs", err)
    rss = re.findall(r"stat::peak_rss_mb:\s*(\d+)", err) or re.findall(r"rss: (\d+)Mb", err)
    ok = proc.returncode == 0
    detail = "ok"
    if not ok:
        lines = [ln for ln in err.splitlines() if ln.strip()]
        why = next((ln for ln in lines if "ERROR: libFuzzer" in ln or "Uncaught Python exception" in ln), "")
        tail = "\n".join(lines[-25:])
        detail = f"exit {proc.returncode}: {why}\n{tail}"
    return Outcome(name, int(runs[-1]) if runs else 0, round(elapsed, 1), int(rss[-1]) if rss else 0, ok, detail)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", nargs="?", help="a target name, `all`, or `list`")
    p.add_argument("--runs", type=int, default=1_000_000, help="inputs per target (-1: until --seconds)")
    p.add_argument("--seconds", type=float, default=0, help="time limit per target (0: none)")
    p.add_argument("--rss-mb", type=int, default=DEFAULT_RSS_MB, help="RSS limit per target process")
    p.add_argument("--artifacts", default="",
                   help="where crashing inputs (and, without --corpus, the corpora) go (default: a new temp dir)")  # fmt: skip
    p.add_argument("--corpus", default="", help="keep each target's corpus in DIR/TARGET between runs")
    p.add_argument("--json", action="store_true", help="one JSON object per target")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        _fuzz_one(args.child, args)
        return 0  # not reached: libFuzzer exits the process

    sys.path.insert(0, str(ROOT))
    from tests.fuzz.targets import all_targets

    targets = all_targets()
    if args.target in (None, "list"):
        for t in targets.values():
            print(f"{t.name:28s} may raise: {t.errors}")
        return 0
    names = list(targets) if args.target == "all" else [args.target]
    unknown = [n for n in names if n not in targets]
    if unknown:
        print(f"fuzz: unknown target {unknown[0]!r} (see `fuzz.py list`)", file=sys.stderr)
        return 2
    args.artifacts = args.artifacts or tempfile.mkdtemp(prefix="enforcer-fuzz-")
    os.makedirs(args.artifacts, exist_ok=True)
    failed = 0
    total = 0
    for name in names:
        out = _run_child(name, args)
        total += out.runs
        failed += not out.ok
        if args.json:
            print(json.dumps(asdict(out)), flush=True)
        else:
            state = "ok" if out.ok else "FAILED"
            print(f"{name:28s} {out.runs:>10d} inputs {out.seconds:>7.1f} s  rss {out.peak_rss_mb:>5d} MB  {state}",
                  flush=True)  # fmt: skip
            if not out.ok:
                print(out.detail, flush=True)
    if not args.json:
        print(f"{len(names)} targets, {total} inputs, {failed} failed; artifacts in {args.artifacts}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
