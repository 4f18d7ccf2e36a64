"""`switchboard worker`: one worker process of an agent pool."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from agent_worker.options import ExecutorKind, WorkerOptions
    from shared.config import SwitchboardConfig
    from shared.settings import Settings

log = logging.getLogger(__name__)
_ENV = "SWITCHBOARD_WORKER_"


def worker(
    agent: Annotated[
        str | None, typer.Option(envvar=_ENV + "AGENT", help="Logical agent, e.g. ornina-avatar-agent")
    ] = None,
    region: Annotated[
        str | None, typer.Option(envvar=_ENV + "REGION", help="Region of this pool, e.g. eu-central")
    ] = None,
    pool: Annotated[str | None, typer.Option(envvar=_ENV + "POOL", help="Pool id, e.g. eu-central-a")] = None,
    capacity: Annotated[
        int | None, typer.Option(envvar=_ENV + "CAPACITY", help="Concurrent jobs per worker process")
    ] = None,
    entrypoint: Annotated[
        str | None,
        typer.Option(
            envvar=_ENV + "ENTRYPOINT",
            help="Your livekit-agents agent: package.module:attr naming an async entrypoint, an "
            "AgentServer or a WorkerOptions (default: the speaking agent)",
        ),
    ] = None,
    prewarm: Annotated[
        str | None,
        typer.Option(
            envvar=_ENV + "PREWARM",
            help="Your livekit-agents prewarm (setup_fnc), package.module:function, filling proc.userdata",
        ),
    ] = None,
    executor: Annotated[
        str, typer.Option(envvar=_ENV + "EXECUTOR", help="thread (default) or process: how jobs run")
    ] = "thread",
    idle_executors: Annotated[
        int | None, typer.Option(envvar=_ENV + "IDLE_EXECUTORS", help="Warm executors kept ready")
    ] = None,
    drain_grace: Annotated[
        float | None,
        typer.Option(envvar=_ENV + "DRAIN_GRACE_S", help="Seconds running jobs get to finish on SIGTERM"),
    ] = None,
    health_host: Annotated[str, typer.Option(envvar=_ENV + "HEALTH_HOST")] = "127.0.0.1",
    health_port: Annotated[
        int,
        typer.Option(envvar=_ENV + "HEALTH_PORT", help="/healthz /readyz /metrics; 0 = a free port (logged)"),
    ] = 0,
    heartbeat_interval: Annotated[
        float | None,
        typer.Option(
            envvar=_ENV + "HEARTBEAT_INTERVAL_S",
            help="Seconds between heartbeats (default: orchestrator.heartbeat_interval_s of the config)",
        ),
    ] = None,
    loop_monitor_ms: Annotated[
        int | None,
        typer.Option(
            envvar=_ENV + "LOOP_MONITOR_MS",
            help="livekit-agents' event-loop monitor warn threshold; 0 = off (default for threads)",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(help="switchboard.yaml; default $SWITCHBOARD_CONFIG or ./switchboard.yaml, if present"),
    ] = None,
    dev: Annotated[bool, typer.Option("--dev", help="livekit-agents dev mode: no warm executors")] = False,
    uvloop: Annotated[bool, typer.Option(envvar=_ENV + "UVLOOP", help="Run on uvloop")] = True,
) -> None:
    """Run one worker process of an agent pool (livekit-agents under the pool's agent_name)."""
    # Imported here, not above: every other `switchboard` command (`--help`, `status`) imports this
    # module to declare the options, and must not pay for pydantic models or livekit-agents.
    from agent_worker.entrypoints import EntrypointError, describe, resolve_agent
    from agent_worker.options import OptionsError, resolve_options
    from agent_worker.prewarm import prewarm_at_start
    from shared.config import ConfigError
    from shared.logs import configure_logging, log_context
    from shared.settings import Settings

    settings = Settings()
    configure_logging(settings.log_level, settings.log_format, settings.secrets())
    if executor not in ("thread", "process"):
        _fail(f"--executor must be 'thread' or 'process', not {executor!r}")
    executor_kind: ExecutorKind = "thread" if executor == "thread" else "process"
    try:
        opts = resolve_options(
            _read_config(config or settings.config, explicit=config is not None),
            agent=agent,
            region=region,
            pool=pool,
            capacity=capacity,
            entrypoint=entrypoint,
            prewarm=prewarm,
            executor=executor_kind,
            idle_executors=idle_executors,
            drain_grace_s=drain_grace,
            health_host=health_host,
            health_port=health_port,
            dev=dev,
            use_uvloop=uvloop,
            heartbeat_interval_s=heartbeat_interval,
            loop_monitor_ms=loop_monitor_ms,
        )
        # Fail at start, not on the first dispatch: load the user's agent and run its prewarm.
        level, line = describe(resolve_agent(opts.entrypoint, opts.prewarm), opts.agent_name, opts.executor)
        log.log(level, line)
        prewarmed = prewarm_at_start(opts.entrypoint, opts.prewarm, opts.executor)
    except (OptionsError, ConfigError, EntrypointError) as exc:
        _fail(str(exc))
    if missing := settings.livekit.missing():
        _fail(
            f"{' and '.join(missing)} not set: the worker registers with LiveKit with it. There is no "
            "default key pair outside `switchboard dev` (livekit-server's dev pair is public); set both"
        )
    with log_context(pool=opts.pool, worker=opts.worker_id):
        _run(opts, lambda: _main(opts, settings, prewarmed))


def _read_config(path: Path, *, explicit: bool) -> SwitchboardConfig:
    from shared.config import SwitchboardConfig, load_config

    if not path.exists() and not explicit:
        log.info("no config file at %s: options come from the command line and environment", path)
        return SwitchboardConfig()
    return load_config(path)


async def _main(opts: WorkerOptions, settings: Settings, prewarmed: dict[Any, Any] | None) -> None:
    from agent_worker.runtime import run_worker  # livekit-agents is heavy: import after validation

    await run_worker(opts, settings, prewarmed)


def _run(opts: WorkerOptions, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    # uvloop runs the worker's loop (livekit rtc, aiohttp and nats-py all work on it); each job
    # thread gets the loop livekit-agents creates for it.
    factory = None
    if opts.use_uvloop:
        import uvloop

        factory = uvloop.new_event_loop
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(main())
    except* Exception as group:
        for exc in group.exceptions:
            log.error("worker failed: %s", exc, exc_info=exc)
        raise typer.Exit(code=1) from None


def _fail(message: str) -> None:
    typer.echo(f"switchboard worker: {message}", err=True)
    raise typer.Exit(code=2)
