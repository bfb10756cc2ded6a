"""What a worker process is configured with: the sections of the node's configuration it reads."""

from __future__ import annotations

from dataclasses import dataclass, field

from core.config import QueuesConfig, RuntimeDirsConfig, SupervisorConfig, WorkersConfig
from workers.detect.engine import DetectLimits
from workers.dpi.settings import DpiSettings


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    queues: QueuesConfig = field(default_factory=QueuesConfig)
    workers: WorkersConfig = field(default_factory=WorkersConfig)
    supervisor: SupervisorConfig = field(default_factory=SupervisorConfig)
    paths: RuntimeDirsConfig = field(default_factory=RuntimeDirsConfig)
    dpi: DpiSettings = field(default_factory=DpiSettings)
    detect: DetectLimits = field(default_factory=DetectLimits)
