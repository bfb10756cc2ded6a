"""Opt-in allocation tracing of a child: where its Python memory grows, by allocation site.

`ENFORCER_MEMTRACE=SECONDS` (unset by default) starts `tracemalloc` in every child; a daemon thread then
writes, every SECONDS, the allocation sites that grew most to `memtrace-<child>.txt` (mode 0600) in the
run directory: growth since the first report (the baseline) and since the previous one, plus the traced
total. `ENFORCER_MEMTRACE_FRAMES=N` groups by the N innermost frames (default 1: by line). Unset, nothing
is imported or started: no cost. A bad value is logged and tracing stays off; the child runs on.
Tracing slows a child (every allocation is recorded): for diagnosis, never for figures of speed.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import tracemalloc
from collections.abc import Mapping
from pathlib import Path

ENV_INTERVAL = "ENFORCER_MEMTRACE"
ENV_FRAMES = "ENFORCER_MEMTRACE_FRAMES"
MIN_INTERVAL_S = 5.0  # a snapshot of a large heap takes a while: no tighter than this
MAX_FRAMES = 25  # deeper tracebacks cost memory per allocation for little extra insight
TOP_SITES = 20  # sites per report

log = logging.getLogger("memtrace")


class MemtraceError(ValueError):
    """A bad ENFORCER_MEMTRACE* value."""


def settings_from(environ: Mapping[str, str]) -> tuple[float, int] | None:
    """(interval seconds, frames) when tracing is asked for, None when it is not."""
    raw = environ.get(ENV_INTERVAL, "").strip()
    if not raw:
        return None
    try:
        interval = float(raw)
    except ValueError:
        raise MemtraceError(f"{ENV_INTERVAL}: expected seconds between reports, got {raw!r}") from None
    if not interval >= MIN_INTERVAL_S:
        raise MemtraceError(f"{ENV_INTERVAL}: at least {MIN_INTERVAL_S:g} seconds, got {raw!r}")
    raw_frames = environ.get(ENV_FRAMES, "1").strip()
    try:
        frames = int(raw_frames)
    except ValueError:
        raise MemtraceError(f"{ENV_FRAMES}: expected a number of frames, got {raw_frames!r}") from None
    if not 1 <= frames <= MAX_FRAMES:
        raise MemtraceError(f"{ENV_FRAMES}: 1 to {MAX_FRAMES}, got {raw_frames!r}")
    return interval, frames


def _interesting(snapshot: tracemalloc.Snapshot) -> tracemalloc.Snapshot:
    # our own bookkeeping is not the child's memory
    return snapshot.filter_traces(
        (
            tracemalloc.Filter(False, tracemalloc.__file__),
            tracemalloc.Filter(False, __file__),
        )
    )


class MemTracer:
    """Takes snapshots and appends their comparison to one private file."""

    def __init__(self, path: Path, frames: int) -> None:
        self.path = path
        self.key = "lineno" if frames == 1 else "traceback"
        self.started = time.monotonic()
        self.baseline: tracemalloc.Snapshot | None = None
        self.previous: tracemalloc.Snapshot | None = None
        self.reports = 0

    def report(self) -> str:
        """Snapshot now, compare, append the text to the file and return it."""
        snap = _interesting(tracemalloc.take_snapshot())
        current, peak = tracemalloc.get_traced_memory()
        elapsed = time.monotonic() - self.started
        lines = [
            f"== report {self.reports} at {elapsed:.0f} s: traced {current / 2**20:.2f} MiB "
            f"(peak {peak / 2**20:.2f} MiB)"
        ]
        if self.baseline is None:
            self.baseline = snap
            lines.append("baseline taken; growth is measured against it from the next report")
        else:
            for title, old in (
                ("since the baseline", self.baseline),
                ("since the previous report", self.previous),
            ):
                assert old is not None
                stats = snap.compare_to(old, self.key)
                grown = sum(s.size_diff for s in stats)
                lines.append(f"-- top sites by growth {title} (all sites: {grown / 1024:+.1f} KiB)")
                for s in sorted(stats, key=lambda s: s.size_diff, reverse=True)[:TOP_SITES]:
                    where = " <- ".join(f"{f.filename}:{f.lineno}" for f in s.traceback)
                    lines.append(
                        f"{s.size_diff / 1024:+10.1f} KiB {s.count_diff:+8d} blocks "
                        f"(now {s.size / 1024:9.1f} KiB {s.count:8d})  {where}"
                    )
        self.previous = snap
        self.reports += 1
        text = "\n".join(lines) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "a") as fh:
            fh.write(text)
        return text


def start_from_environment(
    run_dir: str, child: str, environ: Mapping[str, str] | None = None
) -> MemTracer | None:
    """Start tracing this child if the environment asks for it; returns the tracer (None: off)."""
    try:
        settings = settings_from(os.environ if environ is None else environ)
    except MemtraceError as exc:
        log.error("memtrace off: %s", exc)
        return None
    if settings is None:
        return None
    interval, frames = settings
    tracemalloc.start(frames)
    tracer = MemTracer(Path(run_dir) / f"memtrace-{child.replace(' ', '-')}.txt", frames)

    def loop() -> None:
        while True:
            time.sleep(interval)
            try:
                tracer.report()
            except OSError as exc:  # a full or vanished run directory must not take the child down
                log.warning("memtrace report not written: %s", exc)

    threading.Thread(target=loop, name="memtrace", daemon=True).start()
    log.info("memtrace on: a report every %.0f s to %s", interval, tracer.path)
    return tracer
