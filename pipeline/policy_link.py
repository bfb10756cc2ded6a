"""How readers and workers get the policy tables (the read side of the policy process's work)."""

from __future__ import annotations

import logging

from pipeline.config import Config
from policy.lookup import Action, Decision, Mode, PolicyTables, Report

log = logging.getLogger(__name__)


class StartupTables:
    """The configured start-up policy, before any real policy is known: every flow is reported, and
    allowed (monitor) or denied (protect)."""

    def __init__(self, mode: str) -> None:
        self.mode = Mode.PROTECT if mode == "protect" else Mode.MONITOR
        action = Action.DENY if self.mode is Mode.PROTECT else Action.ALLOW
        self._decision = Decision(action, True, 0, self.mode, Report.VIOLATION, "external", "external", 1)

    def generation(self) -> int:
        return 1

    def decide(self, family: int, src: bytes, dst: bytes, proto: int, dport: int) -> Decision:
        return self._decision

    def decide_app(self, family: int, src: bytes, dst: bytes, proto: int, dport: int, app: str) -> Decision:
        return self._decision


def open_tables(config: Config) -> PolicyTables:
    if config.policy.file:
        from policy.tables import load_policy_tables

        return load_policy_tables(config.policy.file)
    log.warning("no policy file configured: applying the start-up policy (%s)", config.policy.startup)
    return StartupTables(config.policy.startup)
