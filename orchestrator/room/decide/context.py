"""What every decision may read besides the record and the fact: the time, who decides, the config."""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.scheduler import Topology
from shared.config import OrchestratorConfig, SwitchboardConfig


@dataclass(frozen=True, slots=True)
class Context:
    now: float  # wall clock, unix seconds (deadlines in records are shared between replicas)
    replica: str
    config: SwitchboardConfig
    topology: Topology
    lease_s: float  # how long a claim on an in-flight step holds without renewal

    @property
    def cfg(self) -> OrchestratorConfig:
        return self.config.orchestrator
