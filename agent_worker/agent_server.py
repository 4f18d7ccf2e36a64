"""Build the livekit-agents ``AgentServer`` for one pool worker, every mode-dependent setting explicit.

livekit-agents 1.8.9 picks different defaults in dev and production (load threshold 0.7 vs
unlimited, idle processes min(cores, 4) vs 0, health port 8081 vs random, CPU-based load). We set
each of them from :class:`WorkerOptions`, so ``--dev`` changes only what we say it changes.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from livekit.agents import AgentServer, JobExecutorType, JobProcess, JobRequest

from agent_worker.job import JobRunner
from agent_worker.options import WorkerOptions
from shared.settings import LiveKitSettings
from shared.telemetry import setup_telemetry

# load = active jobs / capacity, so "full" is exactly load 1.0: the worker says unavailable when
# active + reserved jobs reach capacity (livekit-agents' own check), and LiveKit skips full workers.
LOAD_THRESHOLD = 1.0
# A cold job process took ~12 s on 2 cores (livekit-agents' default allows 10 s).
INITIALIZE_TIMEOUT_S = 30.0
SHUTDOWN_TIMEOUT_S = 10.0
JOB_MEMORY_WARN_MB = 500.0


class AgentNameOverrideError(RuntimeError):
    pass


@dataclass(frozen=True)
class LoadByJobs:
    """livekit-agents' ``load_fnc``: a job count, not CPU (CPU crosses thresholds by accident)."""

    capacity: int

    def __call__(self, server: AgentServer) -> float:
        return min(1.0, len(server.active_jobs) / self.capacity)


@dataclass(frozen=True)
class AcceptJob:
    """``request_fnc``: accept at once (the server gives up on an answer after ~3 s) and label the
    agent participant with its pool, so operators and tests can tell pools apart in a room."""

    opts: WorkerOptions

    async def __call__(self, request: JobRequest) -> None:
        await request.accept(
            name=self.opts.agent,
            attributes={
                "switchboard.pool": self.opts.pool,
                "switchboard.region": self.opts.region,
                "switchboard.worker": self.opts.worker_id,
            },
        )


def prepare_job_process(proc: JobProcess) -> None:
    """``setup_fnc``: a job *process* needs its own tracer provider; job threads share the worker's."""
    if proc.executor_type == JobExecutorType.PROCESS:
        setup_telemetry("switchboard-worker", {"switchboard.job_process": str(os.getpid())})


def build_agent_server(opts: WorkerOptions, livekit: LiveKitSettings, report_socket: str) -> AgentServer:
    override = os.environ.get("LIVEKIT_AGENT_NAME_OVERRIDE")
    if override and override != opts.agent_name:
        # livekit-agents would silently register under that name instead of the pool's.
        raise AgentNameOverrideError(
            f"LIVEKIT_AGENT_NAME_OVERRIDE={override!r} would replace the pool's agent_name "
            f"{opts.agent_name!r}; unset it"
        )
    server = AgentServer(
        job_executor_type=JobExecutorType.THREAD if opts.executor == "thread" else JobExecutorType.PROCESS,
        load_threshold=LOAD_THRESHOLD,
        load_fnc=LoadByJobs(opts.capacity),
        num_idle_processes=0 if opts.dev and opts.idle_executors is None else opts.warm_executors,
        drain_timeout=math.ceil(opts.drain_grace_s),
        shutdown_process_timeout=SHUTDOWN_TIMEOUT_S,
        initialize_process_timeout=INITIALIZE_TIMEOUT_S,
        job_memory_warn_mb=JOB_MEMORY_WARN_MB,
        ws_url=livekit.url,
        api_key=livekit.api_key,
        api_secret=livekit.api_secret.get_secret_value(),
        # livekit-agents' own health server: loopback and an ephemeral port, so workers on one
        # host never collide on 8081. Supervisors probe ours (agent_worker.health) instead.
        host="127.0.0.1",
        port=0,
        setup_fnc=prepare_job_process,
        log_level="INFO",
    )
    runner = JobRunner(
        pool=opts.pool, worker=opts.worker_id, report_socket=report_socket, entrypoint=opts.entrypoint
    )
    server.rtc_session(runner, agent_name=opts.agent_name, on_request=AcceptJob(opts))
    return server
