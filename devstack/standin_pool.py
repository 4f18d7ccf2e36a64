"""A worker pool's heartbeats on real NATS, as its workers would send them, with no LiveKit worker
behind it: the orchestrator sees a pool to schedule on (tests of its decisions, bench loads)."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime

from nats.aio.client import Client as NATS

from devstack.dev_config import DEMO_AGENT
from shared import subjects
from shared.codec import encode
from shared.heartbeat_jobs import JobListSender
from shared.messages import PoolHeartbeat


@dataclass
class StandInPool:
    """Beats once on :meth:`start`, then every ``interval`` until :meth:`stop`. ``active``, ``jobs``
    and ``draining`` may be changed at any time: the next beat carries them."""

    nc: NATS
    pool: str
    region: str = "eu-central"
    capacity: int = 4
    active: int = 0
    jobs: list[str] = field(default_factory=list)
    draining: bool = False
    interval: float = 1.0
    agent: str = DEMO_AGENT
    version: str = "standin"
    _task: asyncio.Task[None] | None = None
    _seq: int = 0
    _job_list: JobListSender = field(default_factory=JobListSender)  # as a real worker sends them

    @property
    def agent_name(self) -> str:
        return subjects.pool_agent_name(self.agent, self.pool)

    @property
    def worker(self) -> str:
        return f"{self.pool}-w1"

    async def beat(self) -> None:
        self._seq += 1
        hb = PoolHeartbeat(
            pool=self.pool,
            agent=self.agent,
            region=self.region,
            agent_name=self.agent_name,
            worker=self.worker,
            capacity=self.capacity,
            active=self.active,
            load=min(1.0, self.active / self.capacity) if self.capacity else 1.0,
            draining=self.draining,
            version=self.version,
            seq=self._seq,
            at=datetime.now(UTC),
            **self._job_list.fields(self._seq, list(self.jobs)),
        )
        try:
            await self.nc.publish(subjects.pool_heartbeat(self.pool), encode(hb))
        except BaseException:
            self._job_list.lost()
            raise
        self._job_list.sent()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.beat()

    async def start(self) -> None:
        await self.beat()
        await self.nc.flush()
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        """Stop beating, as a SIGKILLed pool would."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
