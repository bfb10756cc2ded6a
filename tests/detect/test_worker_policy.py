"""A starting worker takes the policy in force before it opens its sockets (no flow meets the catalogue's
defaults), bounded by FIRST_POLICY_WAIT_S."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from workers import worker as W


class SlowCompile:
    """An update source whose result is ready on the `ready_at`-th poll (None: never)."""

    def __init__(self, ready_at: int | None, value: Any = "policy-7") -> None:
        self.ready_at, self.value, self.polls = ready_at, value, 0

    def poll(self) -> Any:
        self.polls += 1
        return self.value if self.ready_at is not None and self.polls >= self.ready_at else None

    def close(self) -> None:
        pass


class Engine:
    def __init__(self) -> None:
        self.policies: list[tuple[Any, Any]] = []

    def set_policy(self, policy: Any, tables: Any) -> None:
        self.policies.append((policy, tables))


def test_first_policy_is_set_before_the_worker_serves() -> None:
    engine, counters = Engine(), Counter[str]()
    W.ThreatPolicyUpdates(SlowCompile(ready_at=4)).first(engine, "tables", counters)  # type: ignore[arg-type]
    assert engine.policies == [("policy-7", "tables")]
    assert counters["threats.policy_late"] == 0


def test_a_policy_that_never_compiles_is_counted_late_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(W, "FIRST_POLICY_WAIT_S", 0.05)
    engine, counters = Engine(), Counter[str]()
    source = SlowCompile(ready_at=None)
    W.ThreatPolicyUpdates(source).first(engine, "tables", counters)  # type: ignore[arg-type]
    assert engine.policies == [] and counters["threats.policy_late"] == 1
    assert source.polls > 1  # it kept asking until the bound
