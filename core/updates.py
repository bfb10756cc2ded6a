"""The contract of a policy-derived update source: what a packet process polls between two batches to
learn that the policy in force gave it something new (compiled threat settings, sensors …). The node host
builds them over the derived document the policy process publishes with each generation of the tables."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Protocol, TypeVar

T_co = TypeVar("T_co", covariant=True)


class Updates(Protocol[T_co]):
    def poll(self) -> T_co | None:
        """The new value once one is ready, else None. Never raises: failures are counted."""
        ...

    def close(self) -> None: ...


# Given the process's counters, an update source (built by the node host, which knows where policies
# come from).
UpdatesFactory = Callable[[Counter[str]], Updates[T_co]]
