"""Build the livekit-agents ``AgentServer`` for one pool worker, every mode-dependent setting explicit.

livekit-agents 1.8.9 picks different defaults in dev and production (load threshold 0.7 vs
unlimited, idle processes min(cores, 4) vs 0, health port 8081 vs random, CPU-based load). We set
each of them from :class:`WorkerOptions`, so ``--dev`` changes only what we say it changes.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any

from livekit.agents import AgentServer, JobContext, JobExecutorType, JobProcess, JobRequest
from livekit.agents.job import JobAcceptArguments

from agent_worker.entrypoints import RequestFnc, resolve_agent
from agent_worker.job import JobRunner
from agent_worker.options import WorkerOptions
from shared.dispatch_metadata import read_dispatch_metadata
from shared.settings import LiveKitSettings
from shared.telemetry import setup_telemetry

# load = active jobs / capacity, so "full" is exactly load 1.0: the worker says unavailable when
# active + reserved jobs reach capacity (livekit-agents' own check), and LiveKit skips full workers.
LOAD_THRESHOLD = 1.0
# A cold job process took ~12 s on 2 cores (livekit-agents' default allows 10 s).
INITIALIZE_TIMEOUT_S = 30.0
SHUTDOWN_TIMEOUT_S = 10.0
JOB_MEMORY_WARN_MB = 500.0
# How long a user's request_fnc may take to say how the agent presents itself. LiveKit gives up on
# a worker's answer after ~3 s; our accept still has to travel after this.
USER_REQUEST_BUDGET_S = 1.0
# Participant attributes the user's request_fnc cannot set: ours and livekit-agents' (lk.agent.name).
RESERVED_ATTRIBUTE_PREFIXES = ("switchboard.", "lk.")

log = logging.getLogger(__name__)


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
    agent participant with its pool, so operators and tests can tell pools apart in a room.

    A user's own ``request_fnc`` is consulted first, within :data:`USER_REQUEST_BUDGET_S`, on a
    ``JobRequest`` of its own whose ``accept``/``reject`` are recorded, not sent: its name, metadata
    and attributes are kept; the identity stays livekit-agents' unique ``agent-<job id>`` (the
    orchestrator removes a replaced agent by identity) and the ``switchboard.*`` attributes stay
    ours. The job is always accepted: where an agent runs is the orchestrator's decision (a
    ``reject``, an error, no answer or a slow answer is logged and the job accepted anyway).
    """

    opts: WorkerOptions
    user_request: RequestFnc | None = None
    _warned: set[str] = field(default_factory=set, compare=False, repr=False)
    _tails: set[asyncio.Task[None]] = field(default_factory=set, compare=False, repr=False)

    async def __call__(self, request: JobRequest) -> None:
        name, metadata, attributes = self.opts.agent, "", {}
        if self.user_request is not None:
            answer = await self._consult(request)
            if answer is not None:
                name = answer.name or name
                metadata = answer.metadata
                attributes = {
                    k: v
                    for k, v in (answer.attributes or {}).items()
                    if not k.startswith(RESERVED_ATTRIBUTE_PREFIXES)
                }
                if answer.identity != f"agent-{request.id}":
                    self._warn_once(
                        "identity",
                        "request_fnc sets identity %r: ignored, each job keeps its own "
                        "(the orchestrator removes a replaced agent by identity)",
                        answer.identity,
                    )
        await request.accept(
            name=name,
            metadata=metadata,
            attributes={
                **attributes,
                "switchboard.pool": self.opts.pool,
                "switchboard.region": self.opts.region,
                "switchboard.worker": self.opts.worker_id,
            },
        )

    async def _consult(self, request: JobRequest) -> JobAcceptArguments | None:
        assert self.user_request is not None
        answers: list[JobAcceptArguments | None] = []
        answered = asyncio.Event()

        async def on_accept(args: JobAcceptArguments) -> None:
            answers.append(args)
            answered.set()

        async def on_reject(_terminate: bool) -> None:
            answers.append(None)
            answered.set()

        room = request.room.name
        # Like the entrypoint, the user's code sees its own metadata, not our reserved part.
        job = type(request.job)()
        job.CopyFrom(request.job)
        job.metadata = read_dispatch_metadata(request.job.metadata).user_metadata
        mine = JobRequest(job=job, on_accept=on_accept, on_reject=on_reject)
        ask = self.user_request

        async def consult() -> None:
            await ask(mine)

        user = asyncio.create_task(consult(), name="user_request_fnc")
        waiter = asyncio.create_task(answered.wait())
        try:
            await asyncio.wait(
                {user, waiter}, timeout=USER_REQUEST_BUDGET_S, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            waiter.cancel()
        if not user.done():
            if not answers:
                user.cancel()
                log.warning(
                    "request_fnc gave no answer within %.1fs for room %s: accepting the job anyway",
                    USER_REQUEST_BUDGET_S,
                    room,
                )
                return None
            # It answered and goes on (livekit-agents would run the rest after the job started).
            self._tails.add(user)
            user.add_done_callback(self._tail_done)
        elif user.cancelled() or user.exception() is not None:
            failure = None if user.cancelled() else user.exception()
            log.error("request_fnc failed for room %s", room, exc_info=failure)
        if not answers:
            log.warning("request_fnc returned without an answer for room %s: accepting the job anyway", room)
            return None
        if answers[0] is None:
            log.warning(
                "request_fnc rejected the job for room %s: accepting it anyway, the orchestrator's rules "
                "decide where an agent runs",
                room,
            )
        return answers[0]

    def _tail_done(self, task: asyncio.Task[None]) -> None:
        self._tails.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("request_fnc failed after answering", exc_info=task.exception())

    def _warn_once(self, key: str, message: str, *args: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(message, *args)


@dataclass(frozen=True)
class PrepareJobProcess:
    """``setup_fnc``: Switchboard's own setup, then the user's prewarm (see :mod:`agent_worker.prewarm`).

    Picklable (the process executor ships it to each job process): it names the user's agent by
    reference and resolves it where it runs.
    """

    entrypoint: str | None = None
    prewarm: str | None = None
    # Thread executor: what the prewarm made once at the worker's start (never pickled: threads
    # share the process). Each job gets its own dict of the shared objects.
    prewarmed: dict[Any, Any] | None = None

    def __call__(self, proc: JobProcess) -> None:
        prepare_job_process(proc)
        if proc.executor_type == JobExecutorType.THREAD:
            proc.userdata.update(self.prewarmed or {})
            return
        prewarm = resolve_agent(self.entrypoint, self.prewarm).prewarm
        if prewarm is not None:
            prewarm(proc)


@dataclass(frozen=True)
class UserSessionEnd:
    """The user's ``on_session_end``, by reference (picklable like :class:`PrepareJobProcess`)."""

    entrypoint: str | None = None

    async def __call__(self, ctx: JobContext) -> None:
        session_end = resolve_agent(self.entrypoint).session_end
        if session_end is not None:
            await session_end(ctx)


def prepare_job_process(proc: JobProcess) -> None:
    """Our own setup: a job *process* needs its own tracer provider; job threads share the worker's."""
    if proc.executor_type == JobExecutorType.PROCESS:
        setup_telemetry("switchboard-worker", {"switchboard.job_process": str(os.getpid())})


def build_agent_server(
    opts: WorkerOptions,
    livekit: LiveKitSettings,
    report_socket: str,
    prewarmed: dict[Any, Any] | None = None,
) -> AgentServer:
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
        setup_fnc=PrepareJobProcess(opts.entrypoint, opts.prewarm, prewarmed),
        log_level="INFO",
    )
    # The user's agent (already checked at start); only its callbacks are taken, never its settings.
    user = resolve_agent(opts.entrypoint, opts.prewarm)
    runner = JobRunner(
        pool=opts.pool, worker=opts.worker_id, report_socket=report_socket, entrypoint=opts.entrypoint
    )
    server.rtc_session(
        runner,
        agent_name=opts.agent_name,
        on_request=AcceptJob(opts, user.request),
        on_session_end=UserSessionEnd(opts.entrypoint) if user.session_end is not None else None,
    )
    return server
