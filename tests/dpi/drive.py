"""A minimal parser driver for tests: keeps each side's unconsumed bytes, like the engine does."""

from __future__ import annotations

from dataclasses import dataclass, field

from workers.dpi.events import ParserEvent
from workers.dpi.parsers.base import FeedResult, Outcome, Parser, Side
from workers.dpi.settings import DpiSettings

Session = list[tuple[Side, bytes]]


@dataclass
class Run:
    events: list[ParserEvent] = field(default_factory=list)
    outcomes: list[Outcome] = field(default_factory=list)
    gave_up: bool = False

    @property
    def finals(self) -> int:
        return self.outcomes.count(Outcome.FINAL)


def check_result(res: FeedResult, size: int) -> None:
    assert isinstance(res, FeedResult)
    assert 0 <= res.consumed <= size, (res.consumed, size)
    assert res.needed >= 0
    assert isinstance(res.outcome, Outcome)
    assert isinstance(res.events, list)


def drive(parser: Parser, session: Session, piece: int = 0, datagram: bool = False) -> Run:
    """Feed `session` to `parser`, each message cut into pieces of `piece` bytes (0: whole)."""
    run = Run()
    pending = {Side.CLIENT: b"", Side.SERVER: b""}
    for side, data in session:
        step = piece or max(1, len(data))
        for i in range(0, len(data), step):
            buf = pending[side] + data[i : i + step]
            res = parser.feed(side, buf)
            check_result(res, len(buf))
            run.events.extend(res.events)
            run.outcomes.append(res.outcome)
            pending[side] = b"" if datagram else buf[res.consumed :]
            if res.outcome is Outcome.GIVE_UP:
                run.gave_up = True
                return run
    return run


def settings(**overrides: object) -> DpiSettings:
    return DpiSettings(**overrides)  # type: ignore[arg-type]
