"""A full worker is not offered jobs."""

from __future__ import annotations

import asyncio

from livekit import api as lkapi
from nats.aio.client import Client as NATS

from tests.workerkit import (
    WorkerFactory,
    dispatch,
    heartbeats,
    is_state,
    statuses,
    workers,  # noqa: F401  (fixture)
)

# Longer than LiveKit's whole assignment path (availability ~3 s server budget, 7.5 s worker wait).
NOT_TAKEN_WINDOW_S = 12.0


async def test_a_full_worker_takes_no_second_job(
    workers: WorkerFactory,  # noqa: F811
    nc: NATS,
    livekit_api: lkapi.LiveKitAPI,
) -> None:
    """Capacity 1, one job running: the second dispatch to this single-worker pool is not taken.

    The worker reports load 1.0 (status FULL) to LiveKit and answers any availability request
    with "not available". What LiveKit v1.13.5 then does: it finds no available worker for the
    agent_name, logs that no worker is available, and drops the job. The dispatch stays listed with
    zero jobs; nothing is queued and nothing is retried, not even when capacity frees up later.
    Getting that room an agent is the orchestrator's job (its join deadline, then another pool).
    """
    worker = workers.start("pool-one", capacity=1)
    async with statuses(nc) as inbox, heartbeats(nc, "pool-one") as beats:
        first = await dispatch(livekit_api, worker, "room-cap-1")
        await inbox.wait_for(is_state(first, "joined"), 30, "first joined")
        await beats.wait_for(lambda b: b.load == 1.0, 5, "a full beat")

        second = await dispatch(livekit_api, worker, "room-cap-2")
        try:
            await inbox.wait_for(lambda s: s.dispatch_id == second, NOT_TAKEN_WINDOW_S, "second")
        except AssertionError:
            pass  # expected: not taken
        else:
            raise AssertionError("a full worker took a second job")

        latest = beats.messages[-1]
        assert (latest.active, latest.jobs) == ([1][0], [first])
        async with asyncio.timeout(10):
            listed = await livekit_api.agent_dispatch.list_dispatch(room_name="room-cap-2")
        (named,) = [d for d in listed if d.id == second]
        assert len(named.state.jobs) == 0
