"""`switchboard` — the one command: run the parts, and operate them.

The composition root: the only module that sees the orchestrator, the worker runtime and the dev
stack together. Each subcommand is a thin shell over a module that does the work, so the same code
runs from the CLI, from `switchboard dev` and from the tests, and each imports what it needs when it
runs: `status` must not pay for livekit-agents.
"""

from __future__ import annotations

import functools
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

# Only the option declarations: the worker's runtime is imported when `worker` runs.
from agent_worker.cli import worker as worker_command

if TYPE_CHECKING:
    from shared.config import SwitchboardConfig
    from shared.settings import Settings

app = typer.Typer(
    name="switchboard",
    help="Dispatch LiveKit agents across regional worker pools, prove they joined and speak, explain why.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
drill_app = typer.Typer(help="Failover drills.", no_args_is_help=True)
app.add_typer(drill_app, name="drill")
app.command("worker")(worker_command)


ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="switchboard.yaml (default: $SWITCHBOARD_CONFIG)"),
]


RegionOption = Annotated[
    str | None,
    typer.Option(
        "--region",
        help="This process's region, in a multi-region deployment (pools elsewhere are judged across "
        "NATS gateways; with `state: per_region`, the region whose rooms it works on); default: "
        "$SWITCHBOARD_REGION, else one NATS cluster serves every pool",
    ),
]


def _with_region(settings: Settings, region: str | None) -> Settings:
    return settings if region is None else settings.model_copy(update={"region": region})


@app.command()
def orchestrator(config: ConfigOption = None, region: RegionOption = None) -> None:
    """Run one orchestrator replica: consume room events, schedule, dispatch, track, fail over."""
    from orchestrator.runtime import (
        cell_or_exit,
        load_config_or_exit,
        load_settings,
        require_livekit_pair,
        run_async,
    )
    from orchestrator.service import OrchestratorService, run_until_signalled
    from shared.telemetry import setup_telemetry

    settings = _with_region(load_settings(config), region)
    cfg = load_config_or_exit(settings)
    cell_or_exit(settings, cfg)
    require_livekit_pair(settings, "the orchestrator dispatches agents with it")
    telemetry = setup_telemetry("switchboard-orchestrator")
    service = OrchestratorService(settings, cfg, prometheus=telemetry.prometheus)
    try:
        run_async(run_until_signalled(service))
    finally:
        telemetry.shutdown()  # flush spans on every exit, SIGTERM included
    if service.exit_code:  # stepped back: LiveKit stopped accepting its credentials
        raise typer.Exit(code=service.exit_code)


TraceUiOption = Annotated[
    str | None,
    typer.Option(
        "--trace-ui-url",
        envvar="SWITCHBOARD_TRACE_UI_URL",
        help="Trace UI base URL, e.g. http://localhost:16686 (Jaeger); default: trace_ui_url in the config",
    ),
]


def _settings_and_config(config: Path | None) -> tuple[Settings, SwitchboardConfig]:
    """Settings from the environment; the config file, or its defaults when there is none (the
    operator commands work without one), exiting 2 when it exists but is invalid."""
    from orchestrator.runtime import load_config_or_exit, load_settings
    from shared.config import SwitchboardConfig

    settings = load_settings(config)
    if not settings.config.exists():
        typer.echo(f"switchboard: no config file at {settings.config}; using defaults (no rules)", err=True)
        return settings, SwitchboardConfig()
    return settings, load_config_or_exit(settings)


def _run(main: Coroutine[Any, Any, int]) -> None:
    from orchestrator.runtime import run_async

    code = [0]

    async def wrapper() -> None:
        code[0] = await main

    run_async(wrapper())
    raise typer.Exit(code=code[0])


@app.command()
def ingest(
    config: ConfigOption = None,
    host: Annotated[
        str | None, typer.Option(help="Bind address (default: ingest.host in the config, 127.0.0.1)")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: ingest.port in the config, 8090)")] = None,
    region: RegionOption = None,
) -> None:
    """Run the LiveKit webhook endpoint that turns room_started/room_finished into NATS events."""
    from orchestrator.ingest.server import IngestServer, run_until_signalled
    from orchestrator.runtime import (
        cell_or_exit,
        load_config_or_exit,
        load_settings,
        require_livekit_pair,
        run_async,
    )
    from shared.config import SwitchboardConfig
    from shared.telemetry import setup_telemetry

    settings = _with_region(load_settings(config), region)
    cfg = load_config_or_exit(settings) if settings.config.exists() else SwitchboardConfig()
    cell_or_exit(settings, cfg)
    require_livekit_pair(
        settings,
        "the ingest verifies LiveKit's webhooks with it (the pair of livekit-server's webhook.api_key "
        "is enough)",
    )
    telemetry = setup_telemetry("switchboard-ingest")
    try:
        server = IngestServer(settings, cfg, host=host, port=port, prometheus=telemetry.prometheus)
        run_async(run_until_signalled(server))
    finally:
        telemetry.shutdown()


