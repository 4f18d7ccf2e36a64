"""A short-lived NATS connection for one operator command."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from nats.aio.client import Client as NATS

from shared import bus
from shared.settings import Settings


@contextlib.asynccontextmanager
async def nats_session(settings: Settings, name: str, attempts: int = 2) -> AsyncIterator[NATS]:
    """Connect (at most ``attempts`` tries: an operator is waiting), yield, close.

    Raises :class:`shared.bus.NatsUnavailableError` with the URL and the cause.
    """
    nats = settings.nats.model_copy(
        update={"startup_attempts": min(attempts, settings.nats.startup_attempts)}
    )
    nc = await bus.connect(nats, f"switchboard-{name}")
    try:
        yield nc
    finally:
        await bus.close(nc)
