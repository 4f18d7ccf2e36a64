"""`switchboard drain POOL`: ask every worker of the pool to drain.

Workers stop taking jobs and finish the running ones; the orchestrator (subscribed to the same
control subject) stops scheduling onto the pool at once, whatever the next heartbeats say.
"""

from __future__ import annotations

import asyncio
import getpass
import socket
from dataclasses import dataclass

from nats.aio.client import Client as NATS

from orchestrator.ops.census import take_census
from shared import subjects
from shared.codec import encode
from shared.config import SwitchboardConfig
from shared.control import PoolCommand
from shared.messages import PoolHeartbeat


@dataclass(frozen=True, slots=True)
class DrainOutcome:
    pool: str
    workers: list[PoolHeartbeat]


async def drain_pool(
    nc: NATS, config: SwitchboardConfig, pool: str, reason: str | None = None
) -> DrainOutcome:
    subject = subjects.pool_control(pool)  # validates the pool id before anything is sent
    census = await take_census(nc, config)
    workers = census.workers_of(pool, asyncio.get_running_loop().time())
    command = PoolCommand(command="drain", reason=reason or f"switchboard drain by {_who()}")
    await nc.publish(subject, encode(command))
    await nc.flush(timeout=5)
    return DrainOutcome(pool, workers)


def _who() -> str:
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except (KeyError, OSError):
        return socket.gethostname()
