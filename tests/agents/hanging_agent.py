"""An agent that accepts the job and never joins the room: the seed outage's cousin."""

from __future__ import annotations

import asyncio

from livekit.agents import JobContext


async def entrypoint(ctx: JobContext) -> None:
    await asyncio.Event().wait()  # never connects, never returns until the job is shut down
