"""What a reader process is configured with: the sections of the node's configuration it reads."""

from __future__ import annotations

from dataclasses import dataclass, field

from core.config import (
    FailureConfig,
    FlowsConfig,
    NetfilterConfig,
    QueuesConfig,
    RuntimeDirsConfig,
    SupervisorConfig,
    WorkersConfig,
)
from pipeline.guard import GuardSettings


@dataclass(frozen=True, slots=True)
class ReaderConfig:
    queues: QueuesConfig = field(default_factory=QueuesConfig)
    workers: WorkersConfig = field(default_factory=WorkersConfig)
    netfilter: NetfilterConfig = field(default_factory=NetfilterConfig)
    flows: FlowsConfig = field(default_factory=FlowsConfig)
    failure: FailureConfig = field(default_factory=FailureConfig)
    supervisor: SupervisorConfig = field(default_factory=SupervisorConfig)
    paths: RuntimeDirsConfig = field(default_factory=RuntimeDirsConfig)
    guard: GuardSettings = field(default_factory=GuardSettings)
