"""Heartbeats: about once a second, complete, tracking load, draining on SIGTERM, gone on SIGKILL."""

from __future__ import annotations

import asyncio
import itertools
import signal

from livekit import api as lkapi
from nats.aio.client import Client as NATS

from shared.messages import PoolHeartbeat
from tests.workerkit import (
    WorkerFactory,
    dispatch,
    heartbeats,
    is_state,
    statuses,
    workers,  # noqa: F401  (fixture)
)


async def test_heartbeat_rate_fields_and_load(
    workers: WorkerFactory,  # noqa: F811
    nc: NATS,
    livekit_api: lkapi.LiveKitAPI,
) -> None:
    worker = workers.start("pool-hb", capacity=2)
    async with heartbeats(nc, "pool-hb") as beats:
        idle = await beats.wait_for(lambda b: b.seq >= 1, 5, "two beats")
        assert (idle.pool, idle.agent, idle.region) == ("pool-hb", worker.agent, worker.region)
        assert idle.agent_name == worker.agent_name and idle.worker
        assert (idle.capacity, idle.active, idle.load, idle.draining) == (2, 0, 0.0, False)
        assert idle.version and idle.pending_reports == 0 and idle.jobs == []

        first = await dispatch(livekit_api, worker, "room-hb-1")
        half = await beats.wait_for(lambda b: b.active == 1, 15, "a beat with one job")
        assert half.load == 0.5 and half.jobs == [first]
        second = await dispatch(livekit_api, worker, "room-hb-2")
        full = await beats.wait_for(lambda b: b.active == 2, 15, "a beat with two jobs")
        assert full.load == 1.0 and sorted(full.jobs) == sorted([first, second])

        # Rate: count the beats of the next 4 s.
        start = len(beats.messages)
        await beats.wait_for(lambda b: b.seq >= full.seq + 4, 8, "four more beats")
        window = _times(beats.messages[start - 1 :])
        assert all(0.5 < gap < 1.6 for gap in window), window


def _times(beats: list[PoolHeartbeat]) -> list[float]:
    return [(b.at - a.at).total_seconds() for a, b in itertools.pairwise(beats)]


async def test_sigterm_drains_then_leaves_and_sigkill_disappears(
    workers: WorkerFactory,  # noqa: F811
    nc: NATS,
    livekit_api: lkapi.LiveKitAPI,
) -> None:
    draining = workers.start("pool-drain", capacity=2, extra_env={"SWITCHBOARD_WORKER_DRAIN_GRACE_S": "2"})
    doomed = workers.start("pool-doomed", capacity=2)
    async with (
        statuses(nc) as inbox,
        heartbeats(nc, "pool-drain") as drain_beats,
        heartbeats(nc, "pool-doomed") as doomed_beats,
    ):
        dispatch_id = await dispatch(livekit_api, draining, "room-drain")
        await inbox.wait_for(is_state(dispatch_id, "joined"), 30, "joined")

        draining.sigterm()
        beat = await drain_beats.wait_for(lambda b: b.draining, 3, "a draining beat")
        assert beat.jobs == [dispatch_id]  # the running job is kept through the grace period
        status, _ = draining.health("/readyz")
        assert status == 503
        # The job outlives the 2 s grace (the default agent never hangs up), so it is closed.
        left = await inbox.wait_for(is_state(dispatch_id, "left"), 20, "left after the grace period")
        assert left.reason
        assert await draining.wait_exit(within_s=20) == 0

        await doomed_beats.wait_for(lambda b: b.seq >= 1, 5, "doomed beats")
        doomed.kill()
        killed_at = len(doomed_beats.messages)
        await asyncio.sleep(3)  # silence is the thing measured: nothing to await
        assert len(doomed_beats.messages) == killed_at
        assert doomed.process is not None and doomed.process.proc is not None
        assert doomed.process.proc.returncode == -signal.SIGKILL
        assert not doomed.leftovers()
