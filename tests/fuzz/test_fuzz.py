"""Bounded coverage-guided fuzzing in CI: every target a few thousand inputs (the nightly run does 10^6:
`scripts/fuzz.py all`); zero crashes, memory bounded. Plus the harness itself: a broken parser or a
decoder raising an undocumented error is a crash, not a pass."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.messages import MessageError
from tests.fuzz import targets as T
from workers.dpi.parsers.base import FeedResult, Outcome, ParserSpec, Side, keep

ROOT = Path(__file__).resolve().parents[2]
CI_RUNS = 2000  # per target: about 30 s for all of them on an idle 2-core machine
CI_RSS_MB = 512


def test_every_target_runs_clean_under_the_fuzzer(tmp_path: Path) -> None:
    cmd = [sys.executable, str(ROOT / "scripts" / "fuzz.py"), "all", "--runs", str(CI_RUNS),
           "--rss-mb", str(CI_RSS_MB), "--artifacts", str(tmp_path), "--json"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert {r["target"] for r in results} == set(T.all_targets()), proc.stderr[-2000:]
    crashed = [f"{r['target']}: {r['detail']}" for r in results if not r["ok"]]
    assert not crashed, "\n\n".join(crashed)
    assert all(r["runs"] == CI_RUNS for r in results), [(r["target"], r["runs"]) for r in results]
    assert all(0 < r["peak_rss_mb"] < CI_RSS_MB for r in results)
    assert proc.returncode == 0
    assert not list(tmp_path.glob("*crash-*")) and not list(tmp_path.glob("*oom-*"))


def test_unknown_target_is_an_error() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "fuzz.py"), "nope"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)  # fmt: skip
    assert proc.returncode == 2 and "unknown target 'nope'" in proc.stderr


def test_seeds_replay_cleanly_and_reach_the_body_decoders() -> None:
    targets = T.all_targets()
    for name, target in targets.items():
        seeds = T.seeds(name)
        assert seeds or name.startswith("parser.echo"), f"{name} has no seed"
        for seed in seeds:
            target.run(seed)
    # A seed of the message decoder is a valid message, not rejected at the envelope.
    frame = T.seeds("messages")[3][1:]
    from core import messages as M

    assert isinstance(M.decode(frame), M.Heartbeat)


class _Raises:
    def feed(self, side: Side, data: bytes) -> FeedResult:
        if b"boom" in data:
            raise IndexError("parser bug")
        return keep()


class _OverConsumes:
    def feed(self, side: Side, data: bytes) -> FeedResult:
        return FeedResult(len(data) + 1, 0, [], Outcome.KEEP)


def _spec(factory: object) -> ParserSpec:
    return ParserSpec("Test", "tcp", (1,), "a broken parser", lambda side, head: True, factory)  # type: ignore[arg-type]


def test_a_parser_that_raises_or_breaks_the_contract_is_a_crash() -> None:
    run = T.parser_target(_spec(lambda s: _Raises()))
    run(T.session_input([(Side.CLIENT, b"harmless")]))
    with pytest.raises(IndexError):
        run(T.session_input([(Side.CLIENT, b"har"), (Side.CLIENT, b"mless boom")]))
    with pytest.raises(AssertionError, match="consumed"):
        T.parser_target(_spec(lambda s: _OverConsumes()))(T.session_input([(Side.SERVER, b"x")]))


def test_a_decoder_error_other_than_the_documented_one_is_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    from core import control

    def undocumented(frames: list[bytes]) -> None:
        raise KeyError("decoder bug")

    def documented(frames: list[bytes]) -> None:
        raise MessageError("control.malformed", "bad")

    monkeypatch.setattr(control, "decode_control", documented)
    T.fuzz_control(b"\x00\x00\x01x")
    monkeypatch.setattr(control, "decode_control", undocumented)
    with pytest.raises(KeyError):
        T.fuzz_control(b"\x00\x00\x01x")
