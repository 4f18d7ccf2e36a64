"""`switchboard worker`: one worker process of an agent pool."""

from __future__ import annotations

from typing import Annotated

import typer


def worker(
    agent: Annotated[str | None, typer.Option(help="Logical agent, e.g. ornina-avatar-agent")] = None,
    region: Annotated[str | None, typer.Option(help="Region of this pool, e.g. eu-central")] = None,
    pool: Annotated[str | None, typer.Option(help="Pool id, e.g. eu-central-a")] = None,
    capacity: Annotated[int | None, typer.Option(help="Concurrent jobs per worker process")] = None,
) -> None:
    """Run one worker process of an agent pool (livekit-agents under the pool's agent_name)."""
    typer.echo("switchboard worker: not implemented yet in this build.", err=True)
    raise typer.Exit(code=2)
