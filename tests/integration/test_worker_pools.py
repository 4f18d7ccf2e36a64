"""Pools are isolated by LiveKit agent_name: a dispatch for one pool never lands on another."""

from __future__ import annotations

from livekit import api as lkapi
from nats.aio.client import Client as NATS

from tests.workerkit import (
    WorkerFactory,
    agents_in_room,
    dispatch,
    heartbeats,
    is_state,
    statuses,
    workers,  # noqa: F401  (fixture)
)


async def test_dispatches_land_only_on_the_named_pool(
    workers: WorkerFactory,  # noqa: F811
    nc: NATS,
    livekit_api: lkapi.LiveKitAPI,
) -> None:
    east = workers.start("pool-east", capacity=4)
    west = workers.start("pool-west", capacity=4)
    assert east.agent_name != west.agent_name
    async with statuses(nc) as inbox, heartbeats(nc, "pool-west") as west_beats:
        east_ids = []
        for i in range(3):  # one at a time: isolation is the point here, not bursts
            east_ids.append(await dispatch(livekit_api, east, f"room-east-{i}"))
            joined = await inbox.wait_for(is_state(east_ids[-1], "joined"), 30, "joined")
            assert joined.pool == "pool-east"
        west_id = await dispatch(livekit_api, west, "room-west-0")
        joined_west = await inbox.wait_for(is_state(west_id, "joined"), 30, "joined")
        assert joined_west.pool == "pool-west"
        # West's worker took exactly its own dispatch and none of east's.
        beat = await west_beats.wait_for(lambda b: b.active == 1, 5, "west beat with its job")
        assert beat.jobs == [west_id]
    assert not any(s.pool == "pool-west" and s.dispatch_id in east_ids for s in inbox.messages)
    for i in range(3):
        (agent,) = await agents_in_room(livekit_api, f"room-east-{i}")
        assert agent.attributes["switchboard.pool"] == "pool-east"
