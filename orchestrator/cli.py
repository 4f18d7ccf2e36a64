"""`switchboard` — the one command: run the parts, and operate them.

Each subcommand is a thin shell over a module that does the work, so the same code runs from
the CLI, from `switchboard dev` and from the tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from agent_worker.cli import worker as worker_command

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


def _not_yet(what: str) -> None:
    typer.echo(f"switchboard {what}: not implemented yet in this build.", err=True)
    raise typer.Exit(code=2)


ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="switchboard.yaml (default: $SWITCHBOARD_CONFIG)"),
]


@app.command()
def orchestrator(config: ConfigOption = None) -> None:
    """Run one orchestrator replica: consume room events, schedule, dispatch, track, fail over."""
    from orchestrator.runtime import load_config_or_exit, load_settings, run_async
    from orchestrator.service import OrchestratorService, run_until_signalled
    from shared.telemetry import setup_telemetry

    settings = load_settings(config)
    cfg = load_config_or_exit(settings)
    telemetry = setup_telemetry("switchboard-orchestrator")
    try:
        run_async(run_until_signalled(OrchestratorService(settings, cfg, prometheus=telemetry.prometheus)))
    finally:
        telemetry.shutdown()  # flush spans on every exit, SIGTERM included


@app.command()
def ingest() -> None:
    """Run the LiveKit webhook endpoint that turns room_started/room_finished into NATS events."""
    _not_yet("ingest")


@app.command()
def dev() -> None:
    """Start everything locally (NATS, LiveKit, ingest, orchestrator, two regional pools) and demo rooms."""
    _not_yet("dev")


@app.command()
def status() -> None:
    """Pools with load bars and rooms by state."""
    _not_yet("status")


@app.command()
def explain(room: str) -> None:
    """Print a room's timeline: rule, candidates, scores, rejections, attempts, joined, voice."""
    _not_yet("explain")


@app.command()
def dispatch(room: str) -> None:
    """Manually dispatch an agent to ROOM through the normal path (scheduled, traced, tracked)."""
    _not_yet("dispatch")


@app.command()
def drain(pool: str) -> None:
    """Ask every worker of POOL to drain; the orchestrator stops scheduling onto it."""
    _not_yet("drain")


@app.command()
def doctor() -> None:
    """Check the whole chain (NATS, LiveKit credentials, pools, rules, OTLP) and say what is wrong."""
    _not_yet("doctor")


@drill_app.command("kill-pool")
def drill_kill_pool(pool: str) -> None:
    """Kill POOL and report how long every affected room took to speak again."""
    _not_yet("drill kill-pool")


def main() -> None:
    app()