@app.command()
def dev(
    data_dir: Annotated[
        Path | None, typer.Option(help="Where data, logs and the generated config go (default: a temp dir)")
    ] = None,
    rooms: Annotated[int, typer.Option(min=1, max=20, help="Demo rooms to create")] = 3,
    capacity: Annotated[int, typer.Option(min=1, max=50, help="Jobs per worker process")] = 4,
    exit_when_speaking: Annotated[
        bool, typer.Option(help="Stop once every demo room speaks (smoke test) instead of waiting for Ctrl-C")
    ] = False,
    trace_ui_url: TraceUiOption = None,
    jaeger: Annotated[
        bool, typer.Option(help="Start Jaeger (if built) and export every process's traces")
    ] = True,
) -> None:
    """Start everything locally (NATS, LiveKit, ingest, orchestrator, two regional pools) and demo rooms."""
    import logging
    import tempfile

    from rich.console import Console

    from devstack.dev import DevOptions, run_dev
    from shared.logs import configure_logging

    configure_logging("WARNING", "text")
    # The status table is the console; our own NATS client's connection notices would only clutter it.
    logging.getLogger("shared.bus").setLevel(logging.ERROR)
    directory = data_dir or Path(tempfile.mkdtemp(prefix="switchboard-dev-"))
    options = DevOptions(directory.resolve(), rooms, capacity, trace_ui_url, exit_when_speaking, jaeger)
    _run(run_dev(options, Console(highlight=False)))


@app.command()
def status(
    config: ConfigOption = None,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh live until Ctrl-C")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output")] = False,
) -> None:
    """Pools (from heartbeats) with load bars, and rooms by state (from the KV records)."""
    from orchestrator.ops import runners

    settings, cfg = _settings_and_config(config)
    _run(runners.status(settings, cfg, as_json=as_json, watch=watch))


@app.command()
def explain(room: str, config: ConfigOption = None, trace_ui_url: TraceUiOption = None) -> None:
    """Print a room's timeline: rule, candidates, scores, rejections, attempts, joined, voice."""
    from orchestrator.ops import runners

    settings, cfg = _settings_and_config(config)
    _run(runners.explain(settings, cfg, room, trace_ui_url))


@app.command()
def dispatch(
    room: str,
    agent: Annotated[str | None, typer.Option(help="Agent instead of the matching rule's")] = None,
    pool: Annotated[str | None, typer.Option(help="Pool instead of the scheduler's choice")] = None,
    region: Annotated[str | None, typer.Option(help="Home region hint for the scheduler")] = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait for the orchestrator to act")] = 15.0,
    config: ConfigOption = None,
) -> None:
    """Manually dispatch an agent to ROOM through the normal path (scheduled, traced, tracked).

    LiveKit and NATS credentials come from the environment only (LIVEKIT_API_KEY, ...).
    """
    from orchestrator.ops import runners

    settings, cfg = _settings_and_config(config)
    _run(runners.dispatch(settings, cfg, room, agent, pool, region, wait))


@app.command()
def drain(pool: str, config: ConfigOption = None) -> None:
    """Ask every worker of POOL to drain; the orchestrator stops scheduling onto it."""
    from orchestrator.ops import runners

    settings, cfg = _settings_and_config(config)
    _run(runners.drain(settings, cfg, pool))


@app.command()
def doctor(config: ConfigOption = None) -> None:
    """Check the whole chain (NATS, LiveKit credentials, pools, rules, OTLP) and say what is wrong."""
    from orchestrator.ops import runners
    from orchestrator.runtime import load_settings
    from shared.config import ConfigError, load_config

    settings = load_settings(config)
    cfg: SwitchboardConfig | None = None
    error: str | None = None
    try:
        cfg = load_config(settings.config)
    except ConfigError as err:
        error = str(err)
    _run(runners.doctor(settings, cfg, error))


@app.command("nats-hash")
def nats_hash(
    cost: Annotated[int, typer.Option(min=4, max=31, help="bcrypt cost")] = 11,
) -> None:
    """Print the $2a$ bcrypt hash of a password (read on stdin, asked for on a terminal) for the NATS
    servers' SWITCHBOARD_NATS_<USER>_PASSWORD_HASH (deploy/nats/accounts.conf)."""
    import getpass
    import sys

    from shared.nats_credentials import CredentialError, hash_password

    if sys.stdin.isatty():
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            typer.echo("switchboard nats-hash: the two passwords differ", err=True)
            raise typer.Exit(code=1)
    else:
        password = sys.stdin.read().removesuffix("\n").removesuffix("\r")
    try:
        typer.echo(hash_password(password, cost))
    except CredentialError as err:
        typer.echo(f"switchboard nats-hash: {err}", err=True)
        raise typer.Exit(code=1) from None


@drill_app.command("kill-pool")
def drill_kill_pool(
    pool: str,
    dev_state: Annotated[
        Path | None,
        typer.Option(
            envvar="SWITCHBOARD_DEV_STATE",
            help="`switchboard dev` state file (or its data dir): kill the pool's processes directly. "
            "Without it, the pool's workers are told to exit over NATS (needs worker.allow_remote_kill).",
        ),
    ] = None,
    deadline: Annotated[float, typer.Option(help="Seconds each room has to speak again")] = 60.0,
    config: ConfigOption = None,
) -> None:
    """Kill POOL and report how long every affected room took to speak again."""
    from orchestrator.ops import runners

    settings, _ = _settings_and_config(config)
    kill = None
    if dev_state is not None:
        from devstack.dev_state import kill_dev_pool, read_state

        state = read_state(dev_state)
        kill = functools.partial(kill_dev_pool, state)
    _run(runners.drill_kill_pool(settings, pool, kill, deadline))


def main() -> None:
    app()
