"""What the policy process needs from the enforcer's configuration, and what the node host gives it."""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from core.config import (
    ControllerConfig,
    EventsConfig,
    NodeConfig,
    PolicyConfig,
    RuntimeDirsConfig,
    SupervisorConfig,
)
from core.lookup import Mode
from policy.events_relay import DEFAULT_AGGREGATE_WINDOW_S, DEFAULT_BATCH_MAX_EVENTS, DEFAULT_SPOOL_MAX_BYTES
from policy.layout import DEFAULT_REUSE_WAIT, DEFAULT_TABLE_BYTES
from policy.model import PolicySnapshot, parse_mode

# The derived document of a snapshot (`policy.document`) and why a derived document would not compile in
# its consumers ("" if it would): both given by the node host, which knows the consumers.
Derive = Callable[[PolicySnapshot], dict[str, Any]]
Validate = Callable[[dict[str, Any]], str]


class PolicySections(Protocol):
    """The configuration sections the policy process reads (`node.config.Config` has them all)."""

    @property
    def node(self) -> NodeConfig: ...
    @property
    def paths(self) -> RuntimeDirsConfig: ...
    @property
    def policy(self) -> PolicyConfig: ...
    @property
    def events(self) -> EventsConfig: ...
    @property
    def controller(self) -> ControllerConfig: ...
    @property
    def supervisor(self) -> SupervisorConfig: ...


def _no_document(snapshot: PolicySnapshot) -> dict[str, Any]:
    return {}


def _no_problem(document: dict[str, Any]) -> str:
    return ""


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """The policy process's settings (`from_config` in production; tests may set fields directly)."""

    node: str
    run_dir: str
    state_dir: str
    policy_file: str = ""
    startup_mode: Mode = Mode.MONITOR
    join_addr: str = ""
    server_key: str = ""  # file with the controller's CURVE public key
    client_key: str = ""  # file with this enforcer's CURVE secret key (zmq.auth certificate)
    table_bytes: int = DEFAULT_TABLE_BYTES
    reuse_wait_s: float = DEFAULT_REUSE_WAIT
    watch_interval_s: float = 1.0  # standalone: how often the policy file is checked for changes
    aggregate_window_s: float = DEFAULT_AGGREGATE_WINDOW_S
    batch_max_events: int = DEFAULT_BATCH_MAX_EVENTS
    spool_max_bytes: int = DEFAULT_SPOOL_MAX_BYTES
    event_log: str = ""  # standalone: JSON-lines file ("-": stdout; empty: state_dir/events.jsonl)
    heartbeat_s: float = 0.2  # to the supervisor
    controller_heartbeat_s: float = 2.0
    controller_timeout_s: float = 6.0  # controller silent this long: reconnect
    reconnect_max_s: float = 10.0  # reconnect backoff ceiling
    inflight_batches: int = 8  # event batches sent and not yet acknowledged
    # Everything of a policy its consumers compile beyond the tables, published with them (node host).
    derive: Derive = field(default=_no_document)
    # Checks of that document: a policy whose document would not compile is rejected whole, never half
    # applied (node host).
    validate: Validate = field(default=_no_problem)

    @classmethod
    def from_config(
        cls,
        config: PolicySections,
        node: str | None = None,
        derive: Derive | None = None,
        validate: Validate | None = None,
    ) -> ServiceSettings:
        events, controller = config.events, config.controller
        return cls(
            node=node or config.node.name or socket.gethostname(),
            run_dir=config.paths.run_dir,
            state_dir=config.paths.state_dir,
            policy_file=config.policy.file,
            startup_mode=parse_mode(config.policy.startup),
            join_addr=controller.join_addr,
            server_key=controller.server_key,
            client_key=controller.client_key,
            table_bytes=config.policy.table_bytes,
            reuse_wait_s=config.policy.reuse_wait_ms / 1000.0,
            watch_interval_s=config.policy.watch_interval_ms / 1000.0,
            aggregate_window_s=events.aggregate_window_ms / 1000.0,
            batch_max_events=events.batch_max,
            spool_max_bytes=events.spool_max_bytes,
            event_log=events.log_file,
            heartbeat_s=config.supervisor.heartbeat_interval_ms / 1000.0,
            controller_heartbeat_s=float(controller.heartbeat_s),
            controller_timeout_s=float(controller.timeout_s),
            reconnect_max_s=float(controller.reconnect_max_s),
            inflight_batches=controller.inflight_batches,
            derive=derive or _no_document,
            validate=validate or _no_problem,
        )
