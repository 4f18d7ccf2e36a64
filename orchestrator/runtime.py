"""Start-up plumbing every `switchboard` process shares: settings, config, logging, event loop."""

from __future__ import annotations

import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import typer
import uvloop

from orchestrator.rules import validate_rules
from shared.config import ConfigError, SwitchboardConfig, load_config
from shared.logs import configure_logging
from shared.settings import Settings
from shared.subjects import Cell


def load_settings(config_path: Path | None = None) -> Settings:
    settings = Settings()
    if config_path is not None:
        settings = settings.model_copy(update={"config": config_path})
    configure_logging(settings.log_level, settings.log_format, secrets=settings.secrets())
    return settings


def require_livekit_pair(settings: Settings, needed_for: str) -> None:
    """Exit 2 naming the unset variables when LiveKit's key pair is not given (``needed_for``:
    what this process uses it for). No default pair: livekit-server's dev pair is public."""
    if missing := settings.livekit.missing():
        typer.echo(
            f"switchboard: {' and '.join(missing)} not set: {needed_for}. There is no default key pair "
            "outside `switchboard dev` (livekit-server's dev pair is public); set both",
            err=True,
        )
        raise typer.Exit(code=2)


def load_config_or_exit(settings: Settings) -> SwitchboardConfig:
    """The YAML config, or exit 2 with a message that names the file and the field."""
    try:
        config = load_config(settings.config)
    except ConfigError as err:
        typer.echo(f"switchboard: config error: {err}", err=True)
        if not settings.config.exists():
            typer.echo(
                "  create it (see README, 'Configuration') or point SWITCHBOARD_CONFIG at one", err=True
            )
        raise typer.Exit(code=2) from None
    for warning in validate_rules(config.rules):
        typer.echo(f"switchboard: config warning: {warning}", err=True)
    return config


def cell_or_exit(settings: Settings, config: SwitchboardConfig) -> Cell:
    """The cell (streams, buckets, subjects) this process works on; exit 2 when its region
    (``--region``) is not one the config knows, or when ``state: per_region`` and it has none."""
    known = config.known_regions()
    if settings.region is not None and settings.region not in known:
        typer.echo(
            f"switchboard: region {settings.region!r} (--region / SWITCHBOARD_REGION) is not in the "
            f"config; known: {', '.join(sorted(known))}",
            err=True,
        )
        raise typer.Exit(code=2)
    try:
        return config.cell(settings.region)
    except ConfigError as err:
        typer.echo(f"switchboard: {err}", err=True)
        raise typer.Exit(code=2) from None


def run_async(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop (the orchestrator and ingest are I/O bound; uvloop halves loop overhead)."""
    try:
        uvloop.run(main)
    except KeyboardInterrupt:
        sys.exit(130)
