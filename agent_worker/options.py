"""Everything one worker process runs with, resolved once at start and then immutable.

Precedence: command line, then environment (typer reads ``SWITCHBOARD_WORKER_*``), then
``switchboard.yaml`` (a pinned pool gives agent and region; ``worker:`` gives capacity, grace and
the remote-kill switch), then the defaults below. Every livekit-agents setting that differs between
its dev and production modes is spelled out here, so nothing is inherited by accident.
"""

from __future__ import annotations

import os
import secrets
import socket
from importlib import metadata
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from shared.config import SwitchboardConfig, WorkerConfig
from shared.messages import Identifier, PoolId, Region
from shared.subjects import pool_agent_name

ExecutorKind = Literal["thread", "process"]


class WorkerOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    agent: Identifier
    region: Region
    pool: PoolId
    capacity: Annotated[int, Field(ge=1, le=1000)]
    worker_id: Identifier
    version: Annotated[str, StringConstraints(max_length=64)]
    drain_grace_s: Annotated[float, Field(ge=0)] = 30.0
    allow_remote_kill: bool = False
    # "module:attr" of the user's agent: an async entrypoint, a livekit-agents AgentServer or
    # WorkerOptions (agent_worker.entrypoints); None runs the default speaking agent.
    entrypoint: str | None = None
    # "module:function" of a livekit-agents prewarm (setup_fnc); replaces the declaration's own.
    prewarm: str | None = None
    # Thread executor by default: on a 2-core host a process per job costs a cold start of
    # seconds and ~10 MB private + a forkserver (see docs and scripts/measure-worker).
    executor: ExecutorKind = "thread"
    # Warm executors kept ready. None: capacity for threads (cheap), 1 for processes.
    idle_executors: Annotated[int, Field(ge=0, le=64)] | None = None
    dev: bool = False
    # Our probes (/healthz, /readyz, /metrics). 0 = an ephemeral port, logged at start; several
    # workers on one host must never share a fixed port.
    health_host: str = "127.0.0.1"
    health_port: Annotated[int, Field(ge=0, le=65535)] = 0
    heartbeat_interval_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    # livekit-agents' per-executor event-loop monitor (agent_worker.loop_monitor): warn threshold
    # in ms, 0 = off; None = off for the thread executor, livekit-agents' default for processes.
    loop_monitor_ms: Annotated[int, Field(ge=0, le=60_000)] | None = None
    # Statuses held while NATS is unreachable; the oldest are dropped beyond this (and logged).
    report_buffer: Annotated[int, Field(ge=1, le=100_000)] = 1000
    use_uvloop: bool = True
    # With per-region state (``state: per_region`` in the config): the worker makes sure of its own
    # region's streams at start (each job reports to the region its dispatch names). None: shared.
    state_region: Region | None = None

    @property
    def agent_name(self) -> str:
        return pool_agent_name(self.agent, self.pool)

    @property
    def warm_executors(self) -> int:
        if self.idle_executors is not None:
            return self.idle_executors
        return self.capacity if self.executor == "thread" else 1


class OptionsError(ValueError):
    """The worker cannot start: a required option is missing or contradicts the config file."""


def resolve_options(
    config: SwitchboardConfig,
    *,
    agent: str | None,
    region: str | None,
    pool: str | None,
    capacity: int | None,
    **overrides: object,
) -> WorkerOptions:
    """Merge command line/env values with the config file into validated options."""
    if not pool:
        raise OptionsError("--pool is required (or SWITCHBOARD_WORKER_POOL)")
    pinned = next((p for p in config.pools if p.id == pool), None)
    if pinned is not None:
        for name, given, known in (("agent", agent, pinned.agent), ("region", region, pinned.region)):
            if given and given != known:
                raise OptionsError(
                    f"--{name} {given!r} contradicts switchboard.yaml, "
                    f"where pool {pool!r} has {name} {known!r}"
                )
        agent, region = agent or pinned.agent, region or pinned.region
    if not agent:
        raise OptionsError(f"--agent is required: pool {pool!r} is not pinned in the config file")
    if not region:
        raise OptionsError(f"--region is required: pool {pool!r} is not pinned in the config file")
    defaults: WorkerConfig = config.worker
    values: dict[str, object] = {
        "agent": agent,
        "region": region,
        "pool": pool,
        "capacity": capacity if capacity is not None else defaults.capacity,
        "drain_grace_s": defaults.drain_grace_s,
        "allow_remote_kill": defaults.allow_remote_kill,
        # Beat as often as the orchestrators of this config expect (they share switchboard.yaml).
        "heartbeat_interval_s": config.orchestrator.heartbeat_interval_s,
        "worker_id": new_worker_id(),
        "version": package_version(),
        "state_region": region if config.state == "per_region" else None,
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return WorkerOptions.model_validate(values)
    except ValueError as exc:
        raise OptionsError(str(exc)) from None


def new_worker_id() -> str:
    """Host and pid say where the worker runs; the random tail tells restarts with a reused pid apart."""
    host = socket.gethostname().split(".")[0][:80] or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(2)}"


def package_version() -> str:
    try:
        return metadata.version("switchboard")
    except metadata.PackageNotFoundError:
        return "0+unknown"
