"""The parser contract every protocol module follows.

A parser is a per-flow state machine for one protocol. It sees the reassembled byte stream of each side
(`Side.CLIENT`, `Side.SERVER`) and never does I/O:

- `probe(side, head) -> bool` (a module-level pure function): could `head`, the first bytes seen on
  `side`, start this protocol? False disproves it cheaply; True only means "worth hiring".
- `Parser.feed(side, data) -> FeedResult`: `data` is everything not yet consumed on that side (the
  driver keeps the unconsumed tail and re-presents it with the next bytes). The result says how many
  bytes were consumed, how many more are needed before another call is useful (0: any), the events
  seen, and an outcome:
    KEEP     still plausible (or identified and still inspecting); feed me more,
    FINAL    the protocol is identified (returned once, on the call that proved it; afterwards KEEP),
    GIVE_UP  these bytes disprove the protocol, or the parser can follow the stream no further.
  Truncation is never an error: a partial message is consumed 0 with `needed` set. A parser must never
  raise on any input (hypothesis checks this); the driver still catches an exception once, records
  `dpi.parser.exception` and gives the parser up.
- `Parser.stream_ended(side) -> list[ParserEvent]` (optional): the active parser is told when a side of
  a TCP connection closes (FIN) or the connection is reset, for what only the end completes (SSH: the
  last refusal of a password guesser).

Candidates compete for a new flow: every parser whose transport matches and whose `probe` is true is
hired; the first to return FINAL names the application and the others are fired.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from workers.dpi.events import ParserEvent
from workers.dpi.settings import DpiSettings


class Side(enum.IntEnum):
    CLIENT = 0  # the side that opened the connection (or sent the first datagram)
    SERVER = 1


class Outcome(enum.IntEnum):
    KEEP = 0
    FINAL = 1
    GIVE_UP = 2


class FeedResult(NamedTuple):
    consumed: int
    needed: int
    events: list[ParserEvent]
    outcome: Outcome


NO_EVENTS: list[ParserEvent] = []


def keep(consumed: int = 0, needed: int = 0, events: list[ParserEvent] | None = None) -> FeedResult:
    return FeedResult(consumed, needed, events if events is not None else [], Outcome.KEEP)


def final(consumed: int, events: list[ParserEvent] | None = None, needed: int = 0) -> FeedResult:
    return FeedResult(consumed, needed, events if events is not None else [], Outcome.FINAL)


def give_up(consumed: int = 0, events: list[ParserEvent] | None = None) -> FeedResult:
    return FeedResult(consumed, 0, events if events is not None else [], Outcome.GIVE_UP)


class Parser(Protocol):
    def feed(self, side: Side, data: bytes) -> FeedResult: ...


Probe = Callable[[Side, bytes], bool]
Factory = Callable[[DpiSettings], Parser]


@dataclass(frozen=True, slots=True)
class ParserSpec:
    """One registry entry (see `workers.dpi.registry.PARSERS`)."""

    name: str  # the application name policy rules use ("HTTP", "MySQL" …)
    transport: str  # "tcp" | "udp"
    ports: tuple[int, ...]  # default server ports: a hint for direction guessing and candidate order
    description: str
    probe: Probe
    factory: Factory
    port_only: bool = False  # hired only on its default ports (Echo: no payload can tell it in advance)
